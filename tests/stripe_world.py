"""Stripe-shaped test data in the CURRENT API shape (2026-10-28.endive, stripe SDK 16.1.0).

Two layers:

1. **Builders** return plain dicts exactly as the Stripe API renders the objects (fields
   checked against ``stripe/_customer.py``, ``_price.py``, ``_coupon.py``, ``_discount.py``,
   ``_subscription.py``, ``_subscription_item.py``, ``_invoice.py``,
   ``_invoice_line_item.py``): :func:`customer`, :func:`product`, :func:`price`,
   :func:`tier`, :func:`coupon`, :func:`discount`, :func:`subscription_item`,
   :func:`subscription`, :func:`invoice_line`, :func:`invoice`, and :func:`ts` for instants.
   Notable current shapes: ``current_period_start/end`` live on items; a subscription's
   ``discounts`` is a list of ids (or expanded objects); a discount's coupon is under
   ``source.coupon``; an invoice's subscription is
   ``parent.subscription_details.subscription``; a line's price is
   ``pricing.price_details.price`` and its item / proration flag are under
   ``parent.subscription_item_details``; service periods are ``period.start/end``.

2. **A world** (:class:`World`) that simulates subscriptions month by month the way
   Stripe bills them, and emits every object it made::

       world = World()
       world.add_customer("cus_1", country="DE")
       world.add_price("price_basic", unit_amount=1_000)          # 10.00 usd / month
       sub = world.subscribe("cus_1", [("price_basic", 5)], at=ts(2025, 1, 1))
       sub.change_quantity(sub.item_ids[0], 8, at=ts(2025, 2, 15))  # proration lines
       sub.cancel_at_period_end(at=ts(2025, 4, 3))
       world.advance(ts(2025, 7, 1))                               # renew / end as due
       objs = world.objects()   # {"customers": [...], "prices": [...], "subscriptions": [...],
                                #  "invoices": [...], "coupons": [...], "discounts": [...],
                                #  "products": [...]}

   Operations must be called in chronological order; each one first bills every period
   that starts on or before its instant (an operation on a subscription that has ended by
   then raises :class:`SubscriptionEnded`). :meth:`World.advance` bills up to an instant
   and sets "now". Invoices are ``paid`` unless the subscription was told otherwise
   (:meth:`SubscriptionLife.fail_payments`, :meth:`SubscriptionLife.pause_collection`).

   World: ``add_customer``, ``add_price``, ``add_coupon``, ``add_customer_discount``,
   ``subscribe`` (trials, backdating, coupons, incomplete first invoice), ``add_event``,
   ``advance``, ``objects``, ``customer_objects``, ``customer_data``;
   ``tax_percent[price_id]`` (also ``inclusive_tax_percent``) taxes the lines of a price
   as its ``tax_behavior`` says: included in the amount, or added on top (exclusive).
   SubscriptionLife (``item_ids``, ``discount_ids``): ``change_quantity`` / ``change_price``
   (proration lines; ``prorate=False`` none; ``seen=True`` records the
   ``customer.subscription.updated`` event), ``add_item``, ``remove_item``,
   ``record_usage`` (metered, billed in arrears), ``add_discount`` (subscription or item),
   ``remove_discount`` (``seen=True``: ``customer.discount.deleted`` event),
   ``cancel_at_period_end``, ``schedule_cancel``, ``undo_cancel``, ``cancel_now``,
   ``pause`` / ``resume`` (status paused), ``pause_collection`` / ``resume_collection``,
   ``fail_payments`` (open invoices, past_due), ``mark_unpaid``, ``to_stripe``.
   :meth:`World.customer_data` turns one customer's objects into the domain's
   :class:`nrr.domain.records.CustomerData` through :mod:`nrr.domain.stripe_shapes`.

The world decides what happens to a subscription and when; how Stripe bills it (period
boundaries, amounts of tiers and currency options, proration pairs, discount amounts on
lines, inclusive taxes, line order, invoice totals) is the emulator's billing rules
(:mod:`integrations.emulator.billing`), the same the generated accounts of the demo, the
sync tests and the benchmarks are billed by. Line amounts are what Stripe would invoice
(used only where invoiced amounts matter, such as the ``metered=invoiced`` policy).
"""

from __future__ import annotations

import copy
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from integrations.emulator import shapes
from integrations.emulator.billing import (
    add_interval,
    amount_for,
    discount_and_tax,
    discount_applications,
    in_no_order,
    proration_amounts,
    total_invoice,
)
from integrations.emulator.generator import StripeIds

if TYPE_CHECKING:
    from nrr.domain.records import CustomerData

JSON = dict[str, Any]


def ts(year: int, month: int, day: int = 1, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    """UTC instant as Unix seconds."""
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp())


