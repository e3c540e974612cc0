"""Money: integers in minor units plus a currency; normalised MRR as exact micro-minor integers.

``MICRO`` scales a minor unit: 1 USD = 100 minor units = 100 * MICRO micro units. Domain
arithmetic is done with ``Fraction``/``Decimal`` and turned into micro integers only when
stored, with round-half-even. Never divide by a fixed 100: use :func:`minor_exponent`.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from functools import lru_cache

MICRO = 1_000_000

ZERO_DECIMAL = frozenset(["bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf",
                          "ugx", "vnd", "vuv", "xaf", "xof", "xpf"])
THREE_DECIMAL = frozenset(["bhd", "jod", "kwd", "omr", "tnd"])


# Exchange rates are positive numbers within these bounds (definitions: "Exchange rates
# are positive numbers within 1e-9 .. 1e9"); anything else is refused where it enters.
RATE_MIN = Decimal("1e-9")
RATE_MAX = Decimal("1e9")


def rate_problem(text: object) -> str | None:
    """Why ``text`` (a rate as given: string, Decimal, number) is not a usable exchange
    rate, or None when it is one. Cheap on any input: a huge exponent is compared, never
    expanded (an exact fraction of ``1e999999999`` would take forever)."""
    try:
        rate = text if isinstance(text, Decimal) else Decimal(str(text).strip())
    except (ArithmeticError, ValueError):
        return f"rate {text!r} is not a number"
    if not rate.is_finite():
        return f"rate {text!r} is not a finite number"
    if rate <= 0:
        return f"rate {text!r} must be a positive number"
    if not RATE_MIN <= rate <= RATE_MAX:
        return f"rate {text!r} is outside {RATE_MIN} .. {RATE_MAX}"
    return None


def minor_exponent(currency: str) -> int:
    """Digits after the decimal point of ``currency``'s minor unit (0, 2 or 3)."""
    code = currency.lower()
    if code in ZERO_DECIMAL:
        return 0
    if code in THREE_DECIMAL:
        return 3
    return 2


def to_micro(amount_minor: Fraction | Decimal | int) -> int:
    """Exact minor-unit amount to micro-minor integer, rounding half to even (integer
    arithmetic on the exact ratio)."""
    if type(amount_minor) is int:
        return amount_minor * MICRO
    if isinstance(amount_minor, Fraction):
        numerator, denominator = amount_minor.numerator, amount_minor.denominator
    else:
        numerator, denominator = Fraction(amount_minor).as_integer_ratio()
    return _round_half_even(numerator * MICRO, denominator)


def _round_half_even(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` (denominator > 0) rounded half to even, in integers."""
    floor, rest = divmod(numerator, denominator)
    twice = 2 * rest
    if twice > denominator or (twice == denominator and floor % 2 == 1):
        return floor + 1
    return floor


def micro_to_major(value_micro: int, currency: str) -> Decimal:
    """Micro-minor integer to an exact Decimal in major units."""
    return Decimal(value_micro) / (Decimal(MICRO) * (Decimal(10) ** minor_exponent(currency)))


def major_rounded(value_micro: int, currency: str) -> float:
    """Major units rounded to the currency's minor unit (cents), for JSON output."""
    exp = minor_exponent(currency)
    quantum = Decimal(1).scaleb(-exp)
    return float(micro_to_major(value_micro, currency).quantize(quantum, rounding=ROUND_HALF_EVEN))


def convert_micro(value_micro: int, from_currency: str, to_currency: str, rate: Decimal | str) -> int:
    """Convert a micro-minor amount with ``rate`` = to-currency major units per from-currency unit."""
    if from_currency.lower() == to_currency.lower():
        return value_micro
    return convert_micro_by(value_micro, conversion_factor(from_currency, to_currency, rate))


@lru_cache(maxsize=65_536)
def conversion_factor(from_currency: str, to_currency: str, rate: Decimal | str) -> tuple[int, int]:
    """The exact factor ``(numerator, denominator)`` (denominator > 0) that turns a
    ``from_currency`` micro-minor amount into ``to_currency`` micro-minor units: the rate
    times the ratio of the minor units. Cached: a recompute converts millions of amounts
    at a few dozen (currency, month) rates."""
    if from_currency.lower() == to_currency.lower():
        return 1, 1
    problem = rate_problem(rate)
    if problem is not None:  # never turn an unbounded Decimal into an exact fraction
        raise ValueError(f"{from_currency.upper()} -> {to_currency.upper()}: {problem}")
    factor = (Fraction(Decimal(rate))
              * Fraction(10) ** (minor_exponent(to_currency) - minor_exponent(from_currency)))
    return factor.numerator, factor.denominator


def convert_micro_by(value_micro: int, factor: tuple[int, int]) -> int:
    """``value_micro`` times ``factor`` rounded half to even, in integers (the same result
    as :func:`to_micro` of the exact product)."""
    numerator, denominator = factor
    if denominator == 1:
        return value_micro * numerator
    return _round_half_even(value_micro * numerator, denominator)
