"""Exchange rates (the service's one implementation): CSV parsing, month rates, fx_impact
kept out of movements."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from nrr.services.fx import MissingRate, RateBook, RateFileError, RateRow, parse_rates_csv
from tests.normalise.conftest import facts, major
from tests.stripe_world import World, ts


def test_parse_rates_csv() -> None:
    rates = parse_rates_csv("date,currency,rate\n2025-01-01,EUR,1.0842\n2025-02-01,eur,1.05\n\n")
    assert rates == [RateRow(date(2025, 1, 1), "eur", "1.0842"), RateRow(date(2025, 2, 1), "eur", "1.05")]


@pytest.mark.parametrize(("text", "problem"), [
    ("", "empty"),
    ("day,cur,rate\n", "header"),
    ("date,currency,rate\n2025-13-01,eur,1\n", "row 2: date"),
    ("date,currency,rate\n2025-01-01,euro,1\n", "row 2: currency"),
    ("date,currency,rate\n2025-01-01,eur,abc\n", "row 2: rate"),
    ("date,currency,rate\n2025-01-01,eur,-1\n", "positive"),
    ("date,currency,rate\n2025-01-01,eur\n", "3 columns, got 2"),
    ("date,currency,rate\n2025-01-01,eur,1\n2025-01-01,eur,2\n", "row 3"),
])
def test_bad_csv_rows_are_named(text: str, problem: str) -> None:
    with pytest.raises(RateFileError, match=problem):
        parse_rates_csv(text)


def test_latest_rate_on_or_before_the_day_and_missing_rate_names_currency_and_date() -> None:
    table = RateBook.from_rows("usd", [(date(2025, 1, 1), "eur", "1.1"),
                                       (date(2025, 2, 15), "eur", "1.2")])
    assert table.rate("EUR", date(2025, 2, 1)) == Decimal("1.1")
    assert table.rate("eur", date(2025, 3, 1)) == Decimal("1.2")
    assert table.rate("usd", date(2000, 1, 1)) == Decimal(1)
    with pytest.raises(MissingRate, match=r"EUR.*2024-12-01"):
        table.rate("eur", date(2024, 12, 1))


def test_fx_impact_is_kept_out_of_movements() -> None:
    world = World()
    world.add_customer("cus_1", currency="eur")
    world.add_price("price_eur", unit_amount=10_000, currency="eur")
    world.subscribe("cus_1", [("price_eur", 1)], at=ts(2025, 1, 10))
    world.advance(ts(2025, 4, 1))
    rates = RateBook.from_rows("usd", [(date(2025, 1, 1), "eur", "1.10"),
                                       (date(2025, 2, 1), "eur", "1.20"),
                                       (date(2025, 3, 1), "eur", "1.00")])
    rows = facts(world, last_month="2025-03", rates=rates)
    jan, feb, mar = rows["2025-01"], rows["2025-02"], rows["2025-03"]
    assert (jan.movement, major(jan.closing_mrr_micro)) == ("new", Decimal("110"))
    assert (feb.movement, major(feb.opening_mrr_micro), major(feb.closing_mrr_micro)) == (None, 120, 120)
    assert major(feb.fx_impact_micro) == Decimal(10)
    assert (mar.movement, major(mar.fx_impact_micro)) == (None, Decimal(-20))
    assert jan.closing_mrr_micro + feb.fx_impact_micro == feb.opening_mrr_micro


def test_missing_rate_is_an_error() -> None:
    world = World()
    world.add_customer("cus_1", currency="eur")
    world.add_price("price_eur", unit_amount=10_000, currency="eur")
    world.subscribe("cus_1", [("price_eur", 1)], at=ts(2025, 1, 10))
    world.advance(ts(2025, 2, 1))
    with pytest.raises(MissingRate, match=r"EUR -> USD on or before 2025-01-01"):
        facts(world, last_month="2025-01", rates=RateBook("usd"))
