"""Build consistent monthly facts (and ledger rows) from per-customer MRR paths, for report tests.

A path is a customer's closing MRR (major units of the reporting currency) per month; the
opening of a month is the previous month's closing. Movements follow the table of
docs/revenue-definitions.md, so the rows are what the recompute service would store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from models.derived import CustomerMonthFact, LedgerEntry
from models.mirror import StripeCustomer
from nrr.domain.money import MICRO
from nrr.domain.months import add_months, month_start
from nrr.settings import Settings


@dataclass
class CustomerPath:
    customer_id: str
    name: str
    closing: list[float]  # major units per month, from the first month of the world
    plan: str = "pro"
    country: str = "US"
    currency: str = "usd"
    metadata: dict[str, Any] = field(default_factory=dict)


def micro(major: float) -> int:
    return round(major * 100 * MICRO)


def movement_of(opening: int, closing: int, ever_paid: bool) -> str | None:
    if opening == 0 and closing > 0:
        return "reactivation" if ever_paid else "new"
    if opening > 0 and closing == 0:
        return "churn"
    if opening > 0 and closing > opening:
        return "expansion"
    if 0 < closing < opening:
        return "contraction"
    return None


def insert_world(session: Session, settings: Settings, first_month: str,
                 paths: list[CustomerPath]) -> None:
    for path in paths:
        session.add(StripeCustomer(id=path.customer_id, name=path.name, email=None,
                                   country=path.country, currency=path.currency,
                                   metadata_=path.metadata, raw={"id": path.customer_id},
                                   state_at=0))
        opening = 0
        ever_paid = False
        first_paid: str | None = None
        for index, closing_major in enumerate(path.closing):
            month = add_months(first_month, index)
            closing = micro(closing_major)
            movement = movement_of(opening, closing, ever_paid)
            if closing > 0 and first_paid is None:
                first_paid = month
            if opening or closing:
                amount = {"new": closing, "reactivation": closing, "churn": opening,
                          "expansion": closing - opening,
                          "contraction": opening - closing}.get(movement or "", 0)
                session.add(CustomerMonthFact(
                    month=month, customer_id=path.customer_id, opening_mrr_micro=opening,
                    closing_mrr_micro=closing, movement=movement, movement_micro=amount,
                    fx_impact_micro=0, first_paid_month=first_paid, currency=path.currency,
                    plan=path.plan, product=f"prod_{path.plan}", country=path.country,
                    metadata_=path.metadata))
                if movement:
                    cause = {"new": "new_subscription", "reactivation": "reactivation",
                             "churn": "cancellation", "expansion": "seat_change",
                             "contraction": "seat_change"}[movement]
                    session.add(LedgerEntry(
                        month=month, effective_at=month_start(month, settings.tz) + 86400 * 3,
                        customer_id=path.customer_id, subscription_id=f"sub_{path.customer_id}",
                        subscription_item_id=f"si_{path.customer_id}", cause=cause,
                        currency=path.currency, mrr_before_micro=opening, mrr_after_micro=closing,
                        before={"quantity": round(opening / MICRO / 100)} if opening else None,
                        after={"quantity": round(closing / MICRO / 100)} if closing else None,
                        stripe_ids={"invoice": f"in_{path.customer_id}_{index}"}))
            ever_paid = ever_paid or closing > 0
            opening = closing
    session.flush()


def sample_paths(months: int = 15) -> list[CustomerPath]:
    """A small world with every kind of movement, and a hostile customer name."""
    def path(values: list[float]) -> list[float]:
        return (values + [values[-1]] * months)[:months]

    return [
        CustomerPath("cus_alpha", "Alpha Ltd", path([100, 100, 150, 150, 200]), plan="pro"),
        CustomerPath("cus_beta", "Beta GmbH", path([0, 50, 50, 30, 30, 0]), plan="starter",
                     country="DE", currency="eur"),
        CustomerPath("cus_gamma", "<script>alert('x')</script> & Co", path([0, 0, 80, 80, 0, 0, 90]),
                     plan="starter", country="FR"),
        CustomerPath("cus_delta", "Delta Inc", path([300, 300, 300, 250, 250, 400]), plan="business"),
        CustomerPath("cus_eps", "Epsilon", path([0, 0, 0, 0, 0, 0, 0, 0, 120, 60]), plan="pro",
                     country="GB", currency="gbp"),
    ]
