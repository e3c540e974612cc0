"""The normaliser reads the current Stripe shapes and never raises on bad input."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nrr.domain.history import UnusableCustomerData, customer_history
from nrr.domain.records import Skip
from nrr.domain.stripe_shapes import (
    customer_data_from_stripe,
    parse_invoice,
    parse_invoice_line,
    parse_price,
    parse_subscription,
)
from nrr.settings import Policies
from tests.stripe_world import World, invoice, invoice_line, tier, ts


def _rich_world() -> World:
    world = World()
    world.add_customer("cus_1", metadata={"tier": "gold"})
    world.add_price("price_seat", unit_amount=1_200)
    world.add_price("price_tiered", billing_scheme="tiered", tiers_mode="graduated",
                    tiers=[tier(5, unit_amount=1_000, flat_amount=200), tier(None, unit_amount=500)])
    world.add_price("price_api", unit_amount=5, usage_type="metered")
    world.add_coupon("co_pct", percent_off=10, duration="forever")
    world.add_coupon("co_amt", amount_off=500, currency="usd", duration="repeating", duration_in_months=2)
    sub = world.subscribe("cus_1", [("price_seat", 3), ("price_tiered", 7), ("price_api", None)],
                          at=ts(2025, 1, 1), coupons=["co_pct"], trial_end=ts(2025, 1, 8))
    sub.add_discount("co_amt", at=ts(2025, 2, 3), item_id=sub.item_ids[0])
    sub.record_usage(sub.item_ids[2], 1_000, at=ts(2025, 2, 5))
    sub.change_quantity(sub.item_ids[0], 6, at=ts(2025, 2, 20))
    sub.change_quantity(sub.item_ids[1], 9, at=ts(2025, 3, 2), prorate=False, seen=True)
    sub.remove_discount(sub.discount_ids[0], at=ts(2025, 3, 5), seen=True)
    sub.cancel_at_period_end(at=ts(2025, 3, 20))
    world.advance(ts(2025, 5, 1))
    return world


WORLD_OBJECTS = _rich_world().customer_objects("cus_1")


def test_current_shapes_parse_without_skips() -> None:
    data, skips = customer_data_from_stripe("cus_1", WORLD_OBJECTS)
    assert skips == []
    sub = data.subscriptions[0]
    assert [it.quantity for it in sub.items] == [6, 9, None]
    assert all(it.current_period_end for it in sub.items)
    assert data.prices["price_tiered"].tiers[-1].up_to is None
    assert any(line.proration and line.amount < 0 for line in data.lines)
    assert {d.coupon_id for d in data.discounts.values()} == {"co_pct", "co_amt"}
    assert [c.kind for c in data.observed] == ["item", "discount_removed"]
    assert [d.removed_at for d in data.discounts.values() if d.coupon_id == "co_pct"] == [ts(2025, 3, 5)]
    assert customer_history(data).points["usd"]


def test_one_off_invoice_items_are_not_service_lines() -> None:
    body = invoice("in_x", "cus_1", subscription=None, created=ts(2025, 1, 1), lines=[
        invoice_line("il_x", invoice="in_x", subscription=None, subscription_item=None, price_id="price_seat",
                     quantity=1, period_start=ts(2025, 1, 1), period_end=ts(2025, 1, 1), amount=999)])
    parsed = parse_invoice(body)
    assert not isinstance(parsed, Skip)
    assert parsed[1] == [] and parsed[2] == []


def test_null_quantity_and_negative_proration_are_normal_data() -> None:
    line = invoice_line("il_n", invoice="in_1", subscription="sub_1", subscription_item="si_1",
                        price_id="price_api", quantity=None, period_start=10, period_end=20, amount=-300,
                        proration=True)
    parsed = parse_invoice_line(line)
    assert parsed is not None and not isinstance(parsed, Skip)
    assert parsed.quantity is None and parsed.amount == -300 and parsed.proration


def test_unknown_enum_values_are_kept_not_skipped() -> None:
    price = copy.deepcopy(WORLD_OBJECTS["prices"][0])
    price["recurring"]["interval"] = "fortnight"
    parsed_price = parse_price(price)
    assert not isinstance(parsed_price, Skip) and parsed_price.interval == "fortnight"
    sub = copy.deepcopy(WORLD_OBJECTS["subscriptions"][0])
    sub["status"] = "hibernating"
    parsed_sub = parse_subscription(sub)
    assert not isinstance(parsed_sub, Skip) and parsed_sub[0].status == "hibernating"
    objs = {**WORLD_OBJECTS, "subscriptions": [sub]}
    data, skips = customer_data_from_stripe("cus_1", objs)
    assert skips == []
    # A subscription in a status nobody knows cannot be counted or left uncounted without
    # rewriting the customer's history: the customer is left out, naming it (the recompute
    # records it and computes everyone else).
    with pytest.raises(UnusableCustomerData, match=f"{sub['id']} has unknown status 'hibernating'"):
        customer_history(data)


def test_livemode_other_mode_objects_are_left_out() -> None:
    objs = copy.deepcopy(WORLD_OBJECTS)
    objs["invoices"][0]["livemode"] = True
    data, skips = customer_data_from_stripe("cus_1", objs, livemode=False)
    assert [s.object_id for s in skips] == [objs["invoices"][0]["id"]]
    assert objs["invoices"][0]["id"] not in data.invoices


# --- property: malformed input never raises and skips only the broken object --------------


def _dicts_with_ids(value: Any, found: list[tuple[dict[str, Any], tuple[str, ...]]],
                   owners: tuple[str, ...] = ()) -> None:
    """Every Stripe object in ``value`` with the ids of the objects embedding it."""
    if isinstance(value, dict):
        if isinstance(value.get("id"), str) and value.get("object") in {
                "customer", "price", "coupon", "discount", "subscription", "subscription_item",
                "invoice", "line_item", "event"}:
            found.append((value, owners))
            owners = (*owners, value["id"])
        for child in value.values():
            _dicts_with_ids(child, found, owners)
    elif isinstance(value, list):
        for child in value:
            _dicts_with_ids(child, found, owners)


WRONG_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**40), max_value=2**40), st.text(max_size=8),
    st.floats(allow_nan=True), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3),
                                                                                    st.integers(), max_size=2),
    st.sampled_from(["frobnicated", "inf", "-1", "month", "tiered", "volume", ""]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_malformed_objects_never_raise_and_skip_only_themselves(data: st.DataObject) -> None:
    objs = copy.deepcopy(WORLD_OBJECTS)
    targets: list[tuple[dict[str, Any], tuple[str, ...]]] = []
    _dicts_with_ids(objs, targets)
    target, owners = data.draw(st.sampled_from(targets))
    target_id = target["id"]
    key = data.draw(st.sampled_from(sorted(target)))
    action = data.draw(st.sampled_from(["delete", "replace", "nested"]))
    if action == "delete":
        del target[key]
    elif action == "replace":
        target[key] = data.draw(WRONG_VALUES)
    else:
        nested = target[key]
        if isinstance(nested, dict) and isinstance(nested.get("id"), str):
            owners = (*owners, nested["id"])  # breaking an embedded object (an item's price)
        if isinstance(nested, dict) and nested:
            inner = data.draw(st.sampled_from(sorted(nested)))
            nested[inner] = data.draw(WRONG_VALUES)
        else:
            target[key] = data.draw(WRONG_VALUES)
    parsed, skips = customer_data_from_stripe("cus_1", objs)
    try:
        history = customer_history(parsed, Policies(metered="invoiced", discounts="all"))
    except UnusableCustomerData as exc:
        # The whole customer is left out by the recompute (one customer never blanks an
        # account); the reason names the broken object or one that embeds it.
        assert any(i in str(exc) for i in (target_id, *owners) if i), (exc, target_id, key)
        return
    # A broken id names the object by what is left of it.
    broken_ids = (target.get("id"), "") if key == "id" else ()
    for skip in [*skips, *history.skips]:
        assert isinstance(skip, Skip) and skip.reason
        # The broken object itself, or an object embedding it (an item's price, an event's
        # subscription) which cannot be understood without it; never an unrelated object.
        assert skip.object_id in (target_id, None, *owners, *broken_ids), (
            skip, target_id, key, action)
