"""The Celery beat schedule, from ``settings.schedule`` (config file ``[schedule]``).

- incremental sync every ``sync_every_minutes`` (default 15); a sync that touched
  customers is followed by a recompute of them, a snapshot refresh and alert evaluation;
- a full recompute every night at ``nightly_recompute_hour`` (default 02:00);
- the retention snapshot of the month that just closed on day ``snapshot_day`` at
  ``snapshot_hour`` (default the 1st at 01:00), followed by alert evaluation.

Crontab times are in ``NRR_TIMEZONE`` (the Celery app's timezone).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery.schedules import crontab

from nrr.settings import Settings

SYNC_TASK = "nrr.sync"
RECOMPUTE_TASK = "nrr.recompute"
SNAPSHOT_TASK = "nrr.snapshot"
ALERTS_TASK = "nrr.evaluate_alerts"


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    plan = settings.schedule
    every = timedelta(minutes=plan.sync_every_minutes)
    return {
        "incremental-sync": {
            "task": SYNC_TASK,
            "schedule": every,
            # A tick that waited longer than one interval is superseded by the next one.
            "options": {"expires": max(every.total_seconds(), 1.0)},
        },
        "nightly-recompute": {
            "task": RECOMPUTE_TASK,
            "schedule": crontab(minute=0, hour=plan.nightly_recompute_hour),
            "kwargs": {"scope": "all", "reason": "nightly recompute"},
        },
        "monthly-snapshot": {
            "task": SNAPSHOT_TASK,
            "schedule": crontab(minute=0, hour=plan.snapshot_hour,
                                day_of_month=plan.snapshot_day),
            "kwargs": {"reason": "monthly schedule"},
        },
    }
