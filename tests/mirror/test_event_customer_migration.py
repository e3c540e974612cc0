"""An event's customer is a column (``record_event`` writes it; migration 0009 fills the
events stored before it by the same reading): the recompute reads events by that column."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from integrations.stripe_sync import record_event
from models.mirror import StripeEvent
from nrr.db import upgrade
from tests.mirror.migrations import downgrade_to


def _event(eid: str, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"id": eid, "object": "event", "type": kind, "created": 1_700_000_000,
            "api_version": "2025-03-31.basil", "livemode": False,
            "data": {"object": obj}}


EVENTS = [
    _event("evt_3", "customer.subscription.updated",
           {"id": "sub_1", "object": "subscription", "customer": "cus_b"}),
    _event("evt_1", "customer.discount.deleted",
           {"id": "di_1", "object": "discount", "customer": "cus_a", "subscription": "sub_1"}),
    _event("evt_2", "customer.created", {"id": "cus_c", "object": "customer"}),
    _event("evt_4", "customer.subscription.updated",  # an expanded customer is no id
           {"id": "sub_2", "object": "subscription", "customer": {"id": "cus_d"}}),
]


def _customers(session: Session) -> dict[str, str | None]:
    return {row.id: row.customer_id
            for row in session.execute(select(StripeEvent.id, StripeEvent.customer_id))}


def test_the_event_customer_is_written_and_filled_by_the_migration(db_engine: Engine) -> None:
    with Session(db_engine) as session:
        for event in EVENTS:
            assert record_event(session, event, source="webhook")
        session.commit()
        written = _customers(session)
    # Hand-read from the payloads above.
    assert written == {"evt_1": "cus_a", "evt_2": None, "evt_3": "cus_b", "evt_4": None}

    downgrade_to(db_engine, "0008_timeline_effective_at")
    upgrade(db_engine)
    with Session(db_engine) as session:
        assert _customers(session) == written
