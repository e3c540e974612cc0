"""Monthly facts per customer: opening, closing, movement, fx_impact, segment.

For month M (calendar month in the configured time zone):

- opening(M) = MRR just before M's first instant; closing(M) = MRR just before M+1's first
  instant (the same instant as opening(M+1)), so a change at exactly 00:00 on the 1st
  belongs to the new month. For the month holding ``now`` the closing is the MRR at
  ``now``: a partial month counts what has happened (the rest is in the outlook). Both are converted at M's rate: the latest rate on or before
  M's first day (``rate(currency, day)``; a missing rate raises the caller's error naming
  the currency and the date).
- movement: o = 0, c > 0 -> ``new`` when the customer was never paying at any earlier
  instant (even inside the same month), otherwise ``reactivation`` (amount c); o > 0,
  c = 0 -> ``churn`` (o); c > o -> ``expansion`` (c - o); 0 < c < o -> ``contraction``
  (o - c). A start and cancel inside one month gives no movement, but the customer has
  been paying from then on.
- fx_impact(M) = opening(M) - closing(M-1): the rate change only, never a movement.
- opening_t12m(M): the opening converted at the rate of the first day of M+11, the month
  whose trailing twelve months start at M, so T12M compares both ends in constant currency
  (the rate of the window's last month) and exchange rates alone never move it.
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
from typing import Any
from zoneinfo import ZoneInfo

from nrr.domain.money import conversion_factor, convert_micro_by
from nrr.domain.months import add_months, month_of, month_range, month_start
from nrr.domain.records import Customer, CustomerHistory, ItemInterval, MonthFact

RateLookup = Callable[[str, date], Decimal]


def month_first_day(month: str) -> date:
    year, mon = (int(part) for part in month.split("-"))
    return date(year, mon, 1)


@lru_cache(maxsize=256)
def month_bounds(first: str, last: str, tz: ZoneInfo) -> tuple[tuple[str, int, int, date, date], ...]:
    """(month, first instant, next month's first instant, first day, first day of the
    month eleven months later) for each month."""
    bounds = []
    for month in month_range(first, last):
        bounds.append((month, month_start(month, tz), month_start(add_months(month, 1), tz),
                       month_first_day(month), month_first_day(add_months(month, 11))))
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


Factor = tuple[int, int]
FactorLookup = Callable[[str, date], Factor]


def factor_lookup(rate: RateLookup, reporting: str) -> FactorLookup:
    """``(currency, day) -> exact conversion factor`` to ``reporting``, memoised (a few dozen
    distinct (currency, month) pairs serve every customer). Missing rates are not cached:
    the lookup raises each time, as ``rate`` does."""
    cache: dict[tuple[str, date], Factor] = {}

    def lookup(currency: str, day: date) -> Factor:
        key = (currency, day)
        found = cache.get(key)
        if found is None:
            found = cache[key] = conversion_factor(currency, reporting, rate(currency, day))
        return found

    return lookup


def _convert(values: Sequence[int], currencies: Sequence[str], day: date, factor: FactorLookup,
             reporting: str) -> int:
    if len(currencies) == 1:
        value = values[0]
        if not value or currencies[0] == reporting:
            return value
        return convert_micro_by(value, factor(currencies[0], day))
    total = 0
    for currency, value in zip(currencies, values, strict=True):
        if not value:
            continue
        if currency == reporting:
            total += value
        else:
            total += convert_micro_by(value, factor(currency, day))
    return total


def largest_item(intervals: Sequence[ItemInterval], at: int, day: date, rate: RateLookup,
                 reporting: str, *, factor: FactorLookup | None = None) -> ItemInterval | None:
    """The item in force at ``at`` with the largest MRR (reporting currency); equal MRR: the
    smallest price id wins."""
    if factor is None:
        factor = factor_lookup(rate, reporting)
    best_value = -1
    chosen: ItemInterval | None = None
    for interval in intervals:
        if interval.start <= at and (interval.end is None or at < interval.end) and interval.mrr_micro > 0:
            if interval.currency == reporting:
                value = interval.mrr_micro
            else:
                value = convert_micro_by(interval.mrr_micro, factor(interval.currency, day))
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
    metadata = dict(customer.metadata) if customer.metadata else None
    return [
        MonthFact(month=row[0], customer_id=row[1], opening_mrr_micro=row[2],
                  closing_mrr_micro=row[3], movement=row[4], movement_micro=row[5],
                  fx_impact_micro=row[6], first_paid_month=row[7], currency=row[8], plan=row[9],
                  product=row[10], country=row[11],
                  metadata_=dict(metadata) if metadata else None, opening_t12m_micro=row[13])
        for row in customer_month_fact_rows(
            history, customer, factor=factor_lookup(rate, reporting_currency.lower()),
            reporting_currency=reporting_currency, tz=tz, now=now, first_month=first_month,
            last_month=last_month, product_names=product_names, metadata=None)]


FactRow = tuple[str, str, int, int, str | None, int, int, str | None, str | None, str | None,
                str | None, str | None, Any, int]


def customer_month_fact_rows(history: CustomerHistory, customer: Customer, *,
                             factor: FactorLookup, reporting_currency: str, tz: ZoneInfo,
                             now: int | None = None, first_month: str | None = None,
                             last_month: str | None = None,
                             product_names: Mapping[str, str] | None = None,
                             metadata: Any = None) -> list[FactRow]:
    """:func:`customer_month_facts` as plain tuples in the fields' order (month, customer_id,
    opening, closing, movement, movement_micro, fx_impact, first_paid_month, currency,
    plan, product, country, metadata, opening_t12m), ``metadata`` being whatever the caller stores for
    the customer's metadata; ``factor`` is a :func:`factor_lookup`. The bulk path of a
    recompute: no object per month."""
    reporting = reporting_currency.lower()
    if history.excluded:
        return []
    steps = _Steps(history)
    paying = steps.paying
    if True not in paying:
        return []
    instants = steps.instants
    first_paying = instants[paying.index(True)]
    first_paid_month = month_of(first_paying, tz)
    start_month = first_month or first_paid_month
    if last_month is None:
        last_month = month_of(now if now is not None else max(instants[-1], _now()), tz)
    if start_month > last_month:
        # Paying starts after the last reported month (a trial or first payment months
        # ahead of today): normal data, nothing to report yet.
        return []
    currencies = steps.currencies
    intervals = history.intervals
    epochs = _epochs(intervals)
    single_currency = len({i.currency for i in intervals}) <= 1
    items_by_epoch: dict[int, ItemInterval | None] = {}
    customer_id = customer.id
    country = customer.country
    rows: list[FactRow] = []
    bounds = month_bounds(add_months(start_month, -1), last_month, tz)
    previous_day = bounds[0][3]
    previous_closing_native = steps.before(bounds[1][1]) if len(bounds) > 1 else ()
    # The previous month's closing in the reporting currency at its own rate (None when that
    # month was not reported): this month's opening at last month's rate, for fx_impact.
    previous_closing: int | None = None
    values = steps.values

    def segment(at: int, day: date) -> tuple[str | None, str | None, str | None]:
        """(currency, plan, product) of the customer's largest item at ``at``. The largest
        item only changes where an interval starts or ends (and, across currencies, with
        the rate): reused within one epoch for one-currency customers."""
        epoch = bisect_right(epochs, at)
        if single_currency and epoch in items_by_epoch:
            item = items_by_epoch[epoch]
        else:
            item = largest_item(intervals, at, day, _no_rate, reporting, factor=factor)
            items_by_epoch[epoch] = item
        if item is None:
            return None, None, None
        product = item.product_id
        if product is not None and product_names:
            product = product_names.get(product, product)
        return item.currency, item.price_id, product

    for month, begin, end, day, window_end_day in bounds[1:]:
        if now is not None and begin <= now < end:
            # The current month counts what has happened up to now (closing = MRR now);
            # what is scheduled for the rest of it belongs to the outlook.
            end = now + 1
        opening_native = previous_closing_native
        lo = bisect_left(instants, begin)
        hi = bisect_left(instants, end)
        if lo == hi:
            # Nothing changes inside the month: closing = opening (native), no movement.
            if not any(opening_native):
                previous_day, previous_closing = day, None
                continue
            opening = _convert(opening_native, currencies, day, factor, reporting)
            before = previous_closing if previous_closing is not None else _convert(
                opening_native, currencies, previous_day, factor, reporting)
            currency, plan, product = segment(begin - 1, day)
            rows.append((month, customer_id, opening, opening, None, 0, opening - before,
                         first_paid_month, currency, plan, product, country, metadata,
                         _convert(opening_native, currencies, window_end_day, factor, reporting)))
            previous_day, previous_closing = day, opening
            continue
        closing_native = values[hi - 1] if hi else steps.before(end)
        paying_at = None
        for i in range(lo, hi):
            if paying[i]:
                paying_at = instants[i]
                break
        opening_any = any(opening_native)
        if not opening_any and paying_at is None and not any(closing_native):
            previous_closing_native, previous_day, previous_closing = closing_native, day, None
            continue
        opening = _convert(opening_native, currencies, day, factor, reporting)
        closing = _convert(closing_native, currencies, day, factor, reporting)
        fx_impact = 0
        if opening_any:
            before = previous_closing if previous_closing is not None else _convert(
                opening_native, currencies, previous_day, factor, reporting)
            fx_impact = opening - before
        movement: str | None = None
        amount = 0
        if opening == 0 and closing > 0:
            # The paying stretch still running at the close started at ``since``.
            since = begin
            for i in range(lo, hi):
                if paying[i] and (i == 0 or not paying[i - 1]):
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
            segment_at = paying_at if paying_at is not None else end - 1
        currency, plan, product = segment(segment_at, day)
        opening_t12m = (_convert(opening_native, currencies, window_end_day, factor, reporting)
                        if opening_any else 0)
        rows.append((month, customer_id, opening, closing, movement, amount, fx_impact,
                     first_paid_month, currency, plan, product, country, metadata, opening_t12m))
        previous_closing_native, previous_day, previous_closing = closing_native, day, closing
    return rows


def _no_rate(currency: str, day: date) -> Decimal:  # pragma: no cover - factor given instead
    raise AssertionError("largest_item was given a factor lookup")
