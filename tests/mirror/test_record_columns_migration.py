"""Migration 0006 fills the record columns of rows stored before it, by the one reading."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from integrations.stripe_mirror import store_objects, table_for
from nrr.db import upgrade
from tests.mirror.migrations import downgrade_to
from tests.mirror.payloads import customer, discount, invoice, item, line, subscription

# The columns the migration adds, per mirror kind.
COLUMNS = {
    "customer": ("discount_id",),
    "subscription": ("billing_cycle_anchor", "default_inclusive_tax_percent"),
    "subscription_item": ("inclusive_tax_percent",),
    "invoice_line": ("credited", "tax_inclusive_amount"),
}


def _rate(rid: str, percentage: str, inclusive: bool) -> dict[str, Any]:
    return {"id": rid, "object": "tax_rate", "percentage": percentage, "inclusive": inclusive}


def _objects() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    customers = [customer("cus_1", discount=discount("di_cus", "co_1")), customer("cus_2")]
    taxed = item("si_1", tax_rates=[_rate("txr_a", "19.0", True), _rate("txr_b", "2.5", False)])
    subscriptions = [
        subscription("sub_1", "cus_1", items=[taxed, item("si_2", price="price_2")],
                     billing_cycle_anchor=1_700_000_000,
                     default_tax_rates=[_rate("txr_c", "7.7", True)]),
        subscription("sub_2", "cus_2", items=[item("si_3")]),
    ]
    credit = line("il_credit", amount=-3000, proration=True)
    credit["parent"]["subscription_item_details"]["proration_details"] = {
        "credited_items": {"invoice": "in_0", "invoice_line_items": ["il_0"]}}
    new_state = line("il_new", amount=4200, proration=True)
    new_state["parent"]["subscription_item_details"]["proration_details"] = {
        "credited_items": None}
    new_state["taxes"] = [{"amount": 670, "tax_behavior": "inclusive", "taxability_reason":
                           "standard_rated", "taxable_amount": 3530, "type": "tax_rate_details",
                           "tax_rate_details": {"tax_rate": "txr_a"}}]
    cycle = line("il_cycle")
    invoices = [invoice("in_1", "cus_1", lines=[cycle, new_state, credit])]
    return customers, subscriptions, invoices


def _columns(session: Session) -> dict[str, dict[str, tuple[Any, ...]]]:
    out = {}
    for kind, names in COLUMNS.items():
        table = table_for(kind)
        out[kind] = {row[0]: tuple(row[1:]) for row in session.execute(
            select(table.c.id, *(table.c[n] for n in names)))}
    return out


def test_the_migration_fills_what_the_mirror_writes(db_engine: Engine) -> None:
    customers, subscriptions, invoices = _objects()
    with Session(db_engine) as session:
        store_objects(session, "customer", customers, state_at=1)
        store_objects(session, "subscription", subscriptions, state_at=1)
        store_objects(session, "invoice", invoices, state_at=1)
        session.commit()
        written = _columns(session)
    # Hand-read from the payloads above.
    assert written["customer"] == {"cus_1": ("di_cus",), "cus_2": (None,)}
    assert written["subscription"] == {"sub_1": (1_700_000_000, "7.7"), "sub_2": (None, None)}
    assert written["subscription_item"] == {"si_1": ("19.0",), "si_2": (None,), "si_3": (None,)}
    assert written["invoice_line"] == {"il_credit": (True, 0), "il_new": (False, 670),
                                       "il_cycle": (None, 0)}

    # Rows stored before the migration: the columns do not exist yet, then are filled.
    downgrade_to(db_engine, "0005_segment_totals")
    upgrade(db_engine)
    with Session(db_engine) as session:
        filled = _columns(session)
    # Lines neither proration nor taxed are not read again: their included tax stays unknown
    # (NULL), which the recompute reads as 0.
    assert filled["invoice_line"].pop("il_cycle") == (None, None)
    written["invoice_line"].pop("il_cycle")
    assert filled == written
