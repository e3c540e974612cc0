"""The stored outlook read back for ``nrr outlook`` in a few plain SQL statements.

:func:`nrr.services.outlook.outlook_report` reads the outlook through the ORM models, and
importing them (every table of the project is declared on import) is most of what a
short-lived ``nrr outlook`` process spends. :func:`quick_outlook_report` answers the
whole account's outlook (no ``--by``) from the same stored rows without them: the
current month's totals from the live run's ``segment_month_totals`` less the facts of the
customers the outlook holds, the outlook rows added up per month and movement, the
scheduled changes. It returns None when it cannot read the stored totals (a database
upgraded before its next recompute): the caller then uses ``outlook_report``. The month
documents are made by :func:`month_document`, which ``outlook_report`` uses too, so both
give the same JSON (a test compares them on SQLite and PostgreSQL).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BindParameter, bindparam, text
from sqlalchemy.orm import Session

from nrr.domain import metrics
from nrr.domain.metrics import MonthTotals, add_group_to_totals
from nrr.domain.money import major_rounded
from nrr.domain.months import add_months
from nrr.settings import Settings

DEFAULT_MONTHS = 3
STORED_MONTHS = 12


class OutlookUnavailable(LookupError):
    """No outlook stored yet (run ``nrr recompute``)."""


def money(value: int, currency: str) -> float:
    return major_rounded(value, currency)


def month_document(month: str, committed: MonthTotals, upper: MonthTotals, trials: int,
                   currency: str, *, partial: bool) -> dict[str, Any]:
    """One month of docs/outlook-schema.md from its totals under both bounds."""
    nrr = metrics.nrr(committed.opening, committed.expansion, committed.contraction, committed.churn)
    grr = metrics.grr(committed.opening, committed.contraction, committed.churn)
    nrr_u = metrics.nrr(upper.opening, upper.expansion, upper.contraction, upper.churn)
    grr_u = metrics.grr(upper.opening, upper.contraction, upper.churn)
    return {
        "month": month, "partial": partial,
        "opening": money(committed.opening, currency),
        "new": money(committed.new, currency),
        "reactivation": money(committed.reactivation, currency),
        "expansion": money(committed.expansion, currency),
        "contraction": money(committed.contraction, currency),
        "churn": money(committed.churn, currency),
        "closing": money(committed.closing, currency),
        "trial_conversions": {"committed": 0.0, "all_converting": money(trials, currency)},
        "closing_all_converting": money(upper.closing, currency),
        "nrr": metrics.percent_display(nrr), "nrr_band": metrics.band(nrr),
        "nrr_reason": nrr.reason,
        "grr": metrics.percent_display(grr), "grr_band": metrics.band(grr),
        "grr_reason": grr.reason,
        "nrr_all_converting": metrics.percent_display(nrr_u),
        "grr_all_converting": metrics.percent_display(grr_u),
        "customers_opening": committed.customers_opening,
        "customers_churned": committed.customers_churned,
        "customers_contracted": committed.customers_contracted,
        "customers_expanded": committed.customers_expanded,
    }


def iso(instant: int) -> str:
    return datetime.fromtimestamp(instant, UTC).isoformat().replace("+00:00", "Z")


def policies_in_force(settings: Settings) -> dict[str, Any]:
    """The named policies plus the reporting currency and time zone, as reports state them."""
    return {**settings.policies.as_dict(), "reporting_currency": settings.reporting_currency,
            "timezone": settings.timezone}


def movement_amount(movement: str | None, opening: int, closing: int) -> int:
    """A movement group's amount (positive) from its opening and closing sums."""
    return closing - opening if movement in ("new", "reactivation", "expansion") else opening - closing


def change_document(row: Any, currency: str) -> dict[str, Any]:
    """One of ``movements[]`` from an ``outlook_changes`` row."""
    ids = row.stripe_ids
    if isinstance(ids, str):  # JSON as text (SQLite)
        ids = json.loads(ids)
    return {"customer_id": row.customer_id, "month": row.month,
            "effective_at": iso(int(row.effective_at)),
            "amount": money(int(row.amount_micro), currency), "cause": row.cause,
            "bound": row.bound, "subscription_id": row.subscription_id,
            "stripe_ids": ids or {}}


def _int(value: Any) -> int:
    return 0 if value is None else int(value)


