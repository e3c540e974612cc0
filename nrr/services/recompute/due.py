"""Customers whose stored rows went stale because time passed, not because data changed.

A customer's facts depend on the instant they were computed at: the month holding ``now``
closes at the MRR at ``now`` (``nrr.domain.movements``), and the history dates what the
subscriptions already schedule (a cancellation at ``cancel_at``, a trial ending, a
discount ending, collection resuming, the past-due policy's day) as timeline points after
``now``. When such a point passes, nothing in Stripe changes and no customer is marked
dirty, yet a recompute now gives that customer other facts (and another outlook).

The live rows are current as of a *watermark*: the latest ``now`` of the live full run and
of the incremental runs since it went live (each of which recomputed what was due up to
its own ``now``, so by induction every customer's rows are those of the watermark). A
recompute at ``now`` therefore also recomputes the customers *due*: those with a stored
timeline point in ``(watermark, now]``. When a month closed since the watermark, every
customer's months move (the closing of the month that ended, a row for the new one): the
recompute is a full one (:func:`due_since`'s ``new_month``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from models.derived import LiveRun, RecomputeRun
from models.live_rows import live_run_id
from models.outlook import OutlookRun
from nrr.domain.months import month_of
from nrr.services.recompute.common import T_TIMELINE
from nrr.settings import Settings


@dataclass
class Due:
    """What passing time made stale since ``watermark`` (None: nothing computed yet)."""

    watermark: int | None = None
    customer_ids: set[str] = field(default_factory=set)
    new_month: bool = False


def watermark(session: Session) -> int | None:
    """The instant the live rows are current as of (None: no run wrote them yet).

    Each run's ``now`` is the ``taken_at`` of the outlook it stored. The incremental runs
    counted are those started after the live run went live: one started before may have
    written into the rows of the run that was live then."""
    pointer = session.get(LiveRun, 1)
    if pointer is None:
        return None
    runs = RecomputeRun.__table__
    outlook = OutlookRun.__table__
    query = (select(func.max(outlook.c.taken_at))
             .select_from(outlook.join(runs, runs.c.id == outlook.c.recompute_run_id))
             .where(runs.c.id >= pointer.run_id,  # started after the live run was created
                    or_(runs.c.id == pointer.run_id,
                        and_(runs.c.kind == "incremental",
                             runs.c.started_at >= pointer.switched_at))))
    value = session.execute(query).scalar()
    return None if value is None else int(value)


def due_since(session: Session, settings: Settings, now: int) -> Due:
    """The customers a recompute at ``now`` must recompute although nothing marked them:
    a timeline point of theirs in ``(watermark, now]``; ``new_month`` when the month of
    ``now`` is not the watermark's (every customer is due: a full recompute)."""
    since = watermark(session)
    if since is None or now <= since:
        return Due(watermark=since)
    if month_of(now, settings.tz) != month_of(since, settings.tz):
        return Due(watermark=since, new_month=True)
    # No DISTINCT: SQLite would rather walk the (run, customer) index in customer order
    # than the (run, instant) one; the span holds few points.
    ids = set(session.scalars(
        select(T_TIMELINE.c.customer_id)
        .where(T_TIMELINE.c.run_id == live_run_id(session),
               T_TIMELINE.c.effective_at > since, T_TIMELINE.c.effective_at <= now)))
    return Due(watermark=since, customer_ids=ids)
