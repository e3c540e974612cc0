"""Domain logic: plain data in, plain data out. No Celery, no Stripe SDK, no database."""
