"""Stripe object builders in the current API shape (2026-10-28.endive, stripe SDK 16.1.0).

Every builder returns a plain dict with the fields the SDK classes declare
(``stripe/_customer.py``, ``_product.py``, ``_price.py``, ``_coupon.py``, ``_discount.py``,
``_subscription.py``, ``_subscription_item.py``, ``_invoice.py``,
``_invoice_line_item.py``, ``_event.py``, ``_subscription_schedule.py``). Includable fields (a price's ``tiers`` and
``currency_options``) are stored on the object and left out by :func:`public_view`
unless expanded, as Stripe does.
"""

from __future__ import annotations

import copy
from typing import Any

API_VERSION = "2026-10-28.endive"
EMBEDDED_LINES = 10

# Fields Stripe leaves out of responses unless they are expanded, by object type.
INCLUDABLE: dict[str, tuple[str, ...]] = {"price": ("tiers", "currency_options")}


def public_view(obj: Any) -> Any:
    """A deep copy of ``obj`` without the includable fields (as Stripe renders it)."""
    if isinstance(obj, dict):
        kind = obj.get("object")
        hidden = INCLUDABLE.get(kind, ()) if isinstance(kind, str) else ()
        return {k: public_view(v) for k, v in obj.items() if k not in hidden}
    if isinstance(obj, list):
        return [public_view(v) for v in obj]
    return obj


def customer(*, id: str, created: int, email: str | None, name: str | None,
             country: str | None, livemode: bool, invoice_prefix: str,
             currency: str | None = None, metadata: dict[str, str] | None = None,
             discount: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": id, "object": "customer",
        "address": None if country is None else {
            "city": None, "country": country, "line1": None, "line2": None,
            "postal_code": None, "state": None},
        "balance": 0, "business_name": name, "created": created, "currency": currency,
        "customer_account": None, "default_source": None, "delinquent": False,
        "description": None, "discount": discount, "email": email, "individual_name": None,
        "invoice_prefix": invoice_prefix,
        "invoice_settings": {"custom_fields": None, "default_payment_method": None,
                             "footer": None, "rendering_options": None},
        "livemode": livemode, "metadata": dict(metadata or {}), "name": name,
        "next_invoice_sequence": 1, "phone": None, "preferred_locales": [], "shipping": None,
        "tax_exempt": "none", "test_clock": None,
    }


def product(*, id: str, name: str, created: int, livemode: bool,
            unit_label: str | None = None) -> dict[str, Any]:
    return {
        "id": id, "object": "product", "active": True, "created": created,
        "default_price": None, "description": None, "images": [], "livemode": livemode,
        "marketing_features": [], "metadata": {}, "name": name, "package_dimensions": None,
        "shippable": None, "statement_descriptor": None, "tax_code": None, "type": "service",
        "unit_label": unit_label, "updated": created, "url": None,
    }


def tier(up_to: int | None, unit_amount: int | None, flat_amount: int | None = None,
         *, unit_amount_decimal: str | None = None) -> dict[str, Any]:
    """A price tier as the API returns it (the last tier has ``up_to: null``)."""
    if unit_amount_decimal is None and unit_amount is not None:
        unit_amount_decimal = str(unit_amount)
    return {
        "flat_amount": flat_amount,
        "flat_amount_decimal": None if flat_amount is None else str(flat_amount),
        "unit_amount": unit_amount,
        "unit_amount_decimal": unit_amount_decimal,
        "up_to": up_to,
    }


