"""A contract with Stripe's own SDK: what the emulator serves and what the code reads.

Every object the emulator serves (customers, products, prices, coupons, discounts,
subscriptions with their items, invoices with their lines, events, the list envelopes, with
every nested object) holds only fields the installed ``stripe`` package's typed classes
declare, with values of the declared kinds. Every field path the code reads from a Stripe
payload (the domain's parsers, through the mirror's rows and directly, and the sync's
event handling) is declared there too. The read paths are recorded while the code runs over the emulator's account
(``tests/contract/sdk_schema.ReadLog``), so they cannot drift from the code.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
import stripe
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from integrations import stripe_mirror
from integrations.emulator import EmulatedAccount, EmulatorServer, generate_account
from integrations.stripe_sync import events as stripe_sync
from nrr.domain import stripe_shapes
from tests.contract.sdk_schema import ReadLog, payload_problems, resource_classes

NOW = 1_795_000_000  # 2026-11-18 (UTC)
KEY = "sk_test_emulator"


@pytest.fixture(scope="module")
def account() -> EmulatedAccount:
    """An account with every kind of history, then a burst of incremental changes (so the
    events hold every type the emulator makes, with previous_attributes)."""
    account = generate_account(seed=21, customers=90, months=14, now=NOW)
    account.apply_changes(60, now=NOW + 3_600)
    return account


def served_objects(account: EmulatedAccount) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every object the emulator holds, as ``(where, object)``: stored objects keep their
    includable fields (a price's tiers and currency_options), so this is a superset of
    what any response shows."""
    for kind in ("customers", "products", "prices", "coupons", "subscriptions", "invoices",
                 "events"):
        for object_id, obj in account.store(kind).items():
            yield f"{kind}/{object_id}", obj
    for invoice_id, lines in account.invoice_lines.items():
        for line in lines:
            yield f"invoices/{invoice_id}/lines/{line['id']}", line
    for discount_id, obj in account.discounts.items():
        yield f"discounts/{discount_id}", obj
    for customer_id, obj in account.deleted_customers.items():
        yield f"deleted customers/{customer_id}", obj
        yield f"deleted customers/{customer_id} (stub)", account.lookup(customer_id) or {}


def test_every_object_the_emulator_holds_is_declared_by_the_sdk(
        account: EmulatedAccount) -> None:
    kinds: set[str] = set()
    problems: list[str] = []
    for where, obj in served_objects(account):
        kinds.add(obj["object"])
        problems.extend(f"{where}: {p}" for p in payload_problems(obj))
    assert problems == []
    # Every kind the mirror stores was checked, nested ones included (line items sit
    # in invoices, subscription items and plans in subscriptions).
    assert {"customer", "product", "price", "coupon", "discount", "subscription", "invoice",
            "line_item", "event"} <= kinds
    events = account.store("events").values()
    assert any("previous_attributes" in e["data"] for e in events)