# --------------------------------------------------------------------------- builders
# Thin keyword-friendly fronts on the emulator's builders (integrations/emulator/shapes.py):
# one set of Stripe shapes for the emulator, the tests and the benchmark.

CREATED = 1_700_000_000


def customer(cid: str = "cus_1", *, email: str | None = None, country: str | None = "US",
             currency: str | None = "usd", metadata: dict[str, str] | None = None,
             livemode: bool = False, created: int = CREATED,
             discount: JSON | None = None, deleted: bool = False) -> JSON:
    """A customer; ``deleted=True`` gives Stripe's deleted-customer stub."""
    if deleted:
        return {"id": cid, "object": "customer", "deleted": True}
    return shapes.customer(id=cid, created=created,
                           email=email if email is not None else f"{cid}@example.com",
                           name=f"Customer {cid}", country=country, livemode=livemode,
                           invoice_prefix=cid.upper()[-8:], currency=currency,
                           metadata=metadata, discount=discount)


def product(pid: str = "prod_1", *, name: str | None = None, livemode: bool = False) -> JSON:
    return shapes.product(id=pid, name=name or pid, created=CREATED, livemode=livemode)


def tier(up_to: int | None, *, unit_amount: int | None = None, flat_amount: int | None = None,
         unit_amount_decimal: str | None = None) -> JSON:
    """A price tier as the API returns it (the last tier has ``up_to: null``; requests say "inf")."""
    return shapes.tier(up_to, unit_amount, flat_amount, unit_amount_decimal=unit_amount_decimal)


def price(pid: str = "price_1", *, unit_amount: int | None = 1_000, unit_amount_decimal: str | None = None,
          currency: str = "usd", product: str = "prod_1", interval: str | None = "month",
          interval_count: int = 1, usage_type: str = "licensed", billing_scheme: str = "per_unit",
          tiers: Sequence[JSON] | None = None, tiers_mode: str | None = None,
          transform_quantity: tuple[int, str] | None = None,
          currency_options: dict[str, JSON] | None = None, tax_behavior: str = "exclusive",
          nickname: str | None = None, livemode: bool = False) -> JSON:
    """A price. ``interval=None`` makes a one-time price; tiers need ``billing_scheme='tiered'``.

    ``currency_options`` maps currency -> ``{"unit_amount": n}`` (or ``unit_amount_decimal``,
    ``tiers``, ``tax_behavior``); the price's own currency is added like the API does.
    """
    return shapes.price(
        id=pid, product=product, currency=currency, created=CREATED, livemode=livemode,
        interval=interval, interval_count=interval_count, unit_amount=unit_amount,
        unit_amount_decimal=unit_amount_decimal, billing_scheme=billing_scheme,
        tiers=list(tiers) if tiers is not None else None, tiers_mode=tiers_mode,
        usage_type=usage_type,
        transform_quantity=({"divide_by": transform_quantity[0], "round": transform_quantity[1]}
                            if transform_quantity else None),
        currency_options=currency_options, nickname=nickname, tax_behavior=tax_behavior)


def coupon(cid: str = "co_1", *, percent_off: float | None = None, amount_off: int | None = None,
           currency: str | None = None, duration: str = "forever",
           duration_in_months: int | None = None, livemode: bool = False) -> JSON:
    return shapes.coupon(id=cid, name=cid, created=CREATED, livemode=livemode, duration=duration,
                         percent_off=percent_off, amount_off=amount_off, currency=currency,
                         duration_in_months=duration_in_months)


def discount(did: str, coupon_ref: str | JSON, *, customer: str, start: int, end: int | None = None,
             subscription: str | None = None, subscription_item: str | None = None,
             invoice: str | None = None) -> JSON:
    """A discount; ``coupon_ref`` is a coupon id or an expanded coupon dict (``source.coupon``)."""
    return shapes.discount(id=did, coupon_id=coupon_ref, customer=customer, start=start, end=end,
                           subscription=subscription, subscription_item=subscription_item,
                           invoice=invoice)


def subscription_item(iid: str, price_obj: JSON, *, subscription: str, quantity: int | None = 1,
                      current_period_start: int, current_period_end: int,
                      discounts: Sequence[str | JSON] = (), created: int | None = None) -> JSON:
    """A subscription item; ``price_obj`` is the full price (as Stripe embeds it)."""
    metered = (price_obj.get("recurring") or {}).get("usage_type") == "metered"
    return shapes.subscription_item(
        id=iid, subscription=subscription, price_obj=price_obj,
        quantity=None if metered else quantity, created=created or current_period_start,
        period_start=current_period_start, period_end=current_period_end,
        discounts=list(discounts))


