"""Compute: one customer's records through the domain (history, then monthly facts) into
timeline, ledger and fact rows in the write step's column orders."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from nrr.db.bulk import JsonText
from nrr.domain import history as domain_history
from nrr.domain import movements as domain_movements
from nrr.domain.months import month_of
from nrr.domain.movements import FactorLookup
from nrr.domain.records import CustomerData, Skip
from nrr.services.fx import RateBook
from nrr.services.isolation import LeftOut
from nrr.services.recompute.common import RecomputeResult, add_seconds
from nrr.services.recompute.load import Catalogue
from nrr.settings import Settings

# ``json.dumps(value, separators=(",", ":"), default=str)``, as ``bulk_insert`` writes JSON.
_encode_json = json.JSONEncoder(separators=(",", ":"), default=str).encode
_STATE_JSON: dict[tuple[Any, ...], JsonText] = {}


def _state_json(state: Mapping[str, Any] | None) -> JsonText | None:
    """A ledger item state (``{"price", "quantity", "discount", "status"}``) as JSON text."""
    if state is None:
        return None
    if len(state) != 4 or not isinstance(state.get("discount"), list):
        return JsonText(_encode_json(state))
    key = (state.get("price"), state.get("quantity"), tuple(state["discount"]),
           state.get("status"), tuple(state))
    found = _STATE_JSON.get(key)
    if found is None:
        if len(_STATE_JSON) > 100_000:
            _STATE_JSON.clear()
        found = _STATE_JSON[key] = JsonText(_encode_json(state))
    return found


def customer_rows(data: CustomerData, settings: Settings, rates: RateBook, *, now: int,
                  catalogue: Catalogue, timings: dict[str, float] | None = None,
                  factor: FactorLookup | None = None
                  ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]],
                             list[tuple[Any, ...]], list[Skip], bool]:
    """Timeline, ledger and fact rows of one customer (tuples in the column orders above).

    ``factor``: a shared :func:`nrr.domain.movements.factor_lookup` over ``rates`` (one per
    recompute, so conversion factors are computed once per currency and month)."""
    tz = settings.tz
    clock = time.perf_counter()
    result = domain_history.customer_history(data, settings.policies, now=now)
    if timings is not None:
        add_seconds(timings, "history", clock)
    if result.excluded:
        return [], [], [], list(result.skips), True
    cid = data.customer.id
    timeline = [(cid, currency, at, mrr)
                for currency, steps in result.points.items() for at, mrr in steps]
    # JSON columns serialised here (item states repeat: memoised), as ``bulk_insert`` would.
    ledger = [(month_of(ch.effective_at, tz), ch.effective_at, ch.customer_id, ch.subscription_id,
               ch.subscription_item_id, ch.cause, ch.currency, ch.mrr_before_micro,
               ch.mrr_after_micro, _state_json(ch.before), _state_json(ch.after),
               None if ch.stripe_ids is None else JsonText(_encode_json(ch.stripe_ids)))
              for ch in result.ledger]
    clock = time.perf_counter()
    if factor is None:
        factor = domain_movements.factor_lookup(rates.rate, settings.reporting_currency.lower())
    # The customer's metadata repeats on every month: serialise it once.
    metadata = dict(data.customer.metadata) or None
    metadata_text = None if metadata is None else JsonText(json.dumps(metadata, sort_keys=True))
    facts: list[tuple[Any, ...]] = domain_movements.customer_month_fact_rows(  # type: ignore[assignment]
        result, data.customer, factor=factor,
        reporting_currency=settings.reporting_currency, tz=tz, now=now,
        product_names=catalogue.product_names, metadata=metadata_text)
    if timings is not None:
        add_seconds(timings, "facts", clock)
    return timeline, ledger, facts, list(result.skips), False


def compute_batch(session: Session, batch: dict[str, CustomerData | LeftOut], settings: Settings, rates: RateBook,
                   now_ts: int, catalogue: Catalogue, result: RecomputeResult,
                   timeline: list[tuple[Any, ...]], ledger: list[tuple[Any, ...]],
                   facts: list[tuple[Any, ...]], factor: FactorLookup | None = None) -> None:
    if not batch:
        return
    if factor is None:
        factor = domain_movements.factor_lookup(rates.rate, settings.reporting_currency.lower())
    readable: dict[str, CustomerData] = {}
    for cid, entry in batch.items():
        if isinstance(entry, LeftOut):
            result.customers += 1
            result.left_out.append(entry)
        else:
            readable[cid] = entry
    for cid, data in readable.items():
        try:
            t_rows, l_rows, f_rows, skips, excluded = customer_rows(
                data, settings, rates, now=now_ts, catalogue=catalogue, timings=result.timings,
                factor=factor)
        except Exception as exc:  # noqa: BLE001 - one customer never blanks an account
            result.customers += 1
            result.left_out.append(LeftOut.from_error(cid, "compute", exc, data))
            continue
        result.customers += 1
        result.skips.extend(skips)
        if excluded:
            result.excluded += 1
            continue
        timeline.extend(t_rows)
        ledger.extend(l_rows)
        facts.extend(f_rows)

