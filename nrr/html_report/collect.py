"""Collecting: every number the HTML report shows, as one plain JSON-able document.

:func:`collect_report` asks the report service (``nrr.services.report``) for the monthly and
trailing-twelve-month reports, the segment breakdowns, the cohort table and the top
movements with their ledger causes, plus the metric catalogue and the policies in force.
The outlook (the months ahead as Stripe has them scheduled) is the stored one, read by
``nrr.services.outlook`` as ``nrr outlook`` reads it. It computes no metric itself, so the
page always agrees with ``nrr report`` and ``nrr outlook``. Secrets never
reach the document: only the policies, the reporting currency and the time zone are taken
from the settings.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.derived import CustomerMonthFact, SegmentMonthTotal
from models.mirror import StripePrice
from nrr.domain.months import add_months, current_month, month_range
from nrr.services import segment_totals
from nrr.settings import Settings

MOVEMENTS = ("new", "reactivation", "expansion", "contraction", "churn")
SEGMENT_DIMENSIONS = ("plan", "product", "currency", "country")


def report_months(session: Session, settings: Settings, *, now: datetime | None = None) -> list[str]:
    """Months with stored facts, from the first to the current month (in ``settings.tz``)."""
    # Two statements: SQLite answers a lone MIN or MAX from the index, not both at once.
    first = session.scalar(select(func.min(CustomerMonthFact.month)))
    last = session.scalar(select(func.max(CustomerMonthFact.month)))
    if first is None or last is None:
        return []
    last = min(last, current_month(settings.tz, now))
    return month_range(first, last) if first <= last else []


def _load_definitions(settings: Settings) -> list[dict[str, Any]]:
    """The metric catalogue in force, as plain entries (name, description, formula, ...)."""
    from nrr.catalogue import load_catalogue

    return [definition.as_dict() for definition in load_catalogue(settings).metrics.values()]


def collect_report(session: Session, settings: Settings, *, months: Sequence[str] | None = None,
                   now: datetime | None = None, top_limit: int = 12,
                   segment: tuple[str, str] | None = None) -> dict[str, Any]:
    """Everything the HTML report shows, as a plain JSON-able document.

    ``segment`` (dimension, value) narrows the monthly and T12M series, the headline
    numbers, the segment tables and the top movements to one segment (the cohort table
    stays the whole account's; a note says so).
    """
    from nrr.services import report

    now = now or datetime.now(UTC)
    month_list = list(months) if months is not None else report_months(session, settings, now=now)
    this_month = current_month(settings.tz, now)
    monthly: list[dict[str, Any]] = []
    t12m: list[dict[str, Any]] = []
    if month_list:
        wanted = set(month_list)
        first, last = min(month_list), max(month_list)
        by = segment[0] if segment else None
        monthly = [_one_segment(r, segment) for r in report.report_series(
            session, settings, first, last, period="monthly", by=by, now=now)["months"]
            if r["month"] in wanted]
        t12m = [_one_segment(r, segment) for r in report.report_series(
            session, settings, first, last, period="t12m", by=by, now=now)["months"]
            if r["month"] in wanted]
    closed = [m for m in month_list if m < this_month]
    focus = closed[-1] if closed else (month_list[-1] if month_list else None)
    segments: dict[str, list[dict[str, Any]]] = {}
    top: list[dict[str, Any]] = []
    previous: dict[str, Any] = {}
    if focus is not None:
        # The month before the focus month, for the headline numbers' month-over-month change.
        before = add_months(focus, -1)
        by = segment[0] if segment else None
        previous = {
            "month": before,
            "monthly": next((r for r in monthly if r["month"] == before), None)
            or _one_segment(_plain(report.monthly_report(session, settings, before, by=by,
                                                         now=now)), segment),
            "t12m": next((r for r in t12m if r["month"] == before), None)
            or _one_segment(_plain(report.monthly_report(session, settings, before,
                                                         period="t12m", by=by, now=now)),
                            segment),
        }
        # Under a segment filter the other dimensions' breakdowns would be the whole
        # account's: they are left out rather than shown beside the segment's numbers.
        for dimension in () if segment else SEGMENT_DIMENSIONS:
            by_segment = report.monthly_report(session, settings, focus, period="monthly",
                                               by=dimension, now=now)
            segments[dimension] = list(by_segment.get("segments") or [])
        _label_plans(session, segments.get("plan", []))
        top = list(report.top_movements(session, settings, focus, kinds=MOVEMENTS,
                                        limit=top_limit,
                                        dimension=segment[0] if segment else None,
                                        segment=segment[1] if segment else None))
    cohorts = cohort_heat(session, settings, now=now) if month_list else {}
    livemode = settings.stripe_livemode
    dashboard = settings.alerts.stripe_dashboard_url.rstrip("/")
    stripe_url = f"{dashboard}{'' if livemode else '/test'}/"
    return {
        # The wall clock, not `now` (the report's "today", fixed in tests and the demo).
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "currency": settings.reporting_currency,
        "timezone": settings.timezone,
        "months": month_list,
        "focus_month": focus,
        "previous": previous,
        "monthly": monthly,
        "t12m": t12m,
        "segments": segments,
        "cohorts": _plain(cohorts),
        "top_movements": _plain(top),
        "policies": settings.policies.as_dict(),
        "definitions": _plain(_load_definitions(settings)),
        "customer_url": f"{stripe_url}customers/",
        "stripe_url": stripe_url,
        "price_names": _price_names(session, top),
        "left_out": _left_out(session),
        "outlook": _outlook(session, settings),
        "segment": list(segment) if segment else None,
    }


OUTLOOK_MONTHS = 3


def _outlook(session: Session, settings: Settings) -> dict[str, Any] | None:
    """The stored outlook (``nrr outlook --format json``), None before the first one."""
    from nrr.services.outlook import OutlookUnavailable, outlook_report

    try:
        return _plain(outlook_report(session, settings, months=OUTLOOK_MONTHS))
    except OutlookUnavailable:
        return None


def _left_out(session: Session) -> dict[str, Any]:
    """How many customers the last recompute left out, and where to look."""
    from nrr.services.isolation import left_out_count, left_out_note

    count = left_out_count(session)
    return {"count": count, "note": left_out_note(count)}


def cohort_heat(session: Session, settings: Settings, *,
                now: datetime | None = None) -> dict[str, Any]:
    """The cohort heat maps: each first-paid-month cohort's net MRR retention and logo
    retention (customers still paying over its customers), per month since.

    The net figures are :func:`nrr.services.report.cohort_table`'s own definition (closing
    MRR of the members over their closing MRR of the first month); every fact carries its
    customer's first paying month, so one GROUP BY over the facts gives them without the
    per-customer join that gross retention needs (and which takes seconds on a large
    account). Gross retention stays in ``nrr cohorts``.
    """
    from nrr.domain import metrics
    from nrr.services.report import _count, _int

    f = CustomerMonthFact
    now = now or datetime.now(UTC)
    this_month = current_month(settings.tz, now)
    run_id = segment_totals.readable_run(session, segment_totals.FIRST_PAID)
    if run_id is not None:
        # The stored totals by first paying month: a few rows per cohort and month.
        t = SegmentMonthTotal
        rows = session.execute(
            select(t.segment, t.month, func.sum(t.closing_micro), func.sum(t.paying_at_closing),
                   func.sum(t.customers))
            .where(t.run_id == run_id, t.shard.is_(None), t.period == "monthly",
                   t.dimension == segment_totals.FIRST_PAID, t.segment.is_not(None),
                   t.month >= t.segment, t.month <= this_month)
            .group_by(t.segment, t.month)
        ).all()
    else:
        rows = session.execute(
            select(f.first_paid_month, f.month, func.sum(f.closing_mrr_micro),
                   _count(f.closing_mrr_micro > 0), func.count())
            .where(f.first_paid_month.is_not(None), f.month >= f.first_paid_month,
                   f.month <= this_month)
            .group_by(f.first_paid_month, f.month)
        ).all()
    cells: dict[str, dict[str, tuple[int, int, int]]] = {}
    for cohort, month, closing, paying, members in rows:
        cells.setdefault(str(cohort), {})[month] = (_int(closing), _int(paying), _int(members))
    last = max((m for by_month in cells.values() for m in by_month), default=None)
    cohorts = []
    for cohort in sorted(cells):
        base_closing, _paying, members = cells[cohort].get(cohort, (0, 0, 0))
        months = []
        for offset, month in enumerate(month_range(cohort, last or cohort)):
            closing, paying, _members = cells[cohort].get(month, (0, 0, 0))
            net = metrics.ratio(closing, base_closing, null_reason="no MRR in the first month")
            logos = metrics.ratio(paying, members, null_reason="no customers")
            months.append({"month": month, "months_since": offset,
                           "customers_paying": paying,
                           "net_retention": metrics.percent_display(net),
                           "logo_retention": metrics.percent_display(logos),
                           "partial": month == this_month})
        cohorts.append({"cohort": cohort, "customers": members, "months": months})
    return {"cohorts": cohorts}


def _one_segment(document: dict[str, Any],
                 segment: tuple[str, str] | None) -> dict[str, Any]:
    """The segment's own report out of a ``by=dimension`` document (an empty month's
    report with null ratios when the segment has no facts that month)."""
    if segment is None:
        return document
    for item in document.get("segments") or []:
        if str(item.get("segment")) == segment[1]:
            return {**item, "month": document.get("month"),
                    "partial": document.get("partial", item.get("partial"))}
    return {"month": document.get("month"), "partial": document.get("partial"),
            "segment": segment[1]}


def _label_plans(session: Session, rows: list[dict[str, Any]]) -> None:
    """Give plan segments (price ids) the price's nickname as a ``label`` for the page."""
    ids = [str(r.get("segment")) for r in rows if r.get("segment")]
    if not ids:
        return
    names = {price_id: nickname for price_id, nickname in session.execute(
        select(StripePrice.id, StripePrice.nickname).where(StripePrice.id.in_(ids)))}
    for row in rows:
        nickname = names.get(str(row.get("segment")))
        if nickname:
            row["label"] = nickname


def _plain(value: Any) -> Any:
    """JSON round trip: dates, decimals and tuples become plain JSON values."""
    return json.loads(json.dumps(value, default=str))


def _price_names(session: Session, movements: list[dict[str, Any]]) -> dict[str, str]:
    """Nicknames of the prices the movements' ledger causes name (before or after)."""
    ids = {str(side.get("price")) for item in movements for cause in item.get("causes") or []
           for side in (cause.get("before") or {}, cause.get("after") or {})
           if isinstance(side, dict) and isinstance(side.get("price"), str)}
    if not ids:
        return {}
    return {price_id: nickname for price_id, nickname in session.execute(
        select(StripePrice.id, StripePrice.nickname).where(StripePrice.id.in_(sorted(ids))))
        if nickname}
