"""Retention metrics from aggregated sums, exactly as docs/revenue-definitions.md defines them.

Pure functions: integers in (micro-minor units of the reporting currency, customer counts)
in, exact :class:`~fractions.Fraction` values out. Nothing is rounded here except by the
``*_display`` helpers used for output. A zero denominator never raises: the result is a
:class:`Ratio` whose ``value`` is ``None`` and whose ``reason`` says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

PERCENT_PLACES = 3
RATIO_PLACES = 3

# (lower bound in percent, band); checked top down on the unrounded value.
BANDS: tuple[tuple[int, str], ...] = (
    (130, "exceptional"),
    (110, "strong"),
    (100, "good"),
    (90, "concerning"),
)
LOWEST_BAND = "critical"

MOVEMENTS = ("new", "reactivation", "expansion", "contraction", "churn")


@dataclass(frozen=True)
class Ratio:
    """An exact ratio (``value``, a fraction: 1.06 for 106 %) or None with the reason."""

    value: Fraction | None
    reason: str | None = None

    @property
    def is_null(self) -> bool:
        return self.value is None

    def percent(self) -> Fraction | None:
        return None if self.value is None else self.value * 100


def ratio(numerator: int | Fraction, denominator: int | Fraction, *, null_reason: str) -> Ratio:
    """``numerator / denominator`` exactly; ``null_reason`` when the denominator is zero."""
    if denominator == 0:
        return Ratio(None, null_reason)
    return Ratio(Fraction(numerator) / Fraction(denominator))


def band(value: Ratio | Fraction | None) -> str | None:
    """The band of an NRR (or GRR) value, from the unrounded fraction (1.3 -> exceptional)."""
    fraction = value.value if isinstance(value, Ratio) else value
    if fraction is None:
        return None
    percent = fraction * 100
    for lower, name in BANDS:
        if percent >= lower:
            return name
    return LOWEST_BAND


def round_decimal(value: Fraction, places: int) -> Decimal:
    """Round an exact fraction half to even at ``places`` decimals (display only)."""
    return Decimal(round_micro(value * 10**places)).scaleb(-places)


def percent_display(value: Ratio, places: int = PERCENT_PLACES) -> float | None:
    """The ratio as a percent rounded to ``places`` decimals (106.0, 101.375), or None."""
    percent = value.percent()
    return None if percent is None else float(round_decimal(percent, places))


def ratio_display(value: Ratio, places: int = RATIO_PLACES) -> float | None:
    """The ratio itself rounded to ``places`` decimals (a quick ratio of 2.5), or None."""
    return None if value.value is None else float(round_decimal(value.value, places))


def round_micro(value: Fraction) -> int:
    """An exact amount in micro units rounded half to even to an integer."""
    floor = value.numerator // value.denominator
    rest = value - floor
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and floor % 2 == 1):
        return floor + 1
    return floor


# --------------------------------------------------------------------------- monthly


@dataclass(frozen=True)
class MonthTotals:
    """One month's sums (micro units of the reporting currency) and customer counts.

    ``opening``/``closing`` are every customer's MRR at the month's opening and closing;
    the movements are the per-customer net movements of docs/revenue-definitions.md.
    """

    opening: int = 0
    new: int = 0
    reactivation: int = 0
    expansion: int = 0
    contraction: int = 0
    churn: int = 0
    closing: int = 0
    fx_impact: int = 0
    customers_opening: int = 0
    customers_new: int = 0
    customers_reactivated: int = 0
    customers_expanded: int = 0
    customers_contracted: int = 0
    customers_churned: int = 0
    customers_closing: int = 0

    def __add__(self, other: MonthTotals) -> MonthTotals:
        return MonthTotals(**{name: getattr(self, name) + getattr(other, name)
                              for name in self.__dataclass_fields__})

    @property
    def identity_gap(self) -> int:
        """closing - (opening + new + reactivation + expansion - contraction - churn); 0 when sound."""
        return self.closing - (self.opening + self.new + self.reactivation + self.expansion
                               - self.contraction - self.churn)


_MOVEMENT_COUNTS = {"new": "customers_new", "reactivation": "customers_reactivated",
                    "expansion": "customers_expanded", "contraction": "customers_contracted",
                    "churn": "customers_churned"}


def add_group_to_totals(totals: MonthTotals, movement: str | None, *, opening: int,
                        closing: int, amount: int, customers: int, customers_opening: int,
                        customers_closing: int) -> MonthTotals:
    """``totals`` with a group of customers' projected months of one ``movement`` folded
    in (their sums: the stored rows added up by SQL, as :func:`add_to_totals` would one by
    one)."""
    fields: dict[str, int] = {"opening": opening, "closing": closing,
                              "customers_opening": customers_opening,
                              "customers_closing": customers_closing}
    if movement in _MOVEMENT_COUNTS:
        fields[movement] = amount  # type: ignore[index]
        fields[_MOVEMENT_COUNTS[movement]] = customers  # type: ignore[index]
    return totals + MonthTotals(**fields)


NO_OPENING = "no paying customers at the opening of {month}: the cohort is empty"
NO_MOVEMENT_DOWN = "no contraction or churn in {month}: the quick ratio has no denominator"
NO_CUSTOMERS = "no paying customers at the closing of {month}"


@dataclass(frozen=True)
class MonthlyMetrics:
    nrr: Ratio
    grr: Ratio
    logo_churn_rate: Ratio
    revenue_churn_rate: Ratio
    quick_ratio: Ratio
    arpa_micro: Fraction | None
    arpa_reason: str | None
    mrr_micro: int
    arr_micro: int


def nrr(opening: int, expansion: int, contraction: int, churn: int, *,
        null_reason: str = "no paying customers at the opening: the cohort is empty") -> Ratio:
    """(opening + expansion - contraction - churn) / opening; new and reactivated are outside."""
    return ratio(opening + expansion - contraction - churn, opening, null_reason=null_reason)


def grr(opening: int, contraction: int, churn: int, *,
        null_reason: str = "no paying customers at the opening: the cohort is empty") -> Ratio:
    """(opening - contraction - churn) / opening; never above 100 %."""
    return ratio(opening - contraction - churn, opening, null_reason=null_reason)


def monthly_metrics(totals: MonthTotals, month: str = "the month") -> MonthlyMetrics:
    """Every monthly metric of one month (total or segment) from its sums."""
    empty = NO_OPENING.format(month=month)
    arpa = ratio(totals.closing, totals.customers_closing,
                 null_reason=NO_CUSTOMERS.format(month=month))
    return MonthlyMetrics(
        nrr=nrr(totals.opening, totals.expansion, totals.contraction, totals.churn,
                null_reason=empty),
        grr=grr(totals.opening, totals.contraction, totals.churn, null_reason=empty),
        logo_churn_rate=ratio(totals.customers_churned, totals.customers_opening,
                              null_reason=empty),
        revenue_churn_rate=ratio(totals.churn + totals.contraction, totals.opening,
                                 null_reason=empty),
        quick_ratio=ratio(totals.new + totals.reactivation + totals.expansion,
                          totals.contraction + totals.churn,
                          null_reason=NO_MOVEMENT_DOWN.format(month=month)),
        arpa_micro=arpa.value,
        arpa_reason=arpa.reason,
        mrr_micro=totals.closing,
        arr_micro=12 * totals.closing,
    )


# --------------------------------------------------------------------------- trailing twelve months


@dataclass(frozen=True)
class CohortTotals:
    """A trailing-twelve-month cohort: customers paying at the opening of M-11, seen at M.

    ``closing`` is their closing MRR of M (a member who left and came back counts with
    it); ``kept`` is the sum of min(closing, opening) per member. Both ends are in
    constant currency (converted at the rate of M's first day); ``fx_impact`` is the
    window's currency effect: the cohort's opening at M's rate minus at M-11's own rate.
    ``expansion``, ``contraction`` and ``churn`` compare each member's closing of M with
    its opening of M-11, so opening + expansion - contraction - churn = closing.
    """

    opening: int = 0
    closing: int = 0
    kept: int = 0
    expansion: int = 0
    contraction: int = 0
    churn: int = 0
    members: int = 0
    members_paying: int = 0
    members_churned: int = 0
    fx_impact: int = 0

    def __add__(self, other: CohortTotals) -> CohortTotals:
        return CohortTotals(**{name: getattr(self, name) + getattr(other, name)
                               for name in self.__dataclass_fields__})


@dataclass(frozen=True)
class TrailingMetrics:
    nrr: Ratio
    grr: Ratio
    logo_churn_rate: Ratio


def trailing_metrics(cohort: CohortTotals, first_month: str = "the first month") -> TrailingMetrics:
    """T12M NRR = closing(M) / opening(M-11); GRR = sum of min(closing, opening) / opening."""
    empty = NO_OPENING.format(month=first_month)
    return TrailingMetrics(
        nrr=ratio(cohort.closing, cohort.opening, null_reason=empty),
        grr=ratio(cohort.kept, cohort.opening, null_reason=empty),
        logo_churn_rate=ratio(cohort.members_churned, cohort.members, null_reason=empty),
    )


def cohort_retention(base: int, closing: int, kept: int) -> tuple[Ratio, Ratio]:
    """Net and gross MRR retention of a first-paid-month cohort against its base MRR."""
    reason = "the cohort had no MRR at the close of its first month"
    return (ratio(closing, base, null_reason=reason), ratio(kept, base, null_reason=reason))
