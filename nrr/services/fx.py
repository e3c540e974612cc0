"""Exchange rates: import from CSV, list, and look up for a month's conversion.

A rate is reporting-currency units per unit of ``currency`` (a decimal string, exact).
Month M converts at the latest rate on or before M's first day; a currency in use with
no such rate is an error naming the currency and the date.
"""

from __future__ import annotations

import bisect
import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from models.derived import ExchangeRate
from nrr.db.statements import dialect_insert
from nrr.domain.money import rate_problem

_RATES: Table = ExchangeRate.__table__  # type: ignore[assignment]

CSV_COLUMNS = ("date", "currency", "rate")


class RateFileError(ValueError):
    """The CSV cannot be imported; the message names the file, row and problem."""


class MissingRate(LookupError):
    """No rate on or before the date for a currency in use."""

    def __init__(self, currency: str, day: date, reporting_currency: str) -> None:
        self.currency = currency
        self.day = day
        self.reporting_currency = reporting_currency
        super().__init__(
            f"no exchange rate for {currency.upper()} -> {reporting_currency.upper()} on or "
            f"before {day.isoformat()}; import one with `nrr fx import FILE.csv` "
            f"(columns date,currency,rate)")


class UnusableRate(MissingRate):
    """The stored rate in force for a currency on a day is not a usable number (stored
    before the bounds were checked, or written by hand): as good as missing."""

    def __init__(self, currency: str, day: date, reporting_currency: str, problem: str) -> None:
        super().__init__(currency, day, reporting_currency)
        self.args = (f"the stored exchange rate for {currency.upper()} -> "
                     f"{reporting_currency.upper()} in force on {day.isoformat()}: {problem}; "
                     f"import a valid one with `nrr fx import FILE.csv`",)


@dataclass(frozen=True)
class RateRow:
    day: date
    currency: str
    rate: str


@dataclass
class ImportResult:
    rows: int
    currencies: list[str]
    first_date: date | None
    last_date: date | None


