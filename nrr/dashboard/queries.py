"""The customers behind a number: drill-down queries over ``customer_month_facts``.

Amounts come from each fact's opening and closing exactly as the report service derives
movements (its ``_movement_amount``), so a movement's customers add up to the movement's
total in the report.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session, aliased

from models.derived import CustomerMonthFact, LedgerEntry
from models.mirror import StripeCustomer
from nrr.domain import metrics
from nrr.domain.money import major_rounded
from nrr.domain.months import add_months
from nrr.services.report import _movement_amount, _segment_filter, parse_dimension
from nrr.settings import Settings

F = CustomerMonthFact
MOVEMENTS = metrics.MOVEMENTS


def movement_customers(session: Session, settings: Settings, month: str, movement: str | None, *,
                       dimension: str | None = None, segment: str | None = None,
                       limit: int | None = None) -> dict[str, Any]:
    """The customers of one movement in ``month`` (optionally one segment), largest first,
    with the count and total of all of them (the list stops at ``limit`` when given)."""
    if movement is not None and movement not in MOVEMENTS:
        raise ValueError(f"unknown movement {movement!r}: use {', '.join(MOVEMENTS)}")
    dimension = parse_dimension(dimension)
    cur = settings.reporting_currency
    amount = _movement_amount()
    where = [F.month == month,
             F.movement == movement if movement else F.movement.in_(MOVEMENTS)]
    if dimension and segment is not None:
        where.append(_segment_filter(dimension, segment))
    rows = session.execute(
        select(F.customer_id, StripeCustomer.name, StripeCustomer.email, F.opening_mrr_micro,
               F.closing_mrr_micro, amount.label("amount"), F.movement, F.plan, F.country)
        .select_from(F).outerjoin(StripeCustomer, StripeCustomer.id == F.customer_id)
        .where(*where).order_by(amount.desc(), F.customer_id).limit(limit)
    ).all()  # LIMIT NULL: every row
    count, total = session.execute(
        select(func.count(), func.coalesce(func.sum(amount), 0)).select_from(F).where(*where)
    ).one()
    return {
        "month": month, "movement": movement, "dimension": dimension, "segment": segment,
        "currency": cur, "customers": int(count), "total": major_rounded(int(total), cur),
        "rows": [{
            "customer_id": r.customer_id, "name": r.name, "email": r.email,
            "opening_mrr": major_rounded(int(r.opening_mrr_micro), cur),
            "closing_mrr": major_rounded(int(r.closing_mrr_micro), cur),
            "movement": r.movement, "amount": major_rounded(int(r.amount), cur),
            "plan": r.plan, "country": r.country,
        } for r in rows],
    }


def cohort_customers(session: Session, settings: Settings, cohort: str, months_since: int,
                     *, limit: int = 1000) -> dict[str, Any]:
    """The members of a first-paid-month cohort and their MRR ``months_since`` later."""
    cur = settings.reporting_currency
    month = add_months(cohort, months_since)
    base = aliased(F, name="cohort_base")
    later = aliased(F, name="later")
    closing = case((later.closing_mrr_micro.is_(None), 0), else_=later.closing_mrr_micro)
    rows = session.execute(
        select(base.customer_id, StripeCustomer.name, StripeCustomer.email,
               base.closing_mrr_micro.label("base"), closing.label("closing"))
        .select_from(base)
        .outerjoin(later, and_(later.customer_id == base.customer_id, later.month == month))
        .outerjoin(StripeCustomer, StripeCustomer.id == base.customer_id)
        .where(base.month == cohort, base.first_paid_month == cohort)
        .order_by(base.closing_mrr_micro.desc(), base.customer_id).limit(limit)
    ).all()
    return {
        "cohort": cohort, "months_since": months_since, "month": month, "currency": cur,
        "rows": [{
            "customer_id": r.customer_id, "name": r.name, "email": r.email,
            "starting_mrr": major_rounded(int(r.base or 0), cur),
            "mrr": major_rounded(int(r.closing or 0), cur),
        } for r in rows],
    }


def ledger_of(session: Session, customer_id: str) -> list[LedgerEntry]:
    return list(session.execute(
        select(LedgerEntry).where(LedgerEntry.customer_id == customer_id)
        .order_by(LedgerEntry.effective_at, LedgerEntry.id)).scalars())
