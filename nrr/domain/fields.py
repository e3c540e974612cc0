"""Typed reads of one field of a Stripe-shaped dict, shared by the parsers and the mirror.

Each reader returns the value (or ``None`` when it is absent or null) and raises
:class:`FieldError` naming the field when it has the wrong type: the caller turns that into
a Skip (the normaliser) or a quarantined object (the mirror), never a crash.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any


class FieldError(ValueError):
    """A field is missing or has the wrong type; the message names it."""


def _kind(value: Any) -> str:
    return type(value).__name__


def text(obj: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise FieldError(f"missing {key}")
        return None
    if not isinstance(value, str):
        raise FieldError(f"{key} is {_kind(value)}, expected a string: {value!r:.80}")
    return value


def integer(obj: Mapping[str, Any], key: str, *, required: bool = False) -> int | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise FieldError(f"missing {key}")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(f"{key} is {_kind(value)}, expected an integer: {value!r:.80}")
    return value


def flag(obj: Mapping[str, Any], key: str, default: bool = False) -> bool:
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise FieldError(f"{key} is {_kind(value)}, expected a boolean: {value!r:.80}")
    return value


def mapping(obj: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    value = obj.get(key)
    if value is None or type(value) is dict:  # exact type first: ABC checks are slow
        return value
    if not isinstance(value, Mapping):
        raise FieldError(f"{key} is {_kind(value)}, expected an object: {value!r:.80}")
    return value


def entries(obj: Mapping[str, Any], key: str) -> list[Any]:
    """A list field, or the ``data`` of an embedded list object; absent is empty."""
    value = obj.get(key)
    if value is None:
        return []
    if type(value) is list:
        return value
    if isinstance(value, Mapping) and isinstance(value.get("data"), list):
        return list(value["data"])
    if not isinstance(value, list):
        raise FieldError(f"{key} is {_kind(value)}, expected a list: {value!r:.80}")
    return value


def decimal(obj: Mapping[str, Any], key: str) -> Decimal | None:
    """A finite decimal from a string or a number (``unit_amount_decimal`` and the like)."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        raise FieldError(f"{key} is {_kind(value)}, expected a decimal")
    try:
        result = Decimal(str(value))
    except InvalidOperation as exc:
        raise FieldError(f"{key} {value!r:.80} is not a decimal") from exc
    if not result.is_finite():
        raise FieldError(f"{key} {value!r:.80} is not a finite decimal")
    return result


def ref(value: Any, what: str) -> str | None:
    """An expandable field: an id, an expanded object with an ``id``, or null."""
    if value is None:
        return None
    if isinstance(value, str):
        return value or None
    if (type(value) is dict or isinstance(value, Mapping)) and isinstance(value.get("id"), str) \
            and value["id"]:
        return str(value["id"])
    raise FieldError(f"{what} is neither an id nor an object with an id: {value!r:.80}")


def currency(value: str | None, what: str = "currency") -> str | None:
    """A three-letter ISO code, lower-cased."""
    if value is None:
        return None
    code = value.strip().lower()
    if len(code) != 3 or not code.isalpha():
        raise FieldError(f"{what} {value!r:.20} is not a 3-letter code")
    return code
