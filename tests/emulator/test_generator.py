"""The account generator: determinism, Stripe's invariants, variety, incremental changes."""

from __future__ import annotations

import copy
import json
from collections import Counter
from typing import Any

import pytest
import stripe
from stripe._util import convert_to_stripe_object

from integrations.emulator import (
    API_VERSION,
    EVENT_WINDOW,
    EmulatedAccount,
    EmulatorServer,
    add_months,
    amount_for,
    generate_account,
    public_view,
)
from tests.emulator.conftest import NOW, make_client


def dump(account: EmulatedAccount) -> str:
    stores = {kind: account.store(kind) for kind in ("customers", "products", "prices",
                                                     "coupons", "subscriptions", "invoices",
                                                     "events")}
    stores["lines"] = account.invoice_lines  # type: ignore[assignment]
    stores["discounts"] = account.discounts
    return json.dumps(stores, sort_keys=True)


def test_deterministic_for_a_seed_and_now() -> None:
    a = generate_account(seed=5, customers=40, months=12, now=NOW)
    b = generate_account(seed=5, customers=40, months=12, now=NOW)
    assert dump(a) == dump(b)
    assert dump(a) != dump(generate_account(seed=6, customers=40, months=12, now=NOW))
    assert dump(a) != dump(generate_account(seed=5, customers=40, months=12, now=NOW + 86_400))
    assert a.apply_changes(5) == b.apply_changes(5)
    assert dump(a) == dump(b)


def test_counts_and_sizes(big_account: EmulatedAccount) -> None:
    counts = big_account.counts()
    assert counts["customers"] + counts["deleted_customers"] == 300
    assert counts["subscriptions"] >= 300
    assert counts["invoices"] > 300 * 6
    assert counts["invoice_lines"] > counts["invoices"]
    assert counts["events"] > 300
    assert set(counts) >= {"customers", "products", "prices", "coupons", "subscriptions",
                           "invoices", "events", "invoice_lines"}


def test_every_reference_exists(big_account: EmulatedAccount) -> None:
    a = big_account
    customer_ids = set(a.customers) | set(a.deleted_customers)
    for sub in a.subscriptions.values():
        assert sub["customer"] in customer_ids
        assert sub["latest_invoice"] in a.invoices
        for did in sub["discounts"]:
            assert a.discounts[did]["source"]["coupon"] in a.coupons
        for item in sub["items"]["data"]:
            assert item["price"]["id"] in a.prices
            assert item["price"]["product"] in a.products
            assert item["subscription"] == sub["id"]
    for inv_id, inv in a.invoices.items():
        lines = a.invoice_lines[inv_id]
        assert inv["customer"] in customer_ids
        assert inv["parent"]["subscription_details"]["subscription"] in a.subscriptions
        assert inv["lines"]["data"] == lines[:10]
        assert inv["lines"]["has_more"] is (len(lines) > 10)
        for line in lines:
            assert line["invoice"] == inv_id
            assert line["pricing"]["price_details"]["price"] in a.prices
            assert line["currency"] == inv["currency"]
            details = line["parent"]["subscription_item_details"]
            assert details["subscription"] == inv["parent"]["subscription_details"][
                "subscription"]
            for amount in line["discount_amounts"]:
                assert amount["discount"] in a.discounts
        for did in inv["discounts"]:
            assert did in a.discounts
    for price in a.prices.values():
        assert price["product"] in a.products


def _foreign_prices(account: EmulatedAccount) -> list[tuple[str, str, str]]:
    """(object id, price id, currency) wherever a subscription or one of its invoice lines
    uses a price that has neither that currency nor a currency option for it."""
    def valid(price_id: str, currency: str) -> bool:
        price = account.prices[price_id]
        return price["currency"] == currency or currency in price["currency_options"]

    bad = [(item["id"], item["price"]["id"], sub["currency"])
           for sub in account.subscriptions.values() for item in sub["items"]["data"]
           if not valid(item["price"]["id"], sub["currency"])]
    bad += [(line["id"], line["pricing"]["price_details"]["price"], inv["currency"])
            for inv_id, inv in account.invoices.items() for line in account.invoice_lines[inv_id]
            if not valid(line["pricing"]["price_details"]["price"], inv["currency"])]
    return bad


