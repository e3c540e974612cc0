"""Events of the other mode (live events reaching a test-mode deployment, or the reverse)
never create or change this mode's objects; they stay recorded, skipped with a reason."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from sqlalchemy import Engine, select

from integrations.stripe_sync import process_stored_event, record_event
from models.mirror import StripeCustomer, StripeEvent
from nrr.db import make_engine, session_scope
from nrr.settings import Settings, load_settings

_serial = itertools.count(1)


def customer_event(event_type: str, customer_id: str, *, livemode: bool, name: str,
                   created: int = 1_780_000_000, deleted: bool = False) -> dict[str, Any]:
    obj: dict[str, Any] = {"id": customer_id, "object": "customer", "livemode": livemode}
    if deleted:
        obj["deleted"] = True
    else:
        obj.update({"created": 1_770_000_000, "email": f"{name.lower()}@example.com",
                    "name": name, "metadata": {}, "currency": "usd", "discount": None,
                    "test_clock": None})
    return {"id": f"evt_mode_{next(_serial):05d}", "object": "event", "type": event_type,
            "created": created + next(_serial), "api_version": "2026-10-28.endive",
            "livemode": livemode, "data": {"object": obj}, "pending_webhooks": 0,
            "request": {"id": None}}


def deliver(engine: Engine, settings: Settings, event: dict[str, Any]) -> None:
    with session_scope(engine) as session:
        record_event(session, event, source="webhook")
    process_stored_event(engine, settings, event["id"])


def customers(engine: Engine) -> dict[str, tuple[bool, str | None, bool]]:
    with session_scope(engine) as session:
        return {row.id: (row.livemode, row.name, row.deleted) for row in
                session.scalars(select(StripeCustomer))}


@pytest.fixture
def engine(db_url: str) -> Engine:
    return make_engine(db_url)


@pytest.mark.parametrize("key", ["rk_test_mode123", None])
def test_a_live_deletion_of_an_unknown_id_creates_nothing(engine: Engine, db_url: str,
                                                          key: str | None) -> None:
    env = {"DATABASE_URL": db_url} | ({"STRIPE_API_KEY": key} if key else {})
    settings = load_settings(env)
    deliver(engine, settings, customer_event("customer.created", "cus_test", livemode=False,
                                             name="Test"))
    live_delete = customer_event("customer.deleted", "cus_live_unknown", livemode=True,
                                 name="x", deleted=True)

    deliver(engine, settings, live_delete)

    assert customers(engine) == {"cus_test": (False, "Test", False)}
    with session_scope(engine) as session:
        row = session.get(StripeEvent, live_delete["id"])
        assert row is not None and row.processed_at is not None and row.livemode is True


@pytest.mark.parametrize("key", ["rk_test_mode123", None])
def test_a_live_event_with_a_test_objects_id_does_not_switch_it(engine: Engine, db_url: str,
                                                                key: str | None) -> None:
    env = {"DATABASE_URL": db_url} | ({"STRIPE_API_KEY": key} if key else {})
    settings = load_settings(env)
    deliver(engine, settings, customer_event("customer.created", "cus_shared", livemode=False,
                                             name="Test"))

    deliver(engine, settings, customer_event("customer.updated", "cus_shared", livemode=True,
                                             name="Live"))
    deliver(engine, settings, customer_event("customer.deleted", "cus_shared", livemode=True,
                                             name="Live", deleted=True))

    assert customers(engine) == {"cus_shared": (False, "Test", False)}


def test_a_live_deployment_ignores_test_events(engine: Engine, db_url: str) -> None:
    settings = load_settings({"DATABASE_URL": db_url, "STRIPE_API_KEY": "rk_live_mode123"})

    deliver(engine, settings, customer_event("customer.created", "cus_t", livemode=False,
                                             name="Test"))
    deliver(engine, settings, customer_event("customer.created", "cus_l", livemode=True,
                                             name="Live"))

    assert customers(engine) == {"cus_l": (True, "Live", False)}
