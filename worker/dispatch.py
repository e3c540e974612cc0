"""Hand a recorded Stripe event to the worker (the webhook app's ``dispatch``)."""

from __future__ import annotations


def dispatch_event(event_id: str) -> None:
    """Queue ``nrr.process_event`` for an event already committed to ``stripe_events``."""
    from worker.tasks import process_event

    process_event.apply_async(args=[event_id])
