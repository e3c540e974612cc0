"""Helpers for the normalisation tests: run the domain on a :class:`tests.stripe_world.World`."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from nrr.domain.history import customer_history, mrr_at, select_state_lines
from nrr.domain.money import micro_to_major
from nrr.domain.movements import customer_month_facts
from nrr.domain.records import CustomerHistory, MonthFact
from nrr.services.fx import RateBook
from nrr.settings import Policies
from tests.stripe_world import World

UTC_TZ = ZoneInfo("UTC")


def history(world: World, customer_id: str = "cus_1", *, selected: bool = False,
            **policies: Any) -> CustomerHistory:
    data = world.customer_data(customer_id)
    if selected:
        data = replace(data, lines=tuple(select_state_lines(data.lines)))
    return customer_history(data, Policies(**policies))


def mrr(world: World, at: int, customer_id: str = "cus_1", currency: str = "usd",
        **policies: Any) -> Decimal:
    """MRR in major units at ``at`` (exact)."""
    value = mrr_at(history(world, customer_id, **policies), at).get(currency, 0)
    return micro_to_major(value, currency)


def facts(world: World, customer_id: str = "cus_1", *, last_month: str, rates: RateBook | None = None,
          reporting: str = "usd", tz: ZoneInfo = UTC_TZ, **policies: Any) -> dict[str, MonthFact]:
    data = world.customer_data(customer_id)
    result = customer_history(data, Policies(**policies))
    table = rates or RateBook(reporting)
    rows = customer_month_facts(result, data.customer, rate=table.rate, reporting_currency=reporting,
                                tz=tz, last_month=last_month)
    return {row.month: row for row in rows}


def major(value_micro: int, currency: str = "usd") -> Decimal:
    return micro_to_major(value_micro, currency)


def first_day(month: str) -> date:
    year, mon = (int(p) for p in month.split("-"))
    return date(year, mon, 1)
