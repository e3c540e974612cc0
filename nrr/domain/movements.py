"""Monthly facts per customer: opening, closing, movement, fx_impact, segment.

For month M (calendar month in the configured time zone):

- opening(M) = MRR just before M's first instant; closing(M) = MRR just before M+1's first
  instant (the same instant as opening(M+1)), so a change at exactly 00:00 on the 1st
  belongs to the new month. Both are converted at M's rate: the latest rate on or before
  M's first day (``rate(currency, day)``; a missing rate raises the caller's error naming
  the currency and the date).
- movement: o = 0, c > 0 -> ``new`` when the customer was never paying at any earlier
  instant (even inside the same month), otherwise ``reactivation`` (amount c); o > 0,
  c = 0 -> ``churn`` (o); c > o -> ``expansion`` (c - o); 0 < c < o -> ``contraction``
  (o - c). A start and cancel inside one month gives no movement, but the customer has
  been paying from then on.
- fx_impact(M) = opening(M) - closing(M-1): the rate change only, never a movement.
- segment at the opening, or for a customer not paying then, at its first paying instant
  in M: plan (price id) and product of its largest item (ties broken by price id),
  currency of that item, country and metadata of the customer.

So for every month and every segment: opening + new + reactivation + expansion -
contraction - churn = closing, exactly, by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from nrr.domain.history import mrr_at, mrr_before
from nrr.domain.money import convert_micro
from nrr.domain.months import add_months, month_of, month_range, month_start
from nrr.domain.records import Customer, CustomerHistory, ItemInterval, MonthFact

RateLookup = Callable[[str, date], Decimal]


def month_first_day(month: str) -> date:
    year, mon = (int(part) for part in month.split("-"))
    return date(year, mon, 1)


def _convert(amounts: Mapping[str, int], month: str, rate: RateLookup, reporting: str) -> int:
    total = 0
    day = month_first_day(month)
    for currency, value in amounts.items():
        if not value:
            continue
        if currency == reporting:
            total += value
        else:
            total += convert_micro(value, currency, reporting, rate(currency, day))
    return total


def _now() -> int:
    return int(datetime.now(UTC).timestamp())


def _change_instants(history: CustomerHistory) -> list[int]:
    return sorted({at for steps in history.points.values() for at, _ in steps})


def _paying_at(history: CustomerHistory, at: int) -> bool:
    return any(value > 0 for value in mrr_at(history, at).values())


def first_paying_instant(history: CustomerHistory) -> int | None:
    for at in _change_instants(history):
        if _paying_at(history, at):
            return at
    return None


def largest_item(intervals: Sequence[ItemInterval], at: int, month: str, rate: RateLookup,
                 reporting: str) -> ItemInterval | None:
    """The item in force at ``at`` with the largest MRR (reporting currency), ties by price id."""
    best: tuple[int, str] | None = None
    chosen: ItemInterval | None = None
    for interval in intervals:
        if interval.start <= at and (interval.end is None or at < interval.end) and interval.mrr_micro > 0:
            value = _convert({interval.currency: interval.mrr_micro}, month, rate, reporting)
            # Larger MRR first; equal MRR: the smaller price id wins (stable, documented).
            key = (value, _invert(interval.price_id or ""))
            if best is None or key > best:
                best, chosen = key, interval
    return chosen


def _invert(text: str) -> str:
    return "".join(chr(0x10FFFF - ord(ch)) for ch in text)


def customer_month_facts(history: CustomerHistory, customer: Customer, *, rate: RateLookup,
                         reporting_currency: str, tz: ZoneInfo, now: int | None = None,
                         first_month: str | None = None, last_month: str | None = None,
                         product_names: Mapping[str, str] | None = None) -> list[MonthFact]:
    """One fact per month from the customer's first paying month to ``last_month``.

    ``last_month`` defaults to the month of ``now`` (or of the last change). Months in
    which the customer neither paid at the opening, the closing, nor at any instant are
    left out. ``product_names`` maps product ids to the names used as the product segment.
    """
    reporting = reporting_currency.lower()
    if history.excluded:
        return []
    first_paying = first_paying_instant(history)
    if first_paying is None:
        return []
    instants = _change_instants(history)
    start_month = first_month or month_of(first_paying, tz)
    if last_month is None:
        last_month = month_of(now if now is not None else max(instants[-1], _now()), tz)
    facts: list[MonthFact] = []
    previous_closing_native: dict[str, int] = mrr_before(history, month_start(start_month, tz))
    previous_month = add_months(start_month, -1)
    for month in month_range(start_month, last_month):
        begin = month_start(month, tz)
        end = month_start(add_months(month, 1), tz)
        opening_native = mrr_before(history, begin)
        closing_native = mrr_before(history, end)
        inside = [at for at in instants if begin <= at < end]
        paying_inside = [at for at in inside if _paying_at(history, at)]
        if not any(opening_native.values()) and not any(closing_native.values()) and not paying_inside:
            previous_closing_native, previous_month = closing_native, month
            continue
        opening = _convert(opening_native, month, rate, reporting)
        closing = _convert(closing_native, month, rate, reporting)
        previous_closing = _convert(previous_closing_native, previous_month, rate, reporting) \
            if any(previous_closing_native.values()) else 0
        fx_impact = opening - previous_closing if any(previous_closing_native.values()) else 0
        movement: str | None = None
        amount = 0
        if opening == 0 and closing > 0:
            # The paying stretch that is still running at the close started at ``since``.
            since = begin
            for at in inside:
                if _paying_at(history, at) and not _paying_at(history, at - 1):
                    since = at
            movement = "new" if since <= first_paying else "reactivation"
            amount = closing
        elif opening > 0 and closing == 0:
            movement, amount = "churn", opening
        elif opening > 0 and closing > opening:
            movement, amount = "expansion", closing - opening
        elif opening > 0 and 0 < closing < opening:
            movement, amount = "contraction", opening - closing
        if any(opening_native.values()):
            segment_at = begin - 1
        else:
            segment_at = paying_inside[0] if paying_inside else end - 1
        item = largest_item(history.intervals, segment_at, month, rate, reporting)
        product = item.product_id if item else None
        if product is not None and product_names:
            product = product_names.get(product, product)
        facts.append(MonthFact(
            month=month,
            customer_id=customer.id,
            opening_mrr_micro=opening,
            closing_mrr_micro=closing,
            movement=movement,
            movement_micro=amount,
            fx_impact_micro=fx_impact,
            first_paid_month=month_of(first_paying, tz),
            currency=item.currency if item else None,
            plan=item.price_id if item else None,
            product=product,
            country=customer.country,
            metadata_=dict(customer.metadata) if customer.metadata else None,
        ))
        previous_closing_native, previous_month = closing_native, month
    return facts
