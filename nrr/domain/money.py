"""Money: integers in minor units plus a currency; normalised MRR as exact micro-minor integers.

``MICRO`` scales a minor unit: 1 USD = 100 minor units = 100 * MICRO micro units. Domain
arithmetic is done with ``Fraction``/``Decimal`` and turned into micro integers only when
stored, with round-half-even. Never divide by a fixed 100: use :func:`minor_exponent`.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction

MICRO = 1_000_000

ZERO_DECIMAL = frozenset(
    "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split()
)
THREE_DECIMAL = frozenset("bhd jod kwd omr tnd".split())


def minor_exponent(currency: str) -> int:
    """Digits after the decimal point of ``currency``'s minor unit (0, 2 or 3)."""
    code = currency.lower()
    if code in ZERO_DECIMAL:
        return 0
    if code in THREE_DECIMAL:
        return 3
    return 2


def to_micro(amount_minor: Fraction | Decimal | int) -> int:
    """Exact minor-unit amount to micro-minor integer, rounding half to even."""
    value = Fraction(amount_minor) * MICRO
    floor = value.numerator // value.denominator
    rest = value - floor
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and floor % 2 == 1):
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
    scale = Fraction(10) ** (minor_exponent(to_currency) - minor_exponent(from_currency))
    return to_micro(Fraction(value_micro) * Fraction(Decimal(rate)) * scale / MICRO)
