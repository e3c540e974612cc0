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

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import lru_cache
from zoneinfo import ZoneInfo

from nrr.domain.money import convert_micro
from nrr.domain.months import add_months, month_of, month_range, month_start
from nrr.domain.records import Customer, CustomerHistory, ItemInterval, MonthFact

RateLookup = Callable[[str, date], Decimal]


def month_first_day(month: str) -> date:
    year, mon = (int(part) for part in month.split("-"))
    return date(year, mon, 1)


@lru_cache(maxsize=256)
def month_bounds(first: str, last: str, tz: ZoneInfo) -> tuple[tuple[str, int, int, date], ...]:
    """(month, first instant, next month's first instant, first day) for each month."""
    bounds = []
    for month in month_range(first, last):
        bounds.append((month, month_start(month, tz), month_start(add_months(month, 1), tz),
                       month_first_day(month)))
    return tuple(bounds)


def _now() -> int:
    return int(datetime.now(UTC).timestamp())


class _Steps:
    """The customer's step functions per currency, with fast lookups."""

    __slots__ = ("currencies", "instants", "paying", "values")

    def __init__(self, history: CustomerHistory) -> None:
        self.currencies = sorted(history.points)
        instants = sorted({at for steps in history.points.values() for at, _ in steps})
        self.instants = instants
        # values[i][c]: MRR of currency c from instants[i] on.
        current = dict.fromkeys(self.currencies, 0)
        by_instant: dict[int, list[tuple[str, int]]] = {}
        for currency, steps in history.points.items():
            for at, mrr in steps:
                by_instant.setdefault(at, []).append((currency, mrr))
        values: list[tuple[int, ...]] = []
        paying: list[bool] = []
        for at in instants:
            for currency, mrr in by_instant[at]:
                current[currency] = mrr
            row = tuple(current[c] for c in self.currencies)
            values.append(row)
            paying.append(any(v > 0 for v in row))
        self.values = values
        self.paying = paying

    def before(self, at: int) -> tuple[int, ...]:
        index = bisect_left(self.instants, at)
        if index == 0:
            return tuple(0 for _ in self.currencies)
        return self.values[index - 1]


def _convert(values: Sequence[int], currencies: Sequence[str], day: date, rate: RateLookup,
             reporting: str) -> int:
    if len(currencies) == 1 and currencies[0] == reporting:
        return values[0]
    total = 0
    for currency, value in zip(currencies, values, strict=True):
        if not value:
            continue
        if currency == reporting:
            total += value
        else:
            total += convert_micro(value, currency, reporting, rate(currency, day))
    return total


def largest_item(intervals: Sequence[ItemInterval], at: int, day: date, rate: RateLookup,
                 reporting: str) -> ItemInterval | None:
    """The item in force at ``at`` with the largest MRR (reporting currency); equal MRR: the
    smallest price id wins."""
    best_value = -1
    chosen: ItemInterval | None = None
    for interval in intervals:
        if interval.start <= at and (interval.end is None or at < interval.end) and interval.mrr_micro > 0:
            if interval.currency == reporting:
                value = interval.mrr_micro
            else:
                value = convert_micro(interval.mrr_micro, interval.currency, reporting,
                                      rate(interval.currency, day))
            if (chosen is None or value > best_value
                    or (value == best_value and (interval.price_id or "") < (chosen.price_id or ""))):
                best_value, chosen = value, interval
    return chosen


def _epochs(intervals: Sequence[ItemInterval]) -> list[int]:
    """Instants where the set of items in force can change."""
    return sorted({i.start for i in intervals} | {i.end for i in intervals if i.end is not None})


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
    steps = _Steps(history)
    if not any(steps.paying):
        return []
    instants = steps.instants
    first_paying = instants[steps.paying.index(True)]
    first_paid_month = month_of(first_paying, tz)
    start_month = first_month or first_paid_month
    if last_month is None:
        last_month = month_of(now if now is not None else max(instants[-1], _now()), tz)
    currencies = steps.currencies
    epochs = _epochs(history.intervals)
    single_currency = len({i.currency for i in history.intervals}) <= 1
    items_by_epoch: dict[int, ItemInterval | None] = {}
    metadata = dict(customer.metadata) if customer.metadata else None
    facts: list[MonthFact] = []
    bounds = month_bounds(add_months(start_month, -1), last_month, tz)
    previous_day = bounds[0][3]
    previous_closing_native = steps.before(bounds[1][1]) if len(bounds) > 1 else ()
    for month, begin, end, day in bounds[1:]:
        opening_native = previous_closing_native
        closing_native = steps.before(end)
        lo = bisect_left(instants, begin)
        hi = bisect_left(instants, end)
        paying_inside = [instants[i] for i in range(lo, hi) if steps.paying[i]]
        opening_any = any(opening_native)
        if not opening_any and not any(closing_native) and not paying_inside:
            previous_closing_native, previous_day = closing_native, day
            continue
        opening = _convert(opening_native, currencies, day, rate, reporting)
        closing = _convert(closing_native, currencies, day, rate, reporting)
        fx_impact = 0
        if opening_any:
            fx_impact = opening - _convert(opening_native, currencies, previous_day, rate, reporting)
        movement: str | None = None
        amount = 0
        if opening == 0 and closing > 0:
            # The paying stretch still running at the close started at ``since``.
            since = begin
            for i in range(lo, hi):
                if steps.paying[i] and (i == 0 or not steps.paying[i - 1]):
                    since = instants[i]
            movement = "new" if since <= first_paying else "reactivation"
            amount = closing
        elif opening > 0 and closing == 0:
            movement, amount = "churn", opening
        elif opening > 0 and closing > opening:
            movement, amount = "expansion", closing - opening
        elif opening > 0 and 0 < closing < opening:
            movement, amount = "contraction", opening - closing
        if opening_any:
            segment_at = begin - 1
        else:
            segment_at = paying_inside[0] if paying_inside else end - 1
        # The largest item only changes where an interval starts or ends (and, across
        # currencies, with the rate): reuse it within one epoch for one-currency customers.
        epoch = bisect_right(epochs, segment_at)
        if single_currency and epoch in items_by_epoch:
            item = items_by_epoch[epoch]
        else:
            item = largest_item(history.intervals, segment_at, day, rate, reporting)
            items_by_epoch[epoch] = item
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
            first_paid_month=first_paid_month,
            currency=item.currency if item else None,
            plan=item.price_id if item else None,
            product=product,
            country=customer.country,
            metadata_=dict(metadata) if metadata else None,
        ))
        previous_closing_native, previous_day = closing_native, day
    return facts
