"""The outlook, stored per recompute and read back (docs/outlook-schema.md).

:func:`refresh_outlook` runs inside every recompute, after the facts are written. Only the
customers with something scheduled are computed: a scheduled instant after now in the
timeline just written (cancellations ahead, discounts ending, trials, collection resuming,
the past-due policy), a counted subscription schedule, a pending update, a trial or a
collection pause ahead. Everyone else stays as they are: their projected months are their
current month's fact (real opening, MRR now), flat after it; nothing is written for them,
so the outlook costs in proportion to what is scheduled.

All projected months convert at the current month's rate (the latest rate on or before its
first day), so a currency never looks like a scheduled movement. The service never commits.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Table, case, delete, func, insert, select, text
from sqlalchemy.orm import Session

from models.derived import CustomerMonthFact, MrrTimelinePoint
from models.live_rows import live_run_id
from models.mirror import StripeSubscription
from models.outlook import (
    OutlookChange,
    OutlookMonth,
    OutlookOpening,
    OutlookOpeningDrop,
    OutlookRun,
    StripeSubscriptionSchedule,
)
from nrr.db.bulk import bulk_insert
from nrr.db.statements import in_chunks
from nrr.domain import history as domain_history
from nrr.domain import movements as domain_movements
from nrr.domain import outlook as domain_outlook
from nrr.domain.metrics import MonthTotals
from nrr.domain.months import add_months, month_of, month_start
from nrr.domain.outlook import PendingUpdate, SubscriptionSchedule
from nrr.domain.records import CustomerData, Skip
from nrr.domain.schedule_shapes import parse_pending_update, parse_schedule
from nrr.logs import get_logger
from nrr.services.outlook_read import (
    DEFAULT_MONTHS,
    STORED_MONTHS,
    OutlookUnavailable,
    change_document,
    iso,
    month_document,
)
from nrr.settings import Settings

log = get_logger(__name__)

# Months stored ahead (the current one included); ``nrr outlook --months`` reads up to this.
CHUNK = 1000

T_MONTHS: Table = OutlookMonth.__table__  # type: ignore[assignment]
T_CHANGES: Table = OutlookChange.__table__  # type: ignore[assignment]
T_SCHEDULES: Table = StripeSubscriptionSchedule.__table__  # type: ignore[assignment]
T_SUBS: Table = StripeSubscription.__table__  # type: ignore[assignment]
T_FACTS: Table = CustomerMonthFact.__table__  # type: ignore[assignment]
T_TIMELINE: Table = MrrTimelinePoint.__table__  # type: ignore[assignment]
T_DROPS: Table = OutlookOpeningDrop.__table__  # type: ignore[assignment]

COUNTED_SCHEDULE_STATUSES = tuple(sorted(domain_outlook.COUNTED_SCHEDULE_STATUSES))
MONTH_COLUMNS = ["month", "customer_id", "opening_micro", "closing_micro", "movement",
                 "movement_micro", "opening_upper_micro", "closing_upper_micro", "movement_upper",
                 "movement_upper_micro", "currency", "plan", "product", "country", "metadata"]
CHANGE_COLUMNS = ["month", "effective_at", "customer_id", "subscription_id", "cause", "bound",
                  "currency", "mrr_before_micro", "mrr_after_micro", "amount_micro", "stripe_ids"]


@dataclass
class OutlookResult:
    customers: int = 0
    changes: int = 0
    seconds: float = 0.0
    skips: list[Skip] = field(default_factory=list)


def horizon(first_month: str, tz: Any, count: int = STORED_MONTHS) -> list[tuple[str, int, int]]:
    months = []
    for n in range(count):
        month = add_months(first_month, n)
        months.append((month, month_start(month, tz), month_start(add_months(month, 1), tz)))
    return months


# --------------------------------------------------------------------------- computing


def _candidates(session: Session, now: int, livemode: bool, horizon_end: int,
                listed: Sequence[str] | None = None) -> list[str]:
    """Customers with something scheduled after ``now`` (module docstring); of the
    ``listed`` ones only, when given (an incremental refresh: the same customers a full
    one would compute among them, read by customer)."""
    dialect = session.connection().dialect.name
    pending = ("raw->'pending_update' IS NOT NULL AND jsonb_typeof(raw->'pending_update') = 'object'"
               if dialect == "postgresql" else "json_type(raw, '$.pending_update') = 'object'")
    timeline = select(T_TIMELINE.c.customer_id).where(
        T_TIMELINE.c.run_id == live_run_id(session), T_TIMELINE.c.effective_at > now,
        T_TIMELINE.c.effective_at < horizon_end).distinct()
    schedules = select(T_SCHEDULES.c.customer_id).where(
        T_SCHEDULES.c.status.in_(COUNTED_SCHEDULE_STATUSES), T_SCHEDULES.c.livemode == livemode)
    trials_and_pauses = select(T_SUBS.c.customer_id).where(
        T_SUBS.c.livemode == livemode,
        (T_SUBS.c.trial_end > now) | T_SUBS.c.pause_collection.isnot(None))
    pending_updates = select(T_SUBS.c.customer_id).where(text(pending))
    queries = [(timeline, T_TIMELINE), (schedules, T_SCHEDULES), (trials_and_pauses, T_SUBS),
               (pending_updates, T_SUBS)]
    ids: set[str] = set()
    for query, table in queries:
        if listed is None:
            ids.update(c for c in session.scalars(query) if c)
            continue
        for chunk in in_chunks(listed):
            ids.update(c for c in session.scalars(query.where(table.c.customer_id.in_(chunk)))
                       if c)
    return sorted(ids)


def _scheduled_inputs(session: Session, ids: Sequence[str], livemode: bool, skips: list[Skip]
                      ) -> tuple[dict[str, list[SubscriptionSchedule]], dict[str, list[PendingUpdate]]]:
    schedules: dict[str, list[SubscriptionSchedule]] = {}
    for raw, in session.execute(select(T_SCHEDULES.c.raw).where(
            T_SCHEDULES.c.customer_id.in_(list(ids)), T_SCHEDULES.c.livemode == livemode,
            T_SCHEDULES.c.status.in_(COUNTED_SCHEDULE_STATUSES))):
        parsed = parse_schedule(raw)
        if isinstance(parsed, Skip):
            skips.append(parsed)
        elif parsed.customer_id:
            schedules.setdefault(parsed.customer_id, []).append(parsed)
    pending: dict[str, list[PendingUpdate]] = {}
    for customer_id, raw in session.execute(select(T_SUBS.c.customer_id, T_SUBS.c.raw).where(
            T_SUBS.c.customer_id.in_(list(ids)), T_SUBS.c.livemode == livemode)):
        if not isinstance(raw, Mapping) or not raw.get("pending_update"):
            continue
        update = parse_pending_update(raw)
        if isinstance(update, Skip):
            skips.append(update)
        elif update is not None:
            pending.setdefault(customer_id, []).append(update)
    return schedules, pending


def _segments(session: Session, month: str, ids: Sequence[str]) -> dict[str, tuple[Any, ...]]:
    return {row[0]: tuple(row[1:]) for row in session.execute(
        select(T_FACTS.c.customer_id, T_FACTS.c.currency, T_FACTS.c.plan, T_FACTS.c.product,
               T_FACTS.c.country, T_FACTS.c.metadata).where(
            T_FACTS.c.month == month, T_FACTS.c.run_id == live_run_id(session),
            T_FACTS.c.customer_id.in_(list(ids))))}


@dataclass
class _Context:
    """What computing a chunk of customers needs (picklable: sent to worker processes)."""

    settings: Settings
    catalogue: Any
    rates: Any
    livemode: bool
    now: int
    months: list[tuple[str, int, int]]


def _compute_chunk(session: Session, ctx: _Context, chunk: list[str],
                   segments: Mapping[str, tuple[Any, ...]],
                   loaded: Mapping[str, CustomerData] | None = None
                   ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], int, list[Skip]]:
    """(month rows, change rows, customers with something scheduled, skips) of ``chunk``.

    Reads only the mirror (``segments`` come from the caller: the facts of this recompute
    are not committed yet), so it runs in this process or in a worker process alike.
    ``loaded``: the customers' records as the recompute of this transaction read them
    (a customer it left out is missing there as it would be here)."""
    from nrr.services.recompute.load import load_chunk  # the recompute's own reader

    settings = ctx.settings
    tz = settings.tz
    now = ctx.now
    months = ctx.months
    reporting = settings.reporting_currency.lower()
    lookup = domain_movements.factor_lookup(ctx.rates.rate, reporting)
    day = domain_movements.month_first_day(months[0][0])
    factors: dict[str, tuple[int, int]] = {}
    convert = domain_outlook.converter(factors, reporting)
    horizon_end = months[-1][2]
    skips: list[Skip] = []
    if loaded is None:
        data, _lines = load_chunk(session, chunk, ctx.catalogue, ctx.livemode)
    else:
        data = {cid: loaded[cid] for cid in chunk if cid in loaded}
    schedules, pending = _scheduled_inputs(session, chunk, ctx.livemode, skips)
    month_rows: list[tuple[Any, ...]] = []
    change_rows: list[tuple[Any, ...]] = []
    customers = 0
    for cid in chunk:
        customer_data: CustomerData | None = data.get(cid)
        if customer_data is None:
            continue
        try:
            history = domain_history.customer_history(customer_data, settings.policies, now=now)
            outlook = domain_outlook.customer_outlook(
                customer_data, history, now=now, policies=settings.policies,
                schedules=schedules.get(cid, ()), pending_updates=pending.get(cid, ()))
            if outlook.static:
                continue
            for currency in {*outlook.committed, *outlook.upper}:
                if currency != reporting and currency not in factors:
                    factors[currency] = lookup(currency, day)
        except Exception as exc:  # noqa: BLE001 - one customer never blanks an account
            # The recompute left this customer out with its reason; it has no outlook.
            skips.append(Skip(object_type="customer", object_id=cid,
                              reason=f"no outlook: {type(exc).__name__}: {exc}"))
            continue
        segment = segments.get(cid) or _segment_of(outlook, customer_data, months, day, lookup,
                                                   reporting, ctx.catalogue)
        for row in domain_outlook.project_customer_months(outlook, months, convert):
            month_rows.append((
                row.month, cid, row.opening_micro, row.closing_micro, row.movement,
                row.movement_micro, row.opening_upper_micro, row.closing_upper_micro,
                row.movement_upper, row.movement_upper_micro, *segment))
        for change in outlook.changes:
            if change.effective_at >= horizon_end:
                continue
            change_rows.append((
                month_of(change.effective_at, tz), change.effective_at, cid,
                change.subscription_id, change.cause, change.bound, change.currency,
                change.mrr_before_micro, change.mrr_after_micro,
                convert(change.currency, change.mrr_after_micro)
                - convert(change.currency, change.mrr_before_micro),
                change.stripe_ids))
        customers += 1
    return month_rows, change_rows, customers, skips


# From this many customers with something scheduled, worker processes compute them (as
# the recompute's pool does; ``NRR_RECOMPUTE_WORKERS`` sets their number, 0 or 1: none).
PARALLEL_MIN_CUSTOMERS = 1000


def _pool(session: Session, ctx: _Context, candidates: int) -> Any | None:
    import multiprocessing
    import os

    workers = ctx.settings.recompute_workers
    if workers is None:
        if candidates < PARALLEL_MIN_CUSTOMERS:
            return None
        workers = min(4, len(os.sched_getaffinity(0)))
    url = session.get_bind().engine.url
    if workers < 2 or (url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")):
        return None
    if multiprocessing.current_process().daemon:
        return None  # a Celery pool process may not have children
    context = multiprocessing.get_context("spawn")
    try:
        return context.Pool(workers, initializer=_worker_init,
                            initargs=(url.render_as_string(hide_password=False), ctx))
    except (AssertionError, OSError) as exc:
        log.warning("outlook.parallel_unavailable", error=str(exc))
        return None


_WORKER: dict[str, Any] = {}


def _worker_init(url: str, ctx: _Context) -> None:
    from nrr.db import make_engine

    _WORKER.update(engine=make_engine(url), ctx=ctx)


def _worker_chunk(job: tuple[list[str], dict[str, tuple[Any, ...]]]
                  ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], int, list[Skip]]:
    chunk, segments = job
    with Session(bind=_WORKER["engine"]) as session:
        try:
            return _compute_chunk(session, _WORKER["ctx"], chunk, segments)
        finally:
            session.rollback()


def refresh_outlook(session: Session, settings: Settings, *, now: int, livemode: bool,
                    catalogue: Any, rates: Any, customer_ids: Sequence[str] | None = None,
                    recompute_run_id: int | None = None,
                    loaded: Mapping[str, CustomerData] | None = None) -> OutlookResult:
    """Recompute and store the outlook of every customer (``customer_ids`` None) or of the
    given ones, as of ``now``. Called by the recompute after it wrote the facts; an
    incremental one hands over the records it ``loaded`` of ``customer_ids``."""
    started = time.perf_counter()
    result = OutlookResult()
    first = month_of(now, settings.tz)
    ctx = _Context(settings, catalogue, rates, livemode, now, horizon(first, settings.tz))

    if customer_ids is None:
        session.execute(delete(T_MONTHS))
        session.execute(delete(T_CHANGES))
        ids = _candidates(session, now, livemode, ctx.months[-1][2])
    else:
        listed = sorted(set(customer_ids))
        for chunk in in_chunks(listed):
            session.execute(delete(T_MONTHS).where(T_MONTHS.c.customer_id.in_(chunk)))
            session.execute(delete(T_CHANGES).where(T_CHANGES.c.customer_id.in_(chunk)))
        ids = _candidates(session, now, livemode, ctx.months[-1][2], listed)

    jobs = [(list(chunk), _segments(session, first, chunk)) for chunk in in_chunks(ids, CHUNK)]
    pool = _pool(session, ctx, len(ids)) if customer_ids is None else None
    try:
        parts = (pool.imap(_worker_chunk, jobs) if pool is not None
                 else (_compute_chunk(session, ctx, chunk, segments, loaded)
                       for chunk, segments in jobs))
        for month_rows, change_rows, customers, skips in parts:
            # Plain tuples through the driver (executemany on SQLite, COPY on PostgreSQL).
            bulk_insert(session, T_MONTHS, MONTH_COLUMNS, month_rows)
            bulk_insert(session, T_CHANGES, CHANGE_COLUMNS, change_rows)
            result.customers += customers
            result.changes += len(change_rows)
            result.skips.extend(skips)
        if pool is not None:
            pool.close()
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()

    session.add(OutlookRun(recompute_run_id=recompute_run_id, taken_at=now, first_month=first,
                           months=STORED_MONTHS, kind="full" if customer_ids is None else "incremental"))
    if customer_ids is None and session.get(OutlookOpening, first) is None:
        _store_opening(session, first, now)
    session.flush()
    result.seconds = time.perf_counter() - started
    log.info("outlook.stored", customers=result.customers, changes=result.changes,
             seconds=round(result.seconds, 3), parallel=pool is not None)
    return result


def _segment_of(outlook: domain_outlook.CustomerOutlook, data: CustomerData,
                months: Sequence[tuple[str, int, int]], day: Any, lookup: Any, reporting: str,
                catalogue: Any) -> tuple[Any, ...]:
    """The segment of a customer with no fact this month: its largest item when it first
    pays in the outlook."""
    paying = [at for steps in outlook.upper.values() for at, mrr in steps if mrr > 0 and at >= months[0][1]]
    item = None
    if paying:
        item = domain_movements.largest_item(list(outlook.intervals), min(paying), day,
                                             domain_movements._no_rate, reporting, factor=lookup)
    metadata = dict(data.customer.metadata) or None
    product = item.product_id if item is not None else None
    if product is not None:
        product = catalogue.product_names.get(product, product)
    return (item.currency if item else None, item.price_id if item else None, product,
            data.customer.country, metadata)


def _store_opening(session: Session, month: str, now: int) -> None:
    """Keep the drops the outlook holds for ``month`` at its opening (known in advance)."""
    session.add(OutlookOpening(month=month, taken_at=now))
    session.flush()
    drops = [{"month": month, "customer_id": cid, "movement": movement, "movement_micro": amount}
             for cid, movement, amount in session.execute(
                 select(T_MONTHS.c.customer_id, T_MONTHS.c.movement, T_MONTHS.c.movement_micro).where(
                     T_MONTHS.c.month == month, T_MONTHS.c.movement.in_(("churn", "contraction"))))]
    outlook_ids = set(session.scalars(select(T_MONTHS.c.customer_id).where(T_MONTHS.c.month == month)))
    for cid, movement, opening, closing in session.execute(
            select(T_FACTS.c.customer_id, T_FACTS.c.movement, T_FACTS.c.opening_mrr_micro,
                   T_FACTS.c.closing_mrr_micro).where(
                T_FACTS.c.month == month, T_FACTS.c.run_id == live_run_id(session),
                T_FACTS.c.movement.in_(("churn", "contraction")))):
        if cid not in outlook_ids:
            drops.append({"month": month, "customer_id": cid, "movement": movement,
                          "movement_micro": opening - closing})
    if drops:
        session.execute(insert(OutlookOpeningDrop), drops)


# --------------------------------------------------------------------------- reading


def latest_run(session: Session) -> OutlookRun | None:
    return session.scalars(select(OutlookRun).where(OutlookRun.kind == "full")
                           .order_by(OutlookRun.id.desc()).limit(1)).first() or session.scalars(
        select(OutlookRun).order_by(OutlookRun.id.desc()).limit(1)).first()


def _static_totals(session: Session, month: str, dimension: str | None
                   ) -> dict[str, tuple[MonthTotals, MonthTotals]]:
    """Per segment: (current month totals, later months' flat totals) of the customers with
    nothing scheduled. Read, not recomputed: the month's stored totals (``nrr report``'s own
    ``month_totals``, from ``segment_month_totals``) less the facts of the few customers the
    outlook holds rows for (read through ``outlook_months``, so their facts are looked up by
    customer, never scanned)."""
    from nrr.services.report import month_totals, segment_column, segment_label

    everyone = month_totals(session, month, dimension=dimension)
    F = CustomerMonthFact
    o, c = F.opening_mrr_micro, F.closing_mrr_micro
    keys: list[Any] = [F.movement]
    if dimension:
        keys.append(segment_column(dimension, F).label("segment"))
    query = (select(*keys, func.sum(o), func.sum(c), func.count(),
                    func.sum(case((o > 0, 1), else_=0)), func.sum(case((c > 0, 1), else_=0)))
             .select_from(OutlookMonth)
             .join(F, (F.customer_id == OutlookMonth.customer_id) & (F.month == OutlookMonth.month))
             .where(OutlookMonth.month == month).group_by(*keys))
    scheduled: dict[str, MonthTotals] = {}
    for row in session.execute(query):
        movement = row[0]
        key = segment_label(row[1]) if dimension else ""
        opening, closing, n_rows, n_open, n_close = (int(v or 0) for v in row[len(keys):])
        amount = closing - opening if movement in ("new", "reactivation", "expansion") \
            else opening - closing
        scheduled[key] = domain_outlook.add_group_to_totals(
            scheduled.get(key, MonthTotals()), movement, opening=opening, closing=closing,
            amount=amount, customers=n_rows, customers_opening=n_open, customers_closing=n_close)
    result: dict[str, tuple[MonthTotals, MonthTotals]] = {}
    for (_month, label), totals in everyone.items():
        key = label if dimension and label is not None else ""
        now_totals = _less(totals, scheduled.get(key, MonthTotals()))
        if key in result:  # two raw segments with one label
            now_totals = result[key][0] + now_totals
        result[key] = (now_totals, MonthTotals(
            opening=now_totals.closing, closing=now_totals.closing,
            customers_opening=now_totals.customers_closing,
            customers_closing=now_totals.customers_closing))
    # fx_impact is not the outlook's; a segment whose customers are all scheduled has none.
    return {key: (replace(now, fx_impact=0), flat) for key, (now, flat) in result.items()
            if replace(now, fx_impact=0) != MonthTotals()}


def _less(totals: MonthTotals, part: MonthTotals) -> MonthTotals:
    return MonthTotals(**{name: getattr(totals, name) - getattr(part, name)
                          for name in totals.__dataclass_fields__})


def outlook_report(session: Session, settings: Settings, *, months: int = DEFAULT_MONTHS,
                   by: str | None = None) -> dict[str, Any]:
    """The stored outlook as the JSON document of docs/outlook-schema.md."""
    from nrr.services.report import (
        parse_dimension,
        policies_in_force,
        segment_column,
        segment_label,
    )

    if not 1 <= months <= STORED_MONTHS:
        raise ValueError(f"--months must be 1 to {STORED_MONTHS}, got {months}")
    dimension = parse_dimension(by)
    run = latest_run(session)
    if run is None:
        raise OutlookUnavailable("no outlook stored yet: run `nrr recompute` (or `nrr sync`) first")
    currency = settings.reporting_currency.lower()
    first = run.first_month
    wanted = [add_months(first, n) for n in range(months)]
    static = _static_totals(session, first, dimension)
    # (segment, month) -> [committed, upper]
    totals: dict[tuple[str, str], list[MonthTotals]] = {}
    for key, (now_totals, flat) in static.items():
        for n, month in enumerate(wanted):
            base = now_totals if n == 0 else flat
            totals[(key, month)] = [base, base]
    M = OutlookMonth
    # Each bound's rows added up by SQL per month (segment) and movement: a few dozen
    # groups, whatever the number of customers with something scheduled.
    for bound, (o, c, movement, amount) in enumerate((
            (M.opening_micro, M.closing_micro, M.movement, M.movement_micro),
            (M.opening_upper_micro, M.closing_upper_micro, M.movement_upper,
             M.movement_upper_micro))):
        keys: list[Any] = [M.month, movement]
        if dimension:
            keys.append(segment_column(dimension, M).label("segment"))
        query = (select(*keys, func.sum(o), func.sum(c), func.sum(amount), func.count(),
                        func.sum(case((o > 0, 1), else_=0)), func.sum(case((c > 0, 1), else_=0)))
                 .where(M.month.in_(wanted)).group_by(*keys))
        for row in session.execute(query):
            key = segment_label(row[2]) if dimension else ""
            opening, closing, moved, n_rows, n_open, n_close = (
                int(v or 0) for v in row[len(keys):])
            pair = totals.setdefault((key, row[0]), [MonthTotals(), MonthTotals()])
            pair[bound] = domain_outlook.add_group_to_totals(
                pair[bound], row[1], opening=opening, closing=closing, amount=moved,
                customers=n_rows, customers_opening=n_open, customers_closing=n_close)
    trials: dict[str, int] = {}
    changes = []
    C = OutlookChange
    for change in session.scalars(select(C).where(C.month.in_(wanted))
                                  .order_by(C.effective_at, C.customer_id, C.subscription_id)):
        if change.cause == "trial_end" and change.bound == "upper":
            trials[change.month] = trials.get(change.month, 0) + change.amount_micro
        changes.append(change_document(change, currency))
    month_docs = []
    for n, month in enumerate(wanted):
        committed = sum((v[0] for (k, m), v in totals.items() if m == month), MonthTotals())
        upper = sum((v[1] for (k, m), v in totals.items() if m == month), MonthTotals())
        doc = month_document(month, committed, upper, trials.get(month, 0), currency, partial=n == 0)
        if dimension:
            doc["segments"] = [
                {"segment": key, **month_document(month, v[0], v[1], 0, currency, partial=n == 0)}
                for (key, m), v in sorted(totals.items()) if m == month]
        month_docs.append(doc)
    return {
        "taken_at": iso(run.taken_at),
        "reporting_currency": currency, "dimension": dimension,
        "policies": policies_in_force(settings),
        "months": month_docs, "movements": changes,
    }


