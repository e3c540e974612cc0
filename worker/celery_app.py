"""The Celery application: ``celery -A worker.celery_app worker`` or ``nrr worker``.

Broker: ``REDIS_URL`` when set. Without it the worker runs on an embedded broker that needs
no server: kombu's filesystem transport in a folder next to the SQLite database (or
``./nrr-broker`` for other databases), so one machine works with nothing to install and
nothing ever connects to a default Redis address.

Every task: JSON only, acknowledged after it finished (``acks_late``) and given back to the
queue when its worker dies (``reject_on_worker_lost``), one message prefetched at a time,
results ignored. Retry policies and time limits are set per task in :mod:`worker.tasks`.
Logs are structlog events on stderr with the task id and name bound; secrets are redacted.
"""

from __future__ import annotations

from typing import Any

import structlog
from celery import Celery
from celery.signals import beat_init, setup_logging, task_postrun, task_prerun, worker_init

from nrr.logs import configure_from_settings
from nrr.settings import ConfigError, Settings, load_settings
from worker.broker import QUEUE, broker_folder, state_dir

TASK_MODULES = ["worker.tasks", "worker.shards"]


def broker_options(settings: Settings) -> tuple[str, dict[str, Any]]:
    """The broker URL and transport options for ``settings``."""
    if settings.redis_url:
        visibility = settings.worker.visibility_timeout_seconds
        return settings.redis_url, {
            "visibility_timeout": visibility,
            # Sweep for the tasks of dead workers a few times per visibility timeout.
            "unacked_restore_interval": max(1, min(60, visibility // 4)),
            "unacked_restore_throttle": 1,
            "socket_timeout": 30,
            "socket_connect_timeout": 10,
            "health_check_interval": 30,
        }
    folder = broker_folder(settings)
    return "filesystem://", {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "store_processed": False,
    }


def make_celery(settings: Settings) -> Celery:
    """A Celery app configured from ``settings`` (tests build one per database)."""
    from worker.schedule import beat_schedule

    broker, transport_options = broker_options(settings)
    app = Celery("nrr", broker=broker, include=TASK_MODULES, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        event_serializer="json",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_backend=None,
        task_default_queue=QUEUE,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        timezone=settings.timezone,
        enable_utc=True,
        beat_schedule=beat_schedule(settings),
        beat_schedule_filename=str(state_dir(settings) / "celerybeat-schedule"),
        task_soft_time_limit=settings.worker.soft_time_limit_seconds,
        task_time_limit=settings.worker.soft_time_limit_seconds + 60,
    )
    return app


def _bind_task(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(task_id=task_id, task=getattr(task, "name", None))


def _unbind_task(**_: Any) -> None:
    structlog.contextvars.clear_contextvars()


def ensure_state_dirs(settings: Settings) -> None:
    """Create the embedded broker's folder and the beat schedule's folder."""
    state_dir(settings).mkdir(parents=True, exist_ok=True)
    if not settings.redis_url:
        broker_folder(settings).mkdir(parents=True, exist_ok=True)


def _on_start(**_: Any) -> None:
    configure_from_settings(settings)
    ensure_state_dirs(settings)


def _own_logging(**_: Any) -> None:
    # Connected, this signal stops Celery from installing its own handlers: its lines go
    # through the structlog pipeline (same format, task id, redaction) like ours.
    configure_from_settings(settings)


task_prerun.connect(_bind_task, weak=False)
task_postrun.connect(_unbind_task, weak=False)
worker_init.connect(_on_start, weak=False)
beat_init.connect(_on_start, weak=False)
setup_logging.connect(_own_logging, weak=False)

try:
    settings = load_settings()
except ConfigError as exc:  # `celery -A worker.celery_app ...`: exit 2 like the CLI
    import sys

    sys.stderr.write(f"error: {exc}\n")
    raise SystemExit(2) from None
configure_from_settings(settings)  # from the start: Celery warns before its log set-up
app = make_celery(settings)
app.set_current()
celery = app
