"""Stripe-shaped payloads (current API shape) for the mirror store tests."""

from __future__ import annotations

from typing import Any


def customer(cid: str = "cus_1", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": cid, "object": "customer", "livemode": False, "created": 1_700_000_000,
        "email": f"{cid}@example.com", "name": "Acme", "currency": "usd",
        "address": {"country": "DE"}, "metadata": {"tier": "gold"}, "discount": None,
    }
    body.update(extra)
    return body


def discount(did: str, coupon: str = "co_1", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": did, "object": "discount", "start": 1_700_000_000, "end": None,
        "source": {"type": "coupon", "coupon": coupon}, "customer": "cus_1",
        "subscription": None, "subscription_item": None, "invoice": None,
    }
    body.update(extra)
    return body


def item(iid: str, price: str = "price_1", quantity: int | None = 5, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": iid, "object": "subscription_item", "created": 1_700_000_000,
        "price": {"id": price, "object": "price", "currency": "usd", "unit_amount": 1200},
        "quantity": quantity, "discounts": [],
        "current_period_start": 1_700_000_000, "current_period_end": 1_702_592_000,
    }
    body.update(extra)
    return body


def subscription(sid: str = "sub_1", cid: str = "cus_1", items: list[dict[str, Any]] | None = None,
                 **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": sid, "object": "subscription", "livemode": False, "created": 1_700_000_000,
        "customer": cid, "status": "active", "currency": "usd", "start_date": 1_700_000_000,
        "trial_start": None, "trial_end": None, "cancel_at": None,
        "cancel_at_period_end": False, "canceled_at": None, "ended_at": None,
        "pause_collection": None, "discounts": [],
        "items": {"object": "list", "data": items if items is not None else [item("si_1")],
                  "has_more": False},
    }
    body.update(extra)
    return body


def line(lid: str, *, item_id: str = "si_1", price: str = "price_1", amount: int = 6000,
         start: int = 1_700_000_000, end: int = 1_702_592_000, proration: bool = False,
         quantity: int | None = 5, discount_amounts: list[dict[str, Any]] | None = None,
         invoice: str | None = None) -> dict[str, Any]:
    return {
        "id": lid, "object": "line_item", "livemode": False, "amount": amount, "currency": "usd",
        "invoice": invoice, "quantity": quantity, "period": {"start": start, "end": end},
        "pricing": {"type": "price_details", "price_details": {"price": price, "product": "prod_1"},
                    "unit_amount_decimal": "1200"},
        "parent": {"type": "subscription_item_details", "subscription_item_details": {
            "subscription": "sub_1", "subscription_item": item_id, "proration": proration,
            "invoice_item": None}},
        "discount_amounts": discount_amounts or [], "discounts": [],
    }


def invoice(inv: str = "in_1", cid: str = "cus_1", lines: list[dict[str, Any]] | None = None,
            status: str = "paid", has_more: bool = False, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": inv, "object": "invoice", "livemode": False, "created": 1_700_000_000,
        "customer": cid, "status": status, "billing_reason": "subscription_cycle",
        "currency": "usd", "period_start": 1_700_000_000, "period_end": 1_700_000_000,
        "status_transitions": {"finalized_at": 1_700_000_100, "paid_at": 1_700_000_200},
        "total": 6000, "discounts": [],
        "parent": {"type": "subscription_details",
                   "subscription_details": {"subscription": "sub_1"}},
        "lines": {"object": "list", "data": lines if lines is not None else [line("il_1")],
                  "has_more": has_more},
    }
    body.update(extra)
    return body