def quick_outlook_report(session: Session, settings: Settings, *,
                         months: int = DEFAULT_MONTHS) -> dict[str, Any] | None:
    """The whole account's stored outlook (``outlook_report(by=None)``), or None when the
    live run's stored totals cannot answer (see the module docstring)."""
    if not 1 <= months <= STORED_MONTHS:
        raise ValueError(f"--months must be 1 to {STORED_MONTHS}, got {months}")
    run = session.execute(text(
        "SELECT taken_at, first_month FROM outlook_runs ORDER BY CASE WHEN kind = 'full' "
        "THEN 0 ELSE 1 END, id DESC LIMIT 1")).first()
    if run is None:
        raise OutlookUnavailable("no outlook stored yet: run `nrr recompute` (or `nrr sync`) first")
    live = session.execute(text("SELECT run_id FROM live_run WHERE id = 1")).scalar()
    live_run = _int(live)
    built = session.execute(text("SELECT dimensions FROM segment_totals_built WHERE run_id = :run"),
                            {"run": live_run}).scalar()
    if isinstance(built, str):
        built = json.loads(built)
    if not isinstance(built, list) or "" not in built:
        return None
    currency = settings.reporting_currency.lower()
    first = str(run.first_month)
    wanted = [add_months(first, n) for n in range(months)]

    # The current month: every customer's stored totals, less the scheduled customers'.
    now_totals = MonthTotals()
    for movement, opening, closing, customers, at_opening, at_closing in session.execute(text(
            "SELECT movement, opening_micro, closing_micro, customers, paying_at_opening, "
            "paying_at_closing FROM segment_month_totals WHERE run_id = :run AND shard IS NULL "
            "AND period = 'monthly' AND dimension = '' AND month = :month"),
            {"run": live_run, "month": first}):
        opening, closing = _int(opening), _int(closing)
        now_totals = add_group_to_totals(
            now_totals, movement, opening=opening, closing=closing,
            amount=movement_amount(movement, opening, closing), customers=_int(customers),
            customers_opening=_int(at_opening), customers_closing=_int(at_closing))
    for movement, opening, closing, customers, at_opening, at_closing in session.execute(text(
            "SELECT f.movement, SUM(f.opening_mrr_micro), SUM(f.closing_mrr_micro), COUNT(*), "
            "SUM(CASE WHEN f.opening_mrr_micro > 0 THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN f.closing_mrr_micro > 0 THEN 1 ELSE 0 END) "
            "FROM outlook_months m JOIN customer_month_facts f ON f.run_id = :run "
            "AND f.customer_id = m.customer_id AND f.month = m.month "
            "WHERE m.month = :month GROUP BY f.movement"), {"run": live_run, "month": first}):
        opening, closing = _int(opening), _int(closing)
        scheduled = add_group_to_totals(
            MonthTotals(), movement, opening=opening, closing=closing,
            amount=movement_amount(movement, opening, closing), customers=_int(customers),
            customers_opening=_int(at_opening), customers_closing=_int(at_closing))
        now_totals = MonthTotals(**{name: getattr(now_totals, name) - getattr(scheduled, name)
                                    for name in now_totals.__dataclass_fields__})
    now_totals = MonthTotals(**{**{name: getattr(now_totals, name)
                                   for name in now_totals.__dataclass_fields__}, "fx_impact": 0})
    flat = MonthTotals(opening=now_totals.closing, closing=now_totals.closing,
                       customers_opening=now_totals.customers_closing,
                       customers_closing=now_totals.customers_closing)
    totals = {month: [now_totals if n == 0 else flat] * 2 for n, month in enumerate(wanted)}

    months_in: BindParameter[list[str]] = bindparam("months", wanted, expanding=True)
    for bound, prefix in enumerate(("", "_upper")):
        query = text(
            f"SELECT month, movement{prefix}, SUM(opening{prefix}_micro), "
            f"SUM(closing{prefix}_micro), SUM(movement{prefix}_micro), COUNT(*), "
            f"SUM(CASE WHEN opening{prefix}_micro > 0 THEN 1 ELSE 0 END), "
            f"SUM(CASE WHEN closing{prefix}_micro > 0 THEN 1 ELSE 0 END) "
            f"FROM outlook_months WHERE month IN :months GROUP BY month, movement{prefix}"
        ).bindparams(months_in)
        for month, movement, opening, closing, moved, customers, at_opening, at_closing in \
                session.execute(query):
            pair = totals[month]
            pair[bound] = add_group_to_totals(
                pair[bound], movement, opening=_int(opening), closing=_int(closing),
                amount=_int(moved), customers=_int(customers),
                customers_opening=_int(at_opening), customers_closing=_int(at_closing))

    trials: dict[str, int] = {}
    changes = []
    for row in session.execute(text(
            "SELECT customer_id, month, effective_at, amount_micro, cause, bound, "
            "subscription_id, stripe_ids FROM outlook_changes WHERE month IN :months "
            "ORDER BY effective_at, customer_id, subscription_id").bindparams(months_in)):
        if row.cause == "trial_end" and row.bound == "upper":
            trials[row.month] = trials.get(row.month, 0) + int(row.amount_micro)
        changes.append(change_document(row, currency))
    return {
        "taken_at": iso(int(run.taken_at)), "reporting_currency": currency, "dimension": None,
        "policies": policies_in_force(settings),
        "months": [month_document(month, totals[month][0], totals[month][1],
                                  trials.get(month, 0), currency, partial=n == 0)
                   for n, month in enumerate(wanted)],
        "movements": changes,
    }
