"""Helpers for the recompute tests: store a ``tests.stripe_world.World`` into the mirror."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from integrations.stripe_mirror import store_objects
from nrr.logs import configure_logging
from nrr.settings import Settings, load_settings

# The World's kinds in the order a backfill stores them (discounts are expanded objects).
KIND_OF = {"customers": "customer", "products": "product", "prices": "price",
           "coupons": "coupon", "subscriptions": "subscription", "invoices": "invoice",
           "discounts": "discount"}


def store_world(session: Session, world: Any, *, state_at: int | None = None) -> int:
    """Store every object of ``world`` as a sync would; returns how many were stored."""
    objects = world.objects()
    stored = 0
    for key, kind in KIND_OF.items():
        result = store_objects(session, kind, objects.get(key, []),
                               state_at=state_at if state_at is not None else world.now)
        assert result.skipped == 0, f"{kind}: quarantined"
        stored += result.stored
    from integrations.stripe_sync import record_event

    for event in objects.get("events", []):
        record_event(session, event, source="events")
    return stored


def make_settings(db_url: str, **env: str) -> Settings:
    return load_settings({"DATABASE_URL": db_url, **env})


@pytest.fixture
def session(db_engine: Engine) -> Iterator[Session]:
    with Session(db_engine, expire_on_commit=False) as session:
        yield session
        session.rollback()


def cli(args: list[str], env: dict[str, str]) -> Any:
    """Run ``nrr`` through typer's CliRunner; logging is pointed back at the live stderr after
    (the CLI binds the logger to the runner's stream, which is closed when it returns)."""
    from typer.testing import CliRunner

    from nrr.cli import app

    try:
        return CliRunner().invoke(app, args, env=env)
    finally:
        configure_logging("INFO")


@pytest.fixture(autouse=True)
def _logging_to_live_stderr() -> Iterator[None]:
    configure_logging("INFO")
    yield
    configure_logging("INFO")