def parse_rates_csv(text: str, *, source: str = "CSV") -> list[RateRow]:
    """Parse ``date,currency,rate`` rows; every problem names its row (1 = header)."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise RateFileError(f"{source} is empty; expected a header row date,currency,rate") from None
    names = [h.strip().lower().lstrip("\ufeff") for h in header]
    missing = [c for c in CSV_COLUMNS if c not in names]
    if missing:
        raise RateFileError(f"{source} row 1: header {','.join(header)!r} lacks column(s) "
                            f"{', '.join(missing)}; expected date,currency,rate")
    index = {name: names.index(name) for name in CSV_COLUMNS}
    rows: list[RateRow] = []
    problems: list[str] = []
    seen: dict[tuple[date, str], int] = {}
    for number, record in enumerate(reader, start=2):
        if not record or all(not cell.strip() for cell in record):
            continue
        try:
            cells = {name: record[i].strip() for name, i in index.items()}
        except IndexError:
            problems.append(f"row {number}: expected 3 columns, got {len(record)}")
            continue
        try:
            day = date.fromisoformat(cells["date"])
        except ValueError:
            problems.append(f"row {number}: date {cells['date']!r} is not YYYY-MM-DD")
            continue
        currency = cells["currency"].lower()
        if len(currency) != 3 or not currency.isalpha():
            problems.append(f"row {number}: currency {cells['currency']!r} is not a 3-letter code")
            continue
        problem = rate_problem(cells["rate"])
        if problem is not None:
            problems.append(f"row {number}: {problem}")
            continue
        rate = Decimal(cells["rate"])
        if (day, currency) in seen:
            problems.append(f"row {number}: {currency.upper()} on {day} repeats row "
                            f"{seen[(day, currency)]}")
            continue
        seen[(day, currency)] = number
        rows.append(RateRow(day, currency, str(rate)))
    if problems:
        shown = "; ".join(problems[:10])
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise RateFileError(f"{source}: nothing imported: {shown}{more}")
    return rows


def store_rates(session: Session, rows: Sequence[RateRow], *, reporting_currency: str) -> int:
    """Upsert rates keyed by (date, currency, reporting currency). Never commits. A rate
    outside the bounds (:func:`nrr.domain.money.rate_problem`) refuses the whole call."""
    for row in rows:
        problem = rate_problem(row.rate)
        if problem is not None:
            raise RateFileError(f"{row.currency.upper()} on {row.day}: {problem}; nothing imported")
    reporting = reporting_currency.lower()
    payload = [{"date": r.day, "currency": r.currency, "reporting_currency": reporting,
                "rate": r.rate} for r in rows if r.currency != reporting]
    if not payload:
        return 0
    stmt = dialect_insert(session, _RATES)
    stmt = stmt.on_conflict_do_update(index_elements=["date", "currency", "reporting_currency"],
                                      set_={"rate": stmt.excluded.rate})
    session.execute(stmt, payload)
    return len(payload)


def import_rates_file(session: Session, path: str | Path, *, reporting_currency: str) -> ImportResult:
    file = Path(path)
    if not file.is_file():
        raise RateFileError(f"{file}: no such file")
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RateFileError(f"{file}: not UTF-8 text ({exc})") from exc
    rows = parse_rates_csv(text, source=str(file))
    count = store_rates(session, rows, reporting_currency=reporting_currency)
    days = [r.day for r in rows]
    return ImportResult(rows=count, currencies=sorted({r.currency for r in rows}),
                        first_date=min(days) if days else None, last_date=max(days) if days else None)


def list_rates(session: Session, *, reporting_currency: str | None = None,
               currency: str | None = None) -> list[dict[str, Any]]:
    stmt = select(_RATES.c.date, _RATES.c.currency, _RATES.c.reporting_currency, _RATES.c.rate)
    if reporting_currency:
        stmt = stmt.where(_RATES.c.reporting_currency == reporting_currency.lower())
    if currency:
        stmt = stmt.where(_RATES.c.currency == currency.lower())
    stmt = stmt.order_by(_RATES.c.currency, _RATES.c.date)
    return [{"date": r.date.isoformat(), "currency": r.currency,
             "reporting_currency": r.reporting_currency, "rate": r.rate}
            for r in session.execute(stmt)]


@dataclass
class RateBook:
    """The rates of one reporting currency, for lookups on or before a day."""

    reporting_currency: str
    _days: dict[str, list[date]] = field(default_factory=dict)
    # A rate that is not usable (out of bounds, not a number) is kept as its problem: a
    # lookup that lands on it raises :class:`UnusableRate`, never converts with it.
    _rates: dict[str, list[Decimal | str]] = field(default_factory=dict)

    @classmethod
    def from_rows(cls, reporting_currency: str,
                  rows: Iterable[tuple[date, str, str]]) -> RateBook:
        book = cls(reporting_currency.lower())
        for day, currency, rate in sorted(rows, key=lambda row: (row[0], row[1])):
            problem = rate_problem(rate)
            book._days.setdefault(currency, []).append(day)
            book._rates.setdefault(currency, []).append(Decimal(rate) if problem is None else problem)
        return book

    def rate(self, currency: str, day: date) -> Decimal:
        """Reporting-currency units per ``currency`` unit on ``day`` (latest on or before)."""
        code = currency.lower()
        if code == self.reporting_currency:
            return Decimal(1)
        days = self._days.get(code)
        if days:
            position = bisect.bisect_right(days, day)
            if position:
                found = self._rates[code][position - 1]
                if isinstance(found, str):
                    raise UnusableRate(code, day, self.reporting_currency, found)
                return found
        raise MissingRate(code, day, self.reporting_currency)

    def as_table(self) -> dict[str, list[tuple[date, Decimal]]]:
        return {c: [(d, r) for d, r in zip(self._days[c], self._rates[c], strict=True)
                    if isinstance(r, Decimal)] for c in self._days}


def load_rate_book(session: Session, reporting_currency: str) -> RateBook:
    reporting = reporting_currency.lower()
    rows = session.execute(select(_RATES.c.date, _RATES.c.currency, _RATES.c.rate)
                           .where(_RATES.c.reporting_currency == reporting))
    return RateBook.from_rows(reporting, [(r.date, r.currency, r.rate) for r in rows])
