"""How numbers and ledger causes are written on the page (plain text; the templates escape)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from nrr.domain.money import minor_exponent


def num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def money(value: Any, currency: str) -> str:
    number = num(value)
    if number is None:
        return "–"
    return f"{number:,.{minor_exponent(currency)}f}"


def short_money(value: float) -> str:
    magnitude = abs(value)
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if magnitude >= limit:
            return f"{value / limit:,.1f}{suffix}"
    return f"{value:,.0f}"


def pct(value: Any, digits: int = 2) -> str:
    number = num(value)
    return "–" if number is None else f"{number:,.{digits}f} %"


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _short_value(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def _change_text(key: str, before: Any, after: Any) -> str | None:
    if before == after or (before in (None, [], {}) and after in (None, [], {})):
        return None
    if before in (None, [], {}):
        return f"{key} {_short_value(after)}"
    if after in (None, [], {}):
        return f"{key} {_short_value(before)} removed"
    return f"{key} {_short_value(before)} → {_short_value(after)}"


def causes_text(value: Any) -> str:
    """Ledger causes as one line each: cause, MRR change, what changed, the Stripe ids."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        cause = str(value.get("cause") or value.get("kind") or "")
        change = num(value.get("change"))
        head = f"{cause} {change:+,.2f}" if change is not None else cause
        before = _mapping(value.get("before"))
        after = _mapping(value.get("after"))
        changed = [text for key in ("price", "quantity", "discount", "status")
                   if (text := _change_text(key, before.get(key), after.get(key)))]
        ids = _mapping(value.get("stripe_ids"))
        shown_ids = [str(v) for k, v in ids.items() if v and k != "price"]
        if not shown_ids and value.get("subscription_id"):
            shown_ids = [str(value["subscription_id"])]
        text = head + (f": {', '.join(changed)}" if changed else "")
        return text + (f" [{', '.join(dict.fromkeys(shown_ids))}]" if shown_ids else "")
    if isinstance(value, Iterable):
        return "; ".join(t for t in (causes_text(v) for v in value) if t)
    return str(value)


def _named(key: str, value: Any, names: Mapping[str, str]) -> Any:
    """A price id with its nickname beside it (``Pro monthly (price_1)``)."""
    if key == "price" and isinstance(value, str) and names.get(value):
        return f"{names[value]} ({value})"
    return value


def readable_causes(value: Any, stripe_url: str,
                    price_names: Mapping[str, str] | None = None) -> list[dict[str, str]]:
    """Ledger causes for people: what happened, what changed, the change with its currency
    code, and one link to the invoice (or subscription) on the Stripe dashboard.

    Entries that did not change MRR (0.00) are left out; ids stay in the link, not the text.
    """
    names = price_names or {}
    entries = value if isinstance(value, list) else [value] if isinstance(value, Mapping) else []
    shown = []
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        change = num(entry.get("change"))
        if change is not None and round(change, 6) == 0:
            continue
        cause = str(entry.get("cause") or entry.get("kind") or "change").replace("_", " ")
        before, after = _mapping(entry.get("before")), _mapping(entry.get("after"))
        changed = [text for key in ("price", "quantity", "discount", "status")
                   if (text := _change_text(key, _named(key, before.get(key), names),
                                            _named(key, after.get(key), names)))]
        currency = str(entry.get("currency") or "").upper()
        text = cause + (": " + ", ".join(changed) if changed else "")
        if change is not None:
            sign = "+" if change > 0 else "−"
            text += f" ({sign}{money(abs(change), currency or 'usd')} {currency})".replace(" )", ")")
        ids = _mapping(entry.get("stripe_ids"))
        invoice = ids.get("invoice")
        subscription = ids.get("subscription") or entry.get("subscription_id")
        link = (f"{stripe_url}invoices/{invoice}" if invoice
                else f"{stripe_url}subscriptions/{subscription}" if subscription else "")
        shown.append({"text": text, "link": link,
                      "link_text": "invoice" if invoice else "subscription"})
    return shown
