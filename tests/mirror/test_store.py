"""The mirror store: upserts, ordering by state_at, parsing, quarantine, deletions."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from integrations.stripe_mirror import (
    mark_deleted,
    mark_lines_complete,
    store_objects,
    table_for,
    to_plain,
)
from models import (
    DirtyCustomer,
    QuarantinedObject,
    StripeCoupon,
    StripeCustomer,
    StripeDiscount,
    StripeInvoice,
    StripeInvoiceLine,
    StripePrice,
    StripeSubscription,
    StripeSubscriptionItem,
)
from tests.mirror.payloads import customer, discount, invoice, item, line, subscription


def count(session: Session, model: type) -> int:
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_to_plain_makes_a_json_safe_copy() -> None:
    payload = {"unit_amount_decimal": Decimal("12.50"), 3: ("a", {"b": Decimal("1")}),
               "none": None}
    plain = to_plain(payload)
    assert plain == {"unit_amount_decimal": "12.50", "3": ["a", {"b": "1"}], "none": None}
    assert plain["3"][1] is not payload[3][1]  # a copy, not the same dicts


def test_table_for_names_each_mirror_table() -> None:
    assert table_for("price") is StripePrice.__table__
    assert table_for("invoice_line") is StripeInvoiceLine.__table__
    with pytest.raises(KeyError):
        table_for("charge")


def test_storing_the_same_page_twice_is_idempotent(session: Session) -> None:
    page = [customer("cus_1"), customer("cus_2")]
    first = store_objects(session, "customer", page, state_at=100)
    second = store_objects(session, "customer", page, state_at=100)
    assert (first.stored, second.stored) == (2, 2)
    assert count(session, StripeCustomer) == 2
    assert first.customer_ids == {"cus_1", "cus_2"}


def test_an_older_state_never_overwrites_a_newer_one(session: Session) -> None:
    store_objects(session, "customer", [customer("cus_1", email="new@example.com")], state_at=200)
    store_objects(session, "customer", [customer("cus_1", email="old@example.com")], state_at=100)
    row = session.get(StripeCustomer, "cus_1")
    assert row is not None
    assert (row.email, row.state_at) == ("new@example.com", 200)
    store_objects(session, "customer", [customer("cus_1", email="newer@example.com")], state_at=300)
    session.expire_all()
    row = session.get(StripeCustomer, "cus_1")
    assert row is not None and row.email == "newer@example.com"


def test_raw_payload_is_kept_and_columns_parsed(session: Session) -> None:
    body = customer("cus_1", metadata={"tier": "gold", "region": "eu"})
    store_objects(session, "customer", [body], state_at=1)
    row = session.get(StripeCustomer, "cus_1")
    assert row is not None
    assert row.raw == body
    assert (row.country, row.currency, row.metadata_) == ("DE", "usd",
                                                          {"tier": "gold", "region": "eu"})


def test_decimals_from_the_sdk_are_stored_exactly(session: Session) -> None:
    price = {"id": "price_1", "object": "price", "currency": "usd", "unit_amount": None,
             "unit_amount_decimal": Decimal("1234.5678"), "billing_scheme": "per_unit",
             "recurring": {"interval": "year", "interval_count": 1, "usage_type": "licensed"},
             "product": {"id": "prod_1", "object": "product"}, "type": "recurring"}
    store_objects(session, "price", [price], state_at=1)
    row = session.get(StripePrice, "price_1")
    assert row is not None
    assert (row.unit_amount_decimal, row.interval, row.product_id) == ("1234.5678", "year", "prod_1")
    assert row.raw["unit_amount_decimal"] == "1234.5678"


def test_coupon_percent_is_an_exact_decimal_string(session: Session) -> None:
    store_objects(session, "coupon", [{"id": "co_1", "object": "coupon", "percent_off": 12.5,
                                        "duration": "repeating", "duration_in_months": 3}],
                  state_at=1)
    row = session.get(StripeCoupon, "co_1")
    assert row is not None and (row.percent_off, row.duration_in_months) == ("12.5", 3)


def test_subscription_items_and_expanded_discounts_are_parsed(session: Session) -> None:
    sub = subscription(
        items=[item("si_1", quantity=5,
                    discounts=[discount("di_item", "co_item", subscription_item="si_1")]),
               item("si_2", price="price_2", quantity=None)],
        discounts=[discount("di_sub", "co_sub", subscription="sub_1"), "di_unexpanded"],
        status_details={"paused": None},
    )
    result = store_objects(session, "subscription", [sub], state_at=10)
    assert result.customer_ids == {"cus_1"}
    row = session.get(StripeSubscription, "sub_1")
    assert row is not None and row.discount_ids == ["di_sub", "di_unexpanded"]
    items = {i.id: i for i in session.scalars(select(StripeSubscriptionItem))}
    assert items["si_1"].quantity == 5 and items["si_1"].discount_ids == ["di_item"]
    assert items["si_2"].quantity is None and items["si_2"].price_id == "price_2"
    assert items["si_1"].customer_id == "cus_1"
    discounts = {d.id: d for d in session.scalars(select(StripeDiscount))}
    assert set(discounts) == {"di_item", "di_sub"}
    assert discounts["di_item"].subscription_item_id == "si_1"
    assert discounts["di_sub"].coupon_id == "co_sub"
    assert discounts["di_sub"].subscription_id == "sub_1"


def test_an_item_dropped_from_a_subscription_is_flagged_deleted(session: Session) -> None:
    store_objects(session, "subscription", [subscription(items=[item("si_1"), item("si_2")])],
                  state_at=10)
    store_objects(session, "subscription", [subscription(items=[item("si_2")])], state_at=20)
    session.expire_all()
    flags = {i.id: i.deleted for i in session.scalars(select(StripeSubscriptionItem))}
    assert flags == {"si_1": True, "si_2": False}


def test_invoice_lines_are_parsed_from_the_embedded_list(session: Session) -> None:
    lines = [
        line("il_1", amount=-3000, proration=True, quantity=5),
        line("il_2", amount=4200, proration=True, quantity=7,
             discount_amounts=[{"amount": 300, "discount": "di_1"},
                               {"amount": 120, "discount": {"id": "di_2", "object": "discount"}}]),
    ]
    store_objects(session, "invoice", [invoice("in_1", lines=lines)], state_at=5)
    inv = session.get(StripeInvoice, "in_1")
    assert inv is not None
    assert (inv.subscription_id, inv.lines_complete, inv.paid_at) == ("sub_1", True, 1_700_000_200)
    rows = {r.id: r for r in session.scalars(select(StripeInvoiceLine))}
    assert rows["il_1"].proration and rows["il_1"].amount == -3000
    second = rows["il_2"]
    assert (second.invoice_id, second.customer_id, second.invoice_status) == ("in_1", "cus_1", "paid")
    assert (second.price_id, second.subscription_item_id, second.subscription_id) == (
        "price_1", "si_1", "sub_1")
    assert (second.discount_amount, second.discount_ids) == (420, ["di_1", "di_2"])
    assert (second.period_start, second.quantity) == (1_700_000_000, 7)


def test_paged_lines_complete_an_invoice(session: Session) -> None:
    store_objects(session, "invoice", [invoice("in_1", lines=[line("il_1")], has_more=True)],
                  state_at=5)
    inv = session.get(StripeInvoice, "in_1")
    assert inv is not None and inv.lines_complete is False
    result = store_objects(session, "invoice_line", [line("il_2", invoice="in_1")], state_at=6)
    assert result.stored == 1 and result.customer_ids == {"cus_1"}
    mark_lines_complete(session, "in_1")
    session.expire_all()
    assert count(session, StripeInvoiceLine) == 2
    inv = session.get(StripeInvoice, "in_1")
    assert inv is not None and inv.lines_complete is True
    stored = session.get(StripeInvoiceLine, "il_2")
    assert stored is not None and stored.invoice_status == "paid"


def test_a_voided_invoice_reaches_lines_stored_earlier(session: Session) -> None:
    store_objects(session, "invoice", [invoice("in_1", lines=[line("il_1")], has_more=True)],
                  state_at=5)
    store_objects(session, "invoice_line", [line("il_2", invoice="in_1")], state_at=6)
    store_objects(session, "invoice", [invoice("in_1", lines=[line("il_1")], has_more=True,
                                               status="void")], state_at=7)
    session.expire_all()
    statuses = {r.id: r.invoice_status for r in session.scalars(select(StripeInvoiceLine))}
    assert statuses == {"il_1": "void", "il_2": "void"}


def test_a_line_of_an_unknown_invoice_is_quarantined(session: Session) -> None:
    result = store_objects(session, "invoice_line", [line("il_9", invoice="in_missing")], state_at=1)
    assert (result.stored, result.skipped) == (0, 1)
    reason = session.scalar(select(QuarantinedObject.reason))
    assert reason is not None and "in_missing" in reason


@pytest.mark.parametrize("bad, reason_part", [
    ({"object": "customer", "email": "x@example.com"}, "id"),
    ({"id": "cus_bad", "object": "customer", "created": "yesterday"}, "created"),
    ({"id": "cus_bad", "object": "invoice"}, "object"),
    ("not an object", "must be an object"),
])
def test_a_malformed_object_is_quarantined_and_the_rest_stored(
        session: Session, bad: object, reason_part: str) -> None:
    result = store_objects(session, "customer", [customer("cus_1"), bad, customer("cus_2")],
                           state_at=1)
    assert (result.stored, result.skipped) == (2, 1)
    assert count(session, StripeCustomer) == 2
    held = session.scalars(select(QuarantinedObject)).one()
    assert held.object_type == "customer" and reason_part in held.reason
    assert held.raw is not None


def test_a_malformed_line_quarantines_its_invoice_only(session: Session) -> None:
    broken = line("il_bad")
    broken["amount"] = "sixty"
    result = store_objects(session, "invoice", [invoice("in_1", lines=[broken]),
                                                invoice("in_2", lines=[line("il_2")])], state_at=1)
    assert (result.stored, result.skipped) == (1, 1)
    assert [r.id for r in session.scalars(select(StripeInvoiceLine))] == ["il_2"]
    held = session.scalars(select(QuarantinedObject)).one()
    assert held.object_id == "in_1" and "amount" in held.reason


def test_deleted_customers_keep_their_history(session: Session) -> None:
    store_objects(session, "customer", [customer("cus_1")], state_at=1)
    store_objects(session, "invoice", [invoice("in_1")], state_at=1)
    touched = mark_deleted(session, "customer", "cus_1", state_at=2)
    assert touched == {"cus_1"}
    row = session.get(StripeCustomer, "cus_1")
    assert row is not None and row.deleted and row.email == "cus_1@example.com"
    assert count(session, StripeInvoiceLine) == 1
    # A deleted payload through store_objects does the same.
    result = store_objects(session, "customer", [{"id": "cus_2", "object": "customer",
                                                  "deleted": True}], state_at=3)
    assert result.customer_ids == {"cus_2"}
    gone = session.get(StripeCustomer, "cus_2")
    assert gone is not None and gone.deleted


def test_a_late_older_state_does_not_undelete(session: Session) -> None:
    store_objects(session, "customer", [customer("cus_1")], state_at=1)
    mark_deleted(session, "customer", "cus_1", state_at=5)
    store_objects(session, "customer", [customer("cus_1")], state_at=3)
    session.expire_all()
    row = session.get(StripeCustomer, "cus_1")
    assert row is not None and row.deleted


def test_touched_customers_are_marked_dirty(session: Session) -> None:
    store_objects(session, "subscription", [subscription("sub_1", "cus_1")], state_at=1)
    store_objects(session, "invoice", [invoice("in_1", "cus_2")], state_at=1)
    dirty = set(session.scalars(select(DirtyCustomer.customer_id)))
    assert dirty == {"cus_1", "cus_2"}


def test_a_price_change_dirties_the_customers_using_it(session: Session) -> None:
    store_objects(session, "subscription", [subscription("sub_1", "cus_1")], state_at=1)
    session.execute(delete(DirtyCustomer))
    price = {"id": "price_1", "object": "price", "currency": "usd", "unit_amount": 1500,
             "recurring": {"interval": "month", "interval_count": 1}, "product": "prod_1"}
    result = store_objects(session, "price", [price], state_at=2)
    assert result.customer_ids == {"cus_1"}


def test_livemode_is_stored_as_given(session: Session) -> None:
    store_objects(session, "customer", [customer("cus_live", livemode=True), customer("cus_test")],
                  state_at=1)
    modes = {r[0]: r[1] for r in session.execute(select(StripeCustomer.id, StripeCustomer.livemode))}
    assert modes == {"cus_live": True, "cus_test": False}


def test_a_hundred_objects_in_one_call(session: Session) -> None:
    page = [invoice(f"in_{n}", f"cus_{n}", lines=[line(f"il_{n}_{k}") for k in range(3)])
            for n in range(100)]
    result = store_objects(session, "invoice", page, state_at=1)
    assert result.stored == 100 and len(result.customer_ids) == 100
    assert count(session, StripeInvoiceLine) == 300


def test_unknown_kind_is_a_clear_error(session: Session) -> None:
    with pytest.raises(ValueError, match="unknown object kind"):
        store_objects(session, "charge", [], state_at=1)


def test_discount_objects_are_stored_on_their_own(session: Session) -> None:
    body = discount("di_9", "co_9", subscription="sub_1", end=1_710_000_000)
    result = store_objects(session, "discount", [body], state_at=5)
    assert (result.stored, result.customer_ids) == (1, {"cus_1"})
    row = session.get(StripeDiscount, "di_9")
    assert row is not None
    assert (row.coupon_id, row.subscription_id, row.end, row.raw) == ("co_9", "sub_1",
                                                                       1_710_000_000, body)


def test_a_customer_discount_seen_on_an_invoice_stays_a_customer_discount(session: Session) -> None:
    inv = invoice("in_1", discounts=[discount("di_cus", "co_1")])
    store_objects(session, "invoice", [inv], state_at=5)
    row = session.get(StripeDiscount, "di_cus")
    assert row is not None
    assert (row.customer_id, row.subscription_id, row.invoice_id) == ("cus_1", None, None)


def test_a_removed_discount_keeps_its_removal_instant(session: Session) -> None:
    store_objects(session, "subscription",
                  [subscription(discounts=[discount("di_1", subscription="sub_1")])], state_at=5)
    assert mark_deleted(session, "discount", "di_1", state_at=50) == {"cus_1"}
    # A later sighting (an old invoice refetched) never clears the removal.
    store_objects(session, "discount", [discount("di_1", subscription="sub_1")], state_at=60)
    session.expire_all()
    row = session.get(StripeDiscount, "di_1")
    assert row is not None and row.removed_at == 50
