"""Exchange rates as plain data: CSV parsing (``date,currency,rate``) and lookups.

A rate is reporting-currency units per unit of ``currency``. Month M converts at the
latest rate on or before M's first day; a currency with none is :class:`MissingRateError`
naming the currency and the date. Rates are exact decimals, never floats.
"""

from __future__ import annotations

import bisect
import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from nrr.domain.money import rate_problem


class RateCsvError(ValueError):
    """A rates CSV row cannot be read; the message names the row and the problem."""


class MissingRateError(LookupError):
    def __init__(self, currency: str, day: date) -> None:
        self.currency = currency
        self.day = day
        super().__init__(f"no exchange rate for {currency.upper()} on or before {day.isoformat()}")


@dataclass(frozen=True, slots=True)
class Rate:
    day: date
    currency: str
    rate: Decimal


def parse_rates_csv(text: str) -> list[Rate]:
    """Rows of a ``date,currency,rate`` CSV (header required). Every bad row is reported."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise RateCsvError("the file is empty; expected a header date,currency,rate")
    columns = [column.strip().lower() for column in header]
    if columns != ["date", "currency", "rate"]:
        raise RateCsvError(f"header is {','.join(header)!r}; expected date,currency,rate")
    rates: list[Rate] = []
    problems: list[str] = []
    seen: dict[tuple[date, str], Decimal] = {}
    for number, row in enumerate(reader, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != 3:
            problems.append(f"row {number}: {len(row)} columns, expected 3")
            continue
        day_text, currency_text, rate_text = (cell.strip() for cell in row)
        try:
            day = date.fromisoformat(day_text)
        except ValueError:
            problems.append(f"row {number}: date {day_text!r} is not YYYY-MM-DD")
            continue
        currency = currency_text.lower()
        if len(currency) != 3 or not currency.isalpha():
            problems.append(f"row {number}: currency {currency_text!r} is not a 3-letter code")
            continue
        problem = rate_problem(rate_text)
        if problem is not None:
            problems.append(f"row {number}: {problem}")
            continue
        rate = Decimal(rate_text)
        if seen.get((day, currency), rate) != rate:
            problems.append(f"row {number}: a different rate for {currency.upper()} on {day} appears earlier")
            continue
        seen[(day, currency)] = rate
        rates.append(Rate(day, currency, rate))
    if problems:
        raise RateCsvError("; ".join(problems))
    return rates


class RateTable:
    """Lookup of the latest rate on or before a day; the reporting currency is always 1."""

    def __init__(self, reporting_currency: str, rates: Iterable[Rate] = ()) -> None:
        self.reporting_currency = reporting_currency.lower()
        self._days: dict[str, list[date]] = {}
        self._rates: dict[str, list[Decimal]] = {}
        for entry in sorted(rates, key=lambda r: (r.currency, r.day)):
            problem = rate_problem(entry.rate)
            if problem is not None:
                raise RateCsvError(f"{entry.currency.upper()} on {entry.day}: {problem}")
            days = self._days.setdefault(entry.currency, [])
            values = self._rates.setdefault(entry.currency, [])
            if days and days[-1] == entry.day:
                values[-1] = entry.rate
            else:
                days.append(entry.day)
                values.append(entry.rate)

    def rate(self, currency: str, day: date) -> Decimal:
        code = currency.lower()
        if code == self.reporting_currency:
            return Decimal(1)
        days = self._days.get(code, [])
        position = bisect.bisect_right(days, day)
        if position == 0:
            raise MissingRateError(code, day)
        return self._rates[code][position - 1]