def test_every_price_used_is_valid_in_its_subscription_currency(
        big_account: EmulatedAccount, fresh_account: EmulatedAccount) -> None:
    # A Stripe subscription has one currency: a price in another one needs an option for it.
    assert _foreign_prices(big_account) == []
    assert any(item["price"]["currency"] != sub["currency"]  # the options are exercised
               for sub in big_account.subscriptions.values() for item in sub["items"]["data"])
    for _ in range(4):
        fresh_account.apply_changes(40)
    assert _foreign_prices(fresh_account) == []


def test_current_api_shapes(big_account: EmulatedAccount) -> None:
    a = big_account
    for sub in a.subscriptions.values():
        assert "current_period_start" not in sub and "current_period_end" not in sub
        assert "discount" not in sub
        assert all(isinstance(d, str) for d in sub["discounts"])
        for item in sub["items"]["data"]:
            assert item["current_period_start"] < item["current_period_end"]
        if sub["status"] == "paused":
            paused = sub["status_details"]["paused"]
            assert paused["transitioned_at"] >= sub["created"]
            assert paused["type"] == "subscription"
    for inv in a.invoices.values():
        assert "subscription" not in inv
        for line in a.invoice_lines[inv["id"]]:
            assert "price" not in line
            assert line["period"]["start"] <= line["period"]["end"]
    for disc in a.discounts.values():
        assert "coupon" not in disc
        assert disc["source"]["type"] == "coupon"


def test_objects_load_in_the_sdk_classes(big_account: EmulatedAccount) -> None:
    a = big_account
    samples: list[dict[str, Any]] = []
    for kind in ("customers", "products", "prices", "coupons", "subscriptions", "invoices",
                 "events"):
        samples.extend(list(a.store(kind).values())[:25])
    samples.extend(list(a.discounts.values())[:10])
    classes: dict[str, Any] = {"customer": stripe.Customer, "product": stripe.Product, "price": stripe.Price,
               "coupon": stripe.Coupon, "subscription": stripe.Subscription,
               "invoice": stripe.Invoice, "event": stripe.Event, "discount": stripe.Discount}
    for obj in samples:
        converted: Any = convert_to_stripe_object(json.loads(json.dumps(obj)))
        assert isinstance(converted, classes[obj["object"]])
        assert converted.id == obj["id"]
    sub = convert_to_stripe_object(next(iter(a.subscriptions.values())))
    assert isinstance(sub, stripe.Subscription)
    assert isinstance(sub["items"].data[0], stripe.SubscriptionItem)
    inv: Any = convert_to_stripe_object(next(iter(a.invoices.values())))
    assert isinstance(inv.lines.data[0], stripe.InvoiceLineItem)


def test_variety(big_account: EmulatedAccount) -> None:
    a = big_account
    statuses = Counter(s["status"] for s in a.subscriptions.values())
    for status in ("active", "canceled", "unpaid", "paused", "incomplete_expired"):
        assert statuses[status] > 0, status
    histories = [e["data"]["object"]["status"] for e in a.events.values()
                 if e["type"].startswith("customer.subscription.")]
    assert "past_due" in histories or statuses["past_due"] > 0
    assert any(s["trial_start"] is not None for s in a.subscriptions.values())
    assert any(s["cancel_at_period_end"] and s["status"] == "active"
               for s in a.subscriptions.values()) or any(
        s["cancel_at_period_end"] and s["status"] == "canceled"
        for s in a.subscriptions.values())
    assert any(s["pause_collection"] is not None for s in a.subscriptions.values()) or any(
        i["status"] == "void" and i["billing_reason"] == "subscription_cycle"
        for i in a.invoices.values())
    currencies = {s["currency"] for s in a.subscriptions.values()}
    assert currencies == {"usd", "eur", "gbp", "jpy"}
    intervals = {i["price"]["recurring"]["interval"] for s in a.subscriptions.values()
                 for i in s["items"]["data"]}
    assert intervals == {"month", "year"}
    used = {line["pricing"]["price_details"]["price"] for lines in a.invoice_lines.values()
            for line in lines}
    used_prices = [a.prices[p] for p in used]
    assert {p["tiers_mode"] for p in used_prices} >= {"graduated", "volume"}
    assert any(p["recurring"]["usage_type"] == "metered" for p in used_prices)
    assert any(p["transform_quantity"] for p in used_prices)
    assert any(len(p["currency_options"]) > 1 and p["billing_scheme"] == "per_unit"
               for p in used_prices)
    coupons = {a.discounts[d]["source"]["coupon"] for inv in a.invoices.values()
               for d in inv["discounts"]}
    durations = {a.coupons[c]["duration"] for c in coupons}
    assert durations == {"once", "repeating", "forever"}
    assert {a.coupons[c]["percent_off"] is None for c in coupons} == {True, False}
    reasons = Counter(i["billing_reason"] for i in a.invoices.values())
    assert {"subscription_create", "subscription_cycle", "subscription_update"} <= set(reasons)
    assert {i["status"] for i in a.invoices.values()} >= {"paid", "open", "void",
                                                         "uncollectible"}
    assert a.deleted_customers
    assert any(i["lines"]["has_more"] for i in a.invoices.values())
    line_level = [line for lines in a.invoice_lines.values() for line in lines
                  if line["discounts"]]
    assert line_level
    for line in line_level:
        item_id = line["parent"]["subscription_item_details"]["subscription_item"]
        assert all(a.discounts[d]["subscription_item"] == item_id for d in line["discounts"])
        assert {x["discount"] for x in line["discount_amounts"]} >= set(line["discounts"]) or \
            line["amount"] <= 0


