"""The pure metric functions: worked examples, bands on unrounded values, null with reason."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nrr.domain import metrics
from nrr.domain.metrics import CohortTotals, MonthTotals

# docs/revenue-definitions.md, "Worked examples the code must reproduce exactly".
WORKED_EXAMPLES = [
    (50_000, 8_000, 2_000, 3_000, 106.0, 90.0),
    (100_000, 15_000, 5_000, 8_000, 102.0, 87.0),
    (100_000, 15_000, 3_000, 5_000, 107.0, 92.0),
    (5_000, 400, 150, 300, 99.0, 91.0),
    (2_400, 150, 60, 57, 101.375, 95.125),
    (100, 20, 0, 10, 110.0, 90.0),
    (100, 15, 0, 20, 95.0, 80.0),
]


@pytest.mark.parametrize(("opening", "expansion", "contraction", "churn", "nrr", "grr"),
                         WORKED_EXAMPLES)
def test_worked_examples_monthly(opening: int, expansion: int, contraction: int, churn: int,
                                 nrr: float, grr: float) -> None:
    scale = 100 * 1_000_000  # usd major units to micro-minor
    totals = MonthTotals(opening=opening * scale, expansion=expansion * scale,
                         contraction=contraction * scale, churn=churn * scale,
                         closing=(opening + expansion - contraction - churn) * scale)
    computed = metrics.monthly_metrics(totals, "2026-03")
    assert metrics.percent_display(computed.nrr) == nrr
    assert metrics.percent_display(computed.grr) == grr


def test_trailing_metrics_of_a_hand_counted_cohort() -> None:
    """Members paying at the opening of M-11 and their closing of M, counted by hand:
    cus_a 100 -> 120, cus_b 100 -> 50, cus_c 100 -> 0, cus_d 200 -> 200 (left and came
    back). Opening 500, closing 370; sum of min(closing, opening) = 100 + 50 + 0 + 200 =
    350. NRR 370 / 500 = 74 %, GRR 350 / 500 = 70 %, one churned member of four: 25 %.
    (The worked examples of the definitions run through the whole pipeline, from Stripe
    objects, in tests/report/test_report_from_stripe.py.)"""
    cohort = CohortTotals(opening=500, closing=370, kept=350, expansion=20, contraction=50,
                          churn=100, members=4, members_paying=3, members_churned=1)
    computed = metrics.trailing_metrics(cohort, "2025-04")
    assert metrics.percent_display(computed.nrr) == 74.0
    assert metrics.percent_display(computed.grr) == 70.0
    assert metrics.percent_display(computed.logo_churn_rate) == 25.0
    assert metrics.band(computed.nrr) == "critical"


def test_new_and_reactivated_are_outside_the_cohort() -> None:
    base = MonthTotals(opening=1000, expansion=100, closing=1100)
    with_arrivals = MonthTotals(opening=1000, expansion=100, new=500, reactivation=300,
                                closing=1900)
    assert metrics.monthly_metrics(base).nrr == metrics.monthly_metrics(with_arrivals).nrr


@pytest.mark.parametrize(("percent", "band"), [
    (Fraction(130), "exceptional"), (Fraction(250), "exceptional"),
    (Fraction(12999999, 100000), "strong"), (Fraction(110), "strong"),
    (Fraction(10999999, 100000), "good"), (Fraction(100), "good"),
    (Fraction(9999999, 100000), "concerning"), (Fraction(90), "concerning"),
    (Fraction(8999999, 100000), "critical"), (Fraction(0), "critical"),
])
def test_bands_use_unrounded_values(percent: Fraction, band: str) -> None:
    assert metrics.band(metrics.Ratio(percent / 100)) == band


def test_band_is_not_taken_from_the_rounded_display() -> None:
    # 99.9996 % shows as 100.000 but is still below 100: concerning, not good.
    value = metrics.Ratio(Fraction(999996, 1000000))
    assert metrics.percent_display(value) == 100.0
    assert metrics.band(value) == "concerning"


def test_zero_opening_gives_null_with_reason_not_an_error() -> None:
    computed = metrics.monthly_metrics(MonthTotals(new=500, closing=500,
                                                   customers_new=1, customers_closing=1),
                                       "2026-01")
    for value in (computed.nrr, computed.grr, computed.logo_churn_rate,
                  computed.revenue_churn_rate):
        assert value.value is None
        assert "no paying customers at the opening of 2026-01" in (value.reason or "")
    assert metrics.band(computed.nrr) is None
    assert metrics.percent_display(computed.nrr) is None
    assert computed.quick_ratio.value is None and "no contraction or churn" in (
        computed.quick_ratio.reason or "")
    assert computed.arpa_micro == 500


def test_other_monthly_metrics() -> None:
    totals = MonthTotals(opening=1000, new=200, reactivation=100, expansion=100, contraction=50,
                         churn=150, closing=1200, customers_opening=10, customers_churned=2,
                         customers_closing=12)
    computed = metrics.monthly_metrics(totals)
    assert totals.identity_gap == 0
    assert computed.logo_churn_rate.value == Fraction(2, 10)
    assert computed.revenue_churn_rate.value == Fraction(200, 1000)
    assert computed.quick_ratio.value == Fraction(400, 200)
    assert computed.arpa_micro == Fraction(1200, 12)
    assert computed.arr_micro == 14400
    assert computed.mrr_micro == 1200


def test_grr_never_above_100() -> None:
    computed = metrics.monthly_metrics(MonthTotals(opening=100, expansion=900, closing=1000))
    assert computed.grr.value == 1
    assert metrics.percent_display(computed.nrr) == 1000.0


def test_percent_display_rounds_half_even_to_three_places() -> None:
    assert metrics.percent_display(metrics.Ratio(Fraction(1, 3))) == 33.333
    assert metrics.percent_display(metrics.Ratio(Fraction(2, 3))) == 66.667
    # Ties go to the even last digit: 100.0005 -> 100.000, 100.0015 -> 100.002.
    assert metrics.percent_display(metrics.Ratio(Fraction(1000005, 1000000))) == 100.0
    assert metrics.percent_display(metrics.Ratio(Fraction(1000015, 1000000))) == 100.002
    assert metrics.percent_display(metrics.Ratio(Fraction(1000016, 1000000))) == 100.002


amounts = st.integers(min_value=0, max_value=10**15)


@given(st.lists(st.tuples(amounts, amounts), min_size=1, max_size=30))
def test_segments_add_up_to_the_total(pairs: list[tuple[int, int]]) -> None:
    """Sums per customer added in any grouping give the same total and the same NRR."""

    def customer(o: int, c: int) -> MonthTotals:
        return MonthTotals(
            opening=o, closing=c, new=c if o == 0 else 0,
            expansion=c - o if 0 < o < c else 0, contraction=o - c if 0 < c < o else 0,
            churn=o if o > 0 and c == 0 else 0, customers_opening=int(o > 0),
            customers_closing=int(c > 0))

    rows = [customer(o, c) for o, c in pairs]
    total = sum(rows, MonthTotals())
    evens = sum(rows[::2], MonthTotals())
    odds = sum(rows[1::2], MonthTotals())
    assert evens + odds == total
    assert total.identity_gap == 0
    if not total.opening:
        assert metrics.monthly_metrics(total).nrr.value is None
