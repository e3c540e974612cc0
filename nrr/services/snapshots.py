"""Monthly retention snapshots: the numbers of a closed month, stored once and never changed.

One snapshot per month, period (``monthly``, ``t12m``) and segment: the total
(``dimension`` and ``segment`` empty) and one per segment of each dimension in
:data:`SNAPSHOT_DIMENSIONS`. Each stores the report's metrics JSON (the public document of
:func:`nrr.services.report.monthly_report`, or the segment's object), the policies and the
metric definitions it was computed with, and a SHA-256 ``content_hash`` of the three.

Taking a snapshot again with the same content is a no-op. When a later recompute changed
history (late Stripe data, a policy change), the new numbers are written as the next
``version`` beside the old ones; :func:`diff_snapshots` says which numbers changed, old
against new, and whether the policies, the definitions or the data changed. The unique key
(month, period, dimension, segment, version) keeps two concurrent writers from storing the
same version twice: the loser re-reads and finds its content already stored.

A service: it receives a ``Session`` and never commits.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.derived import CustomerMonthFact, RetentionSnapshot
from nrr.domain.months import add_months, current_month
from nrr.logs import get_logger
from nrr.settings import Settings

log = get_logger(__name__)

PERIODS = ("monthly", "t12m")
SNAPSHOT_DIMENSIONS = ("plan", "product", "currency", "country")
# Keys of a report document that describe it rather than measure it (kept, not hashed).
# The outlook is what Stripe had scheduled when the snapshot was taken: kept beside the
# month's numbers, but a later projection never makes a new version of a closed month.
_UNHASHED = ("notes", "outlook")
_NOT_NUMBERS = ("policies", "definitions", "notes", "outlook")


class SnapshotError(ValueError):
    """The month cannot be snapshotted (not closed yet, bad month)."""


@dataclass
class SnapshotResult:
    month: str
    created: list[dict[str, Any]] = field(default_factory=list)
    unchanged: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"month": self.month, "created": list(self.created),
                "created_count": len(self.created), "unchanged": self.unchanged}


def content_hash(metrics: dict[str, Any], policies: dict[str, Any],
                 definitions: dict[str, Any]) -> str:
    measured = {k: v for k, v in metrics.items() if k not in _UNHASHED}
    canonical = json.dumps({"metrics": measured, "policies": policies,
                            "definitions": definitions},
                           sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def last_closed_month(settings: Settings, now: datetime | None = None) -> str:
    """The month that most recently ended in ``NRR_TIMEZONE``."""
    return add_months(current_month(settings.tz, now or datetime.now(UTC)), -1)


@dataclass(frozen=True)
class _Piece:
    period: str
    dimension: str
    segment: str
    metrics: dict[str, Any]
    policies: dict[str, Any]
    definitions: dict[str, Any]


def _pieces(session: Session, settings: Settings, month: str,
            now: datetime | None) -> Iterator[_Piece]:
    from nrr.services.report import monthly_report

    for period in PERIODS:
        total = monthly_report(session, settings, month, period=period, now=now)
        policies = dict(total.get("policies") or {})
        definitions = dict(total.get("definitions") or {})
        metrics = {k: v for k, v in total.items() if k != "definitions"}
        if period == "monthly":
            metrics["outlook"] = _outlook(session, settings)
        yield _Piece(period, "", "", metrics, policies, definitions)
        for dimension in SNAPSHOT_DIMENSIONS:
            document = monthly_report(session, settings, month, period=period, by=dimension,
                                      now=now)
            for segment in document.get("segments") or []:
                metrics = {"month": month, "period": period,
                           "currency": document.get("currency"), "dimension": dimension,
                           **segment, "policies": policies}
                yield _Piece(period, dimension, str(segment.get("segment")), metrics, policies,
                             definitions)


def _outlook(session: Session, settings: Settings) -> dict[str, Any] | None:
    """The stored outlook's months (without the movement list), or None before the first."""
    from nrr.services.outlook import OutlookUnavailable, outlook_report

    try:
        document = outlook_report(session, settings)
    except OutlookUnavailable:
        return None
    return {"taken_at": document["taken_at"], "months": document["months"],
            "scheduled_movements": len(document["movements"])}