def subscription(sid: str, customer_id: str, items: Sequence[JSON], *, status: str = "active",
                 currency: str = "usd", start_date: int, created: int | None = None,
                 billing_cycle_anchor: int | None = None, trial_start: int | None = None,
                 trial_end: int | None = None, cancel_at: int | None = None,
                 cancel_at_period_end: bool = False, canceled_at: int | None = None,
                 ended_at: int | None = None, paused_at: int | None = None,
                 pause_collection: JSON | None = None, discounts: Sequence[str | JSON] = (),
                 livemode: bool = False, metadata: dict[str, str] | None = None) -> JSON:
    """A subscription; ``paused_at`` fills ``status_details.paused.transitioned_at``."""
    body = shapes.subscription(
        id=sid, customer=customer_id, currency=currency,
        created=created if created is not None else start_date, start_date=start_date,
        billing_cycle_anchor=billing_cycle_anchor or start_date, items=list(items),
        livemode=livemode, status=status, trial_start=trial_start, trial_end=trial_end)
    body.update(
        cancel_at=cancel_at, cancel_at_period_end=cancel_at_period_end, canceled_at=canceled_at,
        cancellation_details={"comment": None, "feedback": None,
                              "reason": "cancellation_requested" if canceled_at else None},
        ended_at=ended_at, pause_collection=pause_collection,
        status_details=({"paused": {"type": "subscription", "transitioned_at": paused_at,
                                    "subscription": {"type": "pause_requested"}}}
                        if paused_at is not None else None),
        discounts=list(discounts), metadata=dict(metadata or {}))
    return body


def invoice_line(lid: str, *, invoice: str, subscription: str | None, subscription_item: str | None,
                 price_id: str | None, product_id: str | None = "prod_1", quantity: int | None,
                 period_start: int, period_end: int, amount: int, currency: str = "usd",
                 proration: bool = False, discount_amounts: Sequence[tuple[str, int]] = (),
                 unit_amount_decimal: str | None = None, taxes: Sequence[JSON] = (),
                 livemode: bool = False, invoice_item: str | None = None) -> JSON:
    """A line. Subscription lines have ``parent.type='subscription_item_details'``; a one-off
    invoice item (``subscription_item=None``) gets ``invoice_item_details``."""
    line = shapes.invoice_line(
        id=lid, invoice=invoice, subscription=subscription, subscription_item=subscription_item,
        price_id=price_id, product_id=product_id, unit_amount_decimal=unit_amount_decimal,
        currency=currency, amount=amount, quantity=quantity, period_start=period_start,
        period_end=period_end, proration=proration, description=None, livemode=livemode,
        invoice_item=invoice_item if proration or subscription_item is None else None,
        discount_amounts=[{"amount": a, "discount": d} for d, a in discount_amounts],
        discounts=[d for d, _ in discount_amounts], taxes=list(taxes))
    return line


def invoice(iid: str, customer_id: str, *, lines: Sequence[JSON], subscription: str | None,
            status: str = "paid", billing_reason: str = "subscription_cycle", currency: str = "usd",
            created: int, finalized_at: int | None = None, paid_at: int | None = None,
            voided_at: int | None = None, marked_uncollectible_at: int | None = None,
            discounts: Sequence[str] = (), livemode: bool = False) -> JSON:
    starts = [line["period"]["start"] for line in lines] or [created]
    ends = [line["period"]["end"] for line in lines] or [created]
    body = shapes.invoice(id=iid, customer={"id": customer_id, "email": None, "name": None},
                          subscription=subscription, currency=currency, created=created,
                          billing_reason=billing_reason, period_start=min(starts),
                          period_end=max(ends), number=iid.upper(), livemode=livemode)
    body["status"] = status
    body["status_transitions"] = {
        "finalized_at": finalized_at if finalized_at is not None else (
            None if status == "draft" else created),
        "paid_at": paid_at if paid_at is not None else (created if status == "paid" else None),
        "voided_at": voided_at if voided_at is not None else (created if status == "void" else None),
        "marked_uncollectible_at": marked_uncollectible_at if marked_uncollectible_at is not None
        else (created if status == "uncollectible" else None),
    }
    totals: dict[str, int] = {}
    for line in lines:
        for entry in line["discount_amounts"]:
            totals[entry["discount"]] = totals.get(entry["discount"], 0) + entry["amount"]
    body["discounts"] = list(discounts)
    total_invoice(body, lines, totals)
    body.update(amount_paid=body["amount_due"] if status == "paid" else 0,
                amount_remaining=0 if status == "paid" else body["amount_due"])
    body["lines"]["data"] = list(lines)
    return body


# --------------------------------------------------------------------------- the world


class SubscriptionEnded(RuntimeError):
    """An operation was asked of a subscription that had already ended."""