def test_proration_pairs_around_each_mid_period_change(big_account: EmulatedAccount) -> None:
    a = big_account
    updates = [i for i in a.invoices.values() if i["billing_reason"] == "subscription_update"]
    assert len(updates) > 20
    switches = 0
    for inv in updates:
        lines = a.invoice_lines[inv["id"]]
        assert len(lines) == 2
        # The credit is the line for the unused time on the old state, whatever its place
        # (lines come in no fixed order).
        credit, charge = sorted(lines, key=lambda line: not line["description"]
                                .startswith("Unused time"))
        assert credit["description"].startswith("Unused time")
        if not charge["parent"]["subscription_item_details"]["proration"]:
            # Monthly to yearly: the cycle restarts; the whole new year is billed.
            switches += 1
            assert credit["parent"]["subscription_item_details"]["proration"] is True
            assert charge["period"]["start"] == credit["period"]["start"] == inv["created"]
            assert charge["period"]["end"] == add_months(charge["period"]["start"], 12)
            assert a.prices[charge["pricing"]["price_details"]["price"]]["recurring"][
                "interval"] == "year"
            continue
        for line in lines:
            assert line["parent"]["subscription_item_details"]["proration"] is True
            assert line["discountable"] is False
        c_item = credit["parent"]["subscription_item_details"]["subscription_item"]
        assert c_item == charge["parent"]["subscription_item_details"]["subscription_item"]
        assert credit["amount"] <= 0 <= charge["amount"]
        assert credit["period"] == charge["period"]
        change = credit["period"]["start"]
        assert change == inv["created"]
        assert inv["parent"]["subscription_details"]["subscription_proration_date"] == change
        # The credit is the unused part of the old state's full period charge.
        old_price = a.prices[credit["pricing"]["price_details"]["price"]]
        full = amount_for(old_price, credit["quantity"], inv["currency"])
        assert abs(credit["amount"]) <= full
        assert credit["period"]["end"] > change
    assert switches > 0


def test_cycle_invoices_follow_the_billing_anchor(big_account: EmulatedAccount) -> None:
    a = big_account

    def licensed(inv: dict[str, Any]) -> list[dict[str, Any]]:
        """The invoice's lines billing a licensed price's whole period in advance."""
        return [line for line in a.invoice_lines[inv["id"]]
                if a.prices[line["pricing"]["price_details"]["price"]]["recurring"][
                    "usage_type"] == "licensed"
                and not line["parent"]["subscription_item_details"]["proration"]]

    # Cycle invoices, and the change invoices that restart the cycle (a switch to yearly
    # bills the new year in advance on the change's invoice).
    by_sub: dict[str, list[dict[str, Any]]] = {}
    for inv in a.invoices.values():
        if inv["billing_reason"] == "subscription_cycle" or (
                inv["billing_reason"] == "subscription_update" and licensed(inv)):
            sub = inv["parent"]["subscription_details"]["subscription"]
            by_sub.setdefault(sub, []).append(inv)
    checked = restarts = 0
    for sub_id, invoices in by_sub.items():
        invoices.sort(key=lambda i: i["created"])
        restarts += sum(inv["billing_reason"] == "subscription_update" for inv in invoices)
        for prev, nxt in zip(invoices, invoices[1:], strict=False):
            if nxt["billing_reason"] != "subscription_cycle" or not licensed(prev):
                continue
            # Billed in advance: the next renewal happens when this period ends.
            assert licensed(prev)[0]["period"]["end"] == nxt["created"], sub_id
            checked += 1
    assert checked > 500
    assert restarts > 0