def _latest(session: Session, month: str, piece: _Piece) -> RetentionSnapshot | None:
    return session.scalars(
        select(RetentionSnapshot)
        .where(RetentionSnapshot.month == month, RetentionSnapshot.period == piece.period,
               RetentionSnapshot.dimension == piece.dimension,
               RetentionSnapshot.segment == piece.segment)
        .order_by(RetentionSnapshot.version.desc()).limit(1)
    ).first()


def _store(session: Session, month: str, piece: _Piece, digest: str,
           reason: str | None) -> int | None:
    """Store ``piece`` as a new version unless the latest one holds the same content.

    Returns the new version, or None when nothing was written.
    """
    for _attempt in range(5):
        latest = _latest(session, month, piece)
        if latest is not None and latest.content_hash == digest:
            return None
        version = 1 if latest is None else latest.version + 1
        row = RetentionSnapshot(
            month=month, period=piece.period, dimension=piece.dimension, segment=piece.segment,
            version=version, content_hash=digest, metrics=piece.metrics,
            policies=piece.policies, definitions=piece.definitions,
            reason=reason or ("first snapshot" if version == 1 else "history changed"),
            created_at=datetime.now(UTC))
        try:
            with session.begin_nested():
                session.add(row)
            return version
        except IntegrityError:
            # A concurrent writer stored this version first: look again.
            continue
    raise RuntimeError(f"could not store the snapshot of {month} {piece.period} "
                       f"{piece.dimension or 'total'} {piece.segment}: too many concurrent writers")


def take_snapshots(session: Session, settings: Settings, month: str, *,
                   reason: str | None = None, now: datetime | None = None) -> SnapshotResult:
    """Snapshot the closed ``month`` (``YYYY-MM``): every period and segment; idempotent."""
    current = current_month(settings.tz, now or datetime.now(UTC))
    if month >= current:
        raise SnapshotError(f"{month} is not closed yet (the current month in "
                            f"{settings.timezone} is {current}): only closed months are "
                            f"snapshotted")
    first = session.scalar(select(func.min(CustomerMonthFact.month)))
    if first is None or first > month:
        raise SnapshotError(f"no monthly facts are stored for {month} or before: run "
                            f"`nrr sync` (and `nrr recompute`) before taking a snapshot")
    result = SnapshotResult(month=month)
    for piece in _pieces(session, settings, month, now):
        digest = content_hash(piece.metrics, piece.policies, piece.definitions)
        version = _store(session, month, piece, digest, reason)
        if version is None:
            result.unchanged += 1
            continue
        result.created.append({"period": piece.period, "dimension": piece.dimension,
                               "segment": piece.segment, "version": version})
    session.flush()
    log.info("snapshots.taken", month=month, created=len(result.created),
             unchanged=result.unchanged, reason=reason)
    return result


# --------------------------------------------------------------------------- reading


def _row_dict(row: RetentionSnapshot) -> dict[str, Any]:
    metrics = row.metrics or {}
    return {
        "month": row.month, "period": row.period, "dimension": row.dimension,
        "segment": row.segment, "version": row.version,
        "content_hash": row.content_hash, "reason": row.reason,
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "nrr": metrics.get("nrr"), "grr": metrics.get("grr"),
        "closing_mrr": metrics.get("closing_mrr"),
    }


def list_snapshots(session: Session, *, month: str | None = None, dimension: str | None = None,
                   all_segments: bool = False) -> list[dict[str, Any]]:
    """Stored snapshots, newest month first; only totals unless ``dimension``/``all_segments``."""
    query = select(RetentionSnapshot)
    if month is not None:
        query = query.where(RetentionSnapshot.month == month)
    if dimension is not None:
        query = query.where(RetentionSnapshot.dimension == dimension)
    elif not all_segments:
        query = query.where(RetentionSnapshot.dimension == "")
    query = query.order_by(RetentionSnapshot.month.desc(), RetentionSnapshot.period,
                           RetentionSnapshot.dimension, RetentionSnapshot.segment,
                           RetentionSnapshot.version)
    return [_row_dict(row) for row in session.scalars(query)]


