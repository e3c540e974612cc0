"""Created windows: a big resource listed as K disjoint ``created`` ranges side by side
(see :mod:`integrations.stripe_sync`); the boundaries and the window rows."""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from integrations.stripe_sync.state import start_listing, state_row
from models.mirror import StripeCustomer, SyncState
from nrr.db import session_scope
from nrr.logs import get_logger

log = get_logger(__name__)

# Concurrent ``created`` windows per resource during a backfill (see the module docstring).
BACKFILL_WINDOWS_LIVE: Mapping[str, int] = {"invoices": 4}


BACKFILL_WINDOWS_TEST: Mapping[str, int] = {"invoices": 2}


WINDOW_SEPARATOR = "@"


_WINDOW_NAME = re.compile(r"^(?P<base>[a-z_]+)@(?P<gte>\d*)\.\.(?P<lt>\d*)$")


def backfill_windows(livemode: bool, configured: int | None = None) -> dict[str, int]:
    """The number of ``created`` windows per resource: ``configured``
    (``NRR_STRIPE_BACKFILL_WINDOWS``) for every windowed resource, else the key mode's."""
    defaults = BACKFILL_WINDOWS_LIVE if livemode else BACKFILL_WINDOWS_TEST
    if configured is not None:
        return {name: configured for name in defaults}
    return dict(defaults)


@dataclass(frozen=True)
class Window:
    """``created[gte]=gte&created[lt]=lt`` of one resource; None is open on that side."""

    base: str
    gte: int | None
    lt: int | None

    @property
    def name(self) -> str:
        return (f"{self.base}{WINDOW_SEPARATOR}{'' if self.gte is None else self.gte}.."
                f"{'' if self.lt is None else self.lt}")

    @property
    def created(self) -> dict[str, int]:
        bounds: dict[str, int] = {}
        if self.gte is not None:
            bounds["gte"] = self.gte
        if self.lt is not None:
            bounds["lt"] = self.lt
        return bounds

    @classmethod
    def parse(cls, name: str) -> Window | None:
        match = _WINDOW_NAME.match(name)
        if match is None:
            return None
        return cls(match["base"], int(match["gte"]) if match["gte"] else None,
                   int(match["lt"]) if match["lt"] else None)


def windows_from_boundaries(base: str, boundaries: list[int]) -> list[Window]:
    """K - 1 increasing boundaries -> K windows covering every ``created`` once."""
    edges: list[int | None] = [None, *sorted(set(boundaries)), None]
    return [Window(base, edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


def window_rows(session: Session, base: str) -> list[SyncState]:
    prefix = base + WINDOW_SEPARATOR
    return [row for row in session.scalars(
        select(SyncState).where(SyncState.resource.startswith(prefix, autoescape=True))
        .order_by(SyncState.resource)) if Window.parse(row.resource) is not None]


def plan_boundaries(customer_created: list[int], windows: int, until: int) -> list[int]:
    """K - 1 ``created`` boundaries giving each window about as many customer-months.

    A customer adds one invoice stream from its ``created`` to ``until``; the boundaries
    split the total of those streams' lengths in K equal parts. Empty (one window) when
    there are no customers or no time to split.
    """
    created = sorted(c for c in customer_created if c <= until)
    if windows < 2 or not created or created[0] >= until:
        return []
    prefix = [0]
    for value in created:
        prefix.append(prefix[-1] + value)

    def volume(t: int) -> int:  # sum over customers created <= t of (t - created)
        n = bisect.bisect_right(created, t)
        return n * t - prefix[n]

    total = volume(until)
    boundaries: list[int] = []
    for k in range(1, windows):
        target = total * k / windows
        lo, hi = created[0], until
        while lo < hi:
            mid = (lo + hi) // 2
            if volume(mid) < target:
                lo = mid + 1
            else:
                hi = mid
        if (not boundaries or lo > boundaries[-1]) and created[0] < lo < until:
            boundaries.append(lo)
    return boundaries


def plan_windows(engine: Engine, base: str, windows: int, *, until: int) -> list[Window]:
    """Choose and store the windows of ``base`` in one transaction; [] for one chain."""
    with session_scope(engine) as session:
        created = [int(c) for c in session.scalars(select(StripeCustomer.created))
                   if c is not None]
        boundaries = plan_boundaries(created, windows, until)
        if not boundaries:
            return []
        planned = windows_from_boundaries(base, boundaries)
        for window in planned:
            start_listing(state_row(session, window.name))
    log.info("sync.windows", resource=base, windows=[w.name for w in planned])
    return planned
