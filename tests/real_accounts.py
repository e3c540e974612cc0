"""Cases real Stripe accounts contain (issue 11), as Stripe-shaped objects written out line
by line with the builders of :mod:`tests.stripe_world` (no simulation: every id, every
line and its order is what the test says).

Each ``*_account`` function returns an :class:`Account` and documents the hand
computation of the numbers the tests expect.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from nrr.domain.records import CustomerData
from tests.stripe_world import (
    coupon,
    customer,
    discount,
    invoice,
    invoice_line,
    price,
    product,
    subscription,
    subscription_item,
    ts,
)

JSON = dict[str, Any]
DAY = 86_400


class Account:
    """Stripe objects of one account, added by hand."""

    def __init__(self) -> None:
        self.lists: dict[str, list[JSON]] = {k: [] for k in (
            "customers", "products", "prices", "coupons", "discounts", "subscriptions",
            "invoices", "events")}

    def add(self, kind: str, obj: JSON) -> JSON:
        self.lists[kind].append(obj)
        return obj

    def price(self, pid: str, **kwargs: Any) -> JSON:
        prod = kwargs.setdefault("product", f"prod_{pid}")
        if not any(p["id"] == prod for p in self.lists["products"]):
            self.add("products", product(prod))
        return self.add("prices", price(pid, **kwargs))

    def find(self, kind: str, oid: str) -> JSON:
        return next(o for o in self.lists[kind] if o["id"] == oid)

    def objects(self) -> dict[str, list[JSON]]:
        return copy.deepcopy(self.lists)

    def customer_data(self, customer_id: str) -> CustomerData:
        from nrr.domain.stripe_shapes import customer_data_from_stripe

        data, skips = customer_data_from_stripe(customer_id, self.objects())
        assert not skips, skips
        return data

    def monthly_subscription(self, cid: str, sid: str, item: str, price_id: str, *,
                             start: int, months: int, quantity: int = 1, currency: str = "usd",
                             status: str = "active") -> None:
        """A customer paying ``price_id`` every month from ``start`` for ``months`` invoices."""
        self.add("customers", customer(cid, currency=currency))
        self.cycle_invoices(cid, sid, item, price_id, starts=month_starts(start, months),
                            quantity=quantity, currency=currency)
        last = month_starts(start, months + 1)
        self.add("subscriptions", subscription(
            sid, cid, [subscription_item(item, self.find("prices", price_id), subscription=sid,
                                         quantity=quantity, current_period_start=last[-2],
                                         current_period_end=last[-1])],
            status=status, currency=currency, start_date=start))

    def cycle_invoices(self, cid: str, sid: str, item: str, price_id: str, *,
                       starts: Sequence[int], quantity: int = 1, currency: str = "usd",
                       status: str = "paid", amount: int | None = None) -> None:
        unit = self.find("prices", price_id)
        unit_amount = unit["currency_options"][currency]["unit_amount"] if unit.get(
            "currency_options") and currency != unit["currency"] else unit["unit_amount"]
        for index, (begin, end) in enumerate(zip(starts, starts[1:], strict=False)):
            iid = f"in_{sid}_{index:03d}"
            self.add("invoices", invoice(iid, cid, subscription=sid, status=status,
                                         currency=currency, created=begin, lines=[invoice_line(
                                             f"il_{sid}_{index:03d}", invoice=iid, subscription=sid,
                                             subscription_item=item, price_id=price_id,
                                             product_id=unit["product"], quantity=quantity,
                                             period_start=begin, period_end=end,
                                             amount=amount if amount is not None else unit_amount * quantity,
                                             currency=currency)]))


def month_starts(start: int, count: int) -> list[int]:
    """``count`` + 1 instants one calendar month apart from ``start`` (same day, UTC)."""
    from datetime import UTC, datetime

    moment = datetime.fromtimestamp(start, tz=UTC)
    result = []
    for n in range(count + 1):
        index = moment.year * 12 + moment.month - 1 + n
        result.append(int(moment.replace(year=index // 12, month=index % 12 + 1).timestamp()))
    return result


# --------------------------------------------------------------------------- point 1


def far_trial_account(trial_start: int, trial_end: int, *,
                      paying_since: int = ts(2025, 6, 1)) -> Account:
    """cus_trial: a trial of price_pro (50.00 a month) over [trial_start, trial_end): the
    0.00 first invoice, status trialing. cus_paying: 100.00 a month from ``paying_since``
    for eight months (the rest of the account, which must still be computed)."""
    account = Account()
    account.price("price_pro", unit_amount=5_000)
    account.price("price_std", unit_amount=10_000)
    account.add("customers", customer("cus_trial"))
    pro = account.find("prices", "price_pro")
    account.add("invoices", invoice("in_trial", "cus_trial", subscription="sub_trial",
                                    created=trial_start, billing_reason="subscription_create",
                                    lines=[invoice_line("il_trial", invoice="in_trial",
                                                        subscription="sub_trial",
                                                        subscription_item="si_trial",
                                                        price_id="price_pro",
                                                        product_id=pro["product"], quantity=1,
                                                        period_start=trial_start,
                                                        period_end=trial_end, amount=0)]))
    account.add("subscriptions", subscription(
        "sub_trial", "cus_trial",
        [subscription_item("si_trial", pro, subscription="sub_trial", quantity=1,
                           current_period_start=trial_start, current_period_end=trial_end)],
        status="trialing", start_date=trial_start, trial_start=trial_start, trial_end=trial_end))
    account.monthly_subscription("cus_paying", "sub_paying", "si_paying", "price_std",
                                 start=paying_since, months=8)
    return account


# --------------------------------------------------------------------------- point 2


def inclusive_tax_account(*, repeating_months: int | None = None,
                          rates_on: str | None = None) -> Account:
    """cus_vat: price_vat 120.00 a month including 20 % VAT, 50 % off (forever, or
    ``repeating_months`` months) from 2025-01-01. Stripe taxes the discounted amount:
    120 - 60 off = 60 paid, of which 10 tax (60 / 1.2 = 50): MRR 50.00. After a repeating
    discount ends: 120 paid, 20 tax, MRR 100.00.

    ``rates_on`` ("item" or "subscription"): the lines carry no ``taxes`` (only the price is
    known); the 20 % inclusive rate is on the item's ``tax_rates`` or the subscription's
    ``default_tax_rates`` (the item then lists a 5 % exclusive rate too, or nothing).
    MRR: the discounted amount divided by 1.2, the same 50.00 then 100.00."""
    account = Account()
    account.price("price_vat", unit_amount=12_000, tax_behavior="inclusive")
    vat = account.find("prices", "price_vat")
    account.add("customers", customer("cus_vat", country="DE", currency="eur"))
    duration = "forever" if repeating_months is None else "repeating"
    account.add("coupons", coupon("co_half", percent_off=50, duration=duration,
                                  duration_in_months=repeating_months))
    start = ts(2025, 1, 1)
    end = None if repeating_months is None else month_starts(start, repeating_months)[-1]
    disc = account.add("discounts", discount("di_half", account.find("coupons", "co_half"),
                                             customer="cus_vat", start=start, end=end,
                                             subscription="sub_vat"))
    starts = month_starts(start, 4)
    for index, (begin, finish) in enumerate(zip(starts, starts[1:], strict=False)):
        discounted = end is None or begin < end
        off = 6_000 if discounted else 0
        tax = 1_000 if discounted else 2_000
        iid = f"in_vat_{index}"
        account.add("invoices", invoice(iid, "cus_vat", subscription="sub_vat", created=begin,
                                        currency="usd", lines=[invoice_line(
                                            f"il_vat_{index}", invoice=iid, subscription="sub_vat",
                                            subscription_item="si_vat", price_id="price_vat",
                                            product_id=vat["product"], quantity=1,
                                            period_start=begin, period_end=finish, amount=12_000,
                                            discount_amounts=[("di_half", off)] if off else [],
                                            taxes=[] if rates_on else [{
                                                "amount": tax, "tax_behavior": "inclusive",
                                                "taxable_amount": 12_000 - off - tax,
                                                "type": "tax_rate_details",
                                                "taxability_reason": None,
                                                "tax_rate_details": {"tax_rate": "txr_vat20"}}])]))
    item = subscription_item("si_vat", vat, subscription="sub_vat", quantity=1,
                             current_period_start=starts[-2], current_period_end=starts[-1])
    sub = subscription("sub_vat", "cus_vat", [item], start_date=start,
                       discounts=[disc] if end is None else [])
    if rates_on == "item":
        item["tax_rates"] = [_tax_rate("txr_vat20", "20.0", inclusive=True)]
    elif rates_on == "subscription":
        sub["default_tax_rates"] = [_tax_rate("txr_vat20", "20.0", inclusive=True)]
        item["tax_rates"] = []
    account.add("subscriptions", sub)
    return account


def _tax_rate(rid: str, percentage: str, *, inclusive: bool) -> dict[str, Any]:
    """A Stripe TaxRate object (the fields of ``stripe.TaxRate``)."""
    return {"id": rid, "object": "tax_rate", "active": True, "country": "DE", "created": 0,
            "description": None, "display_name": "VAT", "effective_percentage": None,
            "flat_amount": None, "inclusive": inclusive, "jurisdiction": None,
            "jurisdiction_level": None, "livemode": False, "metadata": {},
            "percentage": float(percentage), "rate_type": "percentage", "state": None,
            "tax_type": "vat"}


# --------------------------------------------------------------------------- point 3


def free_upgrade_account(*, credit_first: bool, credit_smaller_id: bool, reset: bool = False,
                         credited_items: bool = True) -> Account:
    """cus_up: price_free (0.00) from 2025-03-01, upgraded to price_pro (50.00 a month) on
    2025-03-15 with proration. Stripe's credit line for unused time on the free plan is
    0.00. Without a reset the new state's line covers [15 Mar, 1 Apr) and the cycle goes
    on from 1 Apr; with ``reset`` (billing_cycle_anchor=now) the new state is a cycle
    line [15 Mar, 15 Apr) beside the credit. Either way MRR is 50.00 from 15 March.

    ``credit_first``: the credit line comes first on the invoice; ``credit_smaller_id``:
    its id sorts before the other line's; ``credited_items``: the credit line carries
    ``proration_details.credited_items`` (else no proration details at all, as older
    objects show)."""
    account = Account()
    account.price("price_free", unit_amount=0)
    account.price("price_pro", unit_amount=5_000)
    free, pro = account.find("prices", "price_free"), account.find("prices", "price_pro")
    account.add("customers", customer("cus_up"))
    start, change = ts(2025, 3, 1), ts(2025, 3, 15)
    account.add("invoices", invoice("in_up_0", "cus_up", subscription="sub_up", created=start,
                                    billing_reason="subscription_create", lines=[invoice_line(
                                        "il_up_cycle", invoice="in_up_0", subscription="sub_up",
                                        subscription_item="si_up", price_id="price_free",
                                        product_id=free["product"], quantity=1,
                                        period_start=start, period_end=ts(2025, 4, 1), amount=0)]))
    credit_id, new_id = ("il_up_a", "il_up_b") if credit_smaller_id else ("il_up_b", "il_up_a")
    credit = invoice_line(credit_id, invoice="in_up_1", subscription="sub_up",
                          subscription_item="si_up", price_id="price_free",
                          product_id=free["product"], quantity=1, period_start=change,
                          period_end=ts(2025, 4, 1), amount=0, proration=True,
                          invoice_item="ii_up_credit")
    details = credit["parent"]["subscription_item_details"]
    if credited_items:
        details["proration_details"] = {"credited_items": {
            "invoice": "in_up_0", "invoice_line_items": ["il_up_cycle"]}}
    period_end = ts(2025, 4, 15) if reset else ts(2025, 4, 1)
    new = invoice_line(new_id, invoice="in_up_1", subscription="sub_up",
                       subscription_item="si_up", price_id="price_pro",
                       product_id=pro["product"], quantity=1, period_start=change,
                       period_end=period_end,
                       amount=5_000 if reset else 2_742,  # 50.00 x 17/31
                       proration=not reset, invoice_item=None if reset else "ii_up_new")
    if credited_items and not reset:
        new["parent"]["subscription_item_details"]["proration_details"] = {"credited_items": None}
    lines = [credit, new] if credit_first else [new, credit]
    account.add("invoices", invoice("in_up_1", "cus_up", subscription="sub_up", created=change,
                                    billing_reason="subscription_update", lines=lines))
    next_starts = month_starts(period_end, 3)
    account.cycle_invoices("cus_up", "sub_up", "si_up", "price_pro", starts=next_starts)
    account.add("subscriptions", subscription(
        "sub_up", "cus_up",
        [subscription_item("si_up", pro, subscription="sub_up", quantity=1,
                           current_period_start=next_starts[-2],
                           current_period_end=next_starts[-1])],
        start_date=start, billing_cycle_anchor=change if reset else start))
    return account


# --------------------------------------------------------------------------- point 4


def two_currency_account() -> Account:
    """cus_eur pays 100.00 EUR and cus_usd 100.00 USD every month from 2024-12-01 to
    2026-01-01, nothing changing. With EUR at 1.00 USD on 2025-01-01 and 1.20 USD from
    2025-12-01, T12M at 2025-12 (first month 2025-01) in constant currency (December's
    rate at both ends): opening 120 + 100 = 220, closing 220: NRR 100, GRR 100, expansion
    0; the window's currency effect (fx_impact) is 220 - 200 = 20."""
    account = Account()
    account.price("price_eur", unit_amount=10_000, currency="eur")
    account.price("price_usd", unit_amount=10_000, currency="usd")
    account.monthly_subscription("cus_eur", "sub_eur", "si_eur", "price_eur",
                                 start=ts(2024, 12, 1), months=14, currency="eur")
    account.monthly_subscription("cus_usd", "sub_usd", "si_usd", "price_usd",
                                 start=ts(2024, 12, 1), months=14)
    return account


