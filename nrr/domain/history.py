"""Per-customer MRR history: timeline, ledger and item intervals from invoices + state.

Input: :class:`~nrr.domain.records.CustomerData` (Stripe objects as records) and the
policies. Output: :class:`~nrr.domain.records.CustomerHistory`: step points per currency
``(effective_at, mrr_micro)`` in the subscription's currency, the ledger of item changes
with causes and Stripe ids, and per item intervals ``[start, end)`` with their MRR.

Sources and which one wins where they disagree
----------------------------------------------
1. **Invoice lines** (paid, open, uncollectible invoices) give each item's state over
   time: price and quantity over the line's service period. They are the only record of
   the past that Stripe keeps, so they win over the subscription object for everything
   before the current period. A positive proration line dates a mid-period change at its
   ``period.start``; the negative line only closes the old state (alone, it removes the
   item at its ``period.start``). A prorated state lasts until its line's period ends;
   from there the cycle lines say what follows (a change made between two cycle lines
   without proration and never seen shows only at the next cycle line). Lines of draft and void invoices are not service: under
   ``pause_collection=count`` a run of them continues the item's state (Stripe still
   issues the invoices while collection is paused), under ``exclude`` they count 0.
   A period with no line at all (a gap) counts 0. One-off invoice items, credit notes and
   refunds are not read at all.
2. **Events the worker saw** (:class:`~nrr.domain.records.ObservedChange`) date changes
   made without proration exactly, and discount removals; they win over the "first cycle
   line that shows it" fallback because they carry the real instant.
3. **The subscription object** (current state) wins for lifecycle facts the lines cannot
   show: ``start_date`` (a backdated start extends the first billed state back), trials
   (MRR 0 over ``[trial_start, trial_end)``), the status now (paused at
   ``status_details.paused.transitioned_at``; unpaid from the end of the last paid
   period; incomplete never counted; past-due age from the oldest unpaid invoice's
   finalisation), and cancellation (policy ``churn_at``). An item with no line at all
   takes its current price and quantity from the subscription's start.
4. **Discount objects** win over invoice periods for their ``start`` and ``end``. A
   discount no longer attached, with no ``end`` and no removal event, stops where the last
   cycle line carrying it ends (the first cycle invoice without it); one never seen on
   any line and not attached had no effect. Stacked discounts apply in Stripe's order:
   the order they are attached in and the order each line's ``discount_amounts`` lists
   them (the only word left on discounts removed since), never the order of their ids.

State-line selection (the contract the recompute SQL follows)
-------------------------------------------------------------
The history is identical whether it is given every invoice line of a customer or only
these lines:

    Consider, per subscription item, the lines of its invoices in every status, split
    into proration lines (``proration`` true) and cycle lines (all others). Keep every
    proration line. Order the cycle lines by (period_start, period_end, status_rank, id)
    where status_rank is 0 for draft/void and 1 otherwise. Keep a cycle line when it is
    the first or the last of its item, or when its key (price_id, quantity,
    discount_ids in Stripe's order, status class) differs from the key of the previous or of the
    next cycle line of its item, or when its period_start differs from the previous
    cycle line's period_end, or its period_end differs from the next cycle line's
    period_start. Status classes: ``paid``; ``unpaid`` (open, uncollectible);
    ``unbilled`` (draft, void). Set ``follows_gap`` on every kept cycle line to
    ``period_start <> previous cycle line's period_end`` (false for the first line).

:func:`select_state_lines` implements exactly this; the SQL equivalent uses ``LAG`` and
``LEAD`` over ``PARTITION BY subscription_item_id ORDER BY period_start, period_end,
status_rank, id``. Any superset of the selection gives the same history as long as every
cycle line carries the right ``follows_gap``. A line with ``follows_gap`` None (unknown)
is read conservatively: a discontinuity is a gap only between lines of different keys
(nothing can have been left out between them); :func:`mark_gaps` sets the flag on a
complete set of lines (``stripe_shapes.customer_data_from_stripe`` does).

Ledger causes
-------------
``new_subscription`` (first state of a subscription, trial or not), ``trial_conversion``
(trialing -> counted), ``seat_change`` (quantity), ``price_change`` (another price of the
same product, or metered usage changing the invoiced MRR), ``plan_change`` (another
product, or an item added to / removed from a running subscription), ``discount_start`` /
``discount_end``, ``pause`` (paused, collection paused, unpaid, past due too long, or a gap
in the invoices) / ``resume``, ``cancellation`` (revenue ends per ``churn_at``), and
``reactivation`` (a new subscription of a customer who had paid before and paid nothing
just before it).

Only the first metered usage line of a run with an unchanged quantity is guaranteed;
under ``metered=invoiced`` a line whose amount differs from its neighbours while its key
is the same is a known approximation of the selection. The tax part of a tax-inclusive price is
taken out after discounts, at the net share (1 / (1 + rate)) of the latest given lines of
the price that start at or before the instant (the earliest before its first), proration
lines only for a price with no other line.
"""

from __future__ import annotations

import calendar
import heapq
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

from nrr.domain.money import to_micro
from nrr.domain.pricing import (
    PricedItem,
    PricingError,
    discount_in_force,
    discounted_mrr,
    interval_amount,
    months_per_interval,
    tax_inclusive,
)
from nrr.domain.records import (
    Coupon,
    Customer,
    CustomerData,
    CustomerHistory,
    Discount,
    InvoiceLine,
    ItemInterval,
    LedgerChange,
    Price,
    Skip,
    Subscription,
    SubscriptionItem,
)
from nrr.settings import Policies

FOREVER = 2**62
# An invoice paid more than this many seconds after its finalisation was past due meanwhile.
PAID_LATE = 86_400
KNOWN_STATUSES = frozenset({"incomplete", "incomplete_expired", "trialing", "active", "past_due",
                            "canceled", "unpaid", "paused"})


# --------------------------------------------------------------------------- selection


def status_class(invoice_status: str | None) -> str:
    if invoice_status == "paid":
        return "paid"
    if invoice_status in ("open", "uncollectible"):
        return "unpaid"
    return "unbilled"


