"""Services: the only code that combines the database with the domain; they never commit."""