# --------------------------------------------------------------------------- point 5


def dunning_account(*, canceled: bool, paid_at: int | None = None) -> Account:
    """cus_due pays 100.00 a month from 2025-01-01. The 2025-03-01 invoice (finalised
    then) is never paid: from day 14 (2025-03-15) the policy
    ``past_due_churn_after_days=14`` stops counting the subscription. ``canceled``:
    dunning cancels it on 2025-04-01 (status canceled, the invoice stays open). With
    ``paid_at`` the invoice is paid late instead (status active again, April paid on
    time)."""
    account = Account()
    account.price("price_std", unit_amount=10_000)
    std = account.find("prices", "price_std")
    account.add("customers", customer("cus_due"))
    account.cycle_invoices("cus_due", "sub_due", "si_due", "price_std",
                           starts=month_starts(ts(2025, 1, 1), 2))
    march = invoice("in_due_march", "cus_due", subscription="sub_due", created=ts(2025, 3, 1),
                    status="paid" if paid_at else "open", paid_at=paid_at, lines=[invoice_line(
                        "il_due_march", invoice="in_due_march", subscription="sub_due",
                        subscription_item="si_due", price_id="price_std",
                        product_id=std["product"], quantity=1, period_start=ts(2025, 3, 1),
                        period_end=ts(2025, 4, 1), amount=10_000)])
    account.add("invoices", march)
    if paid_at:
        account.cycle_invoices("cus_due", "sub_due", "si_due", "price_std",
                               starts=month_starts(ts(2025, 4, 1), 3))
        period = (ts(2025, 6, 1), ts(2025, 7, 1))
    else:
        period = (ts(2025, 3, 1), ts(2025, 4, 1))
    account.add("subscriptions", subscription(
        "sub_due", "cus_due",
        [subscription_item("si_due", std, subscription="sub_due", quantity=1,
                           current_period_start=period[0], current_period_end=period[1])],
        status="canceled" if canceled else ("active" if paid_at else "past_due"),
        start_date=ts(2025, 1, 1),
        canceled_at=ts(2025, 4, 1) if canceled else None,
        ended_at=ts(2025, 4, 1) if canceled else None))
    return account


# --------------------------------------------------------------------------- point 5 (resume)


def paused_world(*, seen: bool) -> Any:
    """cus_1 pays 100.00 a month from 2025-01-01, is paused on 2025-03-10 and resumed on
    2025-05-05 (a new period starts then). ``seen``: the worker stored the
    ``customer.subscription.paused`` and ``resumed`` events. The pause stops counting at
    2025-03-10 (churn in March) whatever the status is now."""
    from tests.stripe_world import World

    world = World()
    world.add_customer("cus_1")
    world.add_price("price_basic", unit_amount=10_000)
    sub = world.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 1, 1))
    sub.pause(at=ts(2025, 3, 10))
    if seen:
        world.add_event("customer.subscription.paused", sub.to_stripe(), at=ts(2025, 3, 10),
                        customer_id="cus_1")
    sub.resume(at=ts(2025, 5, 5))
    if seen:
        world.add_event("customer.subscription.resumed", sub.to_stripe(), at=ts(2025, 5, 5),
                        customer_id="cus_1")
    world.advance(ts(2025, 7, 1))
    return world
