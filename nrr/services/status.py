"""What the worker has done lately: one document for ``nrr status``.

Last sync per resource (``sync_state``, a backfill's ``created`` windows folded into
their resource), the event cursor's age, the queue depth (Redis
list length with ``REDIS_URL``, else the embedded broker's message files), the last
snapshot, the last alert (``alert_deliveries``), quarantined objects, customers waiting
for a recompute and the last recompute. A service: reads only, never commits.

:func:`health_problems` says what is wrong for a health check (``nrr status`` exits 1,
so do the compose health checks): the database or the broker does not answer, the last
finished sync is older than ``[schedule] stale_after_intervals`` sync intervals, or the
last run of a resource failed (its ``last_error`` is cleared by the next success).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.derived import AlertDelivery, RecomputeRun, RetentionSnapshot
from models.mirror import DirtyCustomer, QuarantinedObject, SyncState
from nrr.settings import Settings

EVENTS_RESOURCE = "events"
WINDOW_SEPARATOR = "@"  # integrations.stripe_sync: ``invoices@1700000000..1720000000``


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _sync_rows(session: Session) -> list[dict[str, Any]]:
    """One row per resource. A backfill lists the big resources in ``created`` windows,
    each a ``sync_state`` row ``<resource>@<gte>..<lt>``: they are folded into their
    resource's row (objects summed, ``windows`` "done/total", the first window error)."""
    rows = session.scalars(select(SyncState).order_by(SyncState.resource)).all()
    out: dict[str, dict[str, Any]] = {}
    windows: dict[str, list[SyncState]] = {}
    for r in rows:
        if WINDOW_SEPARATOR in r.resource:
            windows.setdefault(r.resource.split(WINDOW_SEPARATOR, 1)[0], []).append(r)
            continue
        out[r.resource] = {"resource": r.resource, "phase": r.phase,
                           "objects_synced": r.objects_synced,
                           "started_at": _iso(r.started_at), "finished_at": _iso(r.finished_at),
                           "last_error": r.last_error, "windows": None}
    for base, parts in windows.items():
        row = out.setdefault(base, {"resource": base, "phase": "running", "objects_synced": 0,
                                    "started_at": None, "finished_at": None,
                                    "last_error": None, "windows": None})
        done = sum(1 for w in parts if w.phase == "done")
        row["windows"] = f"{done}/{len(parts)}"
        if row["phase"] != "done":
            row["objects_synced"] = sum(int(w.objects_synced or 0) for w in parts)
        row["last_error"] = row["last_error"] or next(
            (w.last_error for w in parts if w.last_error), None)
    return [out[name] for name in sorted(out)]


def _event_cursor(session: Session, now: datetime) -> dict[str, Any]:
    cursor = session.scalar(select(SyncState.event_cursor)
                            .where(SyncState.resource == EVENTS_RESOURCE))
    if cursor is None:
        return {"created": None, "at": None, "age_seconds": None}
    return {"created": int(cursor),
            "at": datetime.fromtimestamp(int(cursor), UTC).isoformat(),
            "age_seconds": max(0, int(now.timestamp()) - int(cursor))}


def _last_snapshot(session: Session) -> dict[str, Any] | None:
    row = session.scalars(select(RetentionSnapshot)
                          .order_by(RetentionSnapshot.month.desc(),
                                    RetentionSnapshot.created_at.desc(),
                                    RetentionSnapshot.id.desc()).limit(1)).first()
    if row is None:
        return None
    return {"month": row.month, "period": row.period, "dimension": row.dimension,
            "segment": row.segment, "version": row.version, "created_at": _iso(row.created_at),
            "reason": row.reason}


def _last_alert(session: Session) -> dict[str, Any] | None:
    row = session.scalars(select(AlertDelivery)
                          .order_by(AlertDelivery.created_at.desc(), AlertDelivery.id.desc())
                          .limit(1)).first()
    if row is None:
        return None
    return {"rule": row.rule, "kind": row.kind, "month": row.month, "segment": row.segment,
            "status": row.status, "created_at": _iso(row.created_at),
            "sent_at": _iso(row.sent_at), "last_error": row.last_error}


def _last_recompute(session: Session) -> dict[str, Any] | None:
    row = session.scalars(select(RecomputeRun)
                          .order_by(RecomputeRun.started_at.desc(), RecomputeRun.id.desc())
                          .limit(1)).first()
    if row is None:
        return None
    return {"kind": row.kind, "started_at": _iso(row.started_at),
            "finished_at": _iso(row.finished_at), "customers": row.customers,
            "skipped": row.skipped}


def _count(session: Session, model: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def worker_status(session: Session, settings: Settings, *, now: datetime | None = None,
                  with_queue: bool = True) -> dict[str, Any]:
    """The status document (plain JSON types)."""
    moment = now or datetime.now(UTC)
    queue: dict[str, Any] = {"broker": "redis" if settings.redis_url else "embedded",
                             "depth": None}
    if with_queue:
        from worker.broker import QUEUE, queue_depth

        queue["name"] = QUEUE
        queue["depth"] = queue_depth(settings)
        if queue["depth"] is None:
            queue["error"] = "the broker at REDIS_URL does not answer"
    return {
        "checked_at": moment.isoformat(),
        "sync": _sync_rows(session),
        "event_cursor": _event_cursor(session, moment),
        "queue": queue,
        "last_snapshot": _last_snapshot(session),
        "last_alert": _last_alert(session),
        "quarantined": _count(session, QuarantinedObject),
        "dirty_customers": _count(session, DirtyCustomer),
        "last_recompute": _last_recompute(session),
        "left_out_customers": _left_out(session),
    }


def _left_out(session: Session) -> dict[str, Any]:
    """Customers the last recomputes could not compute (one never blanks an account)."""
    from nrr.services.isolation import left_out_count, left_out_list

    count = left_out_count(session)
    return {"count": count, "first": left_out_list(session, limit=20) if count else []}


def stale_after(settings: Settings) -> timedelta:
    schedule = settings.schedule
    return timedelta(minutes=schedule.sync_every_minutes * schedule.stale_after_intervals)


def health_problems(document: dict[str, Any], settings: Settings) -> list[str]:
    """Why the deployment is unhealthy, one reason each (empty: healthy)."""
    problems = []
    queue = document["queue"]
    if queue.get("error"):
        problems.append(f"broker: {queue['error']}")
    rows = document["sync"]
    for row in rows:
        if row["last_error"]:
            problems.append(f"the last sync of {row['resource']} failed: {row['last_error']}")
    finished = [datetime.fromisoformat(r["finished_at"]) for r in rows if r["finished_at"]]
    running = any(r["phase"] in ("running", "waiting") for r in rows)
    limit = stale_after(settings)
    checked = datetime.fromisoformat(document["checked_at"])
    if finished:
        newest = max(finished)
        if checked - newest > limit and not running:
            problems.append(
                f"the sync is stale: the last one finished at {newest.isoformat()}, more than "
                f"{limit.total_seconds() / 60:g} minutes ago ({settings.schedule.stale_after_intervals:g}"
                f" x sync_every_minutes {settings.schedule.sync_every_minutes:g})")
    elif not running:
        problems.append("no sync has finished yet (run `nrr sync` or start the worker)")
    return problems