def assert_no_overdue_work(a: EmulatedAccount) -> None:
    """Nothing Stripe would have done by ``now`` is left undone."""
    for inv in a.invoices.values():
        if inv["status"] == "draft" and inv["auto_advance"]:
            assert inv["automatically_finalizes_at"] > a.now, inv["id"]
    for sub in a.subscriptions.values():
        if sub["status"] == "incomplete":
            assert sub["created"] + 23 * 3600 > a.now, sub["id"]


def test_nothing_overdue(big_account: EmulatedAccount) -> None:
    assert_no_overdue_work(big_account)


def test_invoice_totals(big_account: EmulatedAccount) -> None:
    for inv in big_account.invoices.values():
        lines = big_account.invoice_lines[inv["id"]]
        subtotal = sum(line["amount"] for line in lines)
        discounts = sum(d["amount"] for line in lines for d in line["discount_amounts"])
        assert inv["subtotal"] == subtotal
        assert sum(d["amount"] for d in inv["total_discount_amounts"]) == discounts
        assert inv["total"] == subtotal - discounts
        assert inv["amount_due"] == max(inv["total"], 0)
        if inv["status"] == "paid":
            assert inv["amount_paid"] == inv["amount_due"]
            assert inv["status_transitions"]["paid_at"] is not None
        if inv["status"] == "draft":
            assert inv["number"] is None


def test_events_last_30_days_sorted_and_in_state(big_account: EmulatedAccount) -> None:
    a = big_account
    events = list(a.events.values())
    assert events
    assert all(a.now - EVENT_WINDOW < e["created"] <= a.now for e in events)
    assert all(e["api_version"] == API_VERSION for e in events)
    created = [e["created"] for e in events]
    assert created == sorted(created)  # ids carry no order: only instants do
    types = Counter(e["type"] for e in events)
    for needed in ("customer.created", "customer.subscription.created",
                   "customer.subscription.updated", "customer.subscription.deleted",
                   "invoice.created", "invoice.finalized", "invoice.paid",
                   "invoice.payment_failed", "price.created", "price.updated",
                   "coupon.created"):
        assert types[needed] > 0, needed
    for e in events:
        obj = e["data"]["object"]
        if e["type"].endswith(".updated"):
            prev = e["data"]["previous_attributes"]
            assert prev
            for key, old in prev.items():
                assert obj.get(key) != old or isinstance(old, dict), (e["type"], key)
        if e["type"].startswith("invoice."):
            assert obj["object"] == "invoice"
            assert len(obj["lines"]["data"]) <= 10
        if e["type"].startswith("price."):
            assert "tiers" not in obj
    # The object in an event is the state of that moment, not the final one.
    paid = [e for e in events if e["type"] == "invoice.created"]
    assert any(e["data"]["object"]["status"] == "draft" for e in paid)
    final = {e["data"]["object"]["id"]: e for e in events if e["type"] == "invoice.paid"}
    for inv_id, e in final.items():
        assert e["data"]["object"]["status"] == "paid"
        assert a.invoices[inv_id]["status"] == "paid"


def test_apply_changes(fresh_account: EmulatedAccount) -> None:
    a = fresh_account
    before_counts = a.counts()
    before_events = set(a.events)
    old_now = a.now
    new = a.apply_changes(12)
    assert a.now == old_now + 13
    assert new
    assert set(a.events) - before_events == {e["id"] for e in new}
    assert all(old_now < e["created"] <= a.now for e in new)
    assert [e["created"] for e in new] == sorted(e["created"] for e in new)
    types = Counter(e["type"] for e in new)
    assert sum(types.values()) >= 12
    after = a.counts()
    assert after["invoices"] >= before_counts["invoices"]
    changed_subs = {e["data"]["object"]["id"] for e in new
                    if e["type"].startswith("customer.subscription.")}
    renamed = {e["data"]["object"]["id"] for e in new if e["type"] == "price.updated"}

    def without_renamed_prices(sub: dict[str, Any]) -> dict[str, Any]:
        # A price renamed later shows its new name inside the subscription with no
        # subscription event (Stripe renders the price as it is now): compare those by id.
        view = public_view(sub)
        for item in view["items"]["data"]:
            if item["price"]["id"] in renamed:
                item["price"] = item["plan"] = item["price"]["id"]
        return view

    for sub_id in changed_subs:
        latest = [e for e in new if e["type"].startswith("customer.subscription.")
                  and e["data"]["object"]["id"] == sub_id][-1]
        assert without_renamed_prices(latest["data"]["object"]) == without_renamed_prices(
            a.subscriptions[sub_id])
    # A bigger step bills the renewals that fall due.
    step = a.apply_changes(0, now=a.now + 40 * 86_400)
    assert Counter(e["type"] for e in step)["invoice.created"] > 0
    assert all(old_now < e["created"] <= a.now for e in step)
    assert_no_overdue_work(a)
    with pytest.raises(ValueError):
        a.apply_changes(1, now=old_now)


