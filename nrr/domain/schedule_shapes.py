"""Stripe-shaped subscription schedules and pending updates -> outlook records.

Shapes of API version 2026-10-28.endive (``stripe.SubscriptionSchedule``,
``SubscriptionSchedule.Phase``, ``SubscriptionSchedule.Phase.Item``,
``Subscription.PendingUpdate``). Like :mod:`nrr.domain.stripe_shapes`, a parser never
raises on bad input: it returns a :class:`~nrr.domain.records.Skip` naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nrr.domain import fields
from nrr.domain.fields import FieldError
from nrr.domain.outlook import (
    PendingItem,
    PendingUpdate,
    PhaseDiscount,
    PhaseItem,
    SchedulePhase,
    SubscriptionSchedule,
)
from nrr.domain.records import Skip


def _phase_discounts(owner: Mapping[str, Any]) -> tuple[PhaseDiscount, ...]:
    result = []
    for entry in fields.entries(owner, "discounts"):
        if isinstance(entry, str):  # a bare discount id
            result.append(PhaseDiscount(discount_id=entry))
            continue
        if not isinstance(entry, Mapping):
            raise FieldError(f"discounts holds {type(entry).__name__}, expected an object")
        coupon = fields.ref(entry.get("coupon"), "discounts[].coupon")
        discount = fields.ref(entry.get("discount"), "discounts[].discount")
        if coupon is None and discount is None:
            continue  # a promotion code alone names no coupon we can price
        result.append(PhaseDiscount(coupon_id=coupon, discount_id=discount))
    return tuple(result)


def _phase(raw: Any) -> SchedulePhase:
    if not isinstance(raw, Mapping):
        raise FieldError(f"phases holds {type(raw).__name__}, expected an object")
    items = []
    for item in fields.entries(raw, "items"):
        if not isinstance(item, Mapping):
            raise FieldError(f"phases[].items holds {type(item).__name__}, expected an object")
        price = fields.ref(item.get("price"), "phases[].items[].price") or fields.ref(
            item.get("plan"), "phases[].items[].plan")
        items.append(PhaseItem(price_id=price, quantity=fields.integer(item, "quantity"),
                               discounts=_phase_discounts(item)))
    start = fields.integer(raw, "start_date", required=True)
    assert start is not None
    return SchedulePhase(start=start, end=fields.integer(raw, "end_date"), items=tuple(items),
                         discounts=_phase_discounts(raw), trial_end=fields.integer(raw, "trial_end"))


def parse_schedule(obj: Any) -> SubscriptionSchedule | Skip:
    """A ``subscription_schedule`` object, or a Skip with the reason."""
    if not isinstance(obj, Mapping):
        return Skip("subscription_schedule", None, f"not an object: {type(obj).__name__}")
    sid = obj.get("id") if isinstance(obj.get("id"), str) else None
    try:
        if sid is None:
            raise FieldError("missing id")
        phases = tuple(_phase(p) for p in fields.entries(obj, "phases"))
        return SubscriptionSchedule(
            id=sid, customer_id=fields.ref(obj.get("customer"), "customer"),
            subscription_id=fields.ref(obj.get("subscription"), "subscription"),
            status=fields.text(obj, "status") or "active",
            end_behavior=fields.text(obj, "end_behavior") or "release",
            phases=phases, livemode=fields.flag(obj, "livemode"),
            created=fields.integer(obj, "created"))
    except FieldError as exc:
        return Skip("subscription_schedule", sid, str(exc))


def parse_pending_update(subscription: Any) -> PendingUpdate | Skip | None:
    """The subscription's ``pending_update`` (None when there is none)."""
    if not isinstance(subscription, Mapping):
        return None
    sid = subscription.get("id") if isinstance(subscription.get("id"), str) else None
    try:
        pending = fields.mapping(subscription, "pending_update")
        if pending is None or sid is None:
            return None
        items = []
        for item in fields.entries(pending, "subscription_items"):
            if not isinstance(item, Mapping):
                raise FieldError("pending_update.subscription_items holds a non-object")
            price = fields.ref(item.get("price"), "pending_update.subscription_items[].price")
            items.append(PendingItem(item_id=fields.text(item, "id"), price_id=price,
                                     quantity=fields.integer(item, "quantity")))
        return PendingUpdate(subscription_id=sid, items=tuple(items),
                             expires_at=fields.integer(pending, "expires_at"),
                             trial_end=fields.integer(pending, "trial_end"))
    except FieldError as exc:
        return Skip("subscription", sid, f"pending_update: {exc}")