def _cycle_order(line: InvoiceLine) -> tuple[int, int, int, str]:
    return (line.period_start, line.period_end, 0 if status_class(line.invoice_status) == "unbilled" else 1,
            line.id)


def _key(line: InvoiceLine) -> tuple[Any, ...]:
    # The discounts in Stripe's order: a line that applied them in another order is kept,
    # so the order every kept line gives is the order all lines give (:func:`_discount_order`).
    return (line.price_id, line.quantity, tuple(line.discount_ids), status_class(line.invoice_status))


def select_state_lines(lines: Iterable[InvoiceLine]) -> list[InvoiceLine]:
    """The lines that can change state (module docstring), with ``follows_gap`` set."""
    by_item: dict[str | None, list[InvoiceLine]] = {}
    kept: list[InvoiceLine] = []
    for line in lines:
        if line.proration:
            kept.append(line)
        else:
            by_item.setdefault(line.subscription_item_id, []).append(line)
    for item_lines in by_item.values():
        item_lines.sort(key=_cycle_order)
        last = len(item_lines) - 1
        for index, line in enumerate(item_lines):
            prev = item_lines[index - 1] if index > 0 else None
            nxt = item_lines[index + 1] if index < last else None
            gap_before = prev is not None and prev.period_end != line.period_start
            keep = (
                prev is None or nxt is None or gap_before
                or _key(prev) != _key(line) or _key(nxt) != _key(line)
                or line.period_end != nxt.period_start
            )
            if keep:
                kept.append(replace(line, follows_gap=gap_before))
    return kept


def mark_gaps(lines: Iterable[InvoiceLine]) -> list[InvoiceLine]:
    """Every line, with ``follows_gap`` set on cycle lines, reading ``lines`` as complete."""
    by_item: dict[str | None, list[InvoiceLine]] = {}
    marked: list[InvoiceLine] = []
    for line in lines:
        if line.proration:
            marked.append(line)
        else:
            by_item.setdefault(line.subscription_item_id, []).append(line)
    for item_lines in by_item.values():
        item_lines.sort(key=_cycle_order)
        previous: InvoiceLine | None = None
        for line in item_lines:
            gap = previous is not None and previous.period_end != line.period_start
            marked.append(line if line.follows_gap == gap else replace(line, follows_gap=gap))
            previous = line
    return marked


# --------------------------------------------------------------------------- helpers