def test_apply_changes_variety_and_api_version(fresh_account: EmulatedAccount) -> None:
    a = fresh_account
    new = a.apply_changes(80, api_version="2025-03-31.basil")
    assert {e["api_version"] for e in new} == {"2025-03-31.basil"}
    types = Counter(e["type"] for e in new)
    for needed in ("customer.created", "customer.subscription.created",
                   "customer.subscription.updated", "customer.subscription.deleted",
                   "invoice.created", "invoice.paid", "customer.discount.created"):
        assert types[needed] > 0, needed
    deleted = [e["data"]["object"]["id"] for e in new if e["type"] == "customer.deleted"]
    for cid in deleted:
        assert cid in a.deleted_customers and cid not in a.customers
        assert all(s["status"] in ("canceled", "incomplete_expired")
                   for s in a.subscriptions.values() if s["customer"] == cid)
    updates = [i for i in a.invoices.values() if i["billing_reason"] == "subscription_update"
               and i["created"] > NOW]
    assert updates
    assert all(len(a.invoice_lines[i["id"]]) == 2 for i in updates)


def test_changes_are_served(fresh_account: EmulatedAccount) -> None:
    a = fresh_account
    with EmulatorServer(a) as server:
        client = make_client(server.url)
        before = {s.id for s in client.v1.subscriptions.list(
            {"status": "all", "limit": 100}).auto_paging_iter()}
        cursor = a.now
        new = a.apply_changes(15)
        created_subs = {e["data"]["object"]["id"] for e in new
                        if e["type"] == "customer.subscription.created"}
        after = {s.id for s in client.v1.subscriptions.list(
            {"status": "all", "limit": 100}).auto_paging_iter()}
        assert after == before | created_subs
        listed = [e.id for e in client.v1.events.list(
            {"created": {"gt": cursor}, "limit": 100}).auto_paging_iter()]
        assert sorted(listed) == sorted(e["id"] for e in new)


def test_add_months_clamps_to_month_end() -> None:
    jan31 = 1_769_817_600  # 2026-01-31 00:00 UTC
    assert add_months(jan31, 1) == 1_772_236_800  # 2026-02-28
    assert add_months(add_months(jan31, 1), 1, anchor_day=31) == 1_774_915_200  # 2026-03-31
    assert add_months(jan31, -12) == 1_738_281_600  # 2025-01-31


def test_tier_pricing() -> None:
    from integrations.emulator import shapes

    graduated = shapes.price(id="p", product="prod", currency="usd", created=0,
                             livemode=False, tiers_mode="graduated",
                             tiers=[shapes.tier(10, 100), shapes.tier(None, 50, 1000)])
    assert amount_for(graduated, 4, "usd") == 400
    assert amount_for(graduated, 12, "usd") == 1000 + 100 + 1000
    volume = shapes.price(id="v", product="prod", currency="usd", created=0, livemode=False,
                          tiers_mode="volume",
                          tiers=[shapes.tier(10, 100), shapes.tier(None, 50, 1000)])
    assert amount_for(volume, 12, "usd") == 12 * 50 + 1000
    metered = shapes.price(id="m", product="prod", currency="usd", created=0, livemode=False,
                           unit_amount=200, usage_type="metered",
                           transform_quantity={"divide_by": 1000, "round": "up"},
                           currency_options={"eur": {"unit_amount": 180}})
    assert amount_for(metered, 1001, "usd") == 400
    assert amount_for(metered, 1001, "eur") == 360


