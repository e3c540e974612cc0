"""Issue 11 in the domain: cases real Stripe accounts contain, from Stripe-shaped objects.

Every expected value is computed by hand in the docstrings of :mod:`tests.real_accounts`.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from nrr.domain.history import customer_history, mrr_at
from nrr.domain.money import micro_to_major
from nrr.domain.movements import customer_month_facts
from nrr.services.fx import RateBook
from nrr.settings import Policies
from tests.normalise.conftest import UTC_TZ
from tests.real_accounts import (
    dunning_account,
    far_trial_account,
    free_upgrade_account,
    inclusive_tax_account,
    two_currency_account,
)
from tests.stripe_world import ts


def _mrr(account: object, cid: str, at: int, **policies: object) -> Decimal:
    data = account.customer_data(cid)  # type: ignore[attr-defined]
    history = customer_history(data, Policies(**policies))  # type: ignore[arg-type]
    return micro_to_major(mrr_at(history, at).get("usd", 0), "usd")


def _facts(account: object, cid: str, *, now: int | None = None, last_month: str | None = None,
           rates: RateBook | None = None, **policies: object) -> dict[str, tuple[Decimal, Decimal, str | None]]:
    data = account.customer_data(cid)  # type: ignore[attr-defined]
    history = customer_history(data, Policies(**policies))  # type: ignore[arg-type]
    rows = customer_month_facts(history, data.customer, rate=(rates or RateBook("usd")).rate,
                                reporting_currency="usd", tz=UTC_TZ, now=now, last_month=last_month)
    return {row.month: (micro_to_major(row.opening_mrr_micro, "usd"),
                        micro_to_major(row.closing_mrr_micro, "usd"), row.movement) for row in rows}


# --------------------------------------------------------------------------- 1. trials months ahead


@pytest.mark.parametrize(("trial_start", "trial_end", "now"), [
    (ts(2026, 1, 10), ts(2026, 3, 10), ts(2026, 1, 20)),   # 59 days, today 20 January
    (ts(2025, 1, 31), ts(2025, 3, 2), ts(2025, 1, 31, 12)),  # 30 days from 31 January
])
def test_a_trial_ending_two_months_ahead_gives_no_fact_yet_and_no_crash(
        trial_start: int, trial_end: int, now: int) -> None:
    account = far_trial_account(trial_start, trial_end)
    assert _facts(account, "cus_trial", now=now) == {}
    # It pays 50.00 from the trial's end: the history already holds it.
    assert _mrr(account, "cus_trial", trial_end) == Decimal(50)
    assert _mrr(account, "cus_trial", trial_end - 1) == Decimal(0)


# --------------------------------------------------------------------------- 2. inclusive tax


def test_tax_inclusive_price_with_a_discount_takes_the_tax_from_the_discounted_amount() -> None:
    account = inclusive_tax_account()
    # 120 incl. 20 % VAT, 50 % off forever: 60 paid, 10 tax, MRR 50 (not 55).
    assert _mrr(account, "cus_vat", ts(2025, 1, 10)) == Decimal(50)
    assert _mrr(account, "cus_vat", ts(2025, 4, 20)) == Decimal(50)


@pytest.mark.parametrize("rates_on", ["item", "subscription"])
def test_tax_from_the_rates_when_no_line_carries_it(rates_on: str) -> None:
    # Only the price is known: 120 x 50 % = 60 after the discount, / 1.2 = 50.00; after the
    # repeating discount ends 120 / 1.2 = 100.00 (the rate, not the first line, forever).
    account = inclusive_tax_account(repeating_months=1, rates_on=rates_on)
    assert _mrr(account, "cus_vat", ts(2025, 1, 10)) == Decimal(50)
    assert _mrr(account, "cus_vat", ts(2025, 2, 10)) == Decimal(100)


def test_an_exclusive_rate_takes_nothing_out() -> None:
    account = inclusive_tax_account(rates_on="item")
    item = account.find("subscriptions", "sub_vat")["items"]["data"][0]
    item["tax_rates"][0]["inclusive"] = False
    # Nothing says the 60 paid includes tax: MRR 60.00.
    assert _mrr(account, "cus_vat", ts(2025, 1, 10)) == Decimal(60)


def test_tax_share_follows_the_lines_not_the_first_line_forever() -> None:
    account = inclusive_tax_account(repeating_months=1)
    # January: 60 paid, 10 tax -> 50. From February (discount ended): 120 paid, 20 tax -> 100.
    assert _mrr(account, "cus_vat", ts(2025, 1, 10)) == Decimal(50)
    assert _mrr(account, "cus_vat", ts(2025, 2, 10)) == Decimal(100)
    facts = _facts(account, "cus_vat", last_month="2025-03")
    assert facts["2025-02"] == (Decimal(50), Decimal(100), "expansion")


# --------------------------------------------------------------------------- 3. proration lines


@pytest.mark.parametrize("credited_items", [True, False])
@pytest.mark.parametrize("reset", [False, True])
@pytest.mark.parametrize("credit_smaller_id", [True, False])
@pytest.mark.parametrize("credit_first", [True, False])
def test_upgrade_from_a_free_plan_counts_from_the_upgrade_whatever_the_order(
        credit_first: bool, credit_smaller_id: bool, reset: bool, credited_items: bool) -> None:
    account = free_upgrade_account(credit_first=credit_first, credit_smaller_id=credit_smaller_id,
                                   reset=reset, credited_items=credited_items)
    assert _mrr(account, "cus_up", ts(2025, 3, 14)) == Decimal(0)
    assert _mrr(account, "cus_up", ts(2025, 3, 15)) == Decimal(50)
    assert _mrr(account, "cus_up", ts(2025, 3, 31)) == Decimal(50)
    assert _mrr(account, "cus_up", ts(2025, 4, 20)) == Decimal(50)
    facts = _facts(account, "cus_up", last_month="2025-04")
    assert facts["2025-03"] == (Decimal(0), Decimal(50), "new")
    assert facts["2025-04"] == (Decimal(50), Decimal(50), None)


# --------------------------------------------------------------------------- 4. T12M constant currency


def test_each_fact_carries_its_opening_at_the_rate_eleven_months_later() -> None:
    account = two_currency_account()
    rates = RateBook.from_rows("usd", [(date(2024, 12, 1), "eur", "1.00"),
                                       (date(2025, 12, 1), "eur", "1.20")])
    data = account.customer_data("cus_eur")
    rows = customer_month_facts(customer_history(data), data.customer, rate=rates.rate,
                                reporting_currency="usd", tz=UTC_TZ, last_month="2025-12")
    january = next(row for row in rows if row.month == "2025-01")
    # 100 EUR at January's rate (1.00) and at December's (1.20).
    assert micro_to_major(january.opening_mrr_micro, "usd") == Decimal(100)
    assert micro_to_major(january.opening_t12m_micro, "usd") == Decimal(120)


# --------------------------------------------------------------------------- 5. past due


@pytest.mark.parametrize("canceled", [False, True])
def test_past_due_policy_stops_at_day_14_whatever_became_of_it_later(canceled: bool) -> None:
    account = dunning_account(canceled=canceled)
    days = {"past_due_churn_after_days": 14}
    assert _mrr(account, "cus_due", ts(2025, 3, 14, 23), **days) == Decimal(100)
    assert _mrr(account, "cus_due", ts(2025, 3, 15), **days) == Decimal(0)
    assert _mrr(account, "cus_due", ts(2025, 3, 20), **days) == Decimal(0)
    assert _mrr(account, "cus_due", ts(2025, 4, 20), **days) == Decimal(0)
    facts = _facts(account, "cus_due", last_month="2025-05", **days)
    assert facts["2025-03"] == (Decimal(100), Decimal(0), "churn")
    assert "2025-04" not in facts


def test_past_due_policy_keeps_the_stop_of_an_invoice_paid_late() -> None:
    account = dunning_account(canceled=False, paid_at=ts(2025, 3, 25))
    days = {"past_due_churn_after_days": 14}
    assert _mrr(account, "cus_due", ts(2025, 3, 20), **days) == Decimal(0)
    assert _mrr(account, "cus_due", ts(2025, 3, 25), **days) == Decimal(100)
    # Without the policy nothing stops.
    assert _mrr(account, "cus_due", ts(2025, 3, 20)) == Decimal(100)


def test_a_resume_never_moves_a_pause_the_events_dated() -> None:
    from tests.normalise.conftest import facts, mrr
    from tests.real_accounts import paused_world

    world = paused_world(seen=True)
    assert mrr(world, ts(2025, 3, 9)) == Decimal(100)
    assert mrr(world, ts(2025, 3, 10)) == Decimal(0)
    assert mrr(world, ts(2025, 4, 10)) == Decimal(0)
    assert mrr(world, ts(2025, 5, 5)) == Decimal(100)
    rows = facts(world, last_month="2025-06")
    assert (rows["2025-03"].movement, rows["2025-05"].movement) == ("churn", "reactivation")
    assert "2025-04" not in rows