def add_months(instant: int, months: int) -> int:
    moment = datetime.fromtimestamp(instant, tz=UTC)
    index = moment.year * 12 + moment.month - 1 + months
    year, month = divmod(index, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return int(moment.replace(year=year, month=month + 1, day=day).timestamp())


def is_excluded(customer: Customer, rules: Sequence[str]) -> bool:
    """Policy ``exclude_customers``: ``key=value`` metadata pairs or ``@domain`` emails."""
    email = (customer.email or "").lower()
    for rule in rules:
        rule = rule.strip()
        if not rule:
            continue
        if "=" in rule:
            key, _, value = rule.partition("=")
            if customer.metadata.get(key.strip()) == value.strip():
                return True
        else:
            domain = rule.lower().lstrip("@")
            if email.endswith("@" + domain):
                return True
    return False


@dataclass(slots=True)
class _Seg:
    """An item's state over [start, end)."""

    start: int
    end: int
    price_id: str | None
    quantity: int | None
    billed: bool
    line: InvoiceLine | None = None
    event_id: str | None = None


@dataclass(slots=True)
class _ItemView:
    item_id: str
    segments: list[_Seg]
    metered_amounts: list[tuple[int, InvoiceLine]]  # (closed_at, line) for metered usage lines


def _item_segments(item_lines: Sequence[InvoiceLine], present: SubscriptionItem | None,
                   observed: Sequence[Any]) -> list[_Seg]:
    cycle = sorted((ln for ln in item_lines if not ln.proration), key=_cycle_order)
    prorations = [ln for ln in item_lines
                  if ln.proration and status_class(ln.invoice_status) != "unbilled"]
    credits = _credit_lines(cycle, prorations)
    # Instants where a new state starts (a new-state proration line, or a cycle line: after
    # a billing-cycle reset the new state is a cycle line beside the credit).
    state_starts = {ln.period_start for ln in prorations if ln.id not in credits}
    state_starts.update(ln.period_start for ln in cycle)
    # (instant, order, kind, price, quantity, billed, line, event)
    changes: list[tuple[int, int, str, str | None, int | None, bool, InvoiceLine | None, str | None]] = []
    previous: InvoiceLine | None = None
    coverage_end = -FOREVER
    for line in cycle:
        if previous is not None:
            if line.follows_gap is not None:
                gap = line.follows_gap
            else:
                # Unknown: a discontinuity between lines of different keys is a gap for sure
                # (no line can have been left out between them); between lines of the same key
                # it may be lines left out by the selection, so it is read as continuous.
                gap = previous.period_end != line.period_start and _key(previous) != _key(line)
            if gap and previous.period_end < line.period_start:
                changes.append((previous.period_end, 0, "end", None, None, False, previous, None))
        # A draft last line is the invoice Stripe finalises an hour after the renewal, not a
        # paused collection (a collection paused now is a status window of its own).
        billed = status_class(line.invoice_status) != "unbilled" or (
            line is cycle[-1] and line.invoice_status == "draft")
        changes.append((line.period_start, 1 if billed else 0, "state", line.price_id, line.quantity,
                        billed, line, None))
        coverage_end = max(coverage_end, line.period_end)
        previous = line
    cycle_starts = [ln.period_start for ln in cycle]
    reverts: set[tuple[int, str | None, int | None, bool]] = set()
    for line in prorations:
        if line.id not in credits:
            changes.append((line.period_start, 2, "state", line.price_id, line.quantity, True, line, None))
            coverage_end = max(coverage_end, line.period_end)
            # A prorated state lasts until its period ends; from then the cycle lines' state
            # goes on (the cycle line that re-states it may have been left out by the
            # selection: it has the key of the last cycle line before it).
            index = bisect_left(cycle_starts, line.period_end)
            if 0 < index < len(cycle):  # only when a later cycle line exists (the last is kept)
                before = cycle[index - 1]
                billed_before = status_class(before.invoice_status) != "unbilled" or (
                    before is cycle[-1] and before.invoice_status == "draft")
                reverts.add((line.period_end, before.price_id, before.quantity, billed_before))
                changes.append((line.period_end, -1, "state", before.price_id, before.quantity,
                                billed_before, None, None))
        elif line.period_start not in state_starts:
            # A credit alone (the item removed with proration) closes the old state.
            changes.append((line.period_start, 2, "end", None, None, False, line, None))
    if reverts:
        # A cycle line re-stating exactly what a revert restores adds nothing (and is not cited,
        # so the history is the same whether or not the selection kept it).
        changes = [c for c in changes
                   if not (c[1] in (0, 1) and c[2] == "state" and (c[0], c[3], c[4], c[5]) in reverts)]
    for change in observed:
        changes.append((change.at, 3, "state", change.price_id, change.quantity, True, None,
                        change.event_id))
    changes.sort(key=lambda c: (c[0], c[1], c[6].id if c[6] is not None else ""))
    segments: list[_Seg] = []
    current: _Seg | None = None
    for at, _order, kind, price_id, quantity, billed, source, event_id in changes:
        if current is not None:
            if current.start < at:
                current.end = at
                segments.append(current)
            current = None
        if kind == "state":
            current = _Seg(at, FOREVER, price_id, quantity, billed, source, event_id)
    if current is not None:
        if present is None and current.line is not None:
            # The item is gone from the subscription: it ended where its lines end.
            current.end = max(coverage_end, current.start)
            if current.end > current.start:
                segments.append(current)
        else:
            segments.append(current)
    # Merge contiguous segments with the same state (cycle lines re-state it each period).
    merged: list[_Seg] = []
    for seg in segments:
        if merged:
            last = merged[-1]
            if (last.end == seg.start and last.price_id == seg.price_id
                    and last.quantity == seg.quantity and last.billed == seg.billed):
                last.end = seg.end
                continue
        merged.append(seg)
    return merged


def _credit_lines(cycle: Sequence[InvoiceLine], prorations: Sequence[InvoiceLine]) -> set[str]:
    """Ids of the proration lines that do not set the item's state: the credits of unused
    time of the old state (and the new state of a change superseded at the same instant).

    What a line is, in this order: Stripe's own word (``credited``: the credited items in
    its proration details); else which state it matches: at a change, the line whose
    (price, quantity) is the state in force just before is the credit and a line with
    another state is the new one. Several changes at one instant (one invoice each) are
    chained the same way: the change crediting the state in force comes first, its new
    state is in force for the next. Only when the states cannot tell (no state known
    before, or every line or no line matching it) does the amount decide (a credit is
    negative, a new state's line is not). Never the order of the lines or of their ids.
    """
    if not prorations:
        return set()
    credits: set[str] = set()
    new_states: list[InvoiceLine] = []
    by_start: dict[int, dict[str, list[InvoiceLine]]] = {}
    for line in prorations:
        by_start.setdefault(line.period_start, {}).setdefault(line.invoice_id, []).append(line)
    cycle_starts = {ln.period_start for ln in cycle}
    for start in sorted(by_start):
        pending = dict(by_start[start])
        before = _state_before(cycle, new_states, start)
        chained: list[InvoiceLine] = []
        in_cycle = start in cycle_starts
        while pending:
            found = None
            for invoice_id in sorted(pending):  # sorted for determinism only: the state decides
                decided = _credits_by_state(pending[invoice_id], before, in_cycle or len(pending) > 1)
                if decided is None:
                    continue
                # Of several changes whose credits are known, the one crediting the state in
                # force comes first.
                credits_before = any((ln.price_id, ln.quantity) == before
                                     for ln in pending[invoice_id] if ln.id in decided)
                if found is None or (credits_before and not found[2]):
                    found = invoice_id, decided, credits_before
                if credits_before or len(pending) == 1:
                    break
            if found is None:
                for group in pending.values():  # the states cannot tell: the amounts do
                    credits.update(ln.id for ln in group if ln.credited or ln.amount < 0)
                    chained.extend(ln for ln in group if ln.id not in credits)
                break
            invoice_id, decided, _credits_before = found
            credits.update(decided)
            fresh = [ln for ln in pending.pop(invoice_id) if ln.id not in decided]
            chained.extend(fresh)
            if fresh:
                before = (fresh[-1].price_id, fresh[-1].quantity)
        # Only the last state of a chain at one instant is ever in force.
        if len(chained) > 1:
            credits.update(ln.id for ln in chained[:-1])
            chained = chained[-1:]
        new_states.extend(chained)
    return credits


def _credits_by_state(group: Sequence[InvoiceLine], before: tuple[str | None, int | None] | None,
                      partnered: bool) -> set[str] | None:
    """The credit lines of one change's lines, by Stripe's word or by the state in force
    ``before``; None when neither can tell. ``partnered``: another line (a cycle line after
    a billing-cycle reset, or another change) starts at the same instant."""
    # Stripe names the credited items on a credit line; their absence proves nothing (older
    # objects, simulators), so only a named credit decides its change.
    known = {ln.id for ln in group if ln.credited}
    if known:
        return known
    unknown = list(group)
    matching = [ln for ln in unknown if before is not None and (ln.price_id, ln.quantity) == before]
    if matching and (len(matching) < len(unknown) or len(group) == 1 or partnered):
        return {ln.id for ln in matching}
    return None


def _state_before(cycle: Sequence[InvoiceLine], new_states: Sequence[InvoiceLine],
                  at: int) -> tuple[str | None, int | None] | None:
    """(price, quantity) in force just before ``at`` by the lines: the latest cycle line or
    new-state proration line starting before ``at``."""
    best: InvoiceLine | None = None
    for line in (*cycle, *new_states):
        if line.period_start < at and (best is None or line.period_start >= best.period_start):
            if best is not None and line.period_start == best.period_start and line.proration < best.proration:
                continue  # at one instant a proration's new state is the later word
            best = line
    return None if best is None else (best.price_id, best.quantity)


@dataclass(frozen=True, slots=True)
class _Window:
    start: int
    end: int
    label: str


def _discount_windows(discounts: Iterable[Discount], coupons: Mapping[str, Coupon], attached: set[str],
                      lines: Sequence[InvoiceLine], policy: str) -> list[tuple[Discount, Coupon, int, int]]:
    """(discount, coupon, effective start, effective end) for discounts that ever reduce MRR."""
    if policy == "none":
        return []
    carried_until: dict[str, int] = {}
    first_carrier: dict[str, InvoiceLine] = {}
    for line in lines:
        if line.proration:
            continue
        for did in line.discount_ids:
            carried_until[did] = max(carried_until.get(did, -FOREVER), line.period_end)
            known = first_carrier.get(did)
            if known is None or (line.period_start, line.id) < (known.period_start, known.id):
                first_carrier[did] = line
    result = []
    for disc in discounts:
        coupon = coupons.get(disc.coupon_id or "")
        if coupon is None:
            continue
        start = disc.start if disc.start is not None else -FOREVER
        end = FOREVER
        if coupon.duration == "repeating":
            end = disc.end if disc.end is not None else (
                add_months(start, coupon.duration_in_months or 0) if disc.start is not None else FOREVER)
        elif disc.end is not None:
            end = disc.end
        if disc.removed_at is not None:
            end = min(end, disc.removed_at)
        elif disc.id not in attached:
            if disc.id in carried_until:
                end = min(end, carried_until[disc.id])
            elif end == FOREVER:
                continue  # never on an invoice and no longer attached: it never reduced MRR
        if coupon.duration == "once":
            # Under ``all``: the billing period it was applied to, i.e. the first cycle line
            # carrying it (such a line always differs from the one before: it is selected).
            carrier = first_carrier.get(disc.id)
            if policy != "all" or carrier is None:
                continue
            start = max(start, carrier.period_start)
            end = min(end, carrier.period_end)
        if end > start:
            result.append((disc, coupon, start, end))
    return result


def _discount_order(discounts: Sequence[Discount], attached: Sequence[Sequence[str]],
                    applied: Iterable[Sequence[str]]) -> dict[str, int]:
    """The order in which Stripe applies ``discounts`` (rank by id), as the data says it.

    Stripe says it twice: the discounts still attached are listed in order (the
    subscription's ``discounts``, each item's, the customer's: ``attached``), and each
    invoice line lists the discounts it applied in order (``discount_amounts``:
    ``applied``), which is the only word left on a discount removed since. Every list puts
    each of its discounts before the next one; the discounts are ranked in an order that
    keeps all of these (where the lists contradict each other, the first discount by the
    fallback goes first). Discounts that no list relates (never applied together) fall back
    to their place in ``attached``, then their start, then their id.
    """
    wanted = {disc.id: disc for disc in discounts}
    position: dict[str, int] = {}
    for ids in attached:
        for did in ids:
            position.setdefault(did, len(position))
    after: dict[str, set[str]] = {did: set() for did in wanted}
    for ids in (*attached, *applied):
        known = [did for did in dict.fromkeys(ids) if did in wanted]
        for first, second in zip(known, known[1:], strict=False):
            after[first].add(second)

    def fallback(did: str) -> tuple[int, int, str]:
        start = wanted[did].start
        return (position.get(did, len(position)), start if start is not None else -FOREVER, did)

    waiting = {did: 0 for did in wanted}
    for followers in after.values():
        for did in followers:
            waiting[did] += 1
    ready = [(fallback(did), did) for did, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    rank: dict[str, int] = {}
    while len(rank) < len(wanted):
        if not ready:  # the lists contradict each other: break the cycle by the fallback
            did = min((d for d in wanted if d not in rank), key=fallback)
        else:
            did = heapq.heappop(ready)[1]
            if did in rank:
                continue
        rank[did] = len(rank)
        for follower in sorted(after[did]):
            waiting[follower] -= 1
            if waiting[follower] == 0 and follower not in rank:
                heapq.heappush(ready, (fallback(follower), follower))
    return rank


# --------------------------------------------------------------------------- per subscription


@dataclass(slots=True)
class _ItemState:
    price_id: str | None
    quantity: int | None
    discounts: tuple[str, ...]
    status: str
    mrr_micro: int
    seg: _Seg | None


def _status_windows(sub: Subscription, data: CustomerData, sub_lines: Sequence[InvoiceLine],
                    policies: Policies, coverage_end: int, skips: list[Skip]) -> tuple[list[_Window], int]:
    """Windows where the subscription does not count, and the instant its revenue ends."""
    windows: list[_Window] = []
    if sub.trial_end is not None:
        trial_start = sub.trial_start if sub.trial_start is not None else (sub.start_date or -FOREVER)
        windows.append(_Window(trial_start, sub.trial_end, "trialing"))
    status = sub.status
    if status not in KNOWN_STATUSES:
        skips.append(Skip("subscription", sub.id, f"unknown status {status!r}: not counted"))
        windows.append(_Window(-FOREVER, FOREVER, status))
    elif status in ("incomplete", "incomplete_expired"):
        windows.append(_Window(-FOREVER, FOREVER, status))
    elif status == "paused":
        windows.append(_Window(sub.paused_at if sub.paused_at is not None else coverage_end, FOREVER, "paused"))
    elif status == "unpaid":
        paid_ends = [ln.period_end for ln in sub_lines if ln.invoice_status == "paid" and not ln.proration]
        windows.append(_Window(max(paid_ends) if paid_ends else -FOREVER, FOREVER, "unpaid"))
    elif status == "trialing" and sub.trial_end is None:
        windows.append(_Window(-FOREVER, FOREVER, "trialing"))
    if policies.past_due_churn_after_days is not None:
        windows.extend(_past_due_windows(sub, data, policies.past_due_churn_after_days))
    windows.extend(_observed_pauses(sub, data, sub_lines, status))
    if policies.pause_collection == "exclude":
        pauses = sorted((c for c in data.observed if c.kind == "pause_collection" and c.subscription_id == sub.id),
                        key=lambda c: c.at)
        since: int | None = None
        for change in pauses:
            if change.paused and since is None:
                since = change.at
            elif not change.paused and since is not None:
                windows.append(_Window(since, change.at, "collection_paused"))
                since = None
        if sub.pause_collection_behavior is not None:
            if since is None:
                starts = [it.current_period_start for it in sub.items if it.current_period_start is not None]
                since = min(starts) if starts else coverage_end
            windows.append(_Window(since, sub.pause_collection_resumes_at or FOREVER, "collection_paused"))
    # When revenue ends (policy churn_at). An undone cancellation has cleared these fields.
    end = FOREVER
    period_ends = [it.current_period_end for it in sub.items if it.current_period_end is not None]
    if policies.churn_at == "request" and sub.canceled_at is not None and (
            sub.ended_at is not None or sub.cancel_at is not None or sub.cancel_at_period_end
            or status == "canceled"):
        end = sub.canceled_at
    elif sub.ended_at is not None:
        end = sub.ended_at
    elif sub.cancel_at is not None:
        end = sub.cancel_at
    elif sub.cancel_at_period_end and period_ends:
        end = max(period_ends)
    elif status == "canceled":
        end = sub.canceled_at if sub.canceled_at is not None else coverage_end
    return windows, end


def _observed_pauses(sub: Subscription, data: CustomerData, sub_lines: Sequence[InvoiceLine],
                     status: str) -> list[_Window]:
    """Pauses the worker saw (events): a resume clears ``status_details.paused`` from the
    subscription, but never moves the pause the data already dates. A pause whose resume
    was not seen ends where the next line after it starts (the resume's new period), or
    lasts while the subscription is still paused."""
    changes = sorted((c for c in data.observed if c.kind == "status" and c.subscription_id == sub.id),
                     key=lambda c: (c.at, c.paused is False))
    windows: list[_Window] = []
    since: int | None = None
    for change in changes:
        if change.paused and since is None:
            since = change.at
        elif change.paused is False and since is not None:
            windows.append(_Window(since, change.at, "paused"))
            since = None
    if since is not None:
        later = [ln.period_start for ln in sub_lines if ln.period_start > since and not ln.proration]
        end = FOREVER if status == "paused" or not later else min(later)
        windows.append(_Window(since, end, "paused"))
    return windows


def _past_due_windows(sub: Subscription, data: CustomerData, days: int) -> list[_Window]:
    """Policy ``past_due_churn_after_days``: from N days after an invoice's finalisation
    while it stays unpaid, the subscription does not count. What became of it later never
    moves that instant: an invoice still open or uncollectible (whatever the status now,
    a dunning cancellation included) keeps it stopped; one paid late resumes it at
    ``paid_at``. A void invoice was forgiven, not owed: it stops nothing; one paid within a
    day of its finalisation was a normal payment (Stripe's first retry comes later)."""
    limit = days * 86_400
    windows = []
    for inv in data.invoices.values():
        if inv.subscription_id != sub.id or inv.finalized_at is None:
            continue
        if inv.status in ("open", "uncollectible"):
            end = FOREVER
        elif inv.status == "paid" and inv.paid_at is not None and inv.paid_at - inv.finalized_at > PAID_LATE:
            end = inv.paid_at
        else:
            continue
        if end - inv.finalized_at > limit:
            windows.append(_Window(inv.finalized_at + limit, end, "past_due"))
    return windows


def _cause(before: _ItemState | None, after: _ItemState | None, prices: Mapping[str, Price], *,
           sub_started: bool, sub_ended_before: bool, item_earlier: bool, item_later: bool) -> str:
    """The ledger cause of an item's change (``item_earlier``/``item_later``: the item has
    service segments before / after this instant, so a missing segment here is a gap)."""
    was = before is not None and before.status == "active"
    now = after is not None and after.status == "active"
    if not was and now:
        if before is not None and before.status == "trialing":
            return "trial_conversion"
        if before is not None and before.status in ("paused", "collection_paused", "unpaid", "past_due"):
            return "resume"
        if before is None and item_earlier:
            return "resume"
        if sub_ended_before:
            return "reactivation"
        return "plan_change" if sub_started else "new_subscription"
    if was and not now:
        if after is None:
            return "pause" if item_later else "plan_change"
        if after.status == "canceled":
            return "cancellation"
        return "pause"
    if before is None or after is None:
        return "new_subscription" if not sub_started else "plan_change"
    if before.price_id != after.price_id:
        old = prices.get(before.price_id or "")
        new = prices.get(after.price_id or "")
        if old is not None and new is not None and old.product_id == new.product_id:
            return "price_change"
        return "plan_change"
    if before.quantity != after.quantity:
        return "seat_change"
    if set(after.discounts) - set(before.discounts):
        return "discount_start"
    if set(before.discounts) - set(after.discounts):
        return "discount_end"
    if before.status != after.status:
        return "cancellation" if after.status == "canceled" else ("resume" if now else "pause")
    return "price_change"


def _subscription_history(sub: Subscription, sub_lines: Sequence[InvoiceLine], data: CustomerData,
                          policies: Policies, skips: list[Skip]
                          ) -> tuple[list[ItemInterval], list[LedgerChange]]:
    currency = sub.currency
    present = {item.id: item for item in sub.items}
    lines_by_item: dict[str, list[InvoiceLine]] = {}
    for line in sub_lines:
        if line.subscription_item_id is not None:
            lines_by_item.setdefault(line.subscription_item_id, []).append(line)
    observed_by_item: dict[str, list[Any]] = {}
    for change in data.observed:
        if change.kind == "item" and change.subscription_id == sub.id and change.subscription_item_id:
            observed_by_item.setdefault(change.subscription_item_id, []).append(change)

    views: list[_ItemView] = []
    first_starts: list[int] = []
    for item_id in sorted(set(present) | set(lines_by_item)):
        segments = _item_segments(lines_by_item.get(item_id, []), present.get(item_id),
                                  observed_by_item.get(item_id, []))
        if not segments and item_id in present:
            item = present[item_id]
            start = sub.start_date if sub.start_date is not None else (item.created or 0)
            if item.created is not None and sub.created is not None and item.created > sub.created:
                start = item.created
            segments = [_Seg(start, FOREVER, item.price_id, item.quantity, True)]
        metered: list[tuple[int, InvoiceLine]] = []
        if policies.metered == "invoiced":
            metered = sorted(
                ((ln.period_end, ln) for ln in lines_by_item.get(item_id, [])
                 if not ln.proration and status_class(ln.invoice_status) != "unbilled"),
                key=lambda pair: (pair[0], pair[1].id))
        views.append(_ItemView(item_id, segments, metered))
        if segments:
            first_starts.append(segments[0].start)
    if not first_starts:
        return [], []
    sub_first = min(first_starts)
    if sub.start_date is not None and sub.start_date < sub_first:
        for view in views:
            first = view.segments[0] if view.segments else None
            if first is not None and first.start == sub_first and (first.line is None or not first.line.proration):
                first.start = sub.start_date
        sub_first = sub.start_date
    coverage_end = max(seg.end if seg.end != FOREVER else seg.start for v in views for seg in v.segments)
    windows, revenue_end = _status_windows(sub, data, sub_lines, policies, coverage_end, skips)

    attached = set(sub.discount_ids) | set(data.customer.discount_ids)
    for item in sub.items:
        attached.update(item.discount_ids)
    relevant = [d for d in data.discounts.values()
                if d.subscription_id == sub.id
                or (d.subscription_item_id is not None and d.subscription_item_id in {v.item_id for v in views})
                or (d.subscription_id is None and d.subscription_item_id is None and d.invoice_id is None)]
    discount_windows = _discount_windows(relevant, data.coupons, attached, sub_lines, policies.discounts)
    order = _discount_order([disc for disc, _coupon, _start, _end in discount_windows],
                            [sub.discount_ids, *(it.discount_ids for it in sub.items),
                             data.customer.discount_ids],
                            [line.discount_ids for line in sub_lines])
    discount_windows.sort(key=lambda w: (order[w[0].id], w[2]))

    net_shares = _net_shares(sub_lines)
    rate_shares = _rate_shares(sub)

    points: set[int] = {sub_first}
    for view in views:
        for seg in view.segments:
            points.add(seg.start)
            points.add(seg.end)
        if policies.metered == "invoiced":
            points.update(at for at, _ in view.metered_amounts)
    for window in windows:
        points.add(window.start)
        points.add(window.end)
    for _disc, _coupon, start, end in discount_windows:
        points.add(start)
        points.add(end)
    points.add(revenue_end)
    instants = sorted(p for p in points if -FOREVER < p < FOREVER and p >= sub_first)

    intervals: list[ItemInterval] = []
    ledger: list[LedgerChange] = []
    states: dict[str, _ItemState | None] = {v.item_id: None for v in views}
    open_intervals: dict[str, tuple[int, _ItemState]] = {}
    seg_index = {v.item_id: 0 for v in views}
    metered_index = {v.item_id: -1 for v in views}
    sub_started = False
    sub_ended_before = False
    pricing_failed: set[str] = set()

    for at in instants:
        # Item states at ``at``.
        current: dict[str, _ItemState | None] = {}
        priced: list[PricedItem] = []
        metered_mrr: dict[str, Fraction] = {}
        item_coupons: dict[str, list[Coupon]] = {}
        sub_coupons: list[Coupon] = []
        cust_coupons: list[Coupon] = []
        in_force_ids: dict[str, list[str]] = {}
        window_label = next((w.label for w in windows if w.start <= at < w.end), None)
        ended = at >= revenue_end
        for disc, coupon, start, end in discount_windows:
            if not (start <= at < end and discount_in_force(disc, coupon, at, policies.discounts,
                                                               interval_end=end)):
                continue
            if disc.subscription_item_id is not None:
                item_coupons.setdefault(disc.subscription_item_id, []).append(coupon)
                in_force_ids.setdefault(disc.subscription_item_id, []).append(disc.id)
            elif disc.subscription_id == sub.id:
                sub_coupons.append(coupon)
                in_force_ids.setdefault("*", []).append(disc.id)
            else:
                cust_coupons.append(coupon)
                in_force_ids.setdefault("*", []).append(disc.id)
        for view in views:
            index = seg_index[view.item_id]
            while index < len(view.segments) and view.segments[index].end <= at:
                index += 1
            seg_index[view.item_id] = index
            found: _Seg | None = None
            if index < len(view.segments) and view.segments[index].start <= at:
                found = view.segments[index]
            if found is None:
                current[view.item_id] = None
                continue
            seg = found
            if ended:
                status = "canceled"
            elif window_label is not None:
                status = window_label
            elif not seg.billed and policies.pause_collection == "exclude":
                status = "collection_paused"
            else:
                status = "active"
            discounts = tuple([*in_force_ids.get(view.item_id, []), *in_force_ids.get("*", [])])
            price = data.prices.get(seg.price_id or "")
            # Metered usage is not a state of the item (its lines carry the usage quantity).
            quantity = None if price is not None and price.usage_type == "metered" else seg.quantity
            state = _ItemState(seg.price_id, quantity, discounts, status, 0, seg)
            current[view.item_id] = state
            if status != "active":
                continue
            if price is None:
                if view.item_id not in pricing_failed:
                    skips.append(Skip("subscription_item", view.item_id, f"price {seg.price_id} unknown"))
                    pricing_failed.add(view.item_id)
                continue
            try:
                months = months_per_interval(price.interval, price.interval_count)
                if price.usage_type == "metered":
                    if policies.metered == "invoiced":
                        mi = metered_index[view.item_id]
                        while mi + 1 < len(view.metered_amounts) and view.metered_amounts[mi + 1][0] <= at:
                            mi += 1
                        metered_index[view.item_id] = mi
                        if mi >= 0:
                            line = view.metered_amounts[mi][1]
                            net = line.amount - line.discount_amount - line.tax_inclusive_amount
                            metered_mrr[view.item_id] = max(Fraction(0), Fraction(net)) / months
                    continue
                amount = interval_amount(price, seg.quantity, currency)
            except PricingError as exc:
                if view.item_id not in pricing_failed:
                    skips.append(Skip("subscription_item", view.item_id, str(exc)))
                    pricing_failed.add(view.item_id)
                continue
            net_share = None
            if tax_inclusive(price, currency):
                # The lines' own taxes first; where no line says, the item's tax rates.
                net_share = _net_share_at(net_shares.get(price.id), at)
                if net_share is None:
                    net_share = rate_shares.get(view.item_id)
            priced.append(PricedItem(view.item_id, amount, months, net_share))
        mrr = discounted_mrr(priced, currency, item_coupons, sub_coupons, cust_coupons)
        mrr.update(metered_mrr)
        for item_id, item_state in current.items():
            if item_state is not None:
                item_state.mrr_micro = to_micro(mrr.get(item_id, Fraction(0)))

        # Ledger and intervals.
        for view in views:
            before = states[view.item_id]
            after = current[view.item_id]
            same = (before is None and after is None) or (
                before is not None and after is not None
                and (before.price_id, before.quantity, before.discounts, before.status, before.mrr_micro)
                == (after.price_id, after.quantity, after.discounts, after.status, after.mrr_micro))
            if same:
                continue
            if before is None and after is not None and after.status == "canceled":
                states[view.item_id] = after
                continue
            cause = _cause(before, after, data.prices, sub_started=sub_started,
                           sub_ended_before=sub_ended_before,
                           item_earlier=any(seg.end <= at for seg in view.segments),
                           item_later=any(seg.start > at for seg in view.segments))
            source = after.seg if after is not None and after.seg is not None else (before.seg if before else None)
            stripe_ids: dict[str, Any] = {"subscription": sub.id}
            if source is not None and source.line is not None and source.start == at:
                stripe_ids["invoice"] = source.line.invoice_id
                stripe_ids["line"] = source.line.id
            if source is not None and source.event_id and source.start == at:
                stripe_ids["event"] = source.event_id
            price_id = after.price_id if after is not None else (before.price_id if before else None)
            if price_id:
                stripe_ids["price"] = price_id
            changed_discounts = sorted(set(after.discounts if after else ()) ^ set(before.discounts if before else ()))
            if changed_discounts:
                stripe_ids["discount"] = changed_discounts[0] if len(changed_discounts) == 1 else changed_discounts
            ledger.append(LedgerChange(
                effective_at=at, customer_id=data.customer.id, subscription_id=sub.id,
                subscription_item_id=view.item_id, cause=cause, currency=currency,
                mrr_before_micro=before.mrr_micro if before else 0,
                mrr_after_micro=after.mrr_micro if after else 0,
                before=_state_dict(before), after=_state_dict(after), stripe_ids=stripe_ids))
            # Intervals with MRR above zero.
            opened = open_intervals.pop(view.item_id, None)
            if opened is not None:
                intervals.append(_interval(view.item_id, sub, data, opened, at))
            if after is not None and after.mrr_micro > 0:
                open_intervals[view.item_id] = (at, after)
            states[view.item_id] = after
        if any(s is not None and s.status == "active" for s in current.values()):
            sub_started = True
        if ended and sub_started:
            sub_ended_before = True
    for item_id, opened in open_intervals.items():
        intervals.append(_interval(item_id, sub, data, opened, None))
    return intervals, ledger


def _net_shares(lines: Iterable[InvoiceLine]) -> dict[str, list[tuple[int, Fraction]]]:
    """Per price, ``(period_start, net share)`` of its lines with inclusive tax, in time
    order. Stripe taxes the amount after discounts, so a line's net share is (amount after
    discounts - tax) / amount after discounts: 1 / (1 + rate) whatever the discount.

    Each share is the tax rounded to a minor unit over the line's amount, so it is only as
    exact as the amount is large: a proration line bills a part of a period, and its
    rounding would carry into the whole MRR (2 seats of 120.00 including 20 % tax after a
    change on day 16 of 31: a charge of 123.87 with 20.65 tax gives 199.99, not 200). Its
    shares count only for a price with no other line. Lines of a price starting together
    count as one (their sums), so the share does not depend on the lines' order."""
    sums: dict[str, dict[bool, dict[int, tuple[int, int]]]] = {}
    for line in lines:
        paid = line.amount - line.discount_amount
        if line.price_id and line.tax_inclusive_amount > 0 and paid > 0:
            by_start = sums.setdefault(line.price_id, {}).setdefault(line.proration, {})
            net, gross = by_start.get(line.period_start, (0, 0))
            by_start[line.period_start] = (net + paid - line.tax_inclusive_amount, gross + paid)
    shares: dict[str, list[tuple[int, Fraction]]] = {}
    for price_id, by_kind in sums.items():
        chosen = by_kind.get(False) or by_kind[True]
        shares[price_id] = [(start, Fraction(net, gross))
                            for start, (net, gross) in sorted(chosen.items())]
    return shares


def _rate_shares(sub: Subscription) -> dict[str, Fraction]:
    """Per item, the net share its inclusive tax rates give, 1 / (1 + rate): the item's own
    ``tax_rates``, else the subscription's ``default_tax_rates`` (Stripe's precedence).
    Used where only the price is known (no invoice line carries the tax)."""
    shares: dict[str, Fraction] = {}
    for item in sub.items:
        percent = item.inclusive_tax_percent
        if percent is None:
            percent = sub.default_inclusive_tax_percent
        if percent:
            shares[item.id] = 1 / (1 + Fraction(percent) / 100)
    return shares


def _net_share_at(entries: Sequence[tuple[int, Fraction]] | None, at: int) -> Fraction | None:
    """The net share in force at ``at``: from the latest line starting at or before it (a
    rate change shows from its first line on), else the earliest line."""
    if not entries:
        return None
    found = entries[0][1]
    for start, share in entries:
        if start > at:
            break
        found = share
    return found


def _state_dict(state: _ItemState | None) -> dict[str, Any] | None:
    if state is None:
        return None
    return {"price": state.price_id, "quantity": state.quantity, "discount": list(state.discounts),
            "status": state.status}


def _interval(item_id: str, sub: Subscription, data: CustomerData, opened: tuple[int, _ItemState],
              end: int | None) -> ItemInterval:
    start, state = opened
    price = data.prices.get(state.price_id or "")
    return ItemInterval(item_id=item_id, subscription_id=sub.id, price_id=state.price_id,
                        product_id=price.product_id if price else None, currency=sub.currency,
                        start=start, end=end, mrr_micro=state.mrr_micro)


# --------------------------------------------------------------------------- per customer


class UnusableCustomerData(ValueError):
    """The customer's objects contradict themselves (a required field missing, an unknown
    enum value, an impossible date): its history cannot be computed. The recompute leaves
    the customer out with this reason; the rest of the account is computed."""


def check_customer_data(data: CustomerData) -> None:
    """Raise :class:`UnusableCustomerData` naming the first object that makes the customer's
    history impossible to compute. A subscription dropped alone would rewrite the
    customer's history (a churn that never happened), so the customer is left out whole."""
    for sub in data.subscriptions:
        if not sub.currency:
            raise UnusableCustomerData(f"subscription {sub.id} has no currency")
        if sub.status not in KNOWN_STATUSES:
            raise UnusableCustomerData(f"subscription {sub.id} has unknown status {sub.status!r}")
        if sub.trial_start is not None and sub.trial_end is not None and sub.trial_end < sub.trial_start:
            raise UnusableCustomerData(f"subscription {sub.id}: trial ends ({sub.trial_end}) before "
                                       f"it starts ({sub.trial_start})")
        if sub.start_date is not None and sub.ended_at is not None and sub.ended_at < sub.start_date:
            raise UnusableCustomerData(f"subscription {sub.id} ended ({sub.ended_at}) before it "
                                       f"started ({sub.start_date})")
        for item in sub.items:
            if item.quantity is not None and item.quantity < 0:
                raise UnusableCustomerData(f"subscription item {item.id} has quantity {item.quantity}")
    for line in data.lines:
        if line.period_end < line.period_start:
            raise UnusableCustomerData(f"invoice line {line.id} (invoice {line.invoice_id}): period "
                                       f"ends ({line.period_end}) before it starts ({line.period_start})")
        if not line.currency:
            raise UnusableCustomerData(f"invoice line {line.id} (invoice {line.invoice_id}) has no currency")
        if line.quantity is not None and line.quantity < 0:
            raise UnusableCustomerData(f"invoice line {line.id} (invoice {line.invoice_id}) has "
                                       f"quantity {line.quantity}")


def customer_history(data: CustomerData, policies: Policies | None = None, *,
                     now: int | None = None) -> CustomerHistory:
    """The customer's MRR timeline, ledger and item intervals (see the module docstring).

    Raises :class:`UnusableCustomerData` when the objects contradict themselves
    (:func:`check_customer_data`); callers leave such a customer out with the reason.

    Points after ``now`` (a cancellation still ahead, a discount ending) are kept: they are
    what the policies say will happen; callers reporting months cut at ``now``.
    """
    del now  # accepted for callers; the history itself does not depend on it
    policies = policies or Policies()
    customer = data.customer
    if is_excluded(customer, policies.exclude_customers):
        return CustomerHistory(customer.id, {}, excluded=True)
    check_customer_data(data)
    skips: list[Skip] = []
    subs = {sub.id: sub for sub in data.subscriptions if sub.customer_id == customer.id}
    lines_by_sub: dict[str, list[InvoiceLine]] = {}
    for line in data.lines:
        if line.subscription_id is None:
            continue
        lines_by_sub.setdefault(line.subscription_id, []).append(line)
    for sub_id, sub_lines in lines_by_sub.items():
        if sub_id not in subs:
            # The subscription object is missing: its lines still tell its history; it ends
            # where its last line ends.
            subs[sub_id] = Subscription(id=sub_id, customer_id=customer.id, status="canceled",
                                        currency=sub_lines[0].currency)
    intervals: list[ItemInterval] = []
    ledger: list[LedgerChange] = []
    for sub_id in sorted(subs):
        sub_intervals, sub_ledger = _subscription_history(subs[sub_id], lines_by_sub.get(sub_id, []), data,
                                                          policies, skips)
        intervals.extend(sub_intervals)
        ledger.extend(sub_ledger)
    ledger.sort(key=lambda c: (c.effective_at, c.subscription_id or "", c.subscription_item_id or ""))
    points = _points(intervals)
    ledger = _mark_reactivations(ledger, points)
    return CustomerHistory(customer.id, points, tuple(ledger), tuple(intervals), tuple(skips))


def _mark_reactivations(ledger: list[LedgerChange], points: Mapping[str, Sequence[tuple[int, int]]]
                        ) -> list[LedgerChange]:
    """A new subscription of a customer who paid before and pays nothing just before it
    is the customer's reactivation."""
    first_paid = min((at for steps in points.values() for at, mrr in steps if mrr > 0), default=None)
    if first_paid is None:
        return ledger
    result = []
    for change in ledger:
        if (change.cause == "new_subscription" and change.mrr_after_micro > 0
                and change.effective_at > first_paid
                and not any(_value_at(steps, change.effective_at - 1) > 0 for steps in points.values())):
            change = replace(change, cause="reactivation")
        result.append(change)
    return result


def _value_at(steps: Sequence[tuple[int, int]], at: int) -> int:
    value = 0
    for effective_at, mrr in steps:
        if effective_at > at:
            break
        value = mrr
    return value


def _points(intervals: Sequence[ItemInterval]) -> dict[str, tuple[tuple[int, int], ...]]:
    deltas: dict[str, dict[int, int]] = {}
    for interval in intervals:
        per = deltas.setdefault(interval.currency, {})
        per[interval.start] = per.get(interval.start, 0) + interval.mrr_micro
        if interval.end is not None:
            per[interval.end] = per.get(interval.end, 0) - interval.mrr_micro
    points: dict[str, tuple[tuple[int, int], ...]] = {}
    for currency, per in deltas.items():
        running = 0
        steps: list[tuple[int, int]] = []
        for at in sorted(per):
            running += per[at]
            if steps and steps[-1][1] == running:
                continue
            if not steps and running == 0:
                continue
            steps.append((at, running))
        points[currency] = tuple(steps)
    return points


def mrr_at(history: CustomerHistory, at: int) -> dict[str, int]:
    """MRR per currency at instant ``at`` (micro units), from the step points."""
    result: dict[str, int] = {}
    for currency, steps in history.points.items():
        value = 0
        for effective_at, mrr in steps:
            if effective_at > at:
                break
            value = mrr
        if value:
            result[currency] = value
    return result


def mrr_before(history: CustomerHistory, at: int) -> dict[str, int]:
    """MRR per currency just before instant ``at``."""
    return mrr_at(history, at - 1)
