"""nrr-worker: Net Revenue Retention kept true and current from a Stripe account."""

__version__ = "0.1.0"