@dataclass
class _ItemState:
    id: str
    price_id: str
    quantity: int | None
    period_start: int
    period_end: int
    created: int
    discount_ids: list[str] = field(default_factory=list)
    usage: int = 0


class World:
    """A registry of Stripe objects plus subscriptions simulated over time. See module doc."""

    def __init__(self, *, livemode: bool = False, seed: int | None = None) -> None:
        self.livemode = livemode
        # Ids carry no order and invoice lines come in no fixed order, as in Stripe: both
        # are drawn from this seeded generator. ``TEST_STRIPE_WORLD_SEED`` changes the default
        # seed, to run the tests with other ids and line orders (their figures must hold).
        if seed is None:
            seed = int(os.environ.get("TEST_STRIPE_WORLD_SEED", "0"))
        self.rng = random.Random(seed)
        self._ids = StripeIds(random.Random(self.rng.random()))
        self.customers: dict[str, JSON] = {}
        self.products: dict[str, JSON] = {}
        self.prices: dict[str, JSON] = {}
        self.coupons: dict[str, JSON] = {}
        self.discounts: dict[str, JSON] = {}
        self.lives: dict[str, SubscriptionLife] = {}
        self.invoices: list[JSON] = []
        self.now = 0
        self.events: list[JSON] = []
        # Percent of tax included in the amounts of tax-inclusive prices (per price id).
        self.tax_percent: dict[str, Decimal] = {}
        # The name the tests knew first; one map for both behaviours.
        self.inclusive_tax_percent = self.tax_percent

    def new_id(self, prefix: str) -> str:
        return self._ids.new(prefix)

    # objects ---------------------------------------------------------------
    def add_customer(self, cid: str, **kwargs: Any) -> JSON:
        kwargs.setdefault("livemode", self.livemode)
        body = customer(cid, **kwargs)
        self.customers[cid] = body
        return body

    def add_price(self, pid: str, **kwargs: Any) -> JSON:
        kwargs.setdefault("livemode", self.livemode)
        body = price(pid, **kwargs)
        prod = body["product"]
        if prod not in self.products:
            self.products[prod] = product(prod, livemode=self.livemode)
        self.prices[pid] = body
        return body

    def add_coupon(self, cid: str, **kwargs: Any) -> JSON:
        kwargs.setdefault("livemode", self.livemode)
        body = coupon(cid, **kwargs)
        self.coupons[cid] = body
        return body

    def add_customer_discount(self, customer_id: str, coupon_id: str, *, at: int) -> str:
        """A customer-level discount (``customer.discount``), applied after subscription ones."""
        self.advance(at)
        coupon_obj = self.coupons[coupon_id]
        end = None
        if coupon_obj["duration"] == "repeating":
            end = add_interval(at, "month", coupon_obj["duration_in_months"])
        did = self.new_id("di")
        body = discount(did, coupon_id, customer=customer_id, start=at, end=end)
        self.discounts[did] = body
        self.customers[customer_id]["discount"] = copy.deepcopy(body)
        return did

    def add_event(self, event_type: str, obj: JSON, *, at: int, customer_id: str,
                  previous_attributes: JSON | None = None) -> JSON:
        """Record an event the worker would have seen (``/v1/events`` shape)."""
        body = shapes.event(id=self.new_id("evt"), type=event_type, created=at,
                            obj=copy.deepcopy(obj), livemode=self.livemode,
                            previous_attributes=copy.deepcopy(previous_attributes))
        body["_customer"] = customer_id
        self.events.append(body)
        return body

    def subscribe(self, customer_id: str, items: Sequence[tuple[str, int | None]], *, at: int,
                  sid: str | None = None, currency: str | None = None,
                  trial_end: int | None = None, trial_outcome: str = "convert",
                  start_date: int | None = None, coupons: Sequence[str] = (),
                  first_invoice_status: str = "paid") -> SubscriptionLife:
        """Start a subscription at ``at`` with ``[(price_id, quantity), ...]``.

        ``start_date`` backdates (billing still starts at ``at``). ``trial_end`` starts a
        trial ``[at, trial_end)``; ``trial_outcome``: ``convert`` (active, first invoice at
        ``trial_end``), ``paused`` (no payment method: paused at ``trial_end``) or
        ``incomplete`` (first invoice stays open). ``first_invoice_status='open'`` creates an
        ``incomplete`` subscription. ``coupons`` become subscription-level discounts.
        """
        self.advance(at)
        life = SubscriptionLife(self, sid or self.new_id("sub"), customer_id, at=at,
                                items=items, currency=currency, trial_end=trial_end,
                                trial_outcome=trial_outcome, start_date=start_date,
                                coupons=coupons, first_invoice_status=first_invoice_status)
        self.lives[life.id] = life
        return life

    def advance(self, to: int) -> None:
        """Bill every period that starts on or before ``to``; ``to`` becomes "now"."""
        for life in self.lives.values():
            life.advance(to)
        self.now = max(self.now, to)

    def add_invoice(self, body: JSON) -> JSON:
        self.invoices.append(body)
        return body

    # output ------------------------------------------------------------------
    def subscriptions(self) -> list[JSON]:
        return [life.to_stripe() for life in self.lives.values()]

    def objects(self) -> dict[str, list[JSON]]:
        return {
            "customers": [copy.deepcopy(c) for c in self.customers.values()],
            "products": [copy.deepcopy(p) for p in self.products.values()],
            "prices": [copy.deepcopy(p) for p in self.prices.values()],
            "coupons": [copy.deepcopy(c) for c in self.coupons.values()],
            "discounts": [copy.deepcopy(d) for d in self.discounts.values()],
            "subscriptions": self.subscriptions(),
            "invoices": copy.deepcopy(self.invoices),
            "events": [{k: v for k, v in e.items() if k != "_customer"} for e in self.events],
        }

    def customer_objects(self, customer_id: str) -> dict[str, list[JSON]]:
        everything = self.objects()
        return {
            "customers": [c for c in everything["customers"] if c["id"] == customer_id],
            "products": everything["products"],
            "prices": everything["prices"],
            "coupons": everything["coupons"],
            "discounts": [d for d in everything["discounts"] if d["customer"] == customer_id],
            "subscriptions": [s for s in everything["subscriptions"] if s["customer"] == customer_id],
            "invoices": [i for i in everything["invoices"] if i["customer"] == customer_id],
            "events": [{k: v for k, v in e.items() if k != "_customer"}
                       for e in self.events if e["_customer"] == customer_id],
        }

    def customer_data(self, customer_id: str) -> CustomerData:
        """The domain input for one customer, parsed by :mod:`nrr.domain.stripe_shapes`."""
        from nrr.domain.stripe_shapes import customer_data_from_stripe

        objs = self.customer_objects(customer_id)
        data, skips = customer_data_from_stripe(customer_id, objs)
        if skips:
            raise AssertionError(f"world produced objects the normaliser skipped: {skips}")
        return data


