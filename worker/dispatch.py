"""Hand a recorded Stripe event to the worker (the webhook app's ``dispatch`` when
``nrr serve`` runs with Redis).

The webhook app records the event and commits before it calls ``dispatch(event_id)``, so
the task never runs ahead of the row it loads. The task is sent by name, so this module
needs only the Celery app, not the tasks.
"""

from __future__ import annotations

from collections.abc import Callable

from nrr.settings import Settings
from worker.celery_app import make_celery

PROCESS_EVENT_TASK = "nrr.process_event"


def celery_dispatch(settings: Settings) -> Callable[[str], None]:
    """A dispatch sending ``nrr.process_event`` to the broker of ``settings``."""
    app = make_celery(settings)

    def dispatch(event_id: str) -> None:
        app.send_task(PROCESS_EVENT_TASK, args=[event_id])

    return dispatch