def _get(server: EmulatorServer, path: str, params: list[tuple[str, str]]) -> Any:
    response = requests.get(server.url + path, params=params,
                            headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_every_response_the_emulator_serves_is_declared_by_the_sdk(
        account: EmulatedAccount) -> None:
    """The responses themselves (list envelopes, expansions, includable fields), through
    HTTP as the SDK receives them."""
    listings: list[tuple[str, list[tuple[str, str]]]] = [
        ("/v1/customers", []),
        ("/v1/products", []),
        ("/v1/prices", [("expand[]", "data.tiers"), ("expand[]", "data.currency_options")]),
        ("/v1/coupons", []),
        ("/v1/subscriptions", [("status", "all"), ("expand[]", "data.discounts"),
                               ("expand[]", "data.items.data.discounts")]),
        ("/v1/invoices", [("expand[]", "data.discounts"),
                          ("expand[]", "data.discounts.source.coupon")]),
        ("/v1/events", []),
    ]
    problems: list[str] = []
    with EmulatorServer(account) as server:
        for path, params in listings:
            page = _get(server, path, [("limit", "100"), *params])
            problems.extend(f"{path}: {p}" for p in payload_problems(
                page, _list_of(page["data"][0]["object"])))
        invoice = next(i for i in account.invoices.values() if i["lines"]["has_more"])
        lines = _get(server, f"/v1/invoices/{invoice['id']}/lines", [("limit", "100")])
        problems.extend(f"lines: {p}" for p in payload_problems(lines, _list_of("line_item")))
        sub = next(iter(account.subscriptions))
        items = _get(server, "/v1/subscription_items", [("subscription", sub)])
        problems.extend(f"items: {p}" for p in payload_problems(
            items, _list_of("subscription_item")))
    assert problems == []


def _list_of(object_name: str) -> Any:
    from tests.contract.sdk_schema import Shape

    return Shape("stripe_list", inner=(Shape("object", cls=resource_classes()[object_name]),))


# --------------------------------------------------------------------------- reads


def _read_everything(account: EmulatedAccount, log: ReadLog, session: Session) -> None:
    """Run every reader of Stripe payloads over every object, through ``log``."""
    state_at, now = NOW, datetime.now(UTC)
    kinds = {"customers": "customer", "products": "product", "prices": "price",
             "coupons": "coupon", "subscriptions": "subscription", "invoices": "invoice"}
    domain: dict[str, Callable[[Any], Any]] = {
        "customer": stripe_shapes.parse_customer, "price": stripe_shapes.parse_price,
        "coupon": stripe_shapes.parse_coupon, "subscription": stripe_shapes.parse_subscription,
        "invoice": stripe_shapes.parse_invoice, "discount": stripe_shapes.parse_discount,
    }
    for store, kind in kinds.items():
        for obj in account.store(store).values():
            stripe_mirror.mirror_rows(kind, [log.wrap(obj)], state_at=state_at, now=now)
            if kind in domain:
                domain[kind](log.wrap(obj))
    for obj in account.discounts.values():
        stripe_mirror.mirror_rows("discount", [log.wrap(obj)], state_at=state_at, now=now)
        domain["discount"](log.wrap(obj))
    for invoice_id, lines in account.invoice_lines.items():
        for line in lines:
            # As the mirror reads a paged line (one-off lines too) and as the normaliser does.
            stripe_shapes.parse_invoice_line(log.wrap(line), invoice_id=invoice_id,
                                             invoice_status="paid", currency="usd", one_off=True)
            stripe_shapes.parse_invoice_line(log.wrap(line), invoice_id=invoice_id)
    settings = _settings()
    for event in account.events_since(0):
        stripe_shapes.observed_changes(log.wrap(event))
        obj = event["data"]["object"]
        stripe_sync._needs_refetch(log.wrap(event), log.wrap(obj))
        stripe_sync.record_event(session, log.wrap(event), source="contract")
        # A discount event without a client is read, then refused on purpose.
        with contextlib.suppress(ValueError):
            stripe_sync.apply_event(session, settings, log.wrap(event))


def _settings() -> Any:
    from tests.sync.conftest import make_settings

    return make_settings()


@pytest.fixture
def session(sqlite_url: str) -> Iterator[Session]:
    engine = create_engine(sqlite_url)
    with Session(engine) as session:
        yield session
        session.rollback()
    engine.dispose()


def test_every_field_the_code_reads_is_declared_by_the_sdk(
        account: EmulatedAccount, session: Session) -> None:
    log = ReadLog()
    _read_everything(account, log, session)
    assert log.problems() == []
    # The reads were recorded where they happen: nested, expanded and event objects.
    anchors = {anchor for anchor, _ in log.reads}
    assert {"customer", "price", "coupon", "discount", "subscription", "invoice",
            "line_item", "event"} <= anchors
    assert ("line_item", ("parent", "subscription_item_details", "proration")) in log.reads
    assert ("subscription_item", ("current_period_end",)) in log.reads
    assert ("subscription", ("items", "data")) in log.reads


# --------------------------------------------------------------------------- it can fail


def _first(account: EmulatedAccount, kind: str) -> dict[str, Any]:
    return copy.deepcopy(next(iter(account.store(kind).values())))


def _served_with(change: Callable[[dict[str, Any]], None], kind: str
                 ) -> Callable[[EmulatedAccount], dict[str, Any]]:
    def make(account: EmulatedAccount) -> dict[str, Any]:
        obj = _first(account, kind)
        change(obj)
        return obj
    return make


@pytest.mark.parametrize(("make", "expected"), [
    # Fields of API versions before 2025 (basil): Stripe no longer serves them.
    (_served_with(lambda s: s.update(current_period_end=NOW), "subscriptions"),
     "<root>.current_period_end: field unknown to the SDK's Subscription"),
    (_served_with(lambda i: i.update(subscription="sub_1"), "invoices"),
     "<root>.subscription: field unknown to the SDK's Invoice"),
    (_served_with(lambda s: s["items"]["data"][0]["price"]["recurring"].update(
        aggregate_usage="sum"), "subscriptions"),
     "<root>.items.data[0].price.recurring.aggregate_usage: field unknown to the SDK's "
     "Price.Recurring"),
    (_served_with(lambda i: i["lines"]["data"][0]["parent"]["subscription_item_details"]
                  .update(proration="yes"), "invoices"),
     "<root>.lines.data[0].parent.subscription_item_details.proration: str 'yes' where the "
     "SDK declares bool"),
    (_served_with(lambda e: e["data"].update(previous_attributes={"plan_name": "x"}), "events"),
     "previous_attributes.plan_name: field unknown to the SDK's"),
], ids=["subscription-period", "invoice-subscription", "nested-recurring", "wrong-kind",
        "previous-attributes"])
def test_a_field_the_sdk_does_not_know_is_caught(
        account: EmulatedAccount, make: Callable[[EmulatedAccount], dict[str, Any]],
        expected: str) -> None:
    problems = payload_problems(json.loads(json.dumps(make(account))))
    assert any(expected in p for p in problems), problems


def _reads_period_on_the_subscription(sub: Any) -> Any:
    return sub.get("current_period_end")  # the pre-2025 place


def _reads_the_invoice_subscription(invoice: Any) -> Any:
    return invoice["lines"]["data"][0].get("price")  # lines no longer carry a price


def _reads_coupon_on_the_discount(sub: Any) -> Any:
    return [d.get("coupon") for d in sub["discounts"] if isinstance(d, dict)] or \
        sub["items"]["data"][0]["price"].get("recurring", {}).get("aggregate_usage")


@pytest.mark.parametrize(("reader", "kind", "expected"), [
    (_reads_period_on_the_subscription, "subscriptions",
     "Subscription.current_period_end: the SDK declares no 'current_period_end'"),
    (_reads_the_invoice_subscription, "invoices",
     "InvoiceLineItem.price: the SDK declares no 'price'"),
    (_reads_coupon_on_the_discount, "subscriptions", "aggregate_usage"),
], ids=["subscription-period", "line-price", "nested"])
def test_a_field_the_code_reads_that_the_sdk_does_not_know_is_caught(
        account: EmulatedAccount, reader: Callable[[Any], Any], kind: str,
        expected: str) -> None:
    log = ReadLog()
    reader(log.wrap(_first(account, kind)))
    assert any(expected in p for p in log.problems()), log.problems()


def test_the_sdk_classes_are_the_current_api() -> None:
    """The check is only as good as the SDK it reads: the pinned API version's shapes."""
    assert stripe.api_version == "2026-10-28.endive"
    assert "current_period_end" not in stripe.Subscription.__annotations__
    assert "current_period_end" in stripe.SubscriptionItem.__annotations__


def test_the_tests_stripe_world_is_declared_by_the_sdk() -> None:
    """The tests' world builds with the emulator's shapes: its objects (and the events it
    records) meet the same contract."""
    from decimal import Decimal

    from tests.stripe_world import World, tier, ts

    world = World(seed=3)
    world.add_customer("cus_1", metadata={"tier": "gold"}, country="DE", currency="eur")
    world.add_price("price_seat", unit_amount=1_200, currency="eur", tax_behavior="inclusive")
    world.inclusive_tax_percent["price_seat"] = Decimal(19)
    world.add_price("price_tiered", billing_scheme="tiered", tiers_mode="graduated",
                    currency="eur", tiers=[tier(5, unit_amount=1_000, flat_amount=200),
                                           tier(None, unit_amount=500)])
    world.add_price("price_api", unit_amount=5, usage_type="metered", currency="eur",
                    transform_quantity=(1000, "up"))
    world.add_price("price_usd", unit_amount=900, currency_options={"eur": {"unit_amount": 800}})
    world.add_coupon("co_pct", percent_off=10, duration="forever")
    world.add_coupon("co_amt", amount_off=500, currency="eur", duration="repeating",
                     duration_in_months=2)
    world.add_customer_discount("cus_1", "co_pct", at=ts(2024, 12, 1))
    sub = world.subscribe("cus_1", [("price_seat", 3), ("price_tiered", 7), ("price_api", None)],
                          at=ts(2025, 1, 1), coupons=["co_pct"], trial_end=ts(2025, 1, 8))
    sub.add_discount("co_amt", at=ts(2025, 2, 3), item_id=sub.item_ids[0])
    sub.record_usage(sub.item_ids[2], 1_000, at=ts(2025, 2, 5))
    sub.change_quantity(sub.item_ids[0], 6, at=ts(2025, 2, 20), seen=True)
    sub.add_item("price_usd", 2, at=ts(2025, 2, 21))
    sub.remove_discount(sub.discount_ids[0], at=ts(2025, 3, 5), seen=True)
    sub.pause_collection(at=ts(2025, 3, 6), behavior="mark_uncollectible")
    sub.resume_collection(at=ts(2025, 4, 20))
    sub.cancel_at_period_end(at=ts(2025, 4, 25))
    other = world.subscribe("cus_1", [("price_seat", 1)], at=ts(2025, 2, 1))
    other.pause(at=ts(2025, 3, 1))
    world.advance(ts(2025, 6, 1))
    problems = []
    for kind, objects in world.objects().items():
        for obj in objects:
            problems.extend(f"{kind}/{obj['id']}: {p}" for p in payload_problems(obj))
    assert problems == []