def _scheduled_kinds(a: EmulatedAccount) -> Counter[str]:
    """What each live subscription has scheduled, read from the Stripe objects alone."""
    kinds: Counter[str] = Counter()
    for schedule in a.subscription_schedules.values():
        if schedule["status"] != "active":
            continue
        sub = a.subscriptions[schedule["subscription"]]
        assert sub["schedule"] == schedule["id"] and sub["customer"] == schedule["customer"]
        first, last = schedule["phases"][0], schedule["phases"][-1]
        assert first["start_date"] <= a.now < first["end_date"] == last["start_date"]
        assert [(i["price"], i["quantity"]) for i in first["items"]] == [
            (i["price"]["id"], i["quantity"]) for i in sub["items"]["data"]]
        if schedule["end_behavior"] == "cancel":
            kinds["schedule_cancel"] += 1
        elif [i["price"] for i in last["items"]] != [i["price"] for i in first["items"]]:
            old, new = (a.prices[first["items"][0]["price"]], a.prices[last["items"][0]["price"]])
            assert amount_for(new, last["items"][0]["quantity"], sub["currency"]) < amount_for(
                old, first["items"][0]["quantity"], sub["currency"])
            kinds["cheaper_price"] += 1
        else:
            assert sum(i["quantity"] for i in last["items"]) < sum(
                i["quantity"] for i in first["items"])
            kinds["fewer_seats"] += 1
    for sub in a.subscriptions.values():
        if sub["status"] not in ("active", "trialing"):
            continue
        if sub["cancel_at"] is not None and not sub["cancel_at_period_end"]:
            ends = {i["current_period_end"] for i in sub["items"]["data"]}
            assert sub["cancel_at"] > a.now and sub["cancel_at"] not in ends
            kinds["cancel_at"] += 1
        if sub["cancel_at_period_end"]:
            kinds["cancel_at_period_end"] += 1
        if (sub["pause_collection"] or {}).get("resumes_at", 0) > a.now:
            kinds["pause"] += 1
        if sub["status"] == "trialing" and sub["trial_end"] > a.now:
            kinds["trial"] += 1
        if any(a.discounts[d]["end"] is not None and a.discounts[d]["end"] > a.now
               for d in sub["discounts"]):
            kinds["ending_discount"] += 1
    return kinds


def test_the_months_ahead_are_scheduled(big_account: EmulatedAccount) -> None:
    """Schedules with a later phase (fewer seats, a cheaper price, an end that cancels),
    cancellations at a date and at period end, ending discounts, pauses that resume and
    trials ahead: each at least once, and the schedules are the same for the same seed."""
    kinds = _scheduled_kinds(big_account)
    for kind in ("fewer_seats", "cheaper_price", "schedule_cancel", "cancel_at",
                 "cancel_at_period_end", "ending_discount", "pause", "trial"):
        assert kinds[kind] >= 1, kind
    created = [e for e in big_account.events.values()
               if e["type"] == "subscription_schedule.created"]
    assert {e["data"]["object"]["id"] for e in created} == set(
        big_account.subscription_schedules)
    again = generate_account(seed=7, customers=300, months=24, now=NOW)
    assert again.subscription_schedules == big_account.subscription_schedules


def test_the_schedules_happen_when_the_clock_passes_them() -> None:
    a = generate_account(seed=3, customers=200, months=12, now=NOW)
    active = {sid: copy.deepcopy(s) for sid, s in a.subscription_schedules.items()}
    cancel_at = {sid: s["cancel_at"] for sid, s in a.subscriptions.items()
                 if s["status"] == "active" and s["cancel_at"] is not None
                 and not s["cancel_at_period_end"]}
    assert active and cancel_at
    a.advance(NOW + 40 * 86_400)
    entered: set[bool] = set()
    for sid, before in active.items():
        sub = a.subscriptions[before["subscription"]]
        second, end = before["phases"][1], before["phases"][1]["end_date"]
        if end > a.now:  # the subscription has the prices and seats of the phase it is in
            phase = second if second["start_date"] <= a.now else before["phases"][0]
            assert a.subscription_schedules[sid]["status"] == "active"
            assert a.subscription_schedules[sid]["current_phase"]["start_date"] == phase[
                "start_date"]
            assert [(i["price"]["id"], i["quantity"]) for i in sub["items"]["data"]] == [
                (i["price"], i["quantity"]) for i in phase["items"]]
            entered.add(phase is second)
        elif before["end_behavior"] == "cancel":
            assert a.subscription_schedules[sid]["status"] == "completed"
            assert (sub["status"], sub["ended_at"]) == ("canceled", end)
        else:
            assert a.subscription_schedules[sid]["status"] == "released"
            assert sub["schedule"] is None and sub["status"] != "canceled"
    assert True in entered
    for sub_id, when in cancel_at.items():
        if when <= a.now:
            assert (a.subscriptions[sub_id]["status"],
                    a.subscriptions[sub_id]["ended_at"]) == ("canceled", when)
