"""A generated Stripe account with realistic histories, in the current API shape.

:func:`generate_account` simulates every subscription month by month the way Stripe bills
it (renewal invoices in advance, metered usage in arrears, mid-period seat and plan changes
with immediate proration invoices, coupons, trials, dunning, pauses and cancellations) and
records the events of the last 30 days with each object in the state of that moment.
:meth:`EmulatedAccount.apply_changes` then makes further realistic changes, for tests of an
incremental sync.

Everything is deterministic for a ``seed`` and ``now``.

The engine (:class:`_Engine`, :attr:`EmulatedAccount.engine`) is the one simulator of
Stripe billing in the project: the random histories above choose what happens and when,
and the tests' scripted world (``tests/stripe_world.py``) drives the same operations
(``subscribe``, ``renew``, ``end_trial``, ``change_item``, ``add_item``, ``remove_item``,
``attach_discount``, ``attach_customer_discount``, ``remove_discount``,
``schedule_cancel``, ``set_cancel_at``,
``undo_cancel``, ``cancel_now``, ``end_at_period_end``, ``pause``, ``resume``,
``set_pause_collection``, ``mark_unpaid``, ``record_usage``) at the instants a test says.
"""

from __future__ import annotations

import base64
import copy
import heapq
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from integrations.emulator import shapes
from integrations.emulator.billing import (
    Application,
    add_interval,
    amount_for,
    discount_and_tax,
    discount_applications,
    in_no_order,
    prorated,
    total_invoice,
)
from integrations.emulator.shapes import public_view

DAY = 86_400
HOUR = 3_600
EVENT_WINDOW = 30 * DAY

KINDS = ("customers", "products", "prices", "coupons", "subscriptions",
         "subscription_schedules", "invoices", "events")

# Random id tails are base64 of random bytes with its two symbols made letters (Stripe's
# ids are alphanumeric).
_ALNUM = bytes.maketrans(b"+/", b"Xq")

COUNTRIES = (("US", 50), ("GB", 15), ("DE", 12), ("FR", 8), ("JP", 10), ("CA", 5))
CURRENCY_OF = {"US": "usd", "CA": "usd", "GB": "gbp", "DE": "eur", "FR": "eur", "JP": "jpy"}
CURRENCIES = ("usd", "eur", "gbp", "jpy")

_WORDS_A = ("Acme", "Blue", "Bright", "Cloud", "Delta", "Echo", "Fjord", "Granite", "Harbor",
            "Iron", "Juniper", "Kite", "Lumen", "Maple", "Nimbus", "Orbit", "Pine", "Quartz",
            "River", "Summit", "Tidal", "Umber", "Vector", "Willow", "Yonder", "Zephyr")
_WORDS_B = ("Labs", "Works", "Systems", "Analytics", "Studio", "Logistics", "Health",
            "Finance", "Robotics", "Media", "Foods", "Energy", "Retail", "Software")


def add_months(ts: int, n: int, anchor_day: int | None = None) -> int:
    """``ts`` moved by ``n`` calendar months (UTC), the day clamped to the month's end."""
    return add_interval(ts, "month", n, anchor_day=anchor_day)


def _convert(usd_minor: int, currency: str) -> int:
    """A list price in ``currency`` for a USD list price (round numbers, jpy zero-decimal)."""
    if currency == "usd":
        return usd_minor
    if currency == "eur":
        return int(round(usd_minor * 0.92 / 100.0)) * 100
    if currency == "gbp":
        return int(round(usd_minor * 0.8 / 100.0)) * 100
    if currency == "jpy":
        return int(round(usd_minor * 1.5 / 100.0)) * 100
    raise ValueError(f"unknown currency {currency}")


class StripeIds:
    """Deterministic Stripe-looking ids that carry no order: random tails, as Stripe's are
    (nothing may rely on a later object's id sorting after an earlier one's)."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._used: set[str] = set()

    def new(self, prefix: str) -> str:
        while True:
            tail = base64.b64encode(self._rng.randbytes(12)).translate(_ALNUM).decode()
            found = f"{prefix}_{tail}"
            if found not in self._used:
                self._used.add(found)
                return found


@dataclass
class _SubState:
    """The simulation's view of one subscription (what Stripe keeps internally)."""

    sub_id: str
    customer_id: str
    currency: str
    months: int
    anchor: int
    k: int
    period_start: int
    period_end: int
    done: bool = False
    trial_outcome: str | None = None
    unpaid: bool = False
    open_invoice: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    last_lines: dict[str, tuple[str, str]] = field(default_factory=dict)
    # A period is ``months`` of ``unit`` (a price's ``recurring.interval``: ``month`` for
    # the generated accounts, whose yearly prices are 12 months).
    unit: str = "month"
    # The generated accounts draw each period's metered usage at random; a scripted
    # history (``tests/stripe_world.py``) records it (:meth:`_Engine.record_usage`).
    random_usage: bool = True
    # How collection of the next invoices goes (``paid`` or ``fail``: left open).
    outcome: str = "paid"
    # A cycle invoice is finalised this long after it is made.
    finalize_delay: int = HOUR

    def end_after(self, start: int, periods: int = 1) -> int:
        return add_interval(start, self.unit, periods * self.months,
                            anchor_day=datetime.fromtimestamp(self.anchor, UTC).day)


class EmulatedAccount:
    """A Stripe account's objects by kind, as plain dicts in the current API shape.

    ``customers``, ``products``, ``prices``, ``coupons``, ``subscriptions``,
    ``subscription_schedules``, ``invoices`` and ``events`` map ids to objects (stored
    with every includable field: a price's
    ``tiers`` and ``currency_options``; the server leaves them out unless expanded). An
    invoice embeds its first 10 lines (``lines.has_more`` beyond); ``invoice_lines`` holds
    every line of each invoice. ``discounts`` holds every discount ever created (they cannot
    be listed, only expanded). ``deleted_customers`` holds deleted customers' last state.
    """

    def __init__(self, *, now: int, livemode: bool = False, seed: int = 0) -> None:
        self.now = int(now)
        self.livemode = livemode
        self.seed = seed
        self.customers: dict[str, dict[str, Any]] = {}
        self.products: dict[str, dict[str, Any]] = {}
        self.prices: dict[str, dict[str, Any]] = {}
        self.coupons: dict[str, dict[str, Any]] = {}
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.subscription_schedules: dict[str, dict[str, Any]] = {}
        self.invoices: dict[str, dict[str, Any]] = {}
        self.events: dict[str, dict[str, Any]] = {}
        self.discounts: dict[str, dict[str, Any]] = {}
        self.invoice_lines: dict[str, list[dict[str, Any]]] = {}
        self.deleted_customers: dict[str, dict[str, Any]] = {}
        # Percent of tax on the lines of a price (per price id), inclusive or exclusive as
        # the price's ``tax_behavior`` says; none in a generated account.
        self.tax_percent: dict[str, Decimal] = {}
        self.lock = threading.RLock()
        self.version = 0
        self._rng = random.Random(seed)
        self._engine = _Engine(self, self._rng)

    @property
    def engine(self) -> _Engine:
        """The engine that bills this account: the demo's and the benchmarks' accounts are
        generated by it, the tests' scripted world (``tests/stripe_world.py``) drives it."""
        return self._engine

    # -- reading -----------------------------------------------------------------------
    def store(self, kind: str) -> dict[str, dict[str, Any]]:
        if kind not in KINDS:
            raise KeyError(kind)
        store: dict[str, dict[str, Any]] = getattr(self, kind)
        return store

    def lookup(self, object_id: str) -> dict[str, Any] | None:
        """Any object by id (for expansion), deleted customers as their deleted stub."""
        for store in (self.customers, self.prices, self.products, self.discounts,
                      self.subscriptions, self.invoices, self.coupons, self.events,
                      self.subscription_schedules):
            if object_id in store:
                return store[object_id]
        if object_id in self.deleted_customers:
            return {"id": object_id, "object": "customer", "deleted": True}
        return None

    def lines_of(self, invoice_id: str) -> list[dict[str, Any]]:
        return self.invoice_lines.get(invoice_id, [])

    def counts(self) -> dict[str, int]:
        out = {kind: len(self.store(kind)) for kind in KINDS}
        out["invoice_lines"] = sum(len(v) for v in self.invoice_lines.values())
        out["discounts"] = len(self.discounts)
        out["deleted_customers"] = len(self.deleted_customers)
        return out

    def status_counts(self) -> dict[str, int]:
        """Subscriptions by status (handy in tests and the demo)."""
        return dict(Counter(s["status"] for s in self.subscriptions.values()))

    def events_since(self, created_after: int) -> list[dict[str, Any]]:
        return sorted((e for e in self.events.values() if e["created"] > created_after),
                      key=lambda e: (e["created"], e["id"]))

    # -- changing ----------------------------------------------------------------------
    def apply_changes(self, k: int, *, now: int | None = None,
                      rng: random.Random | None = None,
                      api_version: str | None = None) -> list[dict[str, Any]]:
        """Make ``k`` realistic changes and return the new events, oldest first.

        The changes: seat changes and plan changes (with proration invoices), cancellations
        now and at period end, new customers with a subscription, coupons applied, customer
        updates and deletions, price updates, new coupons. They happen at instants spread
        over (current ``now``, new ``now``]; the new ``now`` defaults to ``k + 1`` seconds
        later. Renewals that fall due before the new ``now`` are billed too (and their
        events returned). ``api_version`` labels the new events with another API version
        (to test a sync that re-fetches what it cannot trust).
        """
        with self.lock:
            return self._engine.apply_changes(k, now=now, rng=rng, api_version=api_version)

    def advance(self, to: int) -> list[dict[str, Any]]:
        """Move the account's clock to ``to``, billing every renewal that falls due."""
        with self.lock:
            return self._engine.apply_changes(0, now=to, rng=None, api_version=None)


