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

The world decides what happens to a subscription and when; the emulator's engine
(:mod:`integrations.emulator.generator`, in process, no HTTP) does it and bills it, the
same engine that generates the demo account, the sync tests' and the benchmarks' accounts:
subscriptions, period boundaries, renewals, trials, proration pairs (with the credited
cycle line named), items added and removed, discounts attached, dropped when used or
ended, or removed, cancellations, pauses, collection pauses, failed payments and unpaid
subscriptions, invoice assembly (lines in no fixed order, discount amounts, inclusive and
exclusive taxes, totals, finalisation and collection). The world keeps only its test-side
choices: the instants of the operations (its ``advance`` walks the period boundaries up to
an instant and asks the engine to end, end a trial or renew at each), which events the
worker saw (``seen=True``), and the views the tests read (``item_ids``, ``discount_ids``,
``items``, ``to_stripe``). Line amounts
are what Stripe would invoice (used only where invoiced amounts matter, such as the
``metered=invoiced`` policy).
"""

from __future__ import annotations

import copy
import os
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from integrations.emulator import EmulatedAccount, shapes
from integrations.emulator.billing import total_invoice
from integrations.emulator.generator import StripeIds, _SubState

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


class World:
    """A registry of Stripe objects plus subscriptions simulated over time by the emulator's
    engine. See module doc."""

    def __init__(self, *, livemode: bool = False, seed: int | None = None) -> None:
        self.livemode = livemode
        # Ids carry no order and invoice lines come in no fixed order, as in Stripe: both
        # are drawn from this seeded generator. ``TEST_STRIPE_WORLD_SEED`` changes the default
        # seed, to run the tests with other ids and line orders (their figures must hold).
        if seed is None:
            seed = int(os.environ.get("TEST_STRIPE_WORLD_SEED", "0"))
        self.rng = random.Random(seed)
        # The emulator's account and engine (in process): every subscription, invoice and
        # discount is made and billed by the engine, whose clock is the world's "now". The
        # engine records no events: the world records the ones a test says the worker saw.
        self.account = EmulatedAccount(now=0, livemode=livemode, seed=seed)
        self.engine = self.account.engine
        self.engine.silent = True
        self.engine.rng = self.rng
        self.engine.ids = StripeIds(random.Random(self.rng.random()))
        self.customers = self.account.customers
        self.products = self.account.products
        self.prices = self.account.prices
        self.coupons = self.account.coupons
        self.discounts = self.account.discounts
        self.lives: dict[str, SubscriptionLife] = {}
        self.now = 0
        self.events: list[JSON] = []
        # Percent of tax on the lines of a price (per price id), inclusive or exclusive as
        # its ``tax_behavior`` says.
        self.tax_percent = self.account.tax_percent
        # The name the tests knew first; one map for both behaviours.
        self.inclusive_tax_percent = self.tax_percent

    def new_id(self, prefix: str) -> str:
        return self.engine.ids.new(prefix)

    @property
    def invoices(self) -> list[JSON]:
        """Every invoice, in the order the engine made them (the live objects)."""
        return list(self.account.invoices.values())

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
        return self.engine.attach_customer_discount(customer_id, coupon_id, at)

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
        ``incomplete`` subscription (expired after 23 hours, its invoice voided).
        ``coupons`` become subscription-level discounts. The periods are those of the
        first price's ``recurring`` interval.
        """
        self.advance(at)
        first_price = self.prices[items[0][0]]
        recurring = first_price["recurring"]
        state = self.engine.subscribe(
            self.customers[customer_id], at, list(items), months=recurring["interval_count"],
            unit=recurring["interval"], trial_end=trial_end,
            trial_outcome="pause" if trial_outcome == "paused" else trial_outcome,
            coupons=coupons, currency=currency or first_price["currency"],
            start_date=start_date, sid=sid, fail_first=first_invoice_status == "open",
            random_usage=False, finalize_delay=0)
        life = SubscriptionLife(self, state)
        self.lives[life.id] = life
        return life

    def advance(self, to: int) -> None:
        """Bill every period that starts on or before ``to``; ``to`` becomes "now"."""
        self.now = max(self.now, to)
        self.account.now = self.now
        self.engine.run_agenda(to)
        for life in self.lives.values():
            life.advance(to)

    # output ------------------------------------------------------------------
    def subscriptions(self) -> list[JSON]:
        return [life.to_stripe() for life in self.lives.values()]

    def _invoice_objects(self) -> list[JSON]:
        """The invoices as a backfill reads them: every line embedded."""
        out = []
        for inv in self.account.invoices.values():
            body = copy.deepcopy(inv)
            body["lines"]["data"] = copy.deepcopy(self.account.lines_of(inv["id"]))
            body["lines"]["has_more"] = False
            out.append(body)
        return out

    def objects(self) -> dict[str, list[JSON]]:
        return {
            "customers": [copy.deepcopy(c) for c in self.customers.values()],
            "products": [copy.deepcopy(p) for p in self.products.values()],
            "prices": [copy.deepcopy(p) for p in self.prices.values()],
            "coupons": [copy.deepcopy(c) for c in self.coupons.values()],
            "discounts": [copy.deepcopy(d) for d in self.discounts.values()],
            "subscriptions": self.subscriptions(),
            "invoices": self._invoice_objects(),
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


class ItemView:
    """One item of a subscription as the engine holds it now (its price can be edited
    behind the engine's back, as a test of an account changed by hand does)."""

    def __init__(self, body: JSON, prices: dict[str, JSON]) -> None:
        self._body = body
        self._prices = prices

    @property
    def id(self) -> str:
        return str(self._body["id"])

    @property
    def price_id(self) -> str:
        return str(self._body["price"]["id"])

    @price_id.setter
    def price_id(self, price_id: str) -> None:
        self._body["price"] = copy.deepcopy(self._prices[price_id])

    @property
    def quantity(self) -> int | None:
        quantity: int | None = self._body["quantity"]
        return quantity

    @property
    def period_start(self) -> int:
        return int(self._body["current_period_start"])

    @property
    def period_end(self) -> int:
        return int(self._body["current_period_end"])


class SubscriptionLife:
    """One subscription of the world, billed by the emulator's engine. Call operations in
    chronological order. The world says what happens and when; the engine does it."""

    def __init__(self, world: World, state: _SubState) -> None:
        self.world = world
        self.state = state
        self.id = state.sub_id
        self.customer_id = state.customer_id
        self.currency = state.currency

    # the subscription now ------------------------------------------------------
    @property
    def body(self) -> JSON:
        body: JSON = self.world.account.subscriptions[self.id]
        return body

    @property
    def items(self) -> list[ItemView]:
        return [ItemView(item, self.world.prices) for item in self.body["items"]["data"]]

    @property
    def item_ids(self) -> list[str]:
        return [item["id"] for item in self.body["items"]["data"]]

    @property
    def discount_ids(self) -> list[str]:
        return list(self.body["discounts"])

    @property
    def status(self) -> str:
        return str(self.body["status"])

    @property
    def cancel_at(self) -> int | None:
        value: int | None = self.body["cancel_at"]
        return value

    @property
    def cancel_at_period_end_flag(self) -> bool:
        return bool(self.body["cancel_at_period_end"])

    @property
    def ended_at(self) -> int | None:
        value: int | None = self.body["ended_at"]
        return value

    def _item(self, item_id: str) -> JSON:
        for item in self.body["items"]["data"]:
            if item["id"] == item_id:
                found: JSON = item
                return found
        raise KeyError(item_id)

    # time ----------------------------------------------------------------------
    def advance(self, to: int) -> None:
        """Renew (or end) every period whose end is on or before ``to``."""
        engine, state, sub = self.world.engine, self.state, self.body
        while not state.done and sub["items"]["data"] and sub["status"] not in {
                "paused", "incomplete", "incomplete_expired", "canceled"}:
            if engine.close_period(state, to) != "renews":
                return
            engine.renew(state, state.period_end, outcome=state.outcome)
            if state.outcome == "fail" and sub["status"] == "active":
                sub["status"] = "past_due"

    # operations ----------------------------------------------------------------
    def _prepare(self, at: int) -> None:
        """Bill up to ``at``; an operation on a subscription that has ended by then is an error."""
        self.world.advance(at)
        if self.state.done or self.body["ended_at"] is not None:
            raise SubscriptionEnded(f"{self.id} ended at {self.body['ended_at']}; "
                                    f"nothing can change at {at}")

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
        before = self.to_stripe() if seen else None
        self.world.engine.change_item(self.state, self._item(item_id), at, quantity=quantity,
                                      prorate=prorate)
        if before is not None:
            self._seen_update(at, before)

    def change_price(self, item_id: str, price_id: str, *, at: int, quantity: int | None = None,
                     prorate: bool = True, seen: bool = False) -> None:
        """Plan or price change of one item at ``at`` (same billing interval)."""
        self._prepare(at)
        before = self.to_stripe() if seen else None
        self.world.engine.change_item(self.state, self._item(item_id), at, quantity=quantity,
                                      price_id=price_id, prorate=prorate)
        if before is not None:
            self._seen_update(at, before)

    def add_item(self, price_id: str, quantity: int | None = 1, *, at: int, prorate: bool = True) -> str:
        self._prepare(at)
        item = self.world.engine.add_item(self.state, price_id, quantity, at, prorate=prorate)
        return str(item["id"])

    def remove_item(self, item_id: str, *, at: int, prorate: bool = True) -> None:
        self._prepare(at)
        self.world.engine.remove_item(self.state, self._item(item_id), at, prorate=prorate)

    def record_usage(self, item_id: str, quantity: int, *, at: int) -> None:
        """Metered usage within the current period (billed at the next renewal)."""
        self._prepare(at)
        self.world.engine.record_usage(self.state, item_id, quantity)

    def add_discount(self, coupon_id: str, *, at: int, item_id: str | None = None) -> str:
        """Attach a coupon from ``at`` (to the subscription, or to ``item_id``)."""
        self._prepare(at)
        return self.world.engine.attach_discount(
            self.state, coupon_id, at, item=None if item_id is None else self._item(item_id))

    def remove_discount(self, discount_id: str, *, at: int, seen: bool = False) -> None:
        """Remove a discount before its end; ``seen=True`` records the ``customer.discount.deleted``
        event (the worker watched it), otherwise only the invoices show it."""
        self._prepare(at)
        if seen:
            self.world.add_event("customer.discount.deleted", self.world.discounts[discount_id], at=at,
                                 customer_id=self.customer_id)
        self.world.engine.remove_discount(self.state, discount_id, at)

    def cancel_at_period_end(self, *, at: int) -> None:
        """Ask to cancel at the end of the current period (Stripe also sets ``cancel_at``)."""
        self._prepare(at)
        self.world.engine.schedule_cancel(self.state, at)

    def schedule_cancel(self, cancel_at: int, *, at: int) -> None:
        """Ask at ``at`` to cancel at ``cancel_at``."""
        self._prepare(at)
        self.world.engine.set_cancel_at(self.state, cancel_at, at)

    def undo_cancel(self, *, at: int) -> None:
        """Take back a scheduled cancellation before it takes effect."""
        self._prepare(at)
        self.world.engine.undo_cancel(self.state, at)

    def cancel_now(self, *, at: int) -> None:
        self._prepare(at)
        self.world.engine.cancel_now(self.state, at)

    def pause(self, *, at: int) -> None:
        """Status ``paused`` (no invoices, no new periods) from ``at``."""
        self._prepare(at)
        self.world.engine.pause(self.state, at)

    def resume(self, *, at: int) -> None:
        """Resume a paused subscription: a new period starts at ``at`` (new anchor)."""
        self.world.advance(at)
        self.world.engine.resume(self.state, at)

    def pause_collection(self, *, at: int, behavior: str = "void", resumes_at: int | None = None) -> None:
        """``pause_collection``: status unchanged, cycle invoices void / draft / uncollectible."""
        self._prepare(at)
        self.world.engine.set_pause_collection(
            self.state, at, {"behavior": behavior, "resumes_at": resumes_at})

    def resume_collection(self, *, at: int) -> None:
        self._prepare(at)
        self.world.engine.set_pause_collection(self.state, at, None)

    def fail_payments(self, *, at: int) -> None:
        """From ``at`` invoices stay ``open``; the subscription turns ``past_due``."""
        self._prepare(at)
        self.state.outcome = "fail"

    def mark_unpaid(self, *, at: int) -> None:
        """Dunning gave up: status ``unpaid`` (later invoices stay drafts)."""
        self._prepare(at)
        self.world.engine.mark_unpaid(self.state, at)

    def to_stripe(self) -> JSON:
        """The subscription as ``GET /v1/subscriptions/{id}`` would show it now (discounts
        that have ended by now are gone)."""
        body = copy.deepcopy(self.body)
        now = self.world.now

        def in_force(ids: list[str]) -> list[str]:
            return [did for did in ids if self.world.discounts[did]["end"] is None
                    or now < self.world.discounts[did]["end"]]

        body["discounts"] = in_force(body["discounts"])
        for item in body["items"]["data"]:
            item["discounts"] = in_force(item["discounts"])
        return body
