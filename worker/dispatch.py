"""Hand a recorded Stripe event to the worker (the webhook app's ``dispatch``).

The webhook app records the event and commits before it calls ``dispatch(event_id)``, so
the task never runs ahead of the row it loads.
"""

from __future__ import annotations

from collections.abc import Callable

from nrr.settings import Settings

PROCESS_EVENT_TASK = "nrr.process_event"


def dispatch_event(event_id: str) -> None:
    """Queue ``nrr.process_event`` on this process's Celery app (``nrr serve``)."""
    from worker.tasks import process_event

    process_event.apply_async(args=[event_id])


def celery_dispatch(settings: Settings) -> Callable[[str], None]:
    """A dispatch sending to the broker of ``settings`` (for an app built in-process)."""
    from worker.celery_app import make_celery

    app = make_celery(settings)

    def dispatch(event_id: str) -> None:
        app.send_task(PROCESS_EVENT_TASK, args=[event_id])

    return dispatch
