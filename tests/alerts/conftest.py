"""Fixtures for the alert tests: a month that drops below the thresholds, snapshots, Slack.

The months are stored the way the pipeline stores them: ``customer_month_facts`` and
``mrr_ledger`` rows, mirror customers, and the worker's snapshots of them
(``nrr.services.snapshots.take_snapshots``).

The scenario (USD):

- 2026-09: a 19,400 -> 20,000, b 27,500, c 1,500, e 1,000 flat. NRR 50,000/49,400
  = 101.215 %.
- 2026-10: a 20,000 -> 21,000 (expansion 1,000), b 27,500 -> 26,500 (seat change,
  contraction 1,000), c 1,500 -> 0 and e 1,000 -> 0 (cancellations, churn 2,500), d new
  3,000. Opening 50,000, closing 50,500: NRR 95 %, GRR 93 %, a 6.215-point drop.
- 2026-11: a 21,000 flat, b 26,500 -> 27,000, d 3,000 flat: NRR 51,000/50,500 = 100.99 %.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, insert
from sqlalchemy.orm import Session

from models.derived import CustomerMonthFact, LedgerEntry
from models.mirror import StripeCustomer
from nrr.db import make_engine, session_scope
from nrr.domain.money import MICRO
from nrr.domain.months import month_start
from nrr.settings import Settings, load_settings
from tests.support.slack_recorder import SlackRecorder

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
USD = 100 * MICRO  # micro units per dollar


def make_settings(db_url: str, webhook_url: str | None = None, **alerts: Any) -> Settings:
    env = {"DATABASE_URL": db_url}
    if webhook_url is not None:
        env["SLACK_WEBHOOK_URL"] = webhook_url
    settings = load_settings(env)
    settings.alerts.slack_backoff_seconds = 0.01
    settings.alerts.slack_max_wait_seconds = 2.0
    settings.alerts.slack_timeout_seconds = 5.0
    for key, value in alerts.items():
        setattr(settings.alerts, key, value)
    return settings


def add_customer(session: Session, customer_id: str, name: str | None,
                 email: str | None = None, livemode: bool = False) -> None:
    session.add(StripeCustomer(id=customer_id, name=name, email=email, livemode=livemode,
                               raw={"id": customer_id, "object": "customer"}, state_at=0))


def fact(month: str, customer_id: str, opening: float, closing: float, *,
         movement: str | None = None, plan: str = "pro") -> dict[str, Any]:
    o, c = round(opening * USD), round(closing * USD)
    if movement is None:
        movement = ("churn" if o > 0 and c == 0 else "expansion" if o > 0 and c > o
                    else "contraction" if 0 < c < o else None)
    return {"month": month, "customer_id": customer_id, "opening_mrr_micro": o,
            "closing_mrr_micro": c, "movement": movement,
            "movement_micro": abs(c - o) if movement else 0, "fx_impact_micro": 0,
            "first_paid_month": "2025-01", "currency": "usd", "plan": plan, "product": "prod_app",
            "country": "FR", "metadata_": {}}


def add_facts(session: Session, rows: list[dict[str, Any]]) -> None:
    session.execute(insert(CustomerMonthFact), rows)


def add_ledger(session: Session, month: str, customer_id: str, cause: str, before: float,
               after: float) -> None:
    session.add(LedgerEntry(
        month=month, effective_at=month_start(month, ZoneInfo("UTC")) + 86400 * 9,
        customer_id=customer_id, subscription_id=f"sub_{customer_id}",
        subscription_item_id=f"si_{customer_id}", cause=cause, currency="usd",
        mrr_before_micro=round(before * USD), mrr_after_micro=round(after * USD),
        before={"quantity": 1}, after={"quantity": 0}, stripe_ids={"invoice": f"in_{customer_id}"}))


def take_snapshot(session: Session, settings: Settings, month: str) -> None:
    """The worker's own monthly snapshot of ``month`` (total and every dimension)."""
    from nrr.services.snapshots import take_snapshots

    take_snapshots(session, settings, month, now=datetime(2027, 2, 1, tzinfo=UTC))


def seed_drop(engine: Engine, settings: Settings, *, snapshots: bool = True) -> None:
    """September healthy, October below the thresholds (see the module docstring)."""
    with session_scope(engine) as session:
        add_customer(session, "cus_a", "Alpha Ltd")
        add_customer(session, "cus_b", "Beta & Co <billing>")
        add_customer(session, "cus_c", None, email="carol@example.com")
        add_customer(session, "cus_d", "Delta")
        add_customer(session, "cus_e", "Echo GmbH")
        add_facts(session, [
            fact("2026-09", "cus_a", 19_400, 20_000),
            fact("2026-09", "cus_b", 27_500, 27_500),
            fact("2026-09", "cus_c", 1_500, 1_500),
            fact("2026-09", "cus_e", 1_000, 1_000, plan="basic"),
            fact("2026-10", "cus_a", 20_000, 21_000),
            fact("2026-10", "cus_b", 27_500, 26_500),
            fact("2026-10", "cus_c", 1_500, 0),
            fact("2026-10", "cus_e", 1_000, 0, plan="basic"),
            fact("2026-10", "cus_d", 0, 3_000, movement="new"),
        ])
        add_ledger(session, "2026-10", "cus_a", "plan_change", 20_000, 21_000)
        add_ledger(session, "2026-10", "cus_b", "seat_change", 27_500, 26_500)
        add_ledger(session, "2026-10", "cus_c", "cancellation", 1_500, 0)
        add_ledger(session, "2026-10", "cus_e", "cancellation", 1_000, 0)
        add_ledger(session, "2026-10", "cus_d", "new_subscription", 0, 3_000)
    if snapshots:
        with session_scope(engine) as session:
            take_snapshot(session, settings, "2026-09")
            take_snapshot(session, settings, "2026-10")


def seed_recovery(engine: Engine, settings: Settings, month: str = "2026-11") -> None:
    with session_scope(engine) as session:
        add_facts(session, [
            fact(month, "cus_a", 21_000, 21_000),
            fact(month, "cus_b", 26_500, 27_000),
            fact(month, "cus_d", 3_000, 3_000),
        ])
    with session_scope(engine) as session:
        take_snapshot(session, settings, month)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def slack() -> Iterator[SlackRecorder]:
    with SlackRecorder() as recorder:
        yield recorder


class Printed:
    """Collects what the service prints when Slack is not configured."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def __call__(self, text: str) -> None:
        self.messages.append(text)


@pytest.fixture
def printed() -> Printed:
    return Printed()
