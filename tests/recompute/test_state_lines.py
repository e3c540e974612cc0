"""The SQL selection of state-changing lines equals ``nrr.domain.history.select_state_lines``.

Generated line sets cover runs, keys that come back, gaps, overlaps, duplicate periods,
draft/void/open invoices, prorations, discounts and metered (null quantity) lines.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete
from sqlalchemy.orm import Session

from integrations.stripe_mirror import store_objects
from models.mirror import StripeInvoice, StripeInvoiceLine
from nrr.domain import stripe_shapes
from nrr.domain.history import select_state_lines
from nrr.services.recompute import load_catalogue, load_chunk

DAY = 86_400
START = 1_735_689_600  # 2025-01-01

line_spec = st.tuples(
    st.sampled_from(["si_1", "si_2"]),               # item
    st.sampled_from(["price_a", "price_b"]),         # price
    st.sampled_from([1, 2, None]),                   # quantity (None: metered)
    st.sampled_from(["paid", "paid", "paid", "open", "void", "draft", "uncollectible"]),
    st.booleans(),                                   # proration
    st.sampled_from([(), ("di_1",)]),                # discounts applied
    st.sampled_from([0, 0, 0, 1, -1, 5]),            # shift of the period start (days)
    st.sampled_from([30, 30, 30, 31, 28]),           # period length (days)
)


def invoices_from(specs: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """One invoice per line; cycle lines follow each other per item unless shifted."""
    cursor = {"si_1": START, "si_2": START}
    invoices = []
    for n, (item, price, quantity, status, proration, discounts, shift, length) in enumerate(specs):
        start = cursor[item] + shift * DAY
        end = start + length * DAY
        if not proration:
            cursor[item] = end
        line = {
            "id": f"il_{n:03d}", "object": "line_item", "livemode": False, "currency": "usd",
            "amount": 1000 * (quantity or 3) * (-1 if proration and n % 2 else 1),
            "quantity": quantity, "period": {"start": start, "end": end},
            "pricing": {"type": "price_details",
                        "price_details": {"price": price, "product": "prod_1"}},
            "parent": {"type": "subscription_item_details", "subscription_item_details": {
                "subscription": "sub_1", "subscription_item": item, "proration": proration}},
            "discount_amounts": [{"amount": 100, "discount": d} for d in discounts],
            "discounts": list(discounts), "taxes": [],
        }
        invoices.append({
            "id": f"in_{n:03d}", "object": "invoice", "livemode": False, "customer": "cus_1",
            "status": status, "currency": "usd", "billing_reason": "subscription_cycle",
            "created": start, "parent": {"type": "subscription_details",
                                         "subscription_details": {"subscription": "sub_1"}},
            "lines": {"object": "list", "data": [line], "has_more": False},
        })
    return invoices


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(specs=st.lists(line_spec, min_size=1, max_size=14))
# An overlap of one day and a gap of one day: the lengths add up, the tiling does not.
@example(specs=[("si_1", "price_a", 1, "paid", False, (), 0, 30)] * 4
         + [("si_1", "price_a", 1, "paid", False, ("di_1",), -1, 30),
            ("si_1", "price_a", 1, "paid", True, (), 0, 30),
            ("si_1", "price_a", 1, "open", False, (), 1, 30)])
def test_sql_selection_equals_the_domain_rule(session: Session, specs: list[tuple[Any, ...]]) -> None:
    session.execute(delete(StripeInvoiceLine))
    session.execute(delete(StripeInvoice))
    invoices = invoices_from(specs)
    result = store_objects(session, "invoice", invoices, state_at=1)
    assert result.skipped == 0
    every_line = []
    for body in invoices:
        parsed = stripe_shapes.parse_invoice(body)
        assert not isinstance(parsed, stripe_shapes.Skip)
        every_line.extend(parsed[1])
    expected = {line.id: line for line in select_state_lines(every_line)}
    data, lines_read = load_chunk(session, ["cus_1"], load_catalogue(session, False), False)
    got = {line.id: line for line in data["cus_1"].lines}
    assert got == expected
    assert lines_read == len(expected)
