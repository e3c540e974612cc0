"""Retention reports from the stored monthly facts: totals, segments, T12M, cohorts, customers.

The heavy work is one SQL aggregation per question (SUM/CASE over ``customer_month_facts``,
portable between SQLite and PostgreSQL); :mod:`nrr.domain.metrics` turns the sums into
exact ratios. Movement amounts are derived from each fact's opening and closing (the table
of docs/revenue-definitions.md), so opening + movements = closing holds in every total
and segment by construction; the stored ``movement`` only tells new from reactivation.

The public JSON shape of every report is documented in ``docs/report-schema.md``.
Services never commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    case,
    func,
    or_,
    select,
)
from sqlalchemy.orm import Session, aliased

from models.derived import CustomerMonthFact, LedgerEntry, RecomputeRun, SegmentMonthTotal
from models.mirror import StripeCustomer
from nrr.domain import metrics
from nrr.domain.metrics import CohortTotals, MonthTotals, Ratio
from nrr.domain.money import major_rounded
from nrr.domain.months import add_months, current_month, month_range
from nrr.logs import get_logger
from nrr.services import segment_totals
from nrr.settings import Settings

log = get_logger(__name__)

F = CustomerMonthFact
PERIODS = ("monthly", "t12m")
BASE_DIMENSIONS = ("plan", "product", "currency", "country")
METADATA_PREFIX = "metadata:"
NO_SEGMENT = "(none)"

MONTHLY_DEFINITIONS = ("nrr", "grr", "mrr", "arr", "logo_churn_rate", "revenue_churn_rate",
                       "quick_ratio", "arpa")
T12M_DEFINITIONS = ("nrr_t12m", "grr_t12m")
COHORT_DEFINITIONS = ("cohort_net_retention", "cohort_gross_retention")


class InvalidDimension(ValueError):
    """``--by`` names no known dimension."""


class CustomerNotFound(LookupError):
    """No facts, ledger entries or mirror row for the customer id."""


# --------------------------------------------------------------------------- dimensions


def parse_dimension(by: str | None) -> str | None:
    """Check a dimension name: plan, product, currency, country or metadata:KEY."""
    if by is None:
        return None
    name = by.strip()
    if name in BASE_DIMENSIONS:
        return name
    if name.startswith(METADATA_PREFIX) and name[len(METADATA_PREFIX):].strip():
        return METADATA_PREFIX + name[len(METADATA_PREFIX):].strip()
    raise InvalidDimension(
        f"unknown dimension {by!r}: use one of {', '.join(BASE_DIMENSIONS)} or metadata:KEY "
        f"(for example metadata:tier)")


def segment_column(dimension: str, table: Any = F) -> ColumnElement[Any]:
    """The SQL expression of a fact's segment on ``dimension`` (fixed at the month's opening)."""
    if dimension in BASE_DIMENSIONS:
        return getattr(table, dimension)  # type: ignore[no-any-return]
    key = dimension[len(METADATA_PREFIX):]
    return table.metadata_[key].as_string()  # type: ignore[no-any-return]


def segment_label(value: Any) -> str:
    return NO_SEGMENT if value is None or value == "" else str(value)


def _segment_filter(dimension: str, segment: str, table: Any = F) -> ColumnElement[bool]:
    column = segment_column(dimension, table)
    if segment == NO_SEGMENT:
        return or_(column.is_(None), column == "")
    return column == segment


# --------------------------------------------------------------------------- movement expressions


def _movement_amount(table: Any = F) -> ColumnElement[Any]:
    """A fact's movement amount (micro, positive) from its label, opening o and closing c."""
    o, c = table.opening_mrr_micro, table.closing_mrr_micro
    return case((table.movement.in_(("new", "reactivation", "expansion")), c - o),
                (table.movement.in_(("contraction", "churn")), o - c), else_=0)