def latest_snapshot(session: Session) -> dict[str, Any] | None:
    row = session.scalars(select(RetentionSnapshot)
                          .order_by(RetentionSnapshot.created_at.desc(),
                                    RetentionSnapshot.id.desc()).limit(1)).first()
    return None if row is None else _row_dict(row)


def _numbers(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key in sorted(value):
            if path == "" and key in _NOT_NUMBERS:
                continue
            yield from _numbers(value[key], f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _numbers(item, f"{path}[{index}]")
    elif value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, value


def _changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": key, "old": old.get(key), "new": new.get(key)}
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def explain_change(old: RetentionSnapshot, new: RetentionSnapshot) -> dict[str, Any]:
    """What changed between two versions of one snapshot, and why."""
    old_numbers = dict(_numbers(old.metrics or {}))
    new_numbers = dict(_numbers(new.metrics or {}))
    numbers = []
    for path in sorted(set(old_numbers) | set(new_numbers)):
        before, after = old_numbers.get(path), new_numbers.get(path)
        if before == after:
            continue
        delta = (round(after - before, 6)
                 if isinstance(before, (int, float)) and isinstance(after, (int, float)) else None)
        numbers.append({"metric": path, "old": before, "new": after, "change": delta})
    policies = _changed_keys(old.policies or {}, new.policies or {})
    definitions = sorted(name for name in set(old.definitions or {}) | set(new.definitions or {})
                         if (old.definitions or {}).get(name) != (new.definitions or {}).get(name))
    causes = []
    if policies:
        causes.append("policies changed: " + ", ".join(p["name"] for p in policies))
    if definitions:
        causes.append("metric definitions changed: " + ", ".join(definitions))
    if not policies and not definitions:
        causes.append("data changed: the recomputed history (Stripe data) differs under the "
                      "same policies and definitions")
    elif numbers:
        causes.append("the numbers may also reflect changed data")
    return {
        "month": new.month, "period": new.period, "dimension": new.dimension,
        "segment": new.segment, "old_version": old.version, "new_version": new.version,
        "old_created_at": old.created_at.isoformat() if old.created_at else None,
        "new_created_at": new.created_at.isoformat() if new.created_at else None,
        "reason": new.reason, "why": "; ".join(causes), "numbers": numbers,
        "policies": policies, "definitions": definitions,
    }


def diff_snapshots(session: Session, month: str, *, period: str | None = None,
                   dimension: str | None = "", segment: str | None = None,
                   old_version: int | None = None,
                   new_version: int | None = None) -> list[dict[str, Any]]:
    """For each snapshot of ``month`` with more than one version: what changed and why.

    Compares ``new_version`` (default the latest) with ``old_version`` (default the one
    before it). ``dimension`` "" means the totals, None every dimension.
    """
    query = select(RetentionSnapshot).where(RetentionSnapshot.month == month)
    if period is not None:
        query = query.where(RetentionSnapshot.period == period)
    if dimension is not None:
        query = query.where(RetentionSnapshot.dimension == dimension)
    if segment is not None:
        query = query.where(RetentionSnapshot.segment == segment)
    groups: dict[tuple[str, str, str], dict[int, RetentionSnapshot]] = {}
    for row in session.scalars(query.order_by(RetentionSnapshot.version)):
        groups.setdefault((row.period, row.dimension, row.segment), {})[row.version] = row
    diffs = []
    for key in sorted(groups):
        versions = groups[key]
        new_v = new_version if new_version is not None else max(versions)
        old_v = old_version if old_version is not None else max(
            (v for v in versions if v < new_v), default=None)
        if old_v is None or old_v not in versions or new_v not in versions or old_v == new_v:
            continue
        diffs.append(explain_change(versions[old_v], versions[new_v]))
    return diffs


def snapshot_months(session: Session) -> list[str]:
    return list(session.scalars(select(RetentionSnapshot.month).distinct()
                                .order_by(RetentionSnapshot.month)))


def snapshot_count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(RetentionSnapshot)) or 0)
