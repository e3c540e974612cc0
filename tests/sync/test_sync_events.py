"""Incremental sync from /v1/events: order, duplicates, re-fetches, deletions, stale cursor."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, func, select

from integrations import stripe_mirror
from integrations.stripe_client import PINNED_API_VERSION, StripeReader
from integrations.stripe_sync import EVENTS_RESOURCE, apply_event, run_sync
from models.mirror import StripeCustomer, StripeEvent, StripePrice, StripeSubscription, SyncState
from nrr.db import make_engine, session_scope
from tests import stripe_world as sw
from tests.sync.conftest import ListWorld, build_account, make_settings

_serial = iter(range(1, 1_000_000))


def event(event_type: str, obj: dict[str, Any], created: int, *,
          api_version: str = PINNED_API_VERSION) -> dict[str, Any]:
    return {"id": f"evt_{next(_serial):06d}", "object": "event", "type": event_type,
            "created": created, "api_version": api_version, "livemode": False,
            "data": {"object": obj}, "pending_webhooks": 0, "request": {"id": None}}


def _synced(world: ListWorld, url: str, customers: int = 3) -> tuple[Engine, Any]:
    build_account(world, customers=customers)
    engine = make_engine(url)
    settings = make_settings(url)
    run_sync(engine, settings, client=StripeReader(settings))
    world.requests.clear()
    return engine, settings


def _customer(engine: Engine, customer_id: str) -> StripeCustomer:
    with session_scope(engine) as session:
        row = session.get(StripeCustomer, customer_id)
        assert row is not None
        return row


def test_events_apply_oldest_first_and_advance_the_cursor(world: ListWorld, db_url: str) -> None:
    engine, settings = _synced(world, db_url)
    now = int(time.time()) + 10
    first = sw.customer("cus_0001", email="first@example.com", created=1)
    second = sw.customer("cus_0001", email="second@example.com", created=1)
    world.add("events", event("customer.updated", second, now + 2))
    world.add("events", event("customer.updated", first, now + 1))
    world.add("events", event("customer.deleted", sw.customer("cus_0002", created=1), now + 3))
    world.add("events", event("charge.succeeded", {"id": "ch_1", "object": "charge"}, now + 4))

    result = run_sync(engine, settings, client=StripeReader(settings))

    assert result.mode == "events"
    assert result.events_applied == 3  # the charge type is filtered out by types[]
    assert _customer(engine, "cus_0001").email == "second@example.com"
    assert _customer(engine, "cus_0002").deleted is True
    assert {"cus_0001", "cus_0002"} <= result.customer_ids
    with session_scope(engine) as session:
        state = session.get(SyncState, EVENTS_RESOURCE)
        assert state is not None and state.event_cursor == now + 3
        assert session.scalar(select(func.count()).select_from(StripeEvent)) == 3
    types = [q["types"] for p, q in world.requests if p == "/v1/events"]
    assert len(types) == 2 and all(len(group) <= 20 for group in types)
    assert "customer.subscription.updated" in types[0] + types[1]


def test_events_already_processed_are_no_ops(world: ListWorld, sqlite_url: str) -> None:
    engine, settings = _synced(world, sqlite_url)
    now = int(time.time()) + 10
    world.add("events", event("customer.updated",
                              sw.customer("cus_0001", email="x@example.com", created=1), now))
    assert run_sync(engine, settings, client=StripeReader(settings)).events_applied == 1
    again = run_sync(engine, settings, client=StripeReader(settings))
    assert again.events_seen == 1 and again.events_applied == 0


def test_an_older_api_version_makes_the_object_be_refetched(world: ListWorld,
                                                           sqlite_url: str) -> None:
    engine, settings = _synced(world, sqlite_url)
    current = next(c for c in world.objects["customers"] if c["id"] == "cus_0001")
    current["email"] = "current@example.com"
    old_shape = {"id": "cus_0001", "object": "customer", "email": "old@example.com",
                 "created": 1, "discount": {"coupon": {"id": "co_10"}}}
    world.add("events", event("customer.updated", old_shape, int(time.time()) + 5,
                              api_version="2022-11-15"))

    run_sync(engine, settings, client=StripeReader(settings))

    assert "/v1/customers/cus_0001" in world.paths()
    assert _customer(engine, "cus_0001").email == "current@example.com"


def test_subscription_payload_with_discount_ids_is_refetched_with_expand(
        world: ListWorld, sqlite_url: str) -> None:
    engine, settings = _synced(world, sqlite_url)
    subscription = world.objects["subscriptions"][0]
    payload = dict(subscription, discounts=["di_unexpanded"], status="past_due")
    subscription["status"] = "past_due"
    world.add("events", event("customer.subscription.updated", payload, int(time.time()) + 5))

    run_sync(engine, settings, client=StripeReader(settings))

    fetched = [q for p, q in world.requests if p == f"/v1/subscriptions/{subscription['id']}"]
    assert fetched and fetched[0]["expand"] == ["discounts", "items.data.discounts"]
    with session_scope(engine) as session:
        row = session.get(StripeSubscription, subscription["id"])
        assert row is not None and row.status == "past_due"


def test_a_price_event_is_refetched_with_its_currency_options(world: ListWorld,
                                                             sqlite_url: str) -> None:
    engine, settings = _synced(world, sqlite_url)
    price = next(p for p in world.objects["prices"] if p["id"] == "price_basic")
    price["currency_options"] = {"eur": {"unit_amount": 900, "unit_amount_decimal": "900"}}
    price["nickname"] = "Basic (renamed)"
    # Events never carry includable fields such as currency_options.
    payload = {k: v for k, v in price.items() if k != "currency_options"}
    world.add("events", event("price.updated", payload, int(time.time()) + 5))

    run_sync(engine, settings, client=StripeReader(settings))

    fetched = [q for p, q in world.requests if p == "/v1/prices/price_basic"]
    assert fetched and fetched[0]["expand"] == ["tiers", "currency_options"]
    with session_scope(engine) as session:
        row = session.get(StripePrice, "price_basic")
        assert row is not None and row.nickname == "Basic (renamed)"
        assert row.raw["currency_options"]["eur"]["unit_amount"] == 900


def test_a_price_event_without_a_client_keeps_the_stored_currency_options(
        sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    settings = make_settings(sqlite_url)
    options = {"eur": {"unit_amount": 900, "unit_amount_decimal": "900"}}
    listed = {**sw.price("price_x", unit_amount=1_000), "currency_options": options}
    with session_scope(engine) as session:
        stripe_mirror.store_objects(session, "price", [listed], state_at=1_000)
    renamed = {k: v for k, v in listed.items() if k != "currency_options"}
    renamed["nickname"] = "renamed"
    with session_scope(engine) as session:
        apply_event(session, settings, event("price.updated", renamed, 2_000))
    with session_scope(engine) as session:
        row = session.get(StripePrice, "price_x")
        assert row is not None and row.nickname == "renamed" and row.state_at == 2_000
        assert row.raw["currency_options"] == options


def test_out_of_order_application_keeps_the_newer_state(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    settings = make_settings(sqlite_url)
    newer = event("customer.updated", sw.customer("cus_9", email="new@example.com"), 2_000)
    older = event("customer.updated", sw.customer("cus_9", email="old@example.com"), 1_000)
    deleted = event("customer.deleted", sw.customer("cus_9"), 3_000)
    with session_scope(engine) as session:
        apply_event(session, settings, newer)
        apply_event(session, settings, older)
    assert _customer(engine, "cus_9").email == "new@example.com"
    with session_scope(engine) as session:
        apply_event(session, settings, deleted)
        apply_event(session, settings, older)
    row = _customer(engine, "cus_9")
    assert row.deleted is True and row.email == "new@example.com"


def test_subscription_deleted_event_stores_the_cancellation(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    settings = make_settings(sqlite_url)
    price = sw.price("price_1")
    item = sw.subscription_item("si_1", price, subscription="sub_1", quantity=2,
                                current_period_start=100, current_period_end=200)
    canceled = sw.subscription("sub_1", "cus_1", [item], status="canceled", created=100,
                               start_date=100)
    with session_scope(engine) as session:
        touched = apply_event(session, settings,
                              event("customer.subscription.deleted", canceled, 300))
    assert touched == {"cus_1"}
    with session_scope(engine) as session:
        row = session.get(StripeSubscription, "sub_1")
        assert row is not None and row.status == "canceled" and row.deleted is False


def test_a_cursor_older_than_30_days_falls_back_to_a_list_refresh(world: ListWorld,
                                                                  db_url: str) -> None:
    engine, settings = _synced(world, db_url)
    with session_scope(engine) as session:
        state = session.get(SyncState, EVENTS_RESOURCE)
        assert state is not None
        state.event_cursor = int(time.time()) - 31 * 86_400
    # A change made while nobody watched, only visible by listing again.
    world.objects["customers"][0]["email"] = "changed@example.com"

    result = run_sync(engine, settings, client=StripeReader(settings))

    assert result.mode == "refresh"
    assert any("30 days" in note for note in result.notes)
    assert "/v1/customers" in world.paths() and "/v1/invoices" in world.paths()
    assert _customer(engine, world.objects["customers"][0]["id"]).email == "changed@example.com"
    with session_scope(engine) as session:
        state = session.get(SyncState, EVENTS_RESOURCE)
        assert state is not None and state.event_cursor is not None
        assert state.event_cursor > int(time.time()) - 86_400
    assert run_sync(engine, settings, client=StripeReader(settings)).mode == "events"


def test_an_event_without_an_object_is_quarantined_and_the_rest_applies(
        world: ListWorld, sqlite_url: str) -> None:
    from models.mirror import QuarantinedObject

    engine, settings = _synced(world, sqlite_url)
    now = int(time.time()) + 5
    broken = event("customer.updated", {"object": "customer"}, now)
    world.add("events", broken)
    world.add("events", event("customer.updated",
                              sw.customer("cus_0001", email="ok@example.com", created=1), now + 1))

    run_sync(engine, settings, client=StripeReader(settings))

    assert _customer(engine, "cus_0001").email == "ok@example.com"
    with session_scope(engine) as session:
        bad = session.scalars(select(QuarantinedObject)).all()
        assert [(q.object_type, q.object_id) for q in bad] == [("event", broken["id"])]


def test_a_partial_items_list_is_completed_from_subscription_items(
        mocked: Any, sqlite_url: str) -> None:
    import re

    import responses

    from models.mirror import StripeSubscriptionItem
    from tests.sync.conftest import API, query_of

    price = sw.price("price_1")
    items = [sw.subscription_item(f"si_{n:02d}", price, subscription="sub_1", quantity=n + 1,
                                  current_period_start=100, current_period_end=200)
             for n in range(14)]
    subscription = sw.subscription("sub_1", "cus_1", items, created=100, start_date=100)
    partial = dict(subscription, items={**subscription["items"], "data": items[:10],
                                        "has_more": True})
    mocked.add(responses.GET, re.compile(rf"{re.escape(API)}/v1/subscriptions/sub_1.*"),
               json=partial)
    mocked.add(responses.GET, re.compile(rf"{re.escape(API)}/v1/subscription_items.*"),
               json={"object": "list", "data": items, "has_more": False,
                     "url": "/v1/subscription_items"})
    engine = make_engine(sqlite_url)
    settings = make_settings(sqlite_url)
    with session_scope(engine) as session:
        apply_event(session, settings, event("customer.subscription.updated", partial, 300),
                    client=StripeReader(settings))
    with session_scope(engine) as session:
        stored = session.scalars(select(StripeSubscriptionItem)).all()
        assert sorted(i.id for i in stored) == [f"si_{n:02d}" for n in range(14)]
    listed = [c.request for c in mocked.calls if "subscription_items" in c.request.url]
    assert query_of(listed[0])["subscription"] == "sub_1"