class SubscriptionLife:
    """One simulated subscription. Call operations in chronological order."""

    def __init__(self, world: World, sid: str, customer_id: str, *, at: int,
                 items: Sequence[tuple[str, int | None]], currency: str | None,
                 trial_end: int | None, trial_outcome: str, start_date: int | None,
                 coupons: Sequence[str], first_invoice_status: str) -> None:
        self.world = world
        self.id = sid
        self.customer_id = customer_id
        first_price = world.prices[items[0][0]]
        self.currency = currency or first_price["currency"]
        self.created = at
        self.start_date = start_date if start_date is not None else at
        self.anchor = trial_end if trial_end is not None else at
        self.anchor_day = datetime.fromtimestamp(self.anchor, tz=UTC).day
        self.trial_start = at if trial_end is not None else None
        self.trial_end = trial_end
        self.trial_outcome = trial_outcome
        self.status = "trialing" if trial_end is not None else (
            "incomplete" if first_invoice_status == "open" else "active")
        self.cancel_at: int | None = None
        self.cancel_at_period_end_flag = False
        self.canceled_at: int | None = None
        self.ended_at: int | None = None
        self.paused_at: int | None = None
        self.pause_collection_body: JSON | None = None
        self.invoice_status = "paid"
        self.discount_ids: list[str] = []
        self.items: list[_ItemState] = []
        self.removed_items: list[_ItemState] = []
        period_end = trial_end if trial_end is not None else self._next_end(at)
        for price_id, quantity in items:
            self.items.append(_ItemState(world.new_id("si"), price_id, self._qty(price_id, quantity),
                                         at, period_end, at))
        for coupon_id in coupons:
            self.add_discount(coupon_id, at=at, _advance=False)
        # First invoice: zero for a trial, the first period otherwise.
        if trial_end is not None:
            self._invoice(at, "subscription_create", [
                self._cycle_line(item, at, trial_end, amount=0) for item in self.items],
                status="paid")
        else:
            # Metered usage is billed in arrears: nothing for it on the first invoice.
            self._invoice(at, "subscription_create", [
                self._cycle_line(item, at, period_end) for item in self.items
                if item.quantity is not None or not self._metered(item.price_id)],
                status=first_invoice_status)

    # helpers -----------------------------------------------------------------
    @property
    def item_ids(self) -> list[str]:
        return [item.id for item in self.items]

    def _metered(self, price_id: str) -> bool:
        recurring = self.world.prices[price_id].get("recurring") or {}
        return bool(recurring.get("usage_type") == "metered")

    def _qty(self, price_id: str, quantity: int | None) -> int | None:
        return None if self._metered(price_id) else quantity

    def _interval(self) -> tuple[str, int]:
        recurring = self.world.prices[self.items[0].price_id]["recurring"]
        return recurring["interval"], recurring["interval_count"]

    def _next_end(self, start: int) -> int:
        interval, count = self._interval() if self.items else ("month", 1)
        return add_interval(start, interval, count, anchor_day=self.anchor_day)

    def _item(self, item_id: str) -> _ItemState:
        for item in self.items:
            if item.id == item_id:
                return item
        raise KeyError(item_id)

    def _active_discounts(self, ids: Iterable[str], at: int) -> list[JSON]:
        found = []
        for did in ids:
            body = self.world.discounts[did]
            if body["start"] <= at and (body["end"] is None or at < body["end"]):
                found.append(body)
        return found

    def _used_once(self) -> set[str]:
        """The discounts that already took something off an earlier invoice."""
        return {entry["discount"] for inv in self.world.invoices
                for line in inv["lines"]["data"] for entry in line["discount_amounts"]}

    def _cycle_line(self, item: _ItemState, start: int, end: int, *, amount: int | None = None,
                    quantity: int | None = -1) -> JSON:
        price_obj = self.world.prices[item.price_id]
        qty = item.quantity if quantity == -1 else quantity
        if amount is None:
            billed_qty = item.usage if qty is None else qty
            amount = amount_for(price_obj, billed_qty, self.currency)
        return invoice_line(
            self.world.new_id("il"), invoice="", subscription=self.id, subscription_item=item.id,
            price_id=item.price_id, product_id=price_obj["product"],
            quantity=qty if qty is not None else item.usage,
            period_start=start, period_end=end, amount=amount, currency=self.currency,
            unit_amount_decimal=price_obj.get("unit_amount_decimal"),
            livemode=self.world.livemode)

    def _invoice(self, at: int, reason: str, lines: list[JSON], *, status: str | None = None) -> JSON:
        """A new invoice of ``lines`` (in no fixed order), discounted and taxed by the
        emulator's billing rules."""
        status = status or self.invoice_status
        if self.pause_collection_body is not None and reason == "subscription_cycle":
            status = {"void": "void", "keep_as_draft": "draft",
                      "mark_uncollectible": "uncollectible"}[self.pause_collection_body["behavior"]]
        lines = in_no_order(lines, self.world.rng)
        customer_discount = (self.world.customers.get(self.customer_id) or {}).get("discount")
        applications = discount_applications(
            lines, at=at,
            item_discounts={item.id: item.discount_ids
                            for item in (*self.items, *self.removed_items)},
            subscription_discounts=self.discount_ids,
            customer_discounts=[customer_discount["id"]] if customer_discount else [],
            discounts=self.world.discounts, coupons=self.world.coupons,
            used_once=self._used_once())
        discount_and_tax(lines, applications, currency=self.currency,
                         tax_percent=self.world.tax_percent, prices=self.world.prices)
        return self.world.add_invoice(invoice(
            self.world.new_id("in"), self.customer_id, lines=lines, subscription=self.id,
            status=status, billing_reason=reason, currency=self.currency, created=at,
            discounts=[disc["id"] for disc, _, _, line_level in applications if not line_level],
            livemode=self.world.livemode))

    def _proration_lines(self, item: _ItemState, at: int, *, old: tuple[str, int | None] | None,
                         new: tuple[str, int | None] | None) -> list[JSON]:
        """Stripe's pair: a negative line for the unused old state, a positive one for the new."""
        prices = self.world.prices
        amounts = proration_amounts(
            None if old is None else (prices[old[0]], old[1] or 0),
            None if new is None else (prices[new[0]], new[1] or 0),
            currency=self.currency, period=(item.period_start, item.period_end), at=at)
        lines = []
        for state, amount in zip((old, new), amounts, strict=True):
            if state is None or amount is None:
                continue
            price_id, qty = state
            lines.append(invoice_line(
                self.world.new_id("il"), invoice="", subscription=self.id, subscription_item=item.id,
                price_id=price_id, product_id=prices[price_id]["product"], quantity=qty,
                period_start=at, period_end=item.period_end, amount=amount, currency=self.currency,
                proration=True, invoice_item=self.world.new_id("ii"), livemode=self.world.livemode))
        return lines

    # time ----------------------------------------------------------------------
    def advance(self, to: int) -> None:
        """Renew (or end) every period whose end is on or before ``to``."""
        if self.status == "incomplete":
            # The first invoice was never paid: Stripe expires the subscription after 23 hours.
            if self.trial_end is None and to >= self.created + 23 * 3_600:
                self.status = "incomplete_expired"
            return
        while self.items and self.ended_at is None and self.status not in {"paused", "incomplete_expired"}:
            boundary = min(item.period_end for item in self.items)
            if self.cancel_at is not None and self.cancel_at <= to and self.cancel_at <= boundary:
                self._end(self.cancel_at)
                return
            if boundary > to:
                return
            if self.status == "trialing" and self.trial_end is not None and boundary >= self.trial_end:
                if self.trial_outcome == "paused":
                    self.status = "paused"
                    self.paused_at = self.trial_end
                    return
                self.status = "incomplete" if self.trial_outcome == "incomplete" else "active"
                status = "open" if self.trial_outcome == "incomplete" else None
            else:
                status = None
            new_end = self._next_end(boundary)
            lines = []
            for item in self.items:
                recurring = self.world.prices[item.price_id]["recurring"]
                if item.quantity is None and recurring.get("usage_type") == "metered":
                    # Usage is billed in arrears for the period that just closed.
                    lines.append(self._cycle_line(item, item.period_start, item.period_end))
                    item.usage = 0
                item.period_start, item.period_end = boundary, new_end
                if not (item.quantity is None and recurring.get("usage_type") == "metered"):
                    lines.append(self._cycle_line(item, boundary, new_end))
            self._invoice(boundary, "subscription_cycle", lines, status=status)
            if self.invoice_status == "open" and self.status == "active":
                self.status = "past_due"
            if status == "open":
                return

    def _end(self, at: int) -> None:
        self.status = "canceled"
        self.ended_at = at
        if self.canceled_at is None:
            self.canceled_at = at

    # operations ----------------------------------------------------------------
    def _prepare(self, at: int) -> None:
        """Bill up to ``at``; an operation on a subscription that has ended by then is an error."""
        self.world.advance(at)
        if self.ended_at is not None:
            raise SubscriptionEnded(f"{self.id} ended at {self.ended_at}; nothing can change at {at}")

    def _seen_update(self, at: int, before: JSON) -> None:
        """Record ``customer.subscription.updated`` with the old items in previous_attributes."""
        self.world.add_event("customer.subscription.updated", self.to_stripe(), at=at,
                             customer_id=self.customer_id, previous_attributes={"items": before["items"]})

    def change_quantity(self, item_id: str, quantity: int, *, at: int, prorate: bool = True,
                        seen: bool = False) -> None:
        """Seat change at ``at``: proration lines (negative old, positive new) on a new invoice.
        ``prorate=False`` makes no lines (the next cycle invoice shows it); ``seen=True`` records
        the ``customer.subscription.updated`` event."""
        self._prepare(at)
        item = self._item(item_id)
        before = self.to_stripe() if seen else None
        if prorate:
            self._invoice(at, "subscription_update", self._proration_lines(
                item, at, old=(item.price_id, item.quantity), new=(item.price_id, quantity)))
        item.quantity = quantity
        if before is not None:
            self._seen_update(at, before)

    def change_price(self, item_id: str, price_id: str, *, at: int, quantity: int | None = None,
                     prorate: bool = True, seen: bool = False) -> None:
        """Plan or price change of one item at ``at`` (same billing interval)."""
        self._prepare(at)
        item = self._item(item_id)
        before = self.to_stripe() if seen else None
        new_qty = item.quantity if quantity is None else quantity
        if prorate:
            self._invoice(at, "subscription_update", self._proration_lines(
                item, at, old=(item.price_id, item.quantity), new=(price_id, new_qty)))
        item.price_id = price_id
        item.quantity = self._qty(price_id, new_qty)
        if before is not None:
            self._seen_update(at, before)

    def add_item(self, price_id: str, quantity: int | None = 1, *, at: int, prorate: bool = True) -> str:
        self._prepare(at)
        ref = self.items[0]
        item = _ItemState(self.world.new_id("si"), price_id, self._qty(price_id, quantity),
                          ref.period_start, ref.period_end, at)
        self.items.append(item)
        if prorate:
            self._invoice(at, "subscription_update",
                          self._proration_lines(item, at, old=None, new=(price_id, item.quantity)))
        return item.id

    def remove_item(self, item_id: str, *, at: int, prorate: bool = True) -> None:
        self._prepare(at)
        item = self._item(item_id)
        if prorate:
            self._invoice(at, "subscription_update",
                          self._proration_lines(item, at, old=(item.price_id, item.quantity), new=None))
        self.items.remove(item)
        self.removed_items.append(item)

    def record_usage(self, item_id: str, quantity: int, *, at: int) -> None:
        """Metered usage within the current period (billed at the next renewal)."""
        self._prepare(at)
        self._item(item_id).usage += quantity

    def add_discount(self, coupon_id: str, *, at: int, item_id: str | None = None,
                     _advance: bool = True) -> str:
        """Attach a coupon from ``at`` (to the subscription, or to ``item_id``)."""
        if _advance:
            self._prepare(at)
        coupon_obj = self.world.coupons[coupon_id]
        end = None
        if coupon_obj["duration"] == "repeating":
            end = add_interval(at, "month", coupon_obj["duration_in_months"])
        did = self.world.new_id("di")
        self.world.discounts[did] = discount(
            did, coupon_id, customer=self.customer_id, start=at, end=end,
            subscription=self.id if item_id is None else None, subscription_item=item_id)
        if item_id is None:
            self.discount_ids.append(did)
        else:
            self._item(item_id).discount_ids.append(did)
        return did

    def remove_discount(self, discount_id: str, *, at: int, seen: bool = False) -> None:
        """Remove a discount before its end; ``seen=True`` records the ``customer.discount.deleted``
        event (the worker watched it), otherwise only the invoices show it."""
        self._prepare(at)
        if seen:
            self.world.add_event("customer.discount.deleted", self.world.discounts[discount_id], at=at,
                                 customer_id=self.customer_id)
        if discount_id in self.discount_ids:
            self.discount_ids.remove(discount_id)
        for item in self.items:
            if discount_id in item.discount_ids:
                item.discount_ids.remove(discount_id)

    def cancel_at_period_end(self, *, at: int) -> None:
        """Ask to cancel at the end of the current period (Stripe also sets ``cancel_at``)."""
        self._prepare(at)
        self.cancel_at_period_end_flag = True
        self.canceled_at = at
        self.cancel_at = min(item.period_end for item in self.items)

    def schedule_cancel(self, cancel_at: int, *, at: int) -> None:
        """Ask at ``at`` to cancel at ``cancel_at``."""
        self._prepare(at)
        self.cancel_at = cancel_at
        self.canceled_at = at

    def undo_cancel(self, *, at: int) -> None:
        """Take back a scheduled cancellation before it takes effect."""
        self._prepare(at)
        self.cancel_at = None
        self.cancel_at_period_end_flag = False
        self.canceled_at = None

    def cancel_now(self, *, at: int) -> None:
        self._prepare(at)
        self._end(at)

    def pause(self, *, at: int) -> None:
        """Status ``paused`` (no invoices, no new periods) from ``at``."""
        self._prepare(at)
        self.status = "paused"
        self.paused_at = at

    def resume(self, *, at: int) -> None:
        """Resume a paused subscription: a new period starts at ``at`` (new anchor)."""
        self.world.advance(at)
        self.status = "active"
        self.paused_at = None
        self.anchor_day = datetime.fromtimestamp(at, tz=UTC).day
        end = self._next_end(at)
        for item in self.items:
            item.period_start, item.period_end = at, end
        self._invoice(at, "subscription_cycle", [self._cycle_line(i, at, end) for i in self.items])

    def pause_collection(self, *, at: int, behavior: str = "void", resumes_at: int | None = None) -> None:
        """``pause_collection``: status unchanged, cycle invoices void / draft / uncollectible."""
        self._prepare(at)
        self.pause_collection_body = {"behavior": behavior, "resumes_at": resumes_at}

    def resume_collection(self, *, at: int) -> None:
        self._prepare(at)
        self.pause_collection_body = None

    def fail_payments(self, *, at: int) -> None:
        """From ``at`` cycle invoices stay ``open``; the subscription turns ``past_due``."""
        self._prepare(at)
        self.invoice_status = "open"

    def mark_unpaid(self, *, at: int) -> None:
        """Dunning gave up: status ``unpaid`` (invoices stay open)."""
        self._prepare(at)
        self.status = "unpaid"

    def to_stripe(self) -> JSON:
        """The subscription as ``GET /v1/subscriptions/{id}`` would show it now."""
        now = self.world.now
        items = [
            subscription_item(
                item.id, self.world.prices[item.price_id], subscription=self.id,
                quantity=item.quantity, current_period_start=item.period_start,
                current_period_end=item.period_end, created=item.created,
                discounts=[d["id"] for d in self._active_discounts(item.discount_ids, now)])
            for item in self.items
        ]
        return subscription(
            self.id, self.customer_id, items, status=self.status, currency=self.currency,
            start_date=self.start_date, created=self.created, billing_cycle_anchor=self.anchor,
            trial_start=self.trial_start, trial_end=self.trial_end, cancel_at=self.cancel_at,
            cancel_at_period_end=self.cancel_at_period_end_flag, canceled_at=self.canceled_at,
            ended_at=self.ended_at, paused_at=self.paused_at if self.status == "paused" else None,
            pause_collection=copy.deepcopy(self.pause_collection_body),
            discounts=[d["id"] for d in self._active_discounts(self.discount_ids, now)],
            livemode=self.world.livemode)
