"""What a webhook body must be before it is stored: anything else is a 400, never a 500.

A signed body is still input from the network. Stripe retries a 500 for three days, so a
body the database would refuse must be refused at the door with a reason instead:

- nesting deeper than :data:`MAX_DEPTH` (PostgreSQL's ``jsonb`` and Python's recursion
  both have limits; Stripe's own objects nest fewer than ten levels);
- a NUL character in any key or string (PostgreSQL's text and ``jsonb`` reject ``\\u0000``);
- ``NaN`` or ``Infinity`` (not JSON; ``jsonb`` rejects them);
- an id (``id``, or a reference to another object such as ``customer``) longer than the
  255 characters of the id columns, any key longer than that, or a string longer than
  :data:`MAX_STRING`;
- the event's own columns out of their types (``type`` up to 128 characters,
  ``api_version`` up to 64, ``created`` a 64-bit integer).
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 64
MAX_ID = 255
MAX_KEY = 255
MAX_STRING = 65_536
MAX_INT64 = 2**63 - 1
# Keys whose string values are ids of Stripe objects (stored in 255-character columns).
REFERENCE_KEYS = frozenset({
    "id", "customer", "subscription", "subscription_item", "invoice", "price", "product",
    "coupon", "promotion_code", "plan", "schedule", "discount", "invoice_item",
    "latest_invoice", "default_payment_method", "test_clock",
})


_NUL = "the body contains a NUL character, which cannot be stored"


class UnstorableInput(ValueError):
    """The body cannot be stored; the message says why (no content from the body)."""


def _no_constants(name: str) -> Any:
    raise UnstorableInput(f"{name} is not a JSON number")


def parse_event(payload: str) -> dict[str, Any]:
    """The event document of ``payload``, or :class:`UnstorableInput` saying what is wrong."""
    if "\x00" in payload:
        raise UnstorableInput(_NUL)
    try:
        document = json.loads(payload, parse_constant=_no_constants)
    except RecursionError:
        raise UnstorableInput(f"the body nests deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError:
        raise UnstorableInput("body is not JSON") from None
    check_storable(document)
    if (not isinstance(document, dict) or document.get("object") != "event"
            or not isinstance(document.get("id"), str) or not document["id"]
            or not isinstance(document.get("created"), int)
            or isinstance(document.get("created"), bool)):
        raise UnstorableInput("body is not a Stripe event")
    _check_event_columns(document)
    return document


def check_storable(document: Any) -> None:
    """Walk ``document`` without recursion; :class:`UnstorableInput` at the first problem."""
    stack: list[tuple[Any, int, str | None]] = [(document, 1, None)]
    while stack:
        value, depth, key = stack.pop()
        if isinstance(value, dict):
            if depth > MAX_DEPTH:
                raise UnstorableInput(f"the body nests deeper than {MAX_DEPTH} levels")
            for inner_key, inner in value.items():
                if len(inner_key) > MAX_KEY:
                    raise UnstorableInput(f"a key is longer than {MAX_KEY} characters")
                if "\x00" in inner_key:
                    raise UnstorableInput(_NUL)
                stack.append((inner, depth + 1, inner_key))
        elif isinstance(value, list):
            if depth > MAX_DEPTH:
                raise UnstorableInput(f"the body nests deeper than {MAX_DEPTH} levels")
            stack.extend((inner, depth + 1, key) for inner in value)
        elif isinstance(value, str):
            if "\x00" in value:
                raise UnstorableInput(_NUL)
            if key in REFERENCE_KEYS and len(value) > MAX_ID:
                raise UnstorableInput(f"{key!r} is longer than {MAX_ID} characters")
            if len(value) > MAX_STRING:
                raise UnstorableInput(f"a string is longer than {MAX_STRING} characters")


def _check_event_columns(event: dict[str, Any]) -> None:
    if not -MAX_INT64 <= event["created"] <= MAX_INT64:
        raise UnstorableInput("'created' is out of range")
    limits = {"type": 128, "api_version": 64}
    for name, limit in limits.items():
        value = event.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            raise UnstorableInput(f"{name!r} must be a string of at most {limit} characters")
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if isinstance(obj, dict):
        object_type = obj.get("object")
        if object_type is not None and (not isinstance(object_type, str)
                                        or len(object_type) > 64):
            raise UnstorableInput("'data.object.object' must be a string of at most 64 "
                                  "characters")
        object_id = obj.get("id")
        if object_id is not None and not isinstance(object_id, str):
            raise UnstorableInput("'data.object.id' must be a string")