class _Engine:
    """Simulates Stripe's billing on an :class:`EmulatedAccount`."""

    def __init__(self, account: EmulatedAccount, rng: random.Random) -> None:
        self.a = account
        self.rng = rng
        self.ids = StripeIds(random.Random(rng.random()))
        self.states: dict[str, _SubState] = {}
        self.catalog: dict[tuple[str, str, str], str] = {}
        self.coupon_ids: list[str] = []
        self.pending: list[tuple[int, int, str, dict[str, Any], dict[str, Any] | None]] = []
        self.seq = 0
        self.addon_prices: list[str] = []
        self.bundles = 0
        # What Stripe will do later (finalise a draft, retry a payment, expire an
        # incomplete subscription): run when the clock passes it.
        self.agenda: list[tuple[int, int, Callable[[], None]]] = []
        # Mid-period changes made, by kind ("seats", "plan", ...).
        self.changes: Counter[str] = Counter()
        # No events at all (accounts generated batch by batch keep none).
        self.silent = False

    def later(self, t: int, action: Callable[[], None]) -> None:
        self.seq += 1
        heapq.heappush(self.agenda, (t, self.seq, action))

    def run_agenda(self, until: int) -> None:
        while self.agenda and self.agenda[0][0] <= until:
            _, _, action = heapq.heappop(self.agenda)
            action()

    # -- events ------------------------------------------------------------------------
    def in_window(self, t: int) -> bool:
        return self.a.now - EVENT_WINDOW < t <= self.a.now

    def emit(self, type_: str, obj: dict[str, Any], t: int,
             previous: dict[str, Any] | None = None) -> None:
        if self.silent or not self.in_window(t):
            return
        self.seq += 1
        self.pending.append((t, self.seq, type_, public_view(obj),
                             None if previous is None else public_view(previous)))

    def before(self, obj: dict[str, Any], t: int) -> dict[str, Any] | None:
        return copy.deepcopy(obj) if self.in_window(t) and not self.silent else None

    def updated(self, type_: str, obj: dict[str, Any], t: int,
                before: dict[str, Any] | None) -> None:
        if before is None:
            return
        prev = shapes.previous_attributes(before, obj)
        if prev:
            self.emit(type_, obj, t, prev)

    def flush_events(self, api_version: str | None = None) -> list[dict[str, Any]]:
        self.pending.sort(key=lambda p: (p[0], p[1]))
        out = []
        for t, _, type_, obj, prev in self.pending:
            ev = shapes.event(id=self.ids.new("evt"), type=type_, created=t, obj=obj,
                              livemode=self.a.livemode, previous_attributes=prev,
                              api_version=api_version or shapes.API_VERSION)
            self.a.events[ev["id"]] = ev
            out.append(ev)
        self.pending = []
        self.a.version += 1
        return out

    # -- catalog -----------------------------------------------------------------------
    def add_product(self, name: str, t: int, unit_label: str | None = None) -> str:
        pid = self.ids.new("prod")
        self.a.products[pid] = shapes.product(id=pid, name=name, created=t,
                                              livemode=self.a.livemode, unit_label=unit_label)
        self.emit("product.created", self.a.products[pid], t)
        return pid

    def add_price(self, key: tuple[str, str, str], t: int, **kw: Any) -> str:
        pid = self.ids.new("price")
        obj = shapes.price(id=pid, created=t, livemode=self.a.livemode, **kw)
        self.a.prices[pid] = obj
        self.catalog[key] = pid
        product = self.a.products[obj["product"]]
        if product["default_price"] is None and obj["active"]:
            product["default_price"] = pid
        self.emit("price.created", obj, t)
        return pid

    def build_catalog(self, t: int) -> None:
        lm = self.a.livemode
        starter = self.add_product("Starter", t)
        team = self.add_product("Team", t, unit_label="seat")
        business = self.add_product("Business", t, unit_label="seat")
        enterprise = self.add_product("Enterprise", t, unit_label="seat")
        api = self.add_product("API requests", t, unit_label="request")
        for cur in CURRENCIES:
            for interval, mult in (("month", 1), ("year", 10)):
                self.add_price(("starter", interval, cur), t, product=starter, currency=cur,
                               interval=interval, unit_amount=_convert(2900, cur) * mult,
                               nickname=f"Starter {interval}ly {cur}")
                self.add_price(("team", interval, cur), t, product=team, currency=cur,
                               interval=interval, unit_amount=_convert(1500, cur) * mult,
                               nickname=f"Team per seat {interval}ly {cur}")
                self.add_price(("business", interval, cur), t, product=business, currency=cur,
                               interval=interval, tiers_mode="graduated",
                               nickname=f"Business graduated {interval}ly {cur}",
                               tiers=[shapes.tier(10, _convert(3000, cur) * mult),
                                      shapes.tier(50, _convert(2500, cur) * mult),
                                      shapes.tier(None, _convert(2000, cur) * mult)])
                self.add_price(("enterprise", interval, cur), t, product=enterprise,
                               currency=cur, interval=interval, tiers_mode="volume",
                               nickname=f"Enterprise volume {interval}ly {cur}",
                               tiers=[shapes.tier(100, _convert(4000, cur) * mult,
                                                  _convert(50000, cur) * mult),
                                      shapes.tier(None, _convert(3500, cur) * mult,
                                                  _convert(50000, cur) * mult)])
        for cur in ("usd", "eur"):
            self.add_price(("api", "month", cur), t, product=api, currency=cur,
                           unit_amount=_convert(200, cur), usage_type="metered",
                           meter=self.ids.new("mtr"),
                           transform_quantity={"divide_by": 1000, "round": "up"},
                           nickname=f"API per 1000 requests {cur}")
        # One usd price with currency options, used by some eur / gbp customers.
        self.add_price(("starter_multi", "month", "usd"), t, product=starter, currency="usd",
                       unit_amount=2900, nickname="Starter monthly (multi-currency)",
                       lookup_key="starter_monthly_multi",
                       currency_options={"eur": {"unit_amount": 2700},
                                         "gbp": {"unit_amount": 2300},
                                         "jpy": {"unit_amount": 4300}})
        # A legacy Team price used by early customers (deactivated within the last 30 days).
        self.add_price(("team_legacy", "month", "usd"), t, product=team, currency="usd",
                       unit_amount=1000, nickname="Team per seat (2024 price)")
        for i in range(1, 13):
            prod = self.add_product(f"Add-on {i}", t)
            self.addon_prices.append(self.add_price(
                (f"addon{i}", "month", "usd"), t, product=prod, currency="usd",
                unit_amount=500 + 100 * i, nickname=f"Add-on {i} monthly"))
        specs: list[tuple[str, str, str, float | None, int | None, str | None, int | None]] = [
            ("WELCOME25", "Welcome 25% for 3 months", "repeating", 25.0, None, None, 3),
            ("LOYAL10", "Loyalty 10% forever", "forever", 10.0, None, None, None),
            ("HALFOFF", "Half off the first invoice", "once", 50.0, None, None, None),
            ("USD50ONCE", "$50 off once", "once", None, 5000, "usd", None),
            ("EUR20X6", "EUR 20 off for 6 months", "repeating", None, 2000, "eur", 6),
            ("JPY1000", "JPY 1000 off forever", "forever", None, 1000, "jpy", None),
        ]
        for cid, name, duration, pct, amount, coupon_cur, months in specs:
            self.a.coupons[cid] = shapes.coupon(id=cid, name=name, created=t, livemode=lm,
                                                duration=duration, percent_off=pct,
                                                amount_off=amount, currency=coupon_cur,
                                                duration_in_months=months)
            self.coupon_ids.append(cid)

    def late_catalog_changes(self) -> None:
        """Catalog events within the last 30 days: a new price, a new coupon, a retired
        legacy price."""
        now = self.a.now
        t1 = now - 20 * DAY + self.rng.randint(0, DAY)
        team = self.a.prices[self.catalog[("team", "month", "usd")]]["product"]
        self.add_price(("team_2026", "month", "usd"), t1, product=team, currency="usd",
                       unit_amount=1700, nickname="Team per seat (2026 price)",
                       lookup_key="team_monthly_2026")
        t2 = now - 12 * DAY + self.rng.randint(0, DAY)
        self.set_price_active(self.catalog[("team_legacy", "month", "usd")], False, t2)
        t3 = now - 8 * DAY + self.rng.randint(0, DAY)
        self.a.coupons["SPRING15"] = shapes.coupon(
            id="SPRING15", name="Spring 15% for 2 months", created=t3,
            livemode=self.a.livemode, duration="repeating", percent_off=15.0,
            duration_in_months=2)
        self.coupon_ids.append("SPRING15")
        self.emit("coupon.created", self.a.coupons["SPRING15"], t3)

    def set_price_active(self, price_id: str, active: bool, t: int) -> None:
        price = self.a.prices[price_id]
        before = self.before(price, t)
        price["active"] = active
        self.updated("price.updated", price, t, before)
        for sub in self.a.subscriptions.values():
            for item in sub["items"]["data"]:
                if item["price"]["id"] == price_id:
                    item["price"]["active"] = active
                    item["plan"]["active"] = active

    # -- customers ---------------------------------------------------------------------
    def new_customer(self, t: int) -> dict[str, Any]:
        rng = self.rng
        country = rng.choices([c for c, _ in COUNTRIES], [w for _, w in COUNTRIES])[0]
        cid = self.ids.new("cus")
        name = f"{rng.choice(_WORDS_A)} {rng.choice(_WORDS_B)} {len(self.a.customers) + 1}"
        slug = name.lower().replace(" ", "-")
        prefix = "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(4)) + \
            f"{rng.randint(0, 9999):04d}"
        cust = shapes.customer(id=cid, created=t, email=f"billing@{slug}.example",
                               name=name, country=country, livemode=self.a.livemode,
                               invoice_prefix=prefix)
        self.a.customers[cid] = cust
        self.emit("customer.created", cust, t)
        return cust

    def delete_customer(self, cid: str, t: int) -> None:
        cust = self.a.customers.pop(cid)
        for state in self.states.values():
            if state.customer_id == cid and not state.done:
                self.cancel_now(state, t, reason="cancellation_requested")
        self.a.deleted_customers[cid] = cust
        self.emit("customer.deleted", cust, t)

    def update_customer_email(self, cid: str, t: int) -> None:
        cust = self.a.customers[cid]
        before = self.before(cust, t)
        local = self.rng.choice(("finance", "accounts", "ap", "billing-team"))
        cust["email"] = f"{local}@{cust['email'].split('@', 1)[1]}"
        self.updated("customer.updated", cust, t, before)

    # -- subscriptions -----------------------------------------------------------------
    def price_key(self, price_id: str) -> tuple[str, str, str]:
        for key, pid in self.catalog.items():
            if pid == price_id:
                return key
        raise KeyError(price_id)

    def subscribe(self, cust: dict[str, Any], t: int, lines: list[tuple[str, int | None]],
                  *, months: int, trial_days: int = 0, trial_outcome: str | None = None,
                  coupon: str | None = None, fail_first: bool = False, unit: str = "month",
                  trial_end: int | None = None, coupons: Sequence[str] = (),
                  currency: str | None = None, start_date: int | None = None,
                  sid: str | None = None, random_usage: bool = True,
                  finalize_delay: int = HOUR) -> _SubState:
        """A subscription of ``lines`` (``(price id, quantity)``) from ``t``, a period
        being ``months`` of ``unit``; a trial of ``trial_days`` (or until ``trial_end``)
        first; ``coupon`` and ``coupons`` as its discounts; ``fail_first``: the first
        invoice is not paid (the subscription is ``incomplete``, expired after 23 hours).
        ``currency`` (default the customer's, else the country's), ``start_date``
        (backdated) and ``sid`` for a scripted history."""
        if cust["currency"] is None:
            before = self.before(cust, t)
            cust["currency"] = currency or CURRENCY_OF[cust["address"]["country"]]
            self.updated("customer.updated", cust, t, before)
        currency = currency or cust["currency"]
        sid = sid or self.ids.new("sub")
        if trial_end is None:
            trial_end = t + trial_days * DAY if trial_days else None
        anchor = trial_end if trial_end else t
        period_end = trial_end if trial_end else add_interval(anchor, unit, months)
        items = []
        for price_id, qty in lines:
            items.append(shapes.subscription_item(
                id=self.ids.new("si"), subscription=sid, price_obj=self.a.prices[price_id],
                quantity=qty, created=t, period_start=t, period_end=period_end))
        status = "trialing" if trial_end else ("incomplete" if fail_first else "active")
        sub = shapes.subscription(
            id=sid, customer=cust["id"], currency=currency, created=t,
            start_date=t if start_date is None else start_date,
            billing_cycle_anchor=anchor, items=items, livemode=self.a.livemode,
            status=status, trial_start=t if trial_end else None, trial_end=trial_end,
            trial_end_behavior="pause" if trial_outcome == "pause" else "create_invoice")
        self.a.subscriptions[sid] = sub
        state = _SubState(sub_id=sid, customer_id=cust["id"], currency=currency,
                          months=months, anchor=anchor, k=0 if trial_end else 1,
                          period_start=t, period_end=period_end, trial_outcome=trial_outcome,
                          unit=unit, random_usage=random_usage,
                          finalize_delay=finalize_delay)
        self.states[sid] = state
        for coupon_id in ([coupon] if coupon else []) + list(coupons):
            self.attach_discount(state, coupon_id, t, emit=False)
        self.emit("customer.subscription.created", sub, t)
        specs = []
        for item in items:
            price = item["price"]
            if price["recurring"]["usage_type"] == "metered":
                continue
            amount = 0 if trial_end else amount_for(price, item["quantity"], currency)
            desc = (f"Trial period for {self.product_name(price)}" if trial_end
                    else f"{item['quantity']} × {self.product_name(price)}")
            specs.append(dict(item=item, amount=amount, period=(t, period_end),
                              proration=False, description=desc))
        outcome = "fail" if fail_first else "paid"
        inv = self.make_invoice(state, t, "subscription_create", specs, outcome=outcome,
                                finalize_delay=0)
        if fail_first:
            expire = t + 23 * HOUR

            def expire_now() -> None:
                if sub["status"] != "incomplete" or inv["status"] != "open":
                    return
                self.void_invoice(inv, expire)
                before = self.before(sub, expire)
                sub["status"] = "incomplete_expired"
                sub["ended_at"] = expire
                self.updated("customer.subscription.updated", sub, expire, before)
                state.done = True

            if expire <= self.a.now:
                expire_now()
            else:
                state.open_invoice = inv["id"]
                self.later(expire, expire_now)
        return state

    def product_name(self, price: dict[str, Any]) -> str:
        return str(self.a.products[price["product"]]["name"])

    def sub_items(self, state: _SubState) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.a.subscriptions[state.sub_id]["items"]["data"]
        return items

    def active_discounts(self, holder: dict[str, Any], t: int) -> list[dict[str, Any]]:
        """The discounts of a subscription or subscription item in force at ``t``."""
        out = []
        for did in holder["discounts"]:
            d = self.a.discounts[did]
            if d["start"] <= t and (d["end"] is None or t < d["end"]):
                out.append(d)
        return out

    def attach_discount(self, state: _SubState, coupon_id: str, t: int,
                        emit: bool = True, item: dict[str, Any] | None = None) -> str:
        """Apply a coupon to the subscription (or to one of its items) from ``t``."""
        sub = self.a.subscriptions[state.sub_id]
        disc = self._redeem(coupon_id, state.customer_id, t, subscription=state.sub_id,
                            subscription_item=None if item is None else item["id"])
        did = str(disc["id"])
        before = self.before(sub, t) if emit else None
        holder = sub if item is None else item
        holder["discounts"] = [*holder["discounts"], did]
        self.emit("customer.discount.created", disc, t)
        self.updated("customer.subscription.updated", sub, t, before)
        return did

    def attach_customer_discount(self, customer_id: str, coupon_id: str, t: int) -> str:
        """A coupon on the customer from ``t`` (``customer.discount``): applied to every
        subscription's invoices after the subscription's own discounts."""
        disc = self._redeem(coupon_id, customer_id, t)
        cust = self.a.customers[customer_id]
        before = self.before(cust, t)
        cust["discount"] = copy.deepcopy(disc)
        self.emit("customer.discount.created", disc, t)
        self.updated("customer.updated", cust, t, before)
        return str(disc["id"])

    def _redeem(self, coupon_id: str, customer_id: str, t: int, *,
                subscription: str | None = None,
                subscription_item: str | None = None) -> dict[str, Any]:
        """A new discount of ``coupon_id`` from ``t`` (ending by the coupon's duration),
        stored; the coupon counts the redemption (``coupon.updated``)."""
        coupon = self.a.coupons[coupon_id]
        end = (add_months(t, coupon["duration_in_months"])
               if coupon["duration"] == "repeating" else None)
        did = self.ids.new("di")
        disc = shapes.discount(id=did, coupon_id=coupon_id, customer=customer_id, start=t,
                               end=end, subscription=subscription,
                               subscription_item=subscription_item)
        self.a.discounts[did] = disc
        before_coupon = self.before(coupon, t)
        coupon["times_redeemed"] += 1
        self.updated("coupon.updated", coupon, t, before_coupon)
        return disc

    def remove_discount(self, state: _SubState, discount_id: str, t: int) -> None:
        """Take a discount off the subscription (or its item) at ``t``, before its end."""
        sub = self.a.subscriptions[state.sub_id]
        before = self.before(sub, t)
        for holder in (sub, *sub["items"]["data"]):
            holder["discounts"] = [did for did in holder["discounts"] if did != discount_id]
        self.emit("customer.discount.deleted", self.a.discounts[discount_id], t)
        self.updated("customer.subscription.updated", sub, t, before)

    def drop_discounts(self, state: _SubState, t: int, used_once: list[str]) -> None:
        """Remove once-discounts just used and repeating ones that have ended (from the
        subscription and its items)."""
        sub = self.a.subscriptions[state.sub_id]
        holders = [sub, *sub["items"]["data"]]
        gone = []
        for holder in holders:
            for did in holder["discounts"]:
                d = self.a.discounts[did]
                if did in used_once or (d["end"] is not None and d["end"] <= t):
                    gone.append(d)
        if not gone:
            return
        before = self.before(sub, t)
        gone_ids = {d["id"] for d in gone}
        for holder in holders:
            holder["discounts"] = [did for did in holder["discounts"] if did not in gone_ids]
        for d in gone:
            self.emit("customer.discount.deleted", d, t)
        self.updated("customer.subscription.updated", sub, t, before)

    # -- invoices ----------------------------------------------------------------------
    def discount_applications(self, state: _SubState, lines: list[dict[str, Any]], t: int,
                              used_once: Container[str] = ()) -> list[Application]:
        """The discounts attached to the subscription, its items and its customer that a
        new invoice of ``lines`` made at ``t`` applies, in Stripe's order."""
        sub = self.a.subscriptions[state.sub_id]
        customer = (self.a.customers.get(state.customer_id)
                    or self.a.deleted_customers.get(state.customer_id) or {})
        held = customer.get("discount")
        return discount_applications(
            lines, at=t, item_discounts={i["id"]: i["discounts"] for i in sub["items"]["data"]},
            subscription_discounts=sub["discounts"],
            customer_discounts=[held["id"]] if held else [], discounts=self.a.discounts,
            coupons=self.a.coupons, used_once=used_once)

    def make_invoice(self, state: _SubState, t: int, reason: str, specs: list[dict[str, Any]],
                     *, outcome: str, finalize_delay: int = HOUR,
                     inv_period: tuple[int, int] | None = None) -> dict[str, Any]:
        """Create, finalise and settle one subscription invoice.

        ``outcome``: ``paid``, ``fail`` (finalised, first attempt failed, left open),
        ``void`` (voided on finalisation, as ``pause_collection[behavior]=void`` does),
        ``uncollectible`` (``mark_uncollectible``) or ``draft`` (never finalised: an unpaid
        subscription's invoices, ``pause_collection[behavior]=keep_as_draft``).
        """
        cust = self.a.customers[state.customer_id]
        sub = self.a.subscriptions[state.sub_id]
        iid = self.ids.new("in")
        period = inv_period or (t, t)
        inv = shapes.invoice(id=iid, customer=cust, subscription=state.sub_id,
                             currency=state.currency, created=t, billing_reason=reason,
                             period_start=period[0], period_end=period[1], number="",
                             livemode=self.a.livemode)
        inv["number"] = None
        lines = []
        # Stripe gives no order to an invoice's lines (the credit half of a proration is
        # not always first): the order varies, seeded.
        for spec in in_no_order(specs, self.rng):
            item = spec["item"]
            price = item["price"]
            billed = spec.get("price") or price
            line = shapes.invoice_line(
                id=self.ids.new("il"), invoice=iid, subscription=state.sub_id,
                subscription_item=item["id"], price_id=billed["id"],
                product_id=billed["product"],
                unit_amount_decimal=billed["unit_amount_decimal"], currency=state.currency,
                amount=spec["amount"], quantity=spec.get("quantity", item["quantity"]),
                period_start=spec["period"][0], period_end=spec["period"][1],
                proration=spec["proration"], description=spec["description"],
                livemode=self.a.livemode,
                invoice_item=self.ids.new("ii") if spec["proration"] else None,
                credited=spec.get("credited"))
            lines.append(line)
            if not spec["proration"]:
                state.last_lines[item["id"]] = (iid, line["id"])
        # Line-item discounts (on the subscription item) first, then the subscription's,
        # then the customer's; taxes on what is left.
        applications = self.discount_applications(state, lines, t)
        inv["discounts"].extend(disc["id"] for disc, _, _, line_level in applications
                                if not line_level)
        totals = discount_and_tax(lines, applications, currency=state.currency,
                                  tax_percent=self.a.tax_percent, prices=self.a.prices)
        used_once = [disc["id"] for disc, coupon, _, _ in applications
                     if coupon["duration"] == "once"]
        self.a.invoice_lines[iid] = lines
        inv["lines"]["data"] = lines[: shapes.EMBEDDED_LINES]
        inv["lines"]["has_more"] = len(lines) > shapes.EMBEDDED_LINES
        total_invoice(inv, lines, totals)
        self.a.invoices[iid] = inv
        before_sub = self.before(sub, t)
        sub["latest_invoice"] = iid
        self.emit("invoice.created", inv, t)
        self.updated("customer.subscription.updated", sub, t, before_sub)
        self.drop_discounts(state, t, used_once)
        if outcome == "draft":
            inv["auto_advance"] = False
            return inv
        fin = t + finalize_delay
        inv["automatically_finalizes_at"] = fin
        if fin > self.a.now:
            self.later(fin, lambda: self.settle(state, inv, fin, outcome, dunning=True))
            return inv
        self.settle(state, inv, fin, outcome)
        return inv

    def settle(self, state: _SubState, inv: dict[str, Any], fin: int, outcome: str,
               dunning: bool = False) -> None:
        """Finalise a draft at ``fin`` and collect it (``paid``, ``fail`` or ``void``)."""
        if inv["status"] != "draft":
            return
        self.finalize_invoice(inv, fin)
        if outcome == "paid":
            self.pay_invoice(inv, fin)
        elif outcome == "fail":
            self.fail_invoice(inv, fin)
            sub = self.a.subscriptions[state.sub_id]
            if dunning and sub["status"] == "active" and not state.done:
                self.dunning(state, inv, inv["created"], self.a.now)
        elif outcome == "void":
            self.void_invoice(inv, fin)
        elif outcome == "uncollectible":
            self.fail_invoice(inv, fin)
            self.uncollectible(inv, fin)

    def finalize_invoice(self, inv: dict[str, Any], t: int) -> None:
        cust = self.a.customers.get(inv["customer"]) or self.a.deleted_customers[inv["customer"]]
        inv["number"] = f"{cust['invoice_prefix']}-{cust['next_invoice_sequence']:04d}"
        cust["next_invoice_sequence"] += 1
        inv["status"] = "open"
        inv["automatically_finalizes_at"] = None
        inv["status_transitions"]["finalized_at"] = t
        inv["effective_at"] = t
        inv["ending_balance"] = 0
        inv["webhooks_delivered_at"] = t
        self.emit("invoice.finalized", inv, t)

    def pay_invoice(self, inv: dict[str, Any], t: int) -> None:
        inv["status"] = "paid"
        inv["attempted"] = True
        inv["attempt_count"] = max(inv["attempt_count"], 1) if inv["amount_due"] else 0
        inv["amount_paid"] = inv["amount_due"]
        inv["amount_remaining"] = 0
        inv["next_payment_attempt"] = None
        inv["auto_advance"] = False
        inv["status_transitions"]["paid_at"] = t
        self.emit("invoice.paid", inv, t)

    def fail_invoice(self, inv: dict[str, Any], t: int) -> None:
        inv["attempted"] = True
        inv["attempt_count"] += 1
        inv["next_payment_attempt"] = t + 3 * DAY
        inv["last_finalization_error"] = None
        self.emit("invoice.payment_failed", inv, t)

    def void_invoice(self, inv: dict[str, Any], t: int) -> None:
        inv["status"] = "void"
        inv["amount_remaining"] = 0
        inv["next_payment_attempt"] = None
        inv["auto_advance"] = False
        inv["status_transitions"]["voided_at"] = t
        self.emit("invoice.voided", inv, t)

    def uncollectible(self, inv: dict[str, Any], t: int) -> None:
        inv["status"] = "uncollectible"
        inv["next_payment_attempt"] = None
        inv["auto_advance"] = False
        inv["status_transitions"]["marked_uncollectible_at"] = t
        self.emit("invoice.marked_uncollectible", inv, t)

    # -- lifecycle ---------------------------------------------------------------------
    def renew(self, state: _SubState, t: int, outcome: str = "paid") -> dict[str, Any]:
        """Start the next period at ``t`` (the end of the current one) and bill it."""
        self.enter_phase(state, t)
        sub = self.a.subscriptions[state.sub_id]
        before = self.before(sub, t)
        prev_start, prev_end = state.period_start, state.period_end
        state.k += 1
        state.period_start = t
        state.period_end = state.end_after(state.anchor, state.k or 1)
        if state.period_end <= t:  # safety for odd anchors
            state.period_end = add_interval(t, state.unit, state.months)
        specs = []
        for item in sub["items"]["data"]:
            price = item["price"]
            item["current_period_start"] = state.period_start
            item["current_period_end"] = state.period_end
            if price["recurring"]["usage_type"] == "metered":
                usage = state.usage.pop(item["id"], 0)
                specs.append(dict(item=item, amount=amount_for(price, usage, state.currency),
                                  quantity=usage, period=(prev_start, prev_end),
                                  proration=False,
                                  description=f"{usage} requests × {self.product_name(price)}"))
                if state.random_usage:
                    state.usage[item["id"]] = self.rng.randint(1_000, 400_000)
            else:
                specs.append(dict(item=item, amount=amount_for(price, item["quantity"],
                                                               state.currency),
                                  period=(state.period_start, state.period_end),
                                  proration=False,
                                  description=f"{item['quantity']} × {self.product_name(price)}"
                                  ))
        if sub["status"] == "trialing":
            sub["status"] = "active"
        self.updated("customer.subscription.updated", sub, t, before)
        pause = sub["pause_collection"]
        if pause is not None and pause["resumes_at"] is not None and pause["resumes_at"] <= t:
            before = self.before(sub, t)
            sub["pause_collection"] = None
            self.updated("customer.subscription.updated", sub, t, before)
            pause = None
        if pause is not None:
            outcome = {"keep_as_draft": "draft",
                       "mark_uncollectible": "uncollectible"}.get(pause["behavior"], "void")
        if state.unpaid:
            outcome = "draft"
        return self.make_invoice(state, t, "subscription_cycle", specs, outcome=outcome,
                                 finalize_delay=state.finalize_delay,
                                 inv_period=(prev_start, prev_end))

    def cancel_now(self, state: _SubState, t: int, reason: str = "cancellation_requested"
                   ) -> None:
        sub = self.a.subscriptions[state.sub_id]
        sub["status"] = "canceled"
        sub["canceled_at"] = t
        sub["ended_at"] = t
        sub["cancel_at_period_end"] = False
        sub["cancellation_details"] = {"comment": None, "feedback": self.feedback(),
                                       "reason": reason}
        state.done = True
        self.emit("customer.subscription.deleted", sub, t)

    def feedback(self) -> str | None:
        return self.rng.choice((None, "too_expensive", "missing_features", "switched_service",
                                "unused", "low_quality", "other"))

    def schedule_cancel(self, state: _SubState, t: int) -> None:
        sub = self.a.subscriptions[state.sub_id]
        before = self.before(sub, t)
        sub["cancel_at_period_end"] = True
        sub["cancel_at"] = state.period_end
        sub["canceled_at"] = t
        sub["cancellation_details"] = {"comment": None, "feedback": self.feedback(),
                                       "reason": "cancellation_requested"}
        self.updated("customer.subscription.updated", sub, t, before)

    def end_at_period_end(self, state: _SubState, t: int) -> None:
        sub = self.a.subscriptions[state.sub_id]
        sub["status"] = "canceled"
        sub["ended_at"] = t
        state.done = True
        self.emit("customer.subscription.deleted", sub, t)

    def end_trial(self, state: _SubState, t: int) -> bool:
        """At the trial's end ``t``, what ``state.trial_outcome`` says: ``cancel``
        (cancelled), ``pause`` (no payment method: paused), ``incomplete`` (the first
        invoice is not paid: the subscription stays incomplete); True for these, False when
        the subscription goes on to be billed (``convert``)."""
        if state.trial_outcome == "cancel":
            self.cancel_now(state, t, reason="cancellation_requested")
            return True
        if state.trial_outcome == "pause":
            self.pause_after_trial(state, t)
            return True
        if state.trial_outcome == "incomplete":
            self.renew(state, t, outcome="fail")
            sub = self.a.subscriptions[state.sub_id]
            before = self.before(sub, t)
            sub["status"] = "incomplete"
            self.updated("customer.subscription.updated", sub, t, before)
            return True
        return False

    def pause_after_trial(self, state: _SubState, t: int) -> None:
        self.pause(state, t, reason="trial_end_without_payment_method")

    def pause(self, state: _SubState, t: int, reason: str = "pause_requested") -> None:
        """Status ``paused`` from ``t``: no invoices, no new periods until resumed."""
        sub = self.a.subscriptions[state.sub_id]
        before = self.before(sub, t)
        sub["status"] = "paused"
        sub["status_details"] = {"paused": {
            "subscription": {"type": reason}, "transitioned_at": t, "type": "subscription"}}
        self.emit("customer.subscription.paused", sub, t)
        self.updated("customer.subscription.updated", sub, t, before)

    def resume(self, state: _SubState, t: int) -> None:
        sub = self.a.subscriptions[state.sub_id]
        before = self.before(sub, t)
        sub["status"] = "active"
        sub["status_details"] = None
        sub["billing_cycle_anchor"] = t
        state.anchor = t
        state.k = 0
        state.period_start = t
        state.period_end = t
        self.emit("customer.subscription.resumed", sub, t)
        self.updated("customer.subscription.updated", sub, t, before)
        state.trial_outcome = None
        self.renew(state, t)

    def change_item(self, state: _SubState, item: dict[str, Any], t: int, *,
                    quantity: int | None = None, price_id: str | None = None,
                    prorate: bool = True) -> dict[str, Any] | None:
        """A mid-period seat or plan change, billed at once with proration lines
        (``proration_behavior=always_invoice``; ``prorate=False``: ``none``, no invoice,
        the next cycle invoice shows it)."""
        sub = self.a.subscriptions[state.sub_id]
        before = self.before(sub, t)
        old_price, old_qty = item["price"], item["quantity"]
        new_price = self.a.prices[price_id] if price_id else old_price
        new_qty = quantity if quantity is not None else old_qty
        if self._metered(new_price):
            new_qty = None
        old_snapshot = copy.deepcopy(old_price)
        item["price"] = copy.deepcopy(new_price)
        item["plan"] = shapes.plan_of(new_price)
        item["quantity"] = new_qty
        self.updated("customer.subscription.updated", sub, t, before)
        if not prorate:
            return None
        specs = [self.proration_spec(state, item, t, old_snapshot, old_qty, credit=True),
                 self.proration_spec(state, item, t, new_price, new_qty, credit=False)]
        return self.proration_invoice(state, t, specs)

    def add_item(self, state: _SubState, price_id: str, quantity: int | None, t: int, *,
                 prorate: bool = True) -> dict[str, Any]:
        """A new item from ``t`` (for the rest of the period: a proration line)."""
        sub = self.a.subscriptions[state.sub_id]
        before = self.before(sub, t)
        price = self.a.prices[price_id]
        item = shapes.subscription_item(
            id=self.ids.new("si"), subscription=state.sub_id, price_obj=price,
            quantity=None if self._metered(price) else quantity, created=t,
            period_start=state.period_start, period_end=state.period_end)
        sub["items"]["data"].append(item)
        self.updated("customer.subscription.updated", sub, t, before)
        if prorate:
            self.proration_invoice(state, t, [self.proration_spec(
                state, item, t, price, item["quantity"], credit=False)])
        return item

    def remove_item(self, state: _SubState, item: dict[str, Any], t: int, *,
                    prorate: bool = True) -> None:
        """An item removed at ``t`` (the unused time credited: a proration line)."""
        sub = self.a.subscriptions[state.sub_id]
        before = self.before(sub, t)
        if prorate:
            self.proration_invoice(state, t, [self.proration_spec(
                state, item, t, item["price"], item["quantity"], credit=True)])
        sub["items"]["data"] = [i for i in sub["items"]["data"] if i["id"] != item["id"]]
        self.updated("customer.subscription.updated", sub, t, before)

    @staticmethod
    def _metered(price: dict[str, Any]) -> bool:
        return bool((price.get("recurring") or {}).get("usage_type") == "metered")

    def proration_spec(self, state: _SubState, item: dict[str, Any], t: int,
                       price: dict[str, Any], quantity: int | None, *, credit: bool
                       ) -> dict[str, Any]:
        """One half of Stripe's proration pair at ``t``: the credit for the unused time on
        ``price`` x ``quantity`` (naming the cycle line it credits) or the charge for the
        remaining time."""
        pe = state.period_end
        amount = prorated(amount_for(price, quantity, state.currency), state.period_start,
                          pe, t)
        when = datetime.fromtimestamp(t, UTC).strftime("%d %b %Y")
        if not credit:
            return dict(item=item, price=price, quantity=quantity, amount=amount,
                        period=(t, pe), proration=True,
                        description=f"Remaining time on {quantity} × "
                                    f"{self.product_name(price)} after {when}")
        credited = None
        if item["id"] in state.last_lines:
            inv_id, line_id = state.last_lines[item["id"]]
            credited = {"invoice": inv_id, "invoice_line_items": [line_id]}
        return dict(item=item, price=price, quantity=quantity, amount=-amount,
                    period=(t, pe), proration=True, credited=credited,
                    description=f"Unused time on {quantity} × {self.product_name(price)}"
                                f" after {when}")

    def proration_invoice(self, state: _SubState, t: int, specs: list[dict[str, Any]]
                          ) -> dict[str, Any]:
        """The invoice of a mid-period change, made and collected at once."""
        inv = self.make_invoice(state, t, "subscription_update", specs, outcome=state.outcome,
                                finalize_delay=0)
        inv["parent"]["subscription_details"]["subscription_proration_date"] = t
        return inv

    def record_usage(self, state: _SubState, item_id: str, quantity: int) -> None:
        """Metered usage within the current period (billed in arrears at the renewal)."""
        state.usage[item_id] = state.usage.get(item_id, 0) + quantity

    def set_cancel_at(self, state: _SubState, cancel_at: int, t: int) -> None:
        """Asked at ``t``: cancel at ``cancel_at`` (a date the customer chose)."""
        sub = self.a.subscriptions[state.sub_id]
        before = self.before(sub, t)
        sub["cancel_at"] = cancel_at
        sub["canceled_at"] = t
        sub["cancellation_details"] = {"comment": None, "feedback": self.feedback(),
                                       "reason": "cancellation_requested"}
        self.updated("customer.subscription.updated", sub, t, before)

    def undo_cancel(self, state: _SubState, t: int) -> None:
        """A scheduled cancellation taken back before it takes effect."""
        sub = self.a.subscriptions[state.sub_id]
        before = self.before(sub, t)
        sub["cancel_at"] = None
        sub["cancel_at_period_end"] = False
        sub["canceled_at"] = None
        sub["cancellation_details"] = {"comment": None, "feedback": None, "reason": None}
        self.updated("customer.subscription.updated", sub, t, before)

    def mark_unpaid(self, state: _SubState, t: int) -> None:
        """Dunning gave up: status ``unpaid``; later invoices stay drafts."""
        sub = self.a.subscriptions[state.sub_id]
        before = self.before(sub, t)
        sub["status"] = "unpaid"
        state.unpaid = True
        self.updated("customer.subscription.updated", sub, t, before)

    def set_pause_collection(self, state: _SubState, t: int, body: dict[str, Any] | None
                             ) -> None:
        """``pause_collection`` (``behavior``, ``resumes_at``) from ``t``, or None."""
        sub = self.a.subscriptions[state.sub_id]
        before = self.before(sub, t)
        sub["pause_collection"] = body
        self.updated("customer.subscription.updated", sub, t, before)

    # -- what Stripe already holds for the months ahead -----------------------------------
    def schedule_ahead(self, label: str) -> None:
        """Give live subscriptions what the outlook reads: schedules with a later phase
        (fewer seats, a cheaper price) or an end with ``end_behavior = cancel``, a
        ``cancel_at`` between period ends, cancellations at period end, repeating discounts
        that end, collection pauses that resume, and trials ahead (customers without a live
        subscription starting one). Shares of the candidates per :data:`SCHEDULED_SHARES`,
        at least one of each when a candidate fits. A random stream of its own (seeded by
        the account's seed and ``label``), so the histories before it stay the same."""
        saved = self.rng, self.ids
        rng = random.Random(f"scheduled-{self.a.seed}-{label}")
        self.rng, self.ids = rng, StripeIds(random.Random(rng.random()))
        try:
            self._schedule_ahead(rng)
        finally:
            self.rng, self.ids = saved

    def _schedule_ahead(self, rng: random.Random) -> None:
        now = self.a.now
        pool = []
        for state in self.states.values():
            sub = self.a.subscriptions[state.sub_id]
            if (not state.done and not state.unpaid and sub["status"] == "active"
                    and not sub["cancel_at_period_end"] and sub["cancel_at"] is None
                    and sub["pause_collection"] is None and sub["schedule"] is None
                    and state.customer_id in self.a.customers
                    and state.period_start < now - 2 * HOUR < now < state.period_end
                    and all(i["price"]["recurring"]["usage_type"] == "licensed"
                            for i in sub["items"]["data"])):
                pool.append(state)
        rng.shuffle(pool)
        total = len(pool)
        for kind, share in SCHEDULED_SHARES:
            want = max(1, round(share * total))
            for state in list(pool):
                if want == 0:
                    break
                t = max(state.period_start + HOUR, now - rng.randint(HOUR, 3 * DAY))
                if self.scheduled_change(state, kind, t, rng):
                    pool.remove(state)
                    want -= 1
        live = {s.customer_id for s in self.states.values() if not s.done}
        gone = [c for c in self.a.customers.values()
                if c["id"] not in live and c["currency"] is not None]
        rng.shuffle(gone)
        for cust in gone[:max(1, round(TRIALS_AHEAD_SHARE * len(gone)))]:
            t = now - rng.randint(1, 10) * DAY
            price_id = self.catalog[("team", "month", cust["currency"])]
            self.subscribe(cust, t, [(price_id, rng.randint(2, 10))], months=1,
                           trial_days=14, trial_outcome="convert")

    def scheduled_change(self, state: _SubState, kind: str, t: int,
                         rng: random.Random) -> bool:
        """One scheduled change of ``kind`` asked for at ``t``; False when it does not fit
        this subscription."""
        sub = self.a.subscriptions[state.sub_id]
        items = sub["items"]["data"]
        now_items = [(str(i["price"]["id"]), i["quantity"]) for i in items]
        pe = state.period_end
        later = add_months(pe, state.months)
        if kind == "fewer_seats":
            seats = [n for n, i in enumerate(items) if (i["quantity"] or 0) >= 2
                     and self.price_key(i["price"]["id"])[0] != "starter"]
            if not seats:
                return False
            n = seats[0]
            qty = int(items[n]["quantity"])
            fewer = list(now_items)
            fewer[n] = (now_items[n][0], qty - rng.randint(1, max(1, qty // 3)))
            self.attach_schedule(state, t, [now_items, fewer], (pe, later), "release")
            return True
        if kind == "cheaper_price":
            key = self.price_key(items[0]["price"]["id"])
            ladder = ["starter", "team", "business", "enterprise"]
            base = {"team_legacy": "team", "team_2026": "team"}.get(key[0], key[0])
            if base not in ladder[1:] or (ladder[ladder.index(base) - 1], key[1],
                                          state.currency) not in self.catalog:
                return False
            target = ladder[ladder.index(base) - 1]
            cheaper = list(now_items)
            cheaper[0] = (self.catalog[(target, key[1], state.currency)],
                          1 if target == "starter" else items[0]["quantity"])
            self.attach_schedule(state, t, [now_items, cheaper], (pe, later), "release")
            return True
        if kind == "schedule_cancel":
            self.attach_schedule(state, t, [now_items, now_items], (pe, later), "cancel")
            return True
        if kind == "cancel_at":
            # A date the customer chose, between two period ends.
            self.set_cancel_at(state, pe + rng.randint(3, 25) * DAY, t)
            return True
        if kind == "cancel_at_period_end":
            self.schedule_cancel(state, t)
            return True
        if kind == "ending_discount":
            if sub["discounts"] or any(i["discounts"] for i in items):
                return False
            options = [c for c in self.coupon_ids
                       if self.a.coupons[c]["duration"] == "repeating"
                       and self.a.coupons[c]["currency"] in (None, state.currency)
                       and self.a.coupons[c]["created"] <= t]
            if not options:
                return False
            self.attach_discount(state, rng.choice(sorted(options)), t)
            return True
        if kind == "pause":
            if state.months != 1:
                return False
            before = self.before(sub, t)
            sub["pause_collection"] = {"behavior": "void", "resumes_at": add_months(pe, 1)}
            self.updated("customer.subscription.updated", sub, t, before)
            return True
        raise ValueError(f"unknown scheduled change {kind!r}")

    def attach_schedule(self, state: _SubState, t: int,
                        phases: list[list[tuple[str, int | None]]], edges: tuple[int, int],
                        end_behavior: str) -> dict[str, Any]:
        """A schedule made from the subscription at ``t`` (its current period the first
        phase) with a second phase over ``edges``."""
        sub = self.a.subscriptions[state.sub_id]
        bounds = [(state.period_start, edges[0]), edges]
        sid = self.ids.new("sub_sched")
        schedule = shapes.subscription_schedule(
            id=sid, customer=state.customer_id, subscription=state.sub_id, created=t,
            livemode=self.a.livemode, end_behavior=end_behavior,
            phases=[shapes.schedule_phase(start_date=start, end_date=end,
                                          currency=state.currency, items=items)
                    for items, (start, end) in zip(phases, bounds, strict=True)])
        self.a.subscription_schedules[sid] = schedule
        before = self.before(sub, t)
        sub["schedule"] = sid
        self.emit("subscription_schedule.created", schedule, t)
        self.updated("customer.subscription.updated", sub, t, before)
        return schedule

    def active_schedule(self, sub: dict[str, Any]) -> dict[str, Any] | None:
        sid = sub.get("schedule")
        schedule = self.a.subscription_schedules.get(sid) if sid else None
        return schedule if schedule is not None and schedule["status"] == "active" else None

    def enter_phase(self, state: _SubState, t: int) -> None:
        """At a period's start ``t``: the schedule moves the subscription into the phase
        starting then (its prices and quantities), or releases it after its last phase."""
        sub = self.a.subscriptions[state.sub_id]
        schedule = self.active_schedule(sub)
        if schedule is None:
            return
        phases = schedule["phases"]
        before_schedule = self.before(schedule, t)
        if t >= phases[-1]["end_date"]:
            before = self.before(sub, t)
            schedule.update(status="released", released_at=t, current_phase=None,
                            released_subscription=sub["id"])
            sub["schedule"] = None
            self.emit("subscription_schedule.released", schedule, t)
            self.updated("customer.subscription.updated", sub, t, before)
            return
        phase = [p for p in phases if p["start_date"] <= t][-1]
        current = schedule["current_phase"]
        if current is not None and current["start_date"] == phase["start_date"]:
            return
        before = self.before(sub, t)
        for item, entry in zip(sub["items"]["data"], phase["items"], strict=False):
            if entry["price"] != item["price"]["id"]:
                price = self.a.prices[entry["price"]]
                item["price"] = copy.deepcopy(price)
                item["plan"] = shapes.plan_of(price)
            item["quantity"] = entry["quantity"]
        schedule["current_phase"] = {"end_date": phase["end_date"],
                                     "start_date": phase["start_date"]}
        self.updated("subscription_schedule.updated", schedule, t, before_schedule)
        self.updated("customer.subscription.updated", sub, t, before)

    def schedule_ends(self, sub: dict[str, Any], t: int) -> bool:
        """The subscription's schedule cancels it at ``t`` (its last phase ends by then)."""
        schedule = self.active_schedule(sub)
        return bool(schedule is not None and schedule["end_behavior"] == "cancel"
                    and schedule["phases"][-1]["end_date"] <= t)

    def complete_schedule(self, sub: dict[str, Any], t: int) -> None:
        schedule = self.active_schedule(sub)
        if schedule is None:
            return
        schedule.update(status="completed", completed_at=t, current_phase=None)
        self.emit("subscription_schedule.completed", schedule, t)

    # -- whole histories -----------------------------------------------------------------
    def random_instant(self, start: int, end: int) -> int | None:
        end = min(end, self.a.now)
        if end - start < 2 * HOUR:
            return None
        return self.rng.randint(start + HOUR, end - HOUR)

    def start_subscription(self, cust: dict[str, Any], t: int) -> _SubState:
        rng = self.rng
        currency = cust["currency"] or CURRENCY_OF[cust["address"]["country"]]
        months = 12 if rng.random() < 0.2 else 1
        interval = "year" if months == 12 else "month"
        plan = rng.choices(("starter", "team", "business", "enterprise"), (30, 40, 20, 10))[0]
        qty: int | None
        if plan == "starter":
            qty = 1
        elif plan == "team":
            qty = rng.randint(2, 25)
        elif plan == "business":
            qty = rng.randint(5, 80)
        else:
            qty = rng.randint(50, 180)
        price_id = self.catalog[(plan, interval, currency)]
        if plan == "starter" and interval == "month" and currency != "usd" \
                and rng.random() < 0.3:
            price_id = self.catalog[("starter_multi", "month", "usd")]
        if plan == "team" and interval == "month" and currency == "usd" \
                and t < self.a.now - 300 * DAY and rng.random() < 0.4:
            price_id = self.catalog[("team_legacy", "month", "usd")]
        lines: list[tuple[str, int | None]] = [(price_id, qty)]
        if months == 1 and currency in ("usd", "eur") and rng.random() < 0.15:
            lines.append((self.catalog[("api", "month", currency)], None))
        # Some subscriptions carry 13 items, so their invoices have more than 10 lines
        # (at least one in any account of 10 customers or more).
        if months == 1 and currency == "usd" and (
                rng.random() < 0.04 or (not self.bundles and len(self.a.customers) >= 10)):
            lines.extend((p, rng.randint(1, 3)) for p in self.addon_prices)
            self.bundles += 1
        trial_days = 14 if rng.random() < 0.2 else 0
        trial_outcome = None
        if trial_days:
            trial_outcome = rng.choices(("convert", "cancel", "pause"), (70, 15, 15))[0]
        coupon = None
        if rng.random() < 0.15:
            coupon = self.pick_coupon(currency)
        fail_first = not trial_days and rng.random() < 0.02
        state = self.subscribe(cust, t, lines, months=months, trial_days=trial_days,
                               trial_outcome=trial_outcome, coupon=coupon,
                               fail_first=fail_first)
        for item in self.sub_items(state):
            if item["price"]["recurring"]["usage_type"] == "metered":
                state.usage[item["id"]] = rng.randint(1_000, 400_000)
        return state

    def pick_coupon(self, currency: str) -> str | None:
        options = [c for c in self.coupon_ids
                   if self.a.coupons[c]["currency"] in (None, currency)]
        return self.rng.choice(options) if options else None

    def take_over(self, sub: dict[str, Any],
                  last_lines: dict[str, tuple[str, str]] | None = None) -> _SubState:
        """Go on billing a subscription made elsewhere (one a database has stored): the
        simulation's state rebuilt from what the object shows (its customer, prices,
        discounts and coupons must be in the account). ``last_lines`` names each item's
        latest cycle line (invoice id, line id), which a credit of unused time credits."""
        self.a.subscriptions[sub["id"]] = sub
        items = sub["items"]["data"]
        recurring = items[0]["price"]["recurring"]
        state = _SubState(
            sub_id=sub["id"], customer_id=sub["customer"], currency=sub["currency"],
            months=int(recurring["interval_count"]), unit=recurring["interval"],
            anchor=sub["billing_cycle_anchor"], k=1, period_start=items[0]["current_period_start"],
            period_end=items[0]["current_period_end"], random_usage=False,
            last_lines=dict(last_lines or {}))
        while state.end_after(state.anchor, state.k) < state.period_end:
            state.k += 1
        self.states[sub["id"]] = state
        return state

    def run(self, state: _SubState, until: int, since: int | None = None) -> None:
        """Bill ``state`` period after period up to ``until``, with random mid-period
        changes (after ``since`` only), dunning, pauses and cancellations."""
        rng = self.rng
        sub = self.a.subscriptions[state.sub_id]
        while not state.done and sub["status"] not in ("paused", "incomplete"):
            ps, pe = state.period_start, state.period_end
            if sub["status"] in ("active", "past_due") and not sub["cancel_at_period_end"] \
                    and sub["cancel_at"] is None and sub["schedule"] is None:
                self.mid_period_changes(state, max(ps, since or ps), pe, until)
                if state.done:
                    return
            step = self.close_period(state, until)
            if step == "trial_ended":
                if state.trial_outcome == "pause" and rng.random() < 0.4:
                    back = pe + rng.randint(5, 60) * DAY
                    if back <= until:
                        self.resume(state, back)
                        continue
                return
            if step != "renews":
                return
            # A change in the period may have restarted the cycle (a switch to yearly).
            pe = state.period_end
            if state.unpaid:
                self.renew(state, pe)
                continue
            fails = rng.random() < 0.025 and sub["pause_collection"] is None
            inv = self.renew(state, pe, outcome="fail" if fails else "paid")
            if fails and inv["status"] == "open":
                self.dunning(state, inv, pe, until)

    def close_period(self, state: _SubState, until: int) -> str:
        """What Stripe does when the current period ends, if it ends by ``until``, before
        the next one is billed: ``"waits"`` (the period, or the cancellation falling in it,
        ends after ``until``), ``"ended"`` (cancelled at its ``cancel_at``, at the period's
        end or by its schedule), ``"trial_ended"`` (a trial that ended without going on
        to be billed: :meth:`end_trial`) or ``"renews"`` (the caller bills the next
        period). The generated histories (:meth:`run`) and the tests' scripted world both
        step through periods with it."""
        sub = self.a.subscriptions[state.sub_id]
        pe = state.period_end
        cancel_at = sub["cancel_at"]
        if cancel_at is not None and not sub["cancel_at_period_end"] and cancel_at <= pe:
            if cancel_at > until:
                return "waits"
            self.end_at_period_end(state, cancel_at)
            return "ended"
        if pe > until:
            return "waits"
        if sub["cancel_at_period_end"]:
            self.end_at_period_end(state, pe)
            return "ended"
        if self.schedule_ends(sub, pe):
            self.complete_schedule(sub, pe)
            self.end_at_period_end(state, pe)
            return "ended"
        if sub["status"] == "trialing" and self.end_trial(state, pe):
            return "trial_ended"
        return "renews"

    def dunning(self, state: _SubState, inv: dict[str, Any], t: int, until: int) -> None:
        rng = self.rng
        sub = self.a.subscriptions[state.sub_id]
        before = self.before(sub, t + HOUR)
        sub["status"] = "past_due"
        self.updated("customer.subscription.updated", sub, t + HOUR, before)
        if rng.random() < 0.7:
            when = t + rng.randint(2, 10) * DAY

            def recover(retry_failed_first: bool) -> None:
                if inv["status"] != "open" or sub["status"] != "past_due":
                    return
                if retry_failed_first:
                    self.fail_invoice(inv, when - DAY)
                self.pay_invoice(inv, when)
                before = self.before(sub, when)
                sub["status"] = "active"
                self.updated("customer.subscription.updated", sub, when, before)

            if when < state.period_end:
                if when <= until:
                    recover(True)
                else:
                    self.later(when, lambda: recover(False))
            return
        give_up = t + 15 * DAY
        unpaid = rng.random() < 0.3

        def give_up_now() -> None:
            if inv["status"] != "open" or sub["status"] != "past_due" or state.done:
                return
            if unpaid:
                self.mark_unpaid(state, give_up)
            else:
                self.uncollectible(inv, give_up)
                self.cancel_now(state, give_up, reason="payment_failed")

        if give_up <= until:
            give_up_now()
        else:
            self.later(give_up, give_up_now)

    def mid_period_changes(self, state: _SubState, start: int, pe: int, until: int) -> None:
        """Random changes at instants in (``start``, min(``pe``, ``until``)), with
        probabilities for a whole period scaled by the part of it that window covers."""
        rng = self.rng
        sub = self.a.subscriptions[state.sub_id]
        end = min(pe, until, self.a.now)
        if sub["status"] != "active" or end - start < 2 * HOUR:
            return
        share = (end - start) / max(1, pe - state.period_start)
        scale = (6 if state.months == 12 else 1) * min(1.0, share)
        planned: list[tuple[int, str]] = []
        for kind, p in (("seats", 0.07), ("plan", 0.025), ("coupon", 0.02),
                        ("cancel_now", 0.008), ("cancel_later", 0.018), ("pause", 0.006),
                        ("yearly", 0.006)):
            if rng.random() < p * scale:
                t = self.random_instant(start, end)
                if t is not None:
                    planned.append((t, kind))
        for t, kind in sorted(planned):
            if state.done or sub["cancel_at_period_end"]:
                return
            if self.change(state, kind, t):
                self.changes[kind] += 1

    def change(self, state: _SubState, kind: str, t: int) -> bool:
        """One change of ``kind`` at ``t``; False when it does not apply to this
        subscription."""
        rng = self.rng
        sub = self.a.subscriptions[state.sub_id]
        licensed = [i for i in sub["items"]["data"]
                    if i["price"]["recurring"]["usage_type"] == "licensed"]
        if kind == "seats":
            seat_items = [i for i in licensed if self.price_key(i["price"]["id"])[0]
                          in ("team", "business", "enterprise", "team_legacy", "team_2026")]
            if not seat_items:
                return False
            item = rng.choice(seat_items)
            delta = rng.choice((-3, -2, -1, 1, 1, 2, 3, 5, 10))
            new_qty = max(1, int(item["quantity"]) + delta)
            if new_qty == item["quantity"]:
                return False
            self.change_item(state, item, t, quantity=new_qty)
            return True
        if kind == "plan":
            item = licensed[0]
            key = self.price_key(item["price"]["id"])
            ladder = ["starter", "team", "business", "enterprise"]
            base = {"team_legacy": "team", "team_2026": "team",
                    "starter_multi": "starter"}.get(key[0], key[0])
            if base not in ladder:
                return False
            pos = ladder.index(base)
            up = pos < 3 and (pos == 0 or rng.random() < 0.7)
            target = ladder[pos + 1] if up else ladder[pos - 1]
            interval = "year" if state.months == 12 else "month"
            price_id = self.catalog[(target, interval, state.currency)]
            qty = int(item["quantity"] or 1)
            if target == "starter":
                qty = 1
            elif target in ("team", "business") and qty == 1:
                qty = rng.randint(2, 8)
            elif target == "enterprise":
                qty = max(qty, 50)
            self.change_item(state, item, t, quantity=qty, price_id=price_id)
            return True
        if kind == "coupon":
            if sub["discounts"] or any(i["discounts"] for i in sub["items"]["data"]):
                return False
            coupon = self.pick_coupon(state.currency)
            if coupon is None:
                return False
            on_item = licensed[0] if licensed and rng.random() < 0.3 else None
            self.attach_discount(state, coupon, t, item=on_item)
            return True
        if kind == "cancel_now":
            self.cancel_now(state, t)
            return True
        if kind == "cancel_later":
            self.schedule_cancel(state, t)
            return True
        if kind == "pause":
            if state.months != 1:
                return False
            before = self.before(sub, t)
            sub["pause_collection"] = {"behavior": "void",
                                       "resumes_at": add_months(state.period_end, 1)}
            self.updated("customer.subscription.updated", sub, t, before)
            return True
        if kind == "yearly":
            if state.months != 1 or len(sub["items"]["data"]) != 1 or len(licensed) != 1:
                return False
            base = {"team_legacy": "team", "team_2026": "team", "starter_multi": "starter"
                    }.get(self.price_key(licensed[0]["price"]["id"])[0],
                          self.price_key(licensed[0]["price"]["id"])[0])
            yearly_price = self.catalog.get((base, "year", state.currency))
            if yearly_price is None:
                return False
            self.switch_interval(state, licensed[0], yearly_price, t)
            return True
        raise ValueError(f"unknown change {kind!r}")

    def switch_interval(self, state: _SubState, item: dict[str, Any], price_id: str,
                        t: int) -> dict[str, Any]:
        """Monthly to yearly: the billing cycle restarts at ``t``; the invoice credits the
        unused month (a proration line) and bills the whole new year (a plain line)."""
        sub = self.a.subscriptions[state.sub_id]
        before = self.before(sub, t)
        old_price, qty = item["price"], item["quantity"]
        new_price = self.a.prices[price_id]
        ps, pe = state.period_start, state.period_end
        credit = -prorated(amount_for(old_price, qty, state.currency), ps, pe, t)
        credited = None
        if item["id"] in state.last_lines:
            inv_id, line_id = state.last_lines[item["id"]]
            credited = {"invoice": inv_id, "invoice_line_items": [line_id]}
        old_snapshot = copy.deepcopy(old_price)
        months = 12 if new_price["recurring"]["interval"] == "year" else 1
        state.months, state.anchor, state.k = months, t, 1
        state.period_start, state.period_end = t, add_months(t, months)
        sub["billing_cycle_anchor"] = t
        item["price"] = copy.deepcopy(new_price)
        item["plan"] = shapes.plan_of(new_price)
        item["current_period_start"] = state.period_start
        item["current_period_end"] = state.period_end
        self.updated("customer.subscription.updated", sub, t, before)
        when = datetime.fromtimestamp(t, UTC).strftime("%d %b %Y")
        specs = [
            dict(item=item, price=old_snapshot, quantity=qty, amount=credit, period=(t, pe),
                 proration=True, credited=credited,
                 description=f"Unused time on {qty} × {self.product_name(old_snapshot)}"
                             f" after {when}"),
            dict(item=item, price=new_price, quantity=qty,
                 amount=amount_for(new_price, qty, state.currency),
                 period=(state.period_start, state.period_end), proration=False,
                 description=f"{qty} × {self.product_name(new_price)}"),
        ]
        inv = self.make_invoice(state, t, "subscription_update", specs, outcome="paid",
                                finalize_delay=0)
        inv["parent"]["subscription_details"]["subscription_proration_date"] = t
        return inv

    def simulate_customer(self, t0: int) -> None:
        rng = self.rng
        cust = self.new_customer(t0)
        t = t0 + rng.randint(60, 2 * DAY)
        if t >= self.a.now:
            return
        state = self.start_subscription(cust, t)
        self.run(state, self.a.now)
        if rng.random() < 0.08:
            t2 = self.random_instant(t, self.a.now)
            if t2 is not None:
                extra = self.start_subscription(cust, t2)
                self.run(extra, self.a.now)
        sub = self.a.subscriptions[state.sub_id]
        if state.done and sub["ended_at"] is not None:
            if rng.random() < 0.15:
                back = sub["ended_at"] + rng.randint(20, 200) * DAY
                if back < self.a.now:
                    again = self.start_subscription(cust, back)
                    self.run(again, self.a.now)
                    return
            if rng.random() < 0.06 and not any(
                    not s.done for s in self.states.values() if s.customer_id == cust["id"]):
                when = sub["ended_at"] + rng.randint(1, 120) * DAY
                if when < self.a.now:
                    self.delete_customer(cust["id"], when)

    def ensure_a_deleted_customer(self) -> None:
        """Every account of some size has a deleted customer (the sync must handle one)."""
        if self.a.deleted_customers or len(self.a.customers) < 20:
            return
        ended: dict[str, int] = {}
        live: set[str] = set()
        for state in self.states.values():
            sub = self.a.subscriptions[state.sub_id]
            if state.done and sub["ended_at"] is not None:
                ended[state.customer_id] = max(ended.get(state.customer_id, 0),
                                               sub["ended_at"])
            else:
                live.add(state.customer_id)
        for cid in sorted(ended):
            when = ended[cid] + DAY
            if cid not in live and when < self.a.now:
                self.delete_customer(cid, when)
                return

    # -- incremental changes -------------------------------------------------------------
    def due_renewals(self, since: int, until: int) -> None:
        for state in list(self.states.values()):
            if not state.done:
                self.run(state, until, since=since)

    def apply_changes(self, k: int, *, now: int | None, rng: random.Random | None,
                      api_version: str | None) -> list[dict[str, Any]]:
        if rng is not None:
            saved, self.rng = self.rng, rng
        try:
            start = self.a.now
            end = int(now) if now is not None else start + k + 1
            if end < start:
                raise ValueError("now cannot move backwards")
            self.a.now = end
            self.run_agenda(end)
            self.due_renewals(start, end)
            self.run_agenda(end)
            kinds = ("seats", "plan", "cancel_now", "cancel_later", "new_customer", "coupon",
                     "customer_email", "delete_customer", "price_update", "new_coupon",
                     "yearly")
            weights = (30, 15, 8, 10, 20, 10, 7, 3, 3, 2, 3)
            done = 0
            attempts = 0
            while done < k and attempts < k * 20 + 20:
                attempts += 1
                t = start + 1 + (done * max(1, end - start - 1)) // max(k, 1)
                t = min(t, end)
                kind = self.rng.choices(kinds, weights)[0]
                if self.one_change(kind, t):
                    done += 1
            return self.flush_events(api_version)
        finally:
            if rng is not None:
                self.rng = saved

    def one_change(self, kind: str, t: int) -> bool:
        if kind == "new_customer":
            cust = self.new_customer(t)
            self.start_subscription(cust, t)
            return True
        if kind == "customer_email":
            if not self.a.customers:
                return False
            cid = self.rng.choice(sorted(self.a.customers))
            self.update_customer_email(cid, t)
            return True
        if kind == "delete_customer":
            if not self.a.customers:
                return False
            # Deleting a customer cancels its subscriptions at once, as Stripe does.
            self.delete_customer(self.rng.choice(sorted(self.a.customers)), t)
            return True
        if kind == "price_update":
            price_id = self.rng.choice(sorted(self.a.prices))
            price = self.a.prices[price_id]
            before = self.before(price, t)
            price["nickname"] = f"{price['nickname'] or 'Price'} (renamed)"
            price["metadata"] = {**price["metadata"], "revision": str(t)}
            self.updated("price.updated", price, t, before)
            for sub in self.a.subscriptions.values():
                for item in sub["items"]["data"]:
                    if item["price"]["id"] == price_id:
                        item["price"]["nickname"] = price["nickname"]
                        item["price"]["metadata"] = dict(price["metadata"])
                        item["plan"] = shapes.plan_of(price)
            return True
        if kind == "new_coupon":
            cid = f"PROMO{len(self.a.coupons) + 1}"
            coupon = shapes.coupon(id=cid, name=f"Promotion {cid}", created=t,
                                   livemode=self.a.livemode, duration="repeating",
                                   percent_off=float(self.rng.choice((5, 10, 20, 30))),
                                   duration_in_months=self.rng.choice((1, 3, 6)))
            self.a.coupons[cid] = coupon
            self.coupon_ids.append(cid)
            self.emit("coupon.created", coupon, t)
            return True
        live = [s for s in self.states.values() if not s.done
                and self.a.subscriptions[s.sub_id]["status"] == "active"
                and not self.a.subscriptions[s.sub_id]["cancel_at_period_end"]
                and self.a.subscriptions[s.sub_id]["cancel_at"] is None
                and self.a.subscriptions[s.sub_id]["schedule"] is None
                and s.period_start < t < s.period_end]
        if not live:
            return False
        state = self.rng.choice(live)
        return self.change(state, kind, t)


# Shares of the live subscriptions given each scheduled change by
# :meth:`_Engine.schedule_ahead`, in this order, and of the customers without a live
# subscription who start a trial.
SCHEDULED_SHARES: tuple[tuple[str, float], ...] = (
    ("fewer_seats", 0.03), ("cheaper_price", 0.02), ("schedule_cancel", 0.02),
    ("cancel_at", 0.02), ("cancel_at_period_end", 0.02), ("ending_discount", 0.03),
    ("pause", 0.01))
TRIALS_AHEAD_SHARE = 0.03


def _new_account(seed: int, months: int, now: int | None, livemode: bool
                 ) -> tuple[EmulatedAccount, int]:
    now = int(time.time()) if now is None else int(now)
    account = EmulatedAccount(now=now, livemode=livemode, seed=seed)
    start = add_months(now, -months)
    account._engine.build_catalog(start - 30 * DAY)
    return account, start


def _simulate_customer(account: EmulatedAccount, index: int, customers: int, start: int
                       ) -> None:
    engine = account._engine
    span = account.now - start
    # A third of the customers already exist in the first months; the rest join evenly.
    if index < customers // 3:
        t0 = start + engine.rng.randint(0, max(1, span // 8))
    else:
        t0 = start + engine.rng.randint(0, max(1, span - DAY))
    engine.simulate_customer(t0)


def generate_account(*, seed: int = 0, customers: int = 300, months: int = 24,
                     now: int | None = None, livemode: bool = False) -> EmulatedAccount:
    """A Stripe account with ``customers`` customers and ``months`` months of history up to
    ``now`` (Unix seconds, default the current time), deterministic for ``seed`` and
    ``now``."""
    if customers < 0 or months < 1:
        raise ValueError("customers must be >= 0 and months >= 1")
    account, start = _new_account(seed, months, now, livemode)
    engine = account._engine
    for i in range(customers):
        _simulate_customer(account, i, customers, start)
    engine.ensure_a_deleted_customer()
    engine.late_catalog_changes()
    engine.schedule_ahead("account")
    engine.flush_events()
    return account


def generate_in_batches(*, seed: int = 0, customers: int, months: int = 24,
                        now: int | None = None, batch: int = 1_000,
                        livemode: bool = False) -> Iterator[EmulatedAccount]:
    """The histories :func:`generate_account` makes, for accounts too big to hold at once
    (benchmarks of 100,000 customers): each yielded account holds the catalogue and the
    next ``batch`` customers with everything of theirs, which are dropped once the caller
    resumes. No events are kept and the catalogue does not change late; the account's
    ``_engine.changes`` counts the mid-period changes made so far."""
    if customers < 0 or months < 1 or batch < 1:
        raise ValueError("customers must be >= 0, months and batch >= 1")
    account, start = _new_account(seed, months, now, livemode)
    engine = account._engine
    engine.silent = True
    for first in range(0, customers, batch):
        for i in range(first, min(first + batch, customers)):
            _simulate_customer(account, i, customers, start)
        yield account
        for store in (account.customers, account.subscriptions, account.invoices,
                      account.invoice_lines, account.discounts, account.deleted_customers):
            store.clear()
        engine.states.clear()
        engine.agenda.clear()  # Stripe's later work on dropped objects