def price(*, id: str, product: str, currency: str, created: int, livemode: bool,
          interval: str | None = "month", interval_count: int = 1,
          unit_amount: int | None = None, unit_amount_decimal: str | None = None,
          tiers: list[dict[str, Any]] | None = None, tiers_mode: str | None = None,
          billing_scheme: str | None = None,
          usage_type: str = "licensed", meter: str | None = None,
          transform_quantity: dict[str, Any] | None = None,
          currency_options: dict[str, dict[str, Any]] | None = None,
          nickname: str | None = None, lookup_key: str | None = None,
          active: bool = True, tax_behavior: str = "unspecified") -> dict[str, Any]:
    """A price. ``interval=None`` makes a one-time price. ``currency_options`` maps a
    currency to ``{"unit_amount"}`` (or ``unit_amount_decimal``, ``tiers``,
    ``tax_behavior``); the price's own currency is added as Stripe does."""
    tiered = billing_scheme == "tiered" or tiers is not None
    if tiered:
        unit_amount = unit_amount_decimal = None
    elif unit_amount_decimal is None and unit_amount is not None:
        unit_amount_decimal = str(unit_amount)
    obj: dict[str, Any] = {
        "id": id, "object": "price", "active": active,
        "billing_scheme": "tiered" if tiered else "per_unit", "created": created,
        "currency": currency, "custom_unit_amount": None, "livemode": livemode,
        "lookup_key": lookup_key, "metadata": {}, "nickname": nickname, "product": product,
        "recurring": None if interval is None else {
            "interval": interval, "interval_count": interval_count, "meter": meter,
            "trial_period_days": None, "usage_type": usage_type},
        "tax_behavior": tax_behavior, "tiers_mode": tiers_mode if tiered else None,
        "transform_quantity": transform_quantity,
        "type": "one_time" if interval is None else "recurring",
        "unit_amount": unit_amount, "unit_amount_decimal": unit_amount_decimal,
    }
    if tiered:
        obj["tiers"] = list(tiers or [])
    options: dict[str, dict[str, Any]] = {
        currency: {"custom_unit_amount": None, "tax_behavior": tax_behavior,
                   "unit_amount": obj["unit_amount"],
                   "unit_amount_decimal": obj["unit_amount_decimal"]},
    }
    for cur, opt in (currency_options or {}).items():
        amount = opt.get("unit_amount")
        options[cur] = {"custom_unit_amount": None,
                        "tax_behavior": opt.get("tax_behavior", tax_behavior),
                        "unit_amount": amount,
                        "unit_amount_decimal": opt.get(
                            "unit_amount_decimal", None if amount is None else str(amount))}
        if "tiers" in opt:
            options[cur]["tiers"] = list(opt["tiers"])
    if tiered:
        options[currency]["tiers"] = obj["tiers"]
    obj["currency_options"] = options
    return obj


def plan_of(price_obj: dict[str, Any]) -> dict[str, Any]:
    """The legacy ``plan`` Stripe still renders on subscription items."""
    rec = price_obj["recurring"]
    return {
        "id": price_obj["id"], "object": "plan", "active": price_obj["active"],
        "amount": price_obj["unit_amount"], "amount_decimal": price_obj["unit_amount_decimal"],
        "billing_scheme": price_obj["billing_scheme"], "created": price_obj["created"],
        "currency": price_obj["currency"], "interval": rec["interval"],
        "interval_count": rec["interval_count"], "livemode": price_obj["livemode"],
        "metadata": {}, "meter": rec["meter"], "nickname": price_obj["nickname"],
        "product": price_obj["product"], "tiers_mode": price_obj["tiers_mode"],
        "transform_usage": price_obj["transform_quantity"], "trial_period_days": None,
        "usage_type": rec["usage_type"],
    }


def coupon(*, id: str, name: str, created: int, livemode: bool, duration: str,
           percent_off: float | None = None, amount_off: int | None = None,
           currency: str | None = None, duration_in_months: int | None = None
           ) -> dict[str, Any]:
    return {
        "id": id, "object": "coupon", "amount_off": amount_off, "created": created,
        "currency": currency if amount_off is not None else None, "duration": duration,
        "duration_in_months": duration_in_months if duration == "repeating" else None,
        "livemode": livemode, "max_redemptions": None, "metadata": {}, "name": name,
        "percent_off": percent_off, "redeem_by": None, "times_redeemed": 0, "valid": True,
    }


def discount(*, id: str, coupon_id: str | dict[str, Any], customer: str, start: int,
             end: int | None, subscription: str | None, subscription_item: str | None = None,
             invoice: str | None = None) -> dict[str, Any]:
    """A discount; ``coupon_id`` is a coupon id or an expanded coupon (``source.coupon``)."""
    return {
        "id": id, "object": "discount", "checkout_session": None, "customer": customer,
        "customer_account": None, "end": end, "invoice": invoice, "invoice_item": None,
        "promotion_code": None, "source": {"coupon": coupon_id, "type": "coupon"},
        "start": start, "subscription": subscription, "subscription_item": subscription_item,
    }


def subscription_item(*, id: str, subscription: str, price_obj: dict[str, Any],
                      quantity: int | None, created: int, period_start: int,
                      period_end: int, discounts: list[Any] | None = None) -> dict[str, Any]:
    return {
        "id": id, "object": "subscription_item", "billing_thresholds": None,
        "created": created, "current_period_end": period_end,
        "current_period_start": period_start, "discounts": list(discounts or []),
        "metadata": {}, "plan": plan_of(price_obj), "price": copy.deepcopy(price_obj),
        "quantity": quantity, "subscription": subscription, "tax_rates": [],
    }


