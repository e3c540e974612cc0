"""Subscription schedules arrive through events (the webhook and ``/v1/events`` path) and
reach the outlook; a released schedule leaves it. SQLite and PostgreSQL."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select

from integrations.stripe_sync import record_event
from integrations.stripe_sync.events import process_stored_event
from models.outlook import StripeSubscriptionSchedule
from nrr.db import make_engine, session_scope
from nrr.services.outlook import outlook_report
from nrr.services.recompute import recompute, recompute_dirty
from tests.outlook.test_outlook_service import NOW, _world
from tests.recompute.conftest import make_settings, store_world
from tests.stripe_world import ts

API_VERSION = "2026-10-28.endive"


def _event(event_id: str, event_type: str, obj: dict[str, Any], created: int) -> dict[str, Any]:
    return {"id": event_id, "object": "event", "type": event_type, "created": created,
            "livemode": False, "api_version": API_VERSION, "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "data": {"object": copy.deepcopy(obj)}}


def _phase_movements(engine: Engine, settings: Any) -> list[tuple[str, str, float]]:
    with session_scope(engine) as session:
        document = outlook_report(session, settings, months=3)
    return [(m["customer_id"], m["cause"], m["amount"]) for m in document["movements"]
            if m["cause"] == "schedule_phase"]


def test_schedule_events_reach_the_outlook(db_url: str) -> None:
    engine = make_engine(db_url)
    settings = make_settings(db_url)
    w, plan = _world()
    with session_scope(engine) as session:
        store_world(session, w)
        recompute(session, settings, now=datetime.fromtimestamp(NOW, UTC))
    assert _phase_movements(engine, settings) == []

    # subscription_schedule.created, as the webhook endpoint records it, then processed.
    created = _event("evt_sched_1", "subscription_schedule.created", plan, NOW - 60)
    with session_scope(engine) as session:
        assert record_event(session, created, source="webhook")
    touched = process_stored_event(engine, settings, "evt_sched_1")
    assert touched == {"cus_d"}
    with session_scope(engine) as session:
        stored = session.scalars(select(StripeSubscriptionSchedule)).one()
        assert (stored.id, stored.customer_id, stored.status) == ("sub_sched_d", "cus_d", "active")
        recompute_dirty(session, settings, now=datetime.fromtimestamp(NOW, UTC))
    # 5 seats x 12 = 60 -> 3 seats = 36 on 1 January.
    assert _phase_movements(engine, settings) == [("cus_d", "schedule_phase", -24.0)]

    # Released (the subscription goes on as it is): no scheduled phase any more.
    released = dict(plan, status="released", released_at=NOW + 30,
                    released_subscription=plan["subscription"])
    later = ts(2025, 12, 2, 13)
    with session_scope(engine) as session:
        record_event(session, _event("evt_sched_2", "subscription_schedule.released", released,
                                     later), source="webhook")
    process_stored_event(engine, settings, "evt_sched_2")
    with session_scope(engine) as session:
        recompute_dirty(session, settings, now=datetime.fromtimestamp(later, UTC))
    assert _phase_movements(engine, settings) == []
    engine.dispose()
