"""The emulator's billing rules against hand computations (Stripe's documented behaviour)."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

from integrations.emulator import shapes
from integrations.emulator.billing import (
    add_interval,
    add_taxes,
    amount_for,
    apply_discounts,
    in_no_order,
    inclusive_tax,
    prorated,
    total_invoice,
)
from tests.stripe_world import ts


def _line(lid: str, amount: int, *, price_id: str = "price_1", proration: bool = False
          ) -> dict[str, Any]:
    return shapes.invoice_line(
        id=lid, invoice="", subscription="sub_1", subscription_item=f"si_{lid}",
        price_id=price_id, product_id="prod_1", unit_amount_decimal=None, currency="usd",
        amount=amount, quantity=1, period_start=ts(2025, 1, 1), period_end=ts(2025, 2, 1),
        proration=proration, description=None, livemode=False)


def _coupon(**kw: Any) -> dict[str, Any]:
    return shapes.coupon(id=kw.pop("id", "co"), name="co", created=0, livemode=False,
                         duration="forever", **kw)


def _discount(did: str) -> dict[str, Any]:
    return shapes.discount(id=did, coupon_id="co", customer="cus_1", start=0, end=None,
                           subscription="sub_1")


def _offs(line: dict[str, Any]) -> list[tuple[str, int]]:
    return [(d["discount"], d["amount"]) for d in line["discount_amounts"]]


def test_periods_follow_the_anchor_day() -> None:
    jan31 = ts(2025, 1, 31)
    assert add_interval(jan31, "month") == ts(2025, 2, 28)
    assert add_interval(ts(2025, 2, 28), "month", anchor_day=31) == ts(2025, 3, 31)
    assert add_interval(jan31, "month", -2) == ts(2024, 11, 30)
    assert add_interval(ts(2024, 2, 29), "year") == ts(2025, 2, 28)
    assert add_interval(jan31, "week", 2) == ts(2025, 2, 14)
    assert add_interval(jan31, "day", 3) == ts(2025, 2, 3)


def test_proration_pair_of_a_seat_change() -> None:
    price = shapes.price(id="price_1", product="prod_1", currency="usd", created=0,
                         livemode=False, unit_amount=1_000)
    # 5 -> 8 seats at 10.00 on day 10 of a 30-day period: 20 of 30 days left.
    start, end = ts(2025, 4, 1), ts(2025, 5, 1)
    at = ts(2025, 4, 11)
    credit = -prorated(amount_for(price, 5, "usd"), start, end, at)
    charge = prorated(amount_for(price, 8, "usd"), start, end, at)
    assert (credit, charge) == (-3_333, 5_333)  # -5000 * 2/3 = -3333.3; 8000 * 2/3 = 5333.3
    assert prorated(amount_for(price, 1, "usd"), start, end, ts(2025, 4, 16)) == 500


def test_amount_off_comes_off_once_per_invoice_shared_in_proportion() -> None:
    lines = [_line("a", 3_000), _line("b", 1_000)]
    totals = apply_discounts([(_discount("di_1"), _coupon(amount_off=1_000, currency="usd"),
                               lines, False)], currency="usd")
    assert totals == {"di_1": 1_000}
    assert [_offs(line) for line in lines] == [[("di_1", 750)], [("di_1", 250)]]


def test_odd_minor_units_go_to_the_largest_remainders() -> None:
    lines = [_line("a", 1_000), _line("b", 1_000), _line("c", 2_000)]
    apply_discounts([(_discount("di_1"), _coupon(amount_off=1_001, currency="usd"),
                      lines, False)], currency="usd")
    # 1001 * (1/4, 1/4, 1/2) = 250.25, 250.25, 500.5: the 1 left goes to the 0.5.
    assert [_offs(line)[0][1] for line in lines] == [250, 250, 501]


def test_amount_off_never_more_than_the_lines_and_only_in_its_currency() -> None:
    lines = [_line("a", 400)]
    assert apply_discounts([(_discount("di_1"), _coupon(amount_off=1_000, currency="usd"),
                             lines, False)], currency="usd") == {"di_1": 400}
    other = [_line("b", 400)]
    assert apply_discounts([(_discount("di_2"), _coupon(amount_off=100, currency="eur"),
                             other, False)], currency="usd") == {}
    assert other[0]["discount_amounts"] == []


def test_item_discount_first_then_percentage_of_what_is_left() -> None:
    item_line, other = _line("a", 10_000), _line("b", 5_000)
    credit = _line("c", -2_000, proration=True)
    lines = [item_line, other, credit]
    totals = apply_discounts([
        (_discount("di_item"), _coupon(amount_off=2_000, currency="usd"), [item_line], True),
        (_discount("di_sub"), _coupon(percent_off=12.5), lines, False),
    ], currency="usd")
    # Item line: 10000 - 2000 = 8000, then 12.5 % of 8000 = 1000. Other: 12.5 % of 5000 =
    # 625. The proration credit is not discounted.
    assert _offs(item_line) == [("di_item", 2_000), ("di_sub", 1_000)]
    assert _offs(other) == [("di_sub", 625)]
    assert credit["discount_amounts"] == []
    assert totals == {"di_item": 2_000, "di_sub": 1_625}
    assert item_line["discounts"] == ["di_item"] and other["discounts"] == []


def test_inclusive_tax_is_taken_from_the_amount_after_discounts() -> None:
    # revenue-definitions.md: 120 including 20 % tax with 50 % off forever is 60 paid,
    # 10 tax.
    assert inclusive_tax(6_000, Decimal(20))["amount"] == 1_000
    line = _line("a", 12_000, price_id="price_vat")
    apply_discounts([(_discount("di_1"), _coupon(percent_off=50), [line], False)],
                    currency="usd")
    prices = {"price_vat": {"tax_behavior": "inclusive"}}
    add_taxes([line], {"price_vat": Decimal(20)}, prices)
    assert [(t["amount"], t["taxable_amount"]) for t in line["taxes"]] == [(1_000, 5_000)]
    invoice = shapes.invoice(id="in_1", customer={"id": "cus_1", "email": None, "name": None},
                             subscription="sub_1", currency="usd", created=0,
                             billing_reason="subscription_cycle", period_start=0,
                             period_end=0, number="N", livemode=False)
    total_invoice(invoice, [line], {"di_1": 6_000})
    assert (invoice["subtotal"], invoice["total"], invoice["total_excluding_tax"],
            invoice["amount_due"]) == (12_000, 6_000, 5_000, 6_000)
    assert line["invoice"] == "in_1"


def test_lines_come_in_no_fixed_order() -> None:
    rng = random.Random(0)
    orders = {tuple(line["id"] for line in in_no_order([_line("credit", -1), _line("charge", 1)],
                                                       rng))
              for _ in range(20)}
    assert orders == {("credit", "charge"), ("charge", "credit")}


def test_exclusive_tax_is_added_on_top_of_the_amount_after_discounts() -> None:
    charge = _line("a", 10_000, price_id="price_sales")
    credit = _line("b", -4_000, price_id="price_sales", proration=True)
    plain = _line("c", 2_000, price_id="price_untaxed")
    lines = [charge, credit, plain]
    totals = apply_discounts([(_discount("di_1"), _coupon(percent_off=10), lines, False)],
                             currency="usd")
    prices = {"price_sales": {"tax_behavior": "exclusive"},
              "price_untaxed": {"tax_behavior": "unspecified"}}
    add_taxes(lines, {"price_sales": Decimal("8.25"), "price_untaxed": Decimal(5)}, prices)
    # 10000 - 10 % = 9000, 8.25 % of it = 742.5 -> 742 (half-even); the credit is not
    # discounted: 8.25 % of -4000 = -330; an unspecified price is not taxed.
    assert [(t["amount"], t["taxable_amount"]) for t in charge["taxes"]] == [(742, 9_000)]
    assert [(t["amount"], t["taxable_amount"]) for t in credit["taxes"]] == [(-330, -4_000)]
    assert plain["taxes"] == []
    invoice = shapes.invoice(id="in_1", customer={"id": "cus_1", "email": None, "name": None},
                             subscription="sub_1", currency="usd", created=0,
                             billing_reason="subscription_update", period_start=0,
                             period_end=0, number="N", livemode=False)
    total_invoice(invoice, lines, totals)
    # Lines 10000 - 4000 + 2000 = 8000; discounts 1000 + 200 = 1200; taxes 742 - 330 = 412.
    assert totals == {"di_1": 1_200}
    assert (invoice["subtotal"], invoice["total_excluding_tax"], invoice["total"]) == (
        8_000, 6_800, 7_212)