def _count(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return func.sum(case((condition, 1), else_=0))


def _int(value: Any) -> int:
    # SUM over BIGINT is NUMERIC on PostgreSQL (Decimal) and NULL over no rows.
    return 0 if value is None else int(value)


def _add_group(totals: MonthTotals, movement: str | None, opening: int, closing: int,
               fx_impact: int, customers: int, paying_at_opening: int,
               paying_at_closing: int, *, problems: list[str], where: str) -> MonthTotals:
    """Fold one movement group's sums into ``totals``.

    Each labelled group contributes closing - opening (or opening - closing) to its
    movement, so opening + movements = closing holds whatever the rows hold; a group whose
    sums contradict its label (a "steady" group that moved, a churn still paying) is
    reported in ``problems``.
    """
    change = closing - opening
    values = {name: getattr(totals, name) for name in totals.__dataclass_fields__}
    values["opening"] += opening
    values["closing"] += closing
    values["fx_impact"] += fx_impact
    values["customers_opening"] += paying_at_opening
    values["customers_closing"] += paying_at_closing
    sound = True
    if movement in ("new", "reactivation"):
        values[movement] += change
        values["customers_new" if movement == "new" else "customers_reactivated"] += customers
        sound = opening == 0 and paying_at_closing == customers
    elif movement == "expansion":
        values["expansion"] += change
        values["customers_expanded"] += customers
        sound = change >= 0 and paying_at_opening == customers
    elif movement == "contraction":
        values["contraction"] -= change
        values["customers_contracted"] += customers
        sound = change <= 0 and paying_at_closing == customers
    elif movement == "churn":
        values["churn"] -= change
        values["customers_churned"] += customers
        sound = closing == 0 and paying_at_opening == customers
    else:
        sound = movement is None and change == 0
    if not sound:
        problems.append(f"{where}: the stored facts labelled {movement or 'no movement'} "
                        f"do not match their opening and closing MRR; run `nrr recompute`")
    return MonthTotals(**values)


def month_totals(session: Session, first: str, last: str | None = None, *,
                 dimension: str | None = None,
                 problems: list[str] | None = None) -> dict[tuple[str, str | None], MonthTotals]:
    """Sums per month (and segment label when ``dimension`` is given) over ``first``..``last``.

    Keys are ``(month, segment)``; ``segment`` is None without a dimension. Months with
    no facts are absent. The groups (month, segment, movement) come from the stored
    segment totals when the live run has them (``nrr.services.segment_totals``), else from
    one GROUP BY month, movement over the facts (the month's range of their primary key);
    either way the movements come from each
    group's opening and closing sums. Contradictions between labels and amounts are
    appended to ``problems``.
    """
    last = last or first
    dimension = parse_dimension(dimension)
    run_id = segment_totals.readable_run(session, dimension)
    groups = (_month_groups_from_totals(session, run_id, first, last, dimension)
              if run_id is not None else _month_groups_from_facts(session, first, last, dimension))
    found: dict[tuple[str, str | None], MonthTotals] = {}
    issues = problems if problems is not None else []
    for (month, raw, movement), values in groups.items():
        label = segment_label(raw) if dimension else None
        opening, closing, fx_impact, customers, at_opening, at_closing = values
        key = (month, label)
        # Two raw values can share a label ("" and NULL both read as "(none)").
        found[key] = _add_group(found.get(key, MonthTotals()), movement, opening, closing,
                                fx_impact, customers, at_opening, at_closing, problems=issues,
                                where=month if label is None else f"{month} {dimension}={label}")
    for problem in issues:
        log.warning("report.inconsistent_facts", problem=problem)
    return found


_MonthGroups = dict[tuple[str, Any, str | None], list[int]]


def _month_groups_from_facts(session: Session, first: str, last: str,
                             dimension: str | None) -> _MonthGroups:
    keys: list[Any] = [F.month]
    if dimension:
        keys.append(segment_column(dimension).label("segment"))
    keys.append(F.movement)
    where = F.month == first if first == last else F.month.between(first, last)
    query = (
        select(*keys, func.sum(F.opening_mrr_micro), func.sum(F.closing_mrr_micro),
               func.sum(F.fx_impact_micro), func.count(), _count(F.opening_mrr_micro > 0),
               _count(F.closing_mrr_micro > 0))
        .where(where).group_by(*keys)
    )
    groups: _MonthGroups = {}
    for row in session.execute(query):
        raw = row[1] if dimension else None
        groups[(row[0], raw, row[len(keys) - 1])] = [_int(v) for v in row[len(keys):]]
    return groups


def _month_groups_from_totals(session: Session, run_id: int, first: str, last: str,
                              dimension: str | None) -> _MonthGroups:
    """The same groups out of the stored totals (a metadata key's value is taken out of
    each stored metadata object, and groups with one value are added up, as SQL would)."""
    t = SegmentMonthTotal
    query = (
        select(t.month, t.segment, t.movement, t.opening_micro, t.closing_micro,
               t.fx_impact_micro, t.customers, t.paying_at_opening, t.paying_at_closing)
        .where(t.run_id == run_id, t.shard.is_(None), t.period == "monthly",
               t.dimension == segment_totals.stored_dimension(dimension),
               t.month == first if first == last else t.month.between(first, last))
    )
    key = dimension[len(METADATA_PREFIX):] if dimension and dimension.startswith(
        METADATA_PREFIX) else None
    groups: _MonthGroups = {}
    for month, segment, movement, *values in session.execute(query):
        raw = segment_totals.metadata_value(segment, key) if key is not None else segment
        numbers = [_int(v) for v in values]
        found = groups.get((month, raw, movement))
        if found is None:
            groups[(month, raw, movement)] = numbers
        else:
            for index, value in enumerate(numbers):
                found[index] += value
    return groups


def cohort_totals(session: Session, month: str, *,
                  dimension: str | None = None) -> dict[str | None, CohortTotals]:
    """The T12M cohort of ``month``: members paying at the opening of M-11, seen at M's closing.

    Both ends in constant currency: each member's opening of M-11 converted at the rate of
    M's first day (``opening_t12m_micro``), as its closing of M is; ``fx_impact`` is the
    difference from the opening at its own month's rate (the window's currency effect)."""
    dimension = parse_dimension(dimension)
    run_id = segment_totals.readable_run(session, dimension)
    if run_id is not None:
        return _cohort_totals_from_totals(session, run_id, month, dimension)
    first = add_months(month, -11)
    start = aliased(F, name="cohort_start")
    end = aliased(F, name="cohort_end")
    own_rate_opening = start.opening_mrr_micro
    opening = func.coalesce(start.opening_t12m_micro, own_rate_opening)
    closing = func.coalesce(end.closing_mrr_micro, 0)
    keys: list[ColumnElement[Any]] = []
    if dimension:
        keys.append(segment_column(dimension, start).label("segment"))
    columns = [
        func.sum(opening), func.sum(closing),
        func.sum(case((closing < opening, closing), else_=opening)),
        func.sum(case((closing > opening, closing - opening), else_=0)),
        func.sum(case((and_(closing > 0, closing < opening), opening - closing), else_=0)),
        func.sum(case((closing == 0, opening), else_=0)),
        func.count(), _count(closing > 0), _count(closing == 0),
        func.sum(opening - own_rate_opening),
    ]
    query = (
        select(*keys, *columns)
        .select_from(start)
        .outerjoin(end, and_(end.customer_id == start.customer_id, end.month == month))
        .where(start.month == first, own_rate_opening > 0)
    )
    if keys:
        query = query.group_by(*keys)
    names = ("opening", "closing", "kept", "expansion", "contraction", "churn", "members",
             "members_paying", "members_churned", "fx_impact")
    found: dict[str | None, CohortTotals] = {}
    for row in session.execute(query):
        label = segment_label(row[0]) if dimension else None
        totals = CohortTotals(**{name: _int(v) for name, v in zip(names, row[len(keys):],
                                                                   strict=True)})
        found[label] = found[label] + totals if label in found else totals
    return found


def _cohort_totals_from_totals(session: Session, run_id: int, month: str,
                               dimension: str | None) -> dict[str | None, CohortTotals]:
    t = SegmentMonthTotal
    key = dimension[len(METADATA_PREFIX):] if dimension and dimension.startswith(
        METADATA_PREFIX) else None
    found: dict[str | None, CohortTotals] = {}
    for row in session.execute(
            select(t.segment, t.opening_micro, t.closing_micro, t.kept_micro,
                   t.expansion_micro, t.contraction_micro, t.churn_micro, t.customers,
                   t.paying_at_closing, t.churned, t.fx_impact_micro)
            .where(t.run_id == run_id, t.shard.is_(None), t.period == "t12m",
                   t.dimension == segment_totals.stored_dimension(dimension),
                   t.month == month)):
        raw = segment_totals.metadata_value(row[0], key) if key is not None else row[0]
        label = segment_label(raw) if dimension else None
        totals = CohortTotals(**{name: _int(v) for name, v in zip(_COHORT_NAMES, row[1:],
                                                                   strict=True)})
        found[label] = found[label] + totals if label in found else totals
    return found


_COHORT_NAMES = ("opening", "closing", "kept", "expansion", "contraction", "churn", "members",
                 "members_paying", "members_churned", "fx_impact")


# --------------------------------------------------------------------------- context


@dataclass(frozen=True)
class _Context:
    currency: str
    policies: dict[str, Any]
    definitions: dict[str, dict[str, Any]]
    data_first: str | None
    data_last: str | None
    current: str
    notes: tuple[str, ...]
    left_out: int = 0


def policies_in_force(settings: Settings) -> dict[str, Any]:
    """The named policies plus the reporting currency and time zone, as reports state them."""
    return {**settings.policies.as_dict(), "reporting_currency": settings.reporting_currency,
            "timezone": settings.timezone}


def _data_range(session: Session) -> tuple[str | None, str | None]:
    # Two statements: SQLite answers a lone MIN or MAX from the index, not both at once.
    first = session.scalar(select(func.min(F.month)))
    last = session.scalar(select(func.max(F.month)))
    return first, last


def _recompute_notes(session: Session, settings: Settings, policies: dict[str, Any]) -> list[str]:
    """Say when the stored facts were computed under other policies than the ones in force."""
    run = session.execute(
        select(RecomputeRun.policies, RecomputeRun.reporting_currency, RecomputeRun.timezone)
        .where(RecomputeRun.finished_at.is_not(None))
        .order_by(RecomputeRun.finished_at.desc(), RecomputeRun.id.desc()).limit(1)
    ).first()
    if run is None:
        return []
    stored = {**(run.policies or {}), "reporting_currency": run.reporting_currency,
              "timezone": run.timezone}
    changed = sorted(key for key, value in policies.items()
                     if key in stored and stored[key] != value)
    if not changed:
        return []
    return [f"the stored facts were computed with other settings for {', '.join(changed)}; "
            f"run `nrr recompute` so the numbers follow the policies in force"]


def _context(session: Session, settings: Settings, definitions: Sequence[str],
             now: datetime | None) -> _Context:
    from nrr.catalogue import load_catalogue

    policies = policies_in_force(settings)
    first, last = _data_range(session)
    from nrr.services.isolation import left_out_count, left_out_note

    left_out = left_out_count(session)
    left_note = left_out_note(left_out)
    return _Context(
        currency=settings.reporting_currency,
        policies=policies,
        definitions=load_catalogue(settings).definitions(tuple(definitions)),
        data_first=first,
        data_last=last,
        current=current_month(settings.tz, now or datetime.now(UTC)),
        notes=tuple([*_recompute_notes(session, settings, policies),
                     *([left_note] if left_note else [])]),
        left_out=left_out,
    )


def _month_notes(ctx: _Context, month: str) -> list[str]:
    notes = list(ctx.notes)
    if ctx.data_first is None:
        notes.append("no facts are stored yet: run `nrr sync` and `nrr recompute` first")
    elif not ctx.data_first <= month <= ctx.data_last:  # type: ignore[operator]
        notes.append(f"{month} is outside the stored facts ({ctx.data_first} to "
                     f"{ctx.data_last}): amounts are zero and ratios null")
    if month == ctx.current:
        notes.append(f"{month} is the current month and not finished: numbers are partial")
    elif month > ctx.current:
        notes.append(f"{month} is in the future")
    return notes


def _outside(ctx: _Context, month: str) -> bool:
    return ctx.data_first is None or not ctx.data_first <= month <= ctx.data_last  # type: ignore[operator]


# --------------------------------------------------------------------------- rendering


def _money(value_micro: int | Fraction | None, currency: str) -> float | None:
    if value_micro is None:
        return None
    if isinstance(value_micro, Fraction):
        value_micro = metrics.round_micro(value_micro)
    return major_rounded(value_micro, currency)


def _put_percent(document: dict[str, Any], key: str, value: Ratio) -> None:
    document[key] = metrics.percent_display(value)
    if value.is_null:
        document[f"{key}_reason"] = value.reason


def _monthly_object(month: str, totals: MonthTotals, ctx: _Context, *,
                    segment: str | None = None, reason_override: str | None = None) -> dict[str, Any]:
    cur = ctx.currency
    computed = metrics.monthly_metrics(totals, month)
    if reason_override:
        # A month without facts: every null says so rather than "no paying customers".
        nulls: dict[str, Any] = {
            name: Ratio(None, reason_override)
            for name in ("nrr", "grr", "logo_churn_rate", "revenue_churn_rate", "quick_ratio")
            if getattr(computed, name).is_null}
        computed = replace(computed, **nulls)
        if computed.arpa_micro is None:
            computed = replace(computed, arpa_reason=reason_override)
    nrr, grr = computed.nrr, computed.grr
    document: dict[str, Any] = {}
    if segment is not None:
        document["segment"] = segment
    document.update({
        "month": month,
        "period": "monthly",
        "currency": cur,
        "opening_mrr": _money(totals.opening, cur),
        "new": _money(totals.new, cur),
        "reactivation": _money(totals.reactivation, cur),
        "expansion": _money(totals.expansion, cur),
        "contraction": _money(totals.contraction, cur),
        "churn": _money(totals.churn, cur),
        "closing_mrr": _money(totals.closing, cur),
        "fx_impact": _money(totals.fx_impact, cur),
    })
    _put_percent(document, "nrr", nrr)
    _put_percent(document, "grr", grr)
    document["customers"] = {
        "opening": totals.customers_opening,
        "new": totals.customers_new,
        "reactivated": totals.customers_reactivated,
        "churned": totals.customers_churned,
        "closing": totals.customers_closing,
    }
    document["band"] = metrics.band(nrr)
    document["grr_band"] = metrics.band(grr)
    document["mrr"] = _money(computed.mrr_micro, cur)
    document["arr"] = _money(computed.arr_micro, cur)
    _put_percent(document, "logo_churn_rate", computed.logo_churn_rate)
    _put_percent(document, "revenue_churn_rate", computed.revenue_churn_rate)
    document["quick_ratio"] = metrics.ratio_display(computed.quick_ratio)
    if computed.quick_ratio.is_null:
        document["quick_ratio_reason"] = computed.quick_ratio.reason
    document["arpa"] = _money(computed.arpa_micro, cur)
    if computed.arpa_micro is None:
        document["arpa_reason"] = computed.arpa_reason
    document["partial"] = month == ctx.current
    document["policies"] = ctx.policies
    return document


def _trailing_object(month: str, cohort: CohortTotals, ctx: _Context, *,
                     segment: str | None = None, reason_override: str | None = None) -> dict[str, Any]:
    cur = ctx.currency
    first = add_months(month, -11)
    computed = metrics.trailing_metrics(cohort, first)
    nrr, grr = computed.nrr, computed.grr
    if reason_override:
        nrr, grr = Ratio(None, reason_override), Ratio(None, reason_override)
    document: dict[str, Any] = {}
    if segment is not None:
        document["segment"] = segment
    document.update({
        "month": month,
        "period": "t12m",
        "first_month": first,
        "currency": cur,
        "cohort_opening_mrr": _money(cohort.opening, cur),
        "cohort_closing_mrr": _money(cohort.closing, cur),
        "expansion": _money(cohort.expansion, cur),
        "contraction": _money(cohort.contraction, cur),
        "churn": _money(cohort.churn, cur),
        "fx_impact": _money(cohort.fx_impact, cur),
    })
    _put_percent(document, "nrr", nrr)
    _put_percent(document, "grr", grr)
    document["band"] = metrics.band(nrr)
    document["grr_band"] = metrics.band(grr)
    document["customers"] = {
        "cohort": cohort.members,
        "paying": cohort.members_paying,
        "churned": cohort.members_churned,
    }
    _put_percent(document, "logo_churn_rate", computed.logo_churn_rate)
    document["partial"] = month == ctx.current
    document["policies"] = ctx.policies
    return document


def _no_data_reason(ctx: _Context, month: str) -> str | None:
    if ctx.data_first is None:
        return "no facts are stored yet"
    if _outside(ctx, month):
        return f"no facts stored for {month} (stored: {ctx.data_first} to {ctx.data_last})"
    return None


def _t12m_reason(ctx: _Context, month: str) -> str | None:
    reason = _no_data_reason(ctx, month)
    if reason:
        return reason
    first = add_months(month, -11)
    if _outside(ctx, first):
        return (f"the trailing twelve months need facts from {first}; stored facts start at "
                f"{ctx.data_first}")
    return None


def _monthly_documents(session: Session, ctx: _Context, months: list[str],
                       dimension: str | None,
                       problems: list[str]) -> dict[str, dict[str, Any]]:
    """One document per month (with ``segments`` when ``dimension`` is set)."""
    sums = month_totals(session, months[0], months[-1], problems=problems) if months else {}
    by_segment: dict[tuple[str, str | None], MonthTotals] = {}
    if dimension and months:
        by_segment = month_totals(session, months[0], months[-1], dimension=dimension)
    documents: dict[str, dict[str, Any]] = {}
    for month in months:
        reason = _no_data_reason(ctx, month)
        total = sums.get((month, None), MonthTotals())
        document = _monthly_object(month, total, ctx, reason_override=reason)
        if dimension:
            segments = sorted(((label, totals) for (m, label), totals in by_segment.items()
                               if m == month),
                              key=lambda item: (-item[1].opening, -item[1].closing,
                                                str(item[0])))
            document = _with_segments(document, dimension, [
                _monthly_object(month, totals, ctx, segment=str(label), reason_override=reason)
                for label, totals in segments])
        documents[month] = document
    return documents


def _trailing_document(session: Session, ctx: _Context, month: str,
                       dimension: str | None) -> dict[str, Any]:
    reason = _t12m_reason(ctx, month)
    total = cohort_totals(session, month).get(None, CohortTotals())
    document = _trailing_object(month, total, ctx, reason_override=reason)
    if dimension:
        segments = sorted(cohort_totals(session, month, dimension=dimension).items(),
                          key=lambda item: (-item[1].opening, str(item[0])))
        document = _with_segments(document, dimension, [
            _trailing_object(month, totals, ctx, segment=str(label), reason_override=reason)
            for label, totals in segments])
    return document


def _with_segments(total: dict[str, Any], dimension: str,
                   segments: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "month": total["month"],
        "period": total["period"],
        "currency": total["currency"],
        "dimension": dimension,
        "segments": segments,
        "total": {k: v for k, v in total.items() if k != "policies"},
        "partial": total["partial"],
        "policies": total["policies"],
    }


def _finish(document: dict[str, Any], ctx: _Context, notes: list[str]) -> dict[str, Any]:
    document["left_out_customers"] = ctx.left_out
    document["definitions"] = ctx.definitions
    if notes:
        document["notes"] = notes
    return document


# --------------------------------------------------------------------------- public API


def monthly_report(session: Session, settings: Settings, month: str, *, period: str = "monthly",
                   by: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """The report of ``month`` (``YYYY-MM``) as the public JSON document (docs/report-schema.md).

    ``period`` is ``monthly`` or ``t12m``; ``by`` a dimension (``plan``, ``product``,
    ``currency``, ``country``, ``metadata:KEY``) for one object per segment.
    """
    if period not in PERIODS:
        raise ValueError(f"unknown period {period!r}: use monthly or t12m")
    dimension = parse_dimension(by)
    ctx = _context(session, settings,
                   MONTHLY_DEFINITIONS if period == "monthly" else T12M_DEFINITIONS, now)
    notes = _month_notes(ctx, month)
    if period == "monthly":
        document = _monthly_documents(session, ctx, [month], dimension, notes)[month]
        if month < ctx.current:
            # The share of the month's churn and contraction the outlook at its opening held.
            document["known_in_advance"] = known_in_advance(session, settings, month)
    else:
        document = _trailing_document(session, ctx, month, dimension)
        first = add_months(month, -11)
        if ctx.data_first is not None and first < ctx.data_first <= month:
            notes.append(f"the trailing twelve months start at {first}, before the stored "
                         f"facts ({ctx.data_first})")
    return _finish(document, ctx, notes)


def report_series(session: Session, settings: Settings, first: str, last: str, *,
                  period: str = "monthly", by: str | None = None,
                  now: datetime | None = None) -> dict[str, Any]:
    """One report per month from ``first`` to ``last`` (inclusive), in ``months``."""
    if period not in PERIODS:
        raise ValueError(f"unknown period {period!r}: use monthly or t12m")
    if first > last:
        raise ValueError(f"--from {first} is after --to {last}")
    dimension = parse_dimension(by)
    months = month_range(first, last)
    ctx = _context(session, settings,
                   MONTHLY_DEFINITIONS if period == "monthly" else T12M_DEFINITIONS, now)
    if period == "monthly":
        problems: list[str] = []
        documents = _monthly_documents(session, ctx, months, dimension, problems)
        reports = [documents[m] for m in months]
    else:
        reports = [_trailing_document(session, ctx, m, dimension) for m in months]
    for report in reports:
        report.pop("policies", None)
    notes = list(ctx.notes)
    if period == "monthly":
        notes.extend(problems)
    if ctx.data_first is None:
        notes.append("no facts are stored yet: run `nrr sync` and `nrr recompute` first")
    else:
        outside = [m for m in months if _outside(ctx, m)]
        if outside:
            notes.append(f"{len(outside)} month(s) outside the stored facts ({ctx.data_first} "
                         f"to {ctx.data_last}) report zeros and nulls")
    if first <= ctx.current <= last:
        notes.append(f"{ctx.current} is the current month and not finished: numbers are partial")
    document: dict[str, Any] = {
        "from": first, "to": last, "period": period, "currency": ctx.currency,
    }
    if dimension:
        document["dimension"] = dimension
    document["months"] = reports
    document["policies"] = ctx.policies
    return _finish(document, ctx, notes)


def cohort_table(session: Session, settings: Settings, *,
                 now: datetime | None = None) -> dict[str, Any]:
    """Customers grouped by the month they first paid; MRR retention per month since.

    Each cohort's base is its members' closing MRR of their first paying month; month k's
    net retention is their closing MRR of month k over the base, gross retention the sum
    of min(closing of k, the member's base) over the base.
    """
    ctx = _context(session, settings, COHORT_DEFINITIONS, now)
    base = aliased(F, name="cohort_base")
    later = aliased(F, name="later")
    base_rows = session.execute(
        select(base.month, func.count(), func.sum(base.closing_mrr_micro))
        .where(base.first_paid_month == base.month)
        .group_by(base.month)
    ).all()
    kept = case((later.closing_mrr_micro < base.closing_mrr_micro, later.closing_mrr_micro),
                else_=base.closing_mrr_micro)
    # Every fact carries its customer's first paying month, so each later row finds its
    # base row by primary key (month, customer_id) in one pass over the facts.
    cells = session.execute(
        select(later.first_paid_month, later.month, func.sum(later.closing_mrr_micro),
               func.sum(kept), _count(later.closing_mrr_micro > 0))
        .select_from(later)
        .join(base, and_(base.month == later.first_paid_month,
                         base.customer_id == later.customer_id))
        .where(later.first_paid_month.is_not(None), later.month >= later.first_paid_month)
        .group_by(later.first_paid_month, later.month)
    ).all()
    by_cell = {(row[0], row[1]): (_int(row[2]), _int(row[3]), _int(row[4])) for row in cells}
    last = ctx.data_last
    cohorts = []
    for cohort_month, members, base_sum in sorted(base_rows, key=lambda r: r[0]):
        base_micro = _int(base_sum)
        months = []
        for offset, month in enumerate(month_range(cohort_month, last or cohort_month)):
            closing, kept_sum, paying = by_cell.get((cohort_month, month), (0, 0, 0))
            net, gross = metrics.cohort_retention(base_micro, closing, kept_sum)
            cell: dict[str, Any] = {
                "month": month, "months_since": offset, "mrr": _money(closing, ctx.currency),
                "customers_paying": paying,
                "net_retention": metrics.percent_display(net),
                "gross_retention": metrics.percent_display(gross),
                "partial": month == ctx.current,
            }
            if net.is_null:
                cell["reason"] = net.reason
            months.append(cell)
        cohorts.append({
            "cohort": cohort_month, "customers": int(members),
            "starting_mrr": _money(base_micro, ctx.currency), "months": months,
        })
    notes = list(ctx.notes)
    if not cohorts:
        notes.append("no customer has paid yet in the stored facts")
    document: dict[str, Any] = {"currency": ctx.currency, "cohorts": cohorts,
                                "policies": ctx.policies}
    return _finish(document, ctx, notes)


def _instant(value: int | None) -> str | None:
    if value is None:
        return None
    return datetime.fromtimestamp(value, tz=UTC).isoformat().replace("+00:00", "Z")


def _ledger_entry(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "effective_at": _instant(entry.effective_at),
        "month": entry.month,
        "cause": entry.cause,
        "subscription_id": entry.subscription_id,
        "subscription_item_id": entry.subscription_item_id,
        "currency": entry.currency,
        "mrr_before": _money(entry.mrr_before_micro, entry.currency),
        "mrr_after": _money(entry.mrr_after_micro, entry.currency),
        "change": _money(entry.mrr_after_micro - entry.mrr_before_micro, entry.currency),
        "before": entry.before,
        "after": entry.after,
        "stripe_ids": entry.stripe_ids or {},
    }


def customer_detail(session: Session, settings: Settings, customer_id: str) -> dict[str, Any]:
    """One customer's MRR history (month by month), movements and the ledger causes behind them."""
    cur = settings.reporting_currency
    stored = session.get(StripeCustomer, customer_id)
    facts = session.execute(
        select(F, F.movement.label("kind"), _movement_amount().label("amount"))
        .where(F.customer_id == customer_id).order_by(F.month)
    ).all()
    ledger = session.execute(
        select(LedgerEntry).where(LedgerEntry.customer_id == customer_id)
        .order_by(LedgerEntry.effective_at, LedgerEntry.id)
    ).scalars().all()
    from nrr.services.isolation import left_out_customer

    left_out = left_out_customer(session, customer_id)
    if stored is None and not facts and not ledger and left_out is None:
        raise CustomerNotFound(f"no customer {customer_id!r} in the stored data")
    causes_by_month: dict[str, list[dict[str, Any]]] = {}
    for entry in ledger:
        causes_by_month.setdefault(entry.month, []).append(_ledger_entry(entry))
    history = []
    for fact, kind, amount in facts:
        history.append({
            "month": fact.month,
            "opening_mrr": _money(fact.opening_mrr_micro, cur),
            "closing_mrr": _money(fact.closing_mrr_micro, cur),
            "movement": kind,
            "amount": _money(_int(amount), cur),
            "fx_impact": _money(fact.fx_impact_micro, cur),
            "segment": {"currency": fact.currency, "plan": fact.plan, "product": fact.product,
                        "country": fact.country, "metadata": fact.metadata_ or {}},
            "causes": [c["cause"] for c in causes_by_month.get(fact.month, [])],
        })
    first_paid = next((f.first_paid_month for f, _k, _a in facts if f.first_paid_month), None)
    return {
        "customer_id": customer_id,
        "name": stored.name if stored else None,
        "email": stored.email if stored else None,
        "country": stored.country if stored else None,
        "deleted": bool(stored.deleted) if stored else None,
        "currency": cur,
        "first_paid_month": first_paid,
        "current_mrr": history[-1]["closing_mrr"] if history else None,
        "history": history,
        "movements": [{"month": h["month"], "movement": h["movement"], "amount": h["amount"],
                       "causes": h["causes"]} for h in history if h["movement"]],
        "ledger": [item for month in sorted(causes_by_month) for item in causes_by_month[month]],
        # Set when the last recompute could not compute this customer: it is in no number.
        "left_out": left_out,
        "scheduled": _scheduled_changes(session, settings, customer_id),
        "policies": policies_in_force(settings),
    }


def _scheduled_changes(session: Session, settings: Settings, customer_id: str) -> list[dict[str, Any]]:
    """The customer's scheduled changes from the stored outlook (``nrr.services.outlook``)."""
    from models.outlook import OutlookChange

    currency = settings.reporting_currency.lower()
    return [{"effective_at": _instant(c.effective_at), "month": c.month, "cause": c.cause,
             "bound": c.bound, "amount": major_rounded(c.amount_micro, currency),
             "subscription_id": c.subscription_id, "stripe_ids": c.stripe_ids}
            for c in session.scalars(select(OutlookChange)
                                     .where(OutlookChange.customer_id == customer_id)
                                     .order_by(OutlookChange.effective_at))]


customer_changes = _scheduled_changes


def top_movements(session: Session, settings: Settings, month: str, *,
                  kinds: Iterable[str] = ("churn", "contraction"), limit: int = 5,
                  dimension: str | None = None, segment: str | None = None) -> list[dict[str, Any]]:
    """The largest movements of ``kinds`` in ``month`` (optionally in one segment), with causes.

    Each item: ``customer_id``, ``name``, ``email``, ``movement``, ``amount`` (major units
    of the reporting currency), ``amount_micro``, ``opening_mrr``, ``closing_mrr``,
    ``segment`` (when a dimension is given) and ``causes`` (the ledger entries of the
    month, newest last).
    """
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in metrics.MOVEMENTS]
    if unknown:
        raise ValueError(f"unknown movement kind(s) {', '.join(unknown)}: use "
                         f"{', '.join(metrics.MOVEMENTS)}")
    dimension = parse_dimension(dimension)
    if segment is not None and dimension is None:
        raise InvalidDimension("a segment needs its dimension")
    cur = settings.reporting_currency
    amount = _movement_amount()
    columns: list[Any] = [F.customer_id, F.opening_mrr_micro, F.closing_mrr_micro,
                          F.movement.label("kind"), amount.label("amount"),
                          StripeCustomer.name, StripeCustomer.email]
    if dimension:
        columns.append(segment_column(dimension).label("segment"))
    query = (
        select(*columns)
        .select_from(F)
        .outerjoin(StripeCustomer, StripeCustomer.id == F.customer_id)
        .where(F.month == month, F.movement.in_(kinds))
        .order_by(amount.desc(), F.customer_id)
        .limit(max(0, limit))
    )
    if dimension and segment is not None:
        query = query.where(_segment_filter(dimension, segment))
    rows = session.execute(query).all()
    ids = [row.customer_id for row in rows]
    causes: dict[str, list[dict[str, Any]]] = {cid: [] for cid in ids}
    if ids:
        for entry in session.execute(
            select(LedgerEntry)
            .where(LedgerEntry.month == month, LedgerEntry.customer_id.in_(ids))
            .order_by(LedgerEntry.effective_at, LedgerEntry.id)
        ).scalars():
            causes[entry.customer_id].append(_ledger_entry(entry))
    found = []
    for row in rows:
        item: dict[str, Any] = {
            "customer_id": row.customer_id,
            "name": row.name,
            "email": row.email,
            "month": month,
            "movement": row.kind,
            "amount": _money(_int(row.amount), cur),
            "amount_micro": _int(row.amount),
            "currency": cur,
            "opening_mrr": _money(row.opening_mrr_micro, cur),
            "closing_mrr": _money(row.closing_mrr_micro, cur),
            "causes": causes[row.customer_id],
        }
        if dimension:
            item["dimension"] = dimension
            item["segment"] = segment_label(row.segment)
        found.append(item)
    return found


def t12m_movers(session: Session, settings: Settings, month: str, *, kind: str,
                limit: int = 5, dimension: str | None = None,
                segment: str | None = None) -> tuple[list[dict[str, Any]], int]:
    """The T12M cohort's largest churned or contracted customers, and how many there are.

    The cohort is the one :func:`cohort_totals` sums: customers paying at the opening of
    M-11 (their segment fixed there), seen at M's closing. ``churn``: closing 0;
    ``contraction``: closing above 0 and below the opening. ``amount`` is the MRR lost over
    the twelve months (major units of the reporting currency) and ``causes`` the ledger
    entries of those months that took MRR down, oldest first.
    """
    if kind not in ("churn", "contraction"):
        raise ValueError(f"unknown T12M movement {kind!r}: use churn or contraction")
    dimension = parse_dimension(dimension)
    if segment is not None and dimension is None:
        raise InvalidDimension("a segment needs its dimension")
    cur = settings.reporting_currency
    first = add_months(month, -11)
    start = aliased(F, name="cohort_start")
    end = aliased(F, name="cohort_end")
    opening = start.opening_mrr_micro
    closing = func.coalesce(end.closing_mrr_micro, 0)
    lost = opening - closing
    condition = closing == 0 if kind == "churn" else and_(closing > 0, closing < opening)
    query = (
        select(start.customer_id, opening.label("opening"), closing.label("closing"),
               lost.label("lost"), StripeCustomer.name, StripeCustomer.email)
        .select_from(start)
        .outerjoin(end, and_(end.customer_id == start.customer_id, end.month == month))
        .outerjoin(StripeCustomer, StripeCustomer.id == start.customer_id)
        .where(start.month == first, opening > 0, condition)
    )
    if dimension and segment is not None:
        query = query.where(_segment_filter(dimension, segment, start))
    total = _int(session.scalar(select(func.count()).select_from(query.subquery())))
    rows = session.execute(query.order_by(lost.desc(), start.customer_id)
                           .limit(max(0, limit))).all()
    ids = [row.customer_id for row in rows]
    causes: dict[str, list[dict[str, Any]]] = {cid: [] for cid in ids}
    if ids:
        for entry in session.execute(
            select(LedgerEntry)
            .where(LedgerEntry.month >= first, LedgerEntry.month <= month,
                   LedgerEntry.customer_id.in_(ids),
                   LedgerEntry.mrr_after_micro < LedgerEntry.mrr_before_micro)
            .order_by(LedgerEntry.effective_at, LedgerEntry.id)
        ).scalars():
            causes[entry.customer_id].append(_ledger_entry(entry))
    found = [{
        "customer_id": row.customer_id, "name": row.name, "email": row.email,
        "month": month, "first_month": first, "movement": kind,
        "amount": _money(_int(row.lost), cur), "amount_micro": _int(row.lost), "currency": cur,
        "opening_mrr": _money(_int(row.opening), cur),
        "closing_mrr": _money(_int(row.closing), cur),
        "causes": causes[row.customer_id],
    } for row in rows]
    return found, total


def segment_names(session: Session, dimension: str | None,
                  segments: Iterable[str]) -> dict[str, str]:
    """People's names for plan and product segments (ids): a price's nickname, else its
    product's name and interval (``Team, monthly``); a product's name."""
    from models.mirror import StripePrice, StripeProduct

    ids = sorted({s for s in segments if s and s != NO_SEGMENT})
    if dimension not in ("plan", "product") or not ids:
        return {}
    if dimension == "product":
        return {pid: name for pid, name in session.execute(
            select(StripeProduct.id, StripeProduct.name).where(StripeProduct.id.in_(ids)))
            if name}
    names = {}
    for price_id, nickname, product, interval, count in session.execute(
            select(StripePrice.id, StripePrice.nickname, StripeProduct.name, StripePrice.interval,
                   StripePrice.interval_count)
            .outerjoin(StripeProduct, StripeProduct.id == StripePrice.product_id)
            .where(StripePrice.id.in_(ids))):
        every = (f"every {count} {interval}s" if count and count > 1 and interval
                 else f"{interval}ly" if interval else None)
        name = nickname or ", ".join(p for p in (product, every) if p)
        if name:
            names[price_id] = name
    return names


def known_in_advance(session: Session, settings: Settings, month: str) -> dict[str, Any]:
    """Share of ``month``'s churn and contraction the outlook at its opening held."""
    from models.outlook import OutlookOpening, OutlookOpeningDrop
    from nrr.domain import outlook as domain_outlook

    drops = OutlookOpeningDrop
    if session.get(OutlookOpening, month) is None:
        return {"churn": None, "contraction": None,
                "reason": f"no outlook was taken at the opening of {month}"}
    F = CustomerMonthFact
    real = {cid: (movement, opening - closing) for cid, movement, opening, closing in session.execute(
        select(F.customer_id, F.movement, F.opening_mrr_micro, F.closing_mrr_micro).where(
            F.month == month, F.movement.in_(("churn", "contraction"))))}
    projected = {cid: (movement, amount) for cid, movement, amount in session.execute(
        select(drops.customer_id, drops.movement, drops.movement_micro).where(
            drops.month == month))}
    sums = domain_outlook.known_in_advance(real, projected)
    currency = settings.reporting_currency.lower()
    result: dict[str, Any] = {}
    for key, values in sums.items():
        share = metrics.ratio(values["known_micro"], values["real_micro"],
                              null_reason=f"no {key} in {month}")
        result[key] = metrics.percent_display(share)
        result[f"{key}_known"] = _money(values["known_micro"], currency)
    return result