def subscription(*, id: str, customer: str, currency: str, created: int, start_date: int,
                 billing_cycle_anchor: int, items: list[dict[str, Any]], livemode: bool,
                 status: str, trial_start: int | None = None, trial_end: int | None = None,
                 trial_end_behavior: str = "create_invoice") -> dict[str, Any]:
    return {
        "id": id, "object": "subscription", "application": None,
        "application_fee_percent": None,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
        "billing_cycle_anchor": billing_cycle_anchor, "billing_cycle_anchor_config": None,
        "billing_mode": {"flexible": None, "type": "classic", "updated_at": None},
        "billing_thresholds": None, "cancel_at": None, "cancel_at_period_end": False,
        "canceled_at": None,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "collection_method": "charge_automatically", "created": created,
        "currency": currency, "customer": customer, "customer_account": None,
        "days_until_due": None, "default_payment_method": None, "default_source": None,
        "default_tax_rates": [], "description": None, "discounts": [], "ended_at": None,
        "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
        "items": {"object": "list", "data": items, "has_more": False,
                  "url": f"/v1/subscription_items?subscription={id}"},
        "latest_invoice": None, "livemode": livemode, "metadata": {},
        "next_pending_invoice_item_invoice": None, "on_behalf_of": None,
        "pause_collection": None,
        "payment_settings": {"payment_method_options": None, "payment_method_types": None,
                             "save_default_payment_method": "off"},
        "pending_invoice_item_interval": None, "pending_setup_intent": None,
        "pending_update": None, "schedule": None, "start_date": start_date, "status": status,
        "status_details": None, "test_clock": None, "transfer_data": None,
        "trial_end": trial_end,
        "trial_settings": {"end_behavior": {"missing_payment_method": trial_end_behavior}},
        "trial_start": trial_start,
    }


def schedule_phase(*, start_date: int, end_date: int, currency: str,
                   items: list[tuple[str, int | None]],
                   discounts: list[dict[str, Any]] | None = None,
                   trial_end: int | None = None) -> dict[str, Any]:
    """A phase (``SubscriptionSchedule.Phase``); ``items`` are (price id, quantity)."""
    return {
        "add_invoice_items": [], "application_fee_percent": None, "automatic_tax": None,
        "billing_cycle_anchor": None, "billing_thresholds": None, "collection_method": None,
        "currency": currency, "default_payment_method": None, "default_tax_rates": [],
        "description": None, "discounts": list(discounts or []), "end_date": end_date,
        "invoice_settings": None,
        "items": [{"billing_thresholds": None, "discounts": [], "metadata": {},
                   "plan": price_id, "price": price_id, "quantity": quantity,
                   "tax_rates": []} for price_id, quantity in items],
        "metadata": {}, "on_behalf_of": None, "proration_behavior": "create_prorations",
        "start_date": start_date, "transfer_data": None, "trial": None,
        "trial_end": trial_end,
    }


def subscription_schedule(*, id: str, customer: str, subscription: str, created: int,
                          livemode: bool, phases: list[dict[str, Any]],
                          end_behavior: str = "release", status: str = "active"
                          ) -> dict[str, Any]:
    """A schedule managing an existing subscription (``SubscriptionSchedule``); its current
    phase is the first one's dates while active."""
    current = phases[0] if status == "active" and phases else None
    return {
        "id": id, "object": "subscription_schedule", "application": None,
        "billing_mode": {"flexible": None, "type": "classic", "updated_at": None},
        "canceled_at": None, "completed_at": None, "created": created,
        "current_phase": None if current is None else {
            "end_date": current["end_date"], "start_date": current["start_date"]},
        "customer": customer, "customer_account": None,
        "default_settings": {
            "application_fee_percent": None,
            "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
            "billing_cycle_anchor": "automatic", "billing_thresholds": None,
            "collection_method": "charge_automatically", "default_payment_method": None,
            "description": None,
            "invoice_settings": {"account_tax_ids": None, "custom_fields": None,
                                 "days_until_due": None, "description": None,
                                 "footer": None, "issuer": {"type": "self"}},
            "on_behalf_of": None, "transfer_data": None},
        "end_behavior": end_behavior, "livemode": livemode, "metadata": {},
        "pause_schedules": [], "phases": phases, "released_at": None,
        "released_subscription": None, "status": status, "subscription": subscription,
        "test_clock": None,
    }


