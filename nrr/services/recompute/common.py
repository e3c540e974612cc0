"""What every step of a recompute shares: the tables, the row layouts, the result."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table

from models.derived import CustomerMonthFact, LedgerEntry, MrrTimelinePoint
from models.mirror import (
    DirtyCustomer,
    QuarantinedObject,
    StripeCoupon,
    StripeCustomer,
    StripeInvoiceLine,
    StripePrice,
    StripeProduct,
    StripeSubscription,
)
from nrr.domain.records import Skip
from nrr.services.isolation import LeftOut

T_CUSTOMERS: Table = StripeCustomer.__table__  # type: ignore[assignment]
T_SUBSCRIPTIONS: Table = StripeSubscription.__table__  # type: ignore[assignment]
T_LINES: Table = StripeInvoiceLine.__table__  # type: ignore[assignment]
T_PRICES: Table = StripePrice.__table__  # type: ignore[assignment]
T_PRODUCTS: Table = StripeProduct.__table__  # type: ignore[assignment]
T_COUPONS: Table = StripeCoupon.__table__  # type: ignore[assignment]
T_TIMELINE: Table = MrrTimelinePoint.__table__  # type: ignore[assignment]
T_LEDGER: Table = LedgerEntry.__table__  # type: ignore[assignment]
T_FACTS: Table = CustomerMonthFact.__table__  # type: ignore[assignment]
T_DIRTY: Table = DirtyCustomer.__table__  # type: ignore[assignment]
T_QUARANTINE: Table = QuarantinedObject.__table__  # type: ignore[assignment]

CHUNK = 2000
FLUSH_ROWS = 1_000_000

TIMELINE_COLUMNS = ["customer_id", "currency", "effective_at", "mrr_micro"]
LEDGER_COLUMNS = ["month", "effective_at", "customer_id", "subscription_id",
                  "subscription_item_id", "cause", "currency", "mrr_before_micro",
                  "mrr_after_micro", "before", "after", "stripe_ids"]
FACT_COLUMNS = ["month", "customer_id", "opening_mrr_micro", "closing_mrr_micro", "movement",
                "movement_micro", "fx_impact_micro", "first_paid_month", "currency", "plan",
                "product", "country", "metadata", "opening_t12m_micro"]


class RecomputeError(Exception):
    """The recompute cannot finish (for example a missing exchange rate); nothing was written."""


@dataclass
class RecomputeResult:
    kind: str
    customers: int = 0
    excluded: int = 0
    skipped: int = 0
    lines_read: int = 0
    timeline_points: int = 0
    ledger_entries: int = 0
    facts: int = 0
    seconds: float = 0.0
    run_id: int | None = None
    livemode: bool = False
    skips: list[Skip] = field(default_factory=list)
    # Customers whose history could not be computed (the rest of the account was).
    left_out: list[LeftOut] = field(default_factory=list)
    # Seconds spent reading the mirror, in the domain (history, facts) and writing rows.
    timings: dict[str, float] = field(default_factory=dict)
    # The largest peak memory of a worker process that computed a part (KiB; 0: none).
    worker_peak_rss_kib: int = 0

    def add(self, part: RecomputeResult) -> None:
        """Count in a part computed elsewhere (a chunk in a worker process, a shard)."""
        self.customers += part.customers
        self.excluded += part.excluded
        self.lines_read += part.lines_read
        self.timeline_points += part.timeline_points
        self.ledger_entries += part.ledger_entries
        self.facts += part.facts
        self.skips.extend(part.skips)
        self.left_out.extend(part.left_out)
        for key, seconds in part.timings.items():
            self.timings[key] = self.timings.get(key, 0.0) + seconds
        self.worker_peak_rss_kib = max(self.worker_peak_rss_kib, part.worker_peak_rss_kib)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "customers": self.customers, "excluded": self.excluded,
            "skipped": self.skipped, "lines_read": self.lines_read,
            "timeline_points": self.timeline_points, "ledger_entries": self.ledger_entries,
            "facts": self.facts, "left_out": len(self.left_out),
            "seconds": round(self.seconds, 3), "run_id": self.run_id,
            "livemode": self.livemode,
            "timings": {k: round(v, 3) for k, v in sorted(self.timings.items())},
            "worker_peak_rss_kib": self.worker_peak_rss_kib,
        }


def peak_rss_kib() -> int:
    """This process's peak resident memory in KiB: Linux's ``VmHWM``, which starts again
    at ``exec`` (``ru_maxrss`` of a spawned worker keeps its parent's size at the fork)."""
    import resource

    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def add_seconds(timings: dict[str, float], key: str, since: float) -> None:
    """Add the seconds since ``since`` (a ``perf_counter`` reading) to ``timings[key]``."""
    timings[key] = timings.get(key, 0.0) + time.perf_counter() - since


def timed(items: Iterator[Any], timings: dict[str, float], key: str) -> Iterator[Any]:
    """Yield from ``items``, adding the time spent producing them to ``timings[key]``."""
    while True:
        clock = time.perf_counter()
        try:
            item = next(items)
        except StopIteration:
            add_seconds(timings, key, clock)
            return
        add_seconds(timings, key, clock)
        yield item

