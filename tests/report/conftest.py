"""Fixtures for the report tests: a session per backend, facts inserted directly, the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, insert
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from models.derived import CustomerMonthFact
from nrr.domain.money import MICRO
from nrr.logs import configure_logging
from nrr.settings import Settings, load_settings


def micro(amount: Decimal | int | str | float) -> int:
    """Major units of a two-decimal currency (usd) to micro-minor units."""
    return int(Decimal(str(amount)) * 100 * MICRO)


def fact(month: str, customer_id: str, opening: Any, closing: Any, *,
         movement: str | None = "auto", first_paid_month: str | None = None,
         plan: str | None = "basic", product: str | None = "app", currency: str | None = "usd",
         country: str | None = "US", metadata: dict[str, Any] | None = None,
         fx_impact: Any = 0) -> dict[str, Any]:
    """One ``customer_month_facts`` row; amounts in usd major units; movement derived if 'auto'."""
    o, c = micro(opening), micro(closing)
    if movement == "auto":
        if o == 0 and c > 0:
            movement = "new"
        elif o > 0 and c == 0:
            movement = "churn"
        elif o > 0 and c > o:
            movement = "expansion"
        elif 0 < c < o:
            movement = "contraction"
        else:
            movement = None
    amount = {"new": c, "reactivation": c, "churn": o, "expansion": c - o,
              "contraction": o - c}.get(movement or "", 0)
    return {
        "month": month, "customer_id": customer_id, "opening_mrr_micro": o,
        "closing_mrr_micro": c, "movement": movement, "movement_micro": amount,
        "fx_impact_micro": micro(fx_impact), "first_paid_month": first_paid_month or month,
        "currency": currency, "plan": plan, "product": product, "country": country,
        "metadata_": metadata if metadata is not None else {},
    }


@pytest.fixture
def session(db_engine: Engine) -> Iterator[Session]:
    with Session(db_engine, expire_on_commit=False) as session:
        yield session
        session.rollback()


@pytest.fixture
def add_facts(db_engine: Engine) -> Callable[[list[dict[str, Any]]], None]:
    """Insert fact rows and commit (so the CLI, in its own connection, sees them)."""

    def add(rows: list[dict[str, Any]]) -> None:
        with Session(db_engine) as session:
            session.execute(insert(CustomerMonthFact), rows)
            session.commit()

    return add


@pytest.fixture
def settings_for(db_url: str) -> Callable[..., Settings]:
    def make(**env: str) -> Settings:
        return load_settings({"DATABASE_URL": db_url, **env})

    return make


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@pytest.fixture
def run_cli(db_url: str) -> Callable[..., CliResult]:
    """Run ``nrr ARGS`` in-process against the test database; stdout and stderr apart."""
    from nrr.cli import app

    def run(*args: str, env: dict[str, str] | None = None) -> CliResult:
        runner = CliRunner()
        full_env = {"DATABASE_URL": db_url, "NRR_CONFIG": "", "NRR_METRIC_CATALOGUE": "",
                    "NRR_REPORTING_CURRENCY": "usd", "NRR_TIMEZONE": "UTC", **(env or {})}
        try:
            result = runner.invoke(app, list(args), env=full_env, catch_exceptions=False)
        finally:
            # The CLI binds structlog to the runner's temporary stderr, closed after invoke;
            # later logs in the same process (the pipeline) must go to the real stderr.
            configure_logging()
        return CliResult(result.exit_code, result.stdout, result.stderr)

    return run


# The World's kinds in the order a backfill stores them.
WORLD_KINDS = {"customers": "customer", "products": "product", "prices": "price",
               "coupons": "coupon", "subscriptions": "subscription", "invoices": "invoice",
               "discounts": "discount"}


@pytest.fixture
def load_world(db_url: str, db_engine: Engine) -> Callable[..., Any]:
    """Run the real pipeline: World objects -> store_objects -> recompute, committed."""

    def load(world: Any, *, now: int) -> Any:
        from datetime import UTC, datetime

        from integrations.stripe_mirror import store_objects
        from nrr.services.recompute import recompute

        world.advance(now)
        objects = world.objects()
        with Session(db_engine, expire_on_commit=False) as session:
            for key, kind in WORLD_KINDS.items():
                stored = store_objects(session, kind, objects.get(key, []), state_at=now)
                assert stored.skipped == 0, f"{kind}: quarantined"
            result = recompute(session, load_settings({"DATABASE_URL": db_url}),
                               now=datetime.fromtimestamp(now, tz=UTC))
            session.commit()
        assert result.skipped == 0, result
        return result

    return load