def invoice_line(*, id: str, invoice: str, subscription: str | None,
                 subscription_item: str | None, price_id: str | None, product_id: str | None,
                 unit_amount_decimal: str | None, currency: str, amount: int,
                 quantity: int | None, period_start: int, period_end: int, proration: bool,
                 description: str | None, livemode: bool, invoice_item: str | None = None,
                 credited: dict[str, Any] | None = None,
                 discount_amounts: list[dict[str, Any]] | None = None,
                 discounts: list[str] | None = None,
                 taxes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A line. A subscription item's line has ``parent.subscription_item_details``; a
    one-off invoice item's (``subscription_item=None``) has ``invoice_item_details``."""
    details = {"invoice_item": invoice_item, "proration": proration,
               "proration_details": {"credited_items": credited},
               "subscription": subscription}
    if subscription_item is not None:
        parent: dict[str, Any] = {
            "invoice_item_details": None, "type": "subscription_item_details",
            "subscription_item_details": {**details, "subscription_item": subscription_item}}
    else:
        parent = {"invoice_item_details": {**details, "invoice_item": invoice_item or f"ii_{id}"},
                  "subscription_item_details": None, "type": "invoice_item_details"}
    return {
        "id": id, "object": "line_item", "amount": amount, "currency": currency,
        "description": description, "discount_amounts": list(discount_amounts or []),
        "discountable": not proration, "discounts": list(discounts or []), "invoice": invoice,
        "livemode": livemode, "metadata": {}, "parent": parent,
        "period": {"end": period_end, "start": period_start}, "pretax_credit_amounts": [],
        "pricing": None if price_id is None else {
            "price_details": {"price": price_id, "product": product_id},
            "type": "price_details", "unit_amount_decimal": unit_amount_decimal},
        "quantity": quantity, "quantity_decimal": None if quantity is None else str(quantity),
        "subscription": subscription, "subtotal": amount, "taxes": list(taxes or []),
    }


def invoice(*, id: str, customer: dict[str, Any], subscription: str | None, currency: str,
            created: int, billing_reason: str, period_start: int, period_end: int,
            number: str, livemode: bool) -> dict[str, Any]:
    return {
        "id": id, "object": "invoice", "account_country": "US",
        "account_name": "Emulated SaaS Inc.", "account_tax_ids": None, "amount_due": 0,
        "amount_overpaid": 0, "amount_paid": 0, "amount_remaining": 0, "amount_shipping": 0,
        "application": None, "attempt_count": 0, "attempted": False, "auto_advance": True,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None,
                          "provider": None, "status": None},
        "automatically_finalizes_at": None, "billing_reason": billing_reason,
        "collection_method": "charge_automatically", "created": created,
        "currency": currency, "custom_fields": None, "customer": customer["id"],
        "customer_account": None, "customer_address": None, "customer_email": customer["email"],
        "customer_name": customer["name"], "customer_phone": None, "customer_shipping": None,
        "customer_tax_exempt": "none", "customer_tax_ids": [], "default_payment_method": None,
        "default_source": None, "default_tax_rates": [], "description": None, "discounts": [],
        "due_date": None, "effective_at": None, "ending_balance": None, "footer": None,
        "from_invoice": None, "hosted_invoice_url": None, "invoice_pdf": None,
        "issuer": {"account": None, "type": "self"}, "last_finalization_error": None,
        "latest_revision": None,
        "lines": {"object": "list", "data": [], "has_more": False,
                  "url": f"/v1/invoices/{id}/lines"},
        "livemode": livemode, "metadata": {}, "next_payment_attempt": None, "number": number,
        "on_behalf_of": None,
        "parent": None if subscription is None else {
            "quote_details": None,
            "subscription_details": {"metadata": {}, "subscription": subscription,
                                     "subscription_proration_date": None},
            "type": "subscription_details",
        },
        "payment_settings": {"default_mandate": None, "payment_method_options": None,
                             "payment_method_types": None},
        "period_end": period_end, "period_start": period_start,
        "post_payment_credit_notes_amount": 0, "pre_payment_credit_notes_amount": 0,
        "receipt_number": None, "rendering": None, "shipping_cost": None,
        "shipping_details": None, "starting_balance": 0, "statement_descriptor": None,
        "status": "draft", "status_details": None,
        "status_transitions": {"finalized_at": None, "marked_uncollectible_at": None,
                               "paid_at": None, "voided_at": None},
        "subtotal": 0, "subtotal_excluding_tax": 0, "test_clock": None, "total": 0,
        "total_discount_amounts": [], "total_excluding_tax": 0,
        "total_pretax_credit_amounts": [], "total_taxes": [], "webhooks_delivered_at": None,
    }


def event(*, id: str, type: str, created: int, obj: dict[str, Any], livemode: bool,
          previous_attributes: dict[str, Any] | None = None,
          api_version: str = API_VERSION) -> dict[str, Any]:
    data: dict[str, Any] = {"object": obj}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    return {
        "id": id, "object": "event", "api_version": api_version, "context": None,
        "created": created, "data": data, "livemode": livemode, "pending_webhooks": 0,
        "request": {"id": None, "idempotency_key": None}, "type": type,
    }


def previous_attributes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Stripe's ``previous_attributes``: old values of changed fields (nested for hashes,
    whole arrays when any element changed)."""
    out: dict[str, Any] = {}
    for key in set(old) | set(new):
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        if isinstance(before, dict) and isinstance(after, dict):
            out[key] = previous_attributes(before, after)
        else:
            out[key] = copy.deepcopy(before)
    return out
