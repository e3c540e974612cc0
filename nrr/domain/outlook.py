"""The outlook: the months ahead as Stripe already knows them (docs: "Outlook").

Committed MRR of a customer at a future instant is its MRR from today's Stripe state
carried forward with only the scheduled changes applied, under the same rules as the
history. No rule is implemented twice: the future comes from
:func:`nrr.domain.history.customer_history` itself.

- The history already carries today's state forward and dates what the subscription
  object schedules: ``cancel_at`` / ``cancel_at_period_end`` (policy ``churn_at``),
  discounts with an ``end``, trials ending (it counts every trial as converting),
  ``pause_collection.resumes_at`` (policy ``pause_collection``) and the day the
  ``past_due_churn_after_days`` policy stops counting a past-due subscription.
- A subscription schedule's later phases (other prices, quantities, discounts, a trial)
  and its end with ``end_behavior = cancel`` are not on the subscription object: each
  future phase is a *piece*, the subscription as that phase describes it, and its MRR is
  the history of that piece (no invoice lines: its items at the phase's prices and
  quantities from the phase's start). The subscription follows its real history until the
  first future phase starts and each piece over its phase.
- Two bounds: ``committed`` (no trial ahead converts: a subscription in or before a trial
  counts 0 from now on, a phase with a trial counts 0 from its start) and ``upper`` (every
  trial converts at its price after the trial, as the history counts it, and every
  ``pending_update`` waiting for a payment is paid now).

Every change after ``now`` becomes a :class:`ScheduledChange` (native currency, per
subscription) with its cause and Stripe ids. :func:`project_customer_months` turns a
customer's two step functions into projected months (opening, closing, movement per
bound, in the reporting currency), the rows the outlook tables store; the month totals
and NRR/GRR come from :func:`outlook_totals` with the same movement table as history.

Decisions where the definitions are silent (docs/outlook-schema.md repeats them):

- a ``pending_update`` counts only in the upper bound, from ``now`` (Stripe applies it as
  soon as the payment succeeds; it is discarded at ``expires_at`` otherwise); with a
  ``trial_end`` ahead it is a trial until then, its items counting from the trial's end;
- a schedule counts when its status is ``active`` or ``not_started`` and it names an
  existing subscription (no new customers, no new subscriptions);
- a future phase without discounts carries no subscription-level discount (Stripe sets
  the subscription's discounts to the phase's when the phase starts); customer-level
  discounts still apply;
- all projected months convert at one rate per currency, given by the caller.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from nrr.domain import history as domain_history
from nrr.domain.metrics import MonthTotals, add_group_to_totals
from nrr.domain.money import convert_micro_by
from nrr.domain.records import (
    CustomerData,
    CustomerHistory,
    Discount,
    ItemInterval,
    LedgerChange,
    Subscription,
    SubscriptionItem,
)
from nrr.settings import Policies

FOREVER = domain_history.FOREVER
COUNTED_SCHEDULE_STATUSES = frozenset({"active", "not_started"})
BOUNDS = ("committed", "upper")

OUTLOOK_CAUSES = ("scheduled_cancellation", "schedule_phase", "discount_end", "trial_end",
                  "pause", "past_due_policy", "pending_update")


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class PhaseDiscount:
    """One entry of ``phases[].discounts`` or ``phases[].items[].discounts``: a coupon to
    redeem, or an existing discount (with its own start and end)."""

    coupon_id: str | None = None
    discount_id: str | None = None


@dataclass(frozen=True, slots=True)
class PhaseItem:
    price_id: str | None
    quantity: int | None = None
    discounts: tuple[PhaseDiscount, ...] = ()


@dataclass(frozen=True, slots=True)
class SchedulePhase:
    start: int
    end: int | None
    items: tuple[PhaseItem, ...] = ()
    discounts: tuple[PhaseDiscount, ...] = ()
    trial_end: int | None = None


@dataclass(frozen=True, slots=True)
class SubscriptionSchedule:
    id: str
    customer_id: str | None
    subscription_id: str | None
    status: str
    end_behavior: str = "release"  # release | cancel | none | renew
    phases: tuple[SchedulePhase, ...] = ()
    # Facts of the payload the mirror keeps; not part of what the schedule plans.
    livemode: bool = field(default=False, compare=False)
    created: int | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class PendingItem:
    """One of ``pending_update.subscription_items``: the item as it will be if paid."""

    item_id: str | None
    price_id: str | None
    quantity: int | None = None


@dataclass(frozen=True, slots=True)
class PendingUpdate:
    subscription_id: str
    items: tuple[PendingItem, ...] = ()
    expires_at: int | None = None
    trial_end: int | None = None


# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True, slots=True)
class ScheduledChange:
    """A change of one subscription's MRR (native currency, micro) at ``effective_at``.

    ``bound``: ``committed`` changes happen in both bounds; ``upper`` ones only when trials
    convert and pending updates are paid."""

    effective_at: int
    customer_id: str
    subscription_id: str
    currency: str
    cause: str
    mrr_before_micro: int
    mrr_after_micro: int
    bound: str
    stripe_ids: dict[str, Any] = field(default_factory=dict)

    @property
    def delta_micro(self) -> int:
        return self.mrr_after_micro - self.mrr_before_micro


Steps = tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class CustomerOutlook:
    """The customer's step functions per currency (``(at, mrr_micro)``, the real history up
    to ``now``) under both bounds, and the scheduled changes after ``now``."""

    customer_id: str
    now: int
    committed: Mapping[str, Steps]
    upper: Mapping[str, Steps]
    changes: tuple[ScheduledChange, ...] = ()
    # Item intervals of the upper bound (segments of customers paying only in the future).
    intervals: tuple[ItemInterval, ...] = ()

    @property
    def static(self) -> bool:
        """No change after ``now`` in either bound: the customer's MRR stays as it is."""
        return not self.changes


# --------------------------------------------------------------------------- steps


def _steps_of(intervals: Iterable[ItemInterval]) -> dict[str, list[tuple[int, int]]]:
    return {cur: list(steps) for cur, steps in domain_history._points(list(intervals)).items()}


def value_at(steps: Sequence[tuple[int, int]], at: int) -> int:
    """The step function's value at ``at`` (0 before its first step)."""
    index = bisect_right(steps, (at, FOREVER)) - 1
    return steps[index][1] if index >= 0 else 0


@dataclass(slots=True)
class _Piece:
    """Over [start, end) the subscription's MRR is ``steps`` (native currency), with the
    change at ``start`` caused by ``cause`` (None: the value simply goes on)."""

    start: int
    end: int
    steps: list[tuple[int, int]]
    ledger: tuple[LedgerChange, ...]
    cause: str | None = None
    stripe_ids: dict[str, Any] = field(default_factory=dict)


def _compose(pieces: Sequence[_Piece]) -> list[tuple[int, int]]:
    """One step function from pieces ordered by start, the first one from -FOREVER, each
    in force until the next one starts; compressed (no repeated value, no leading 0)."""
    result: list[tuple[int, int]] = []
    for position, piece in enumerate(pieces):
        end = pieces[position + 1].start if position + 1 < len(pieces) else FOREVER
        if position == 0:
            candidates = [at for at, _ in piece.steps if at < end]
        else:
            candidates = [piece.start] + [at for at, _ in piece.steps if piece.start < at < end]
        for at in candidates:
            value = value_at(piece.steps, at)
            if (result and result[-1][1] == value) or (not result and value == 0):
                continue
            result.append((at, value))
    return result


# --------------------------------------------------------------------------- per customer


def customer_outlook(data: CustomerData, history: CustomerHistory, *, now: int,
                     policies: Policies | None = None,
                     schedules: Sequence[SubscriptionSchedule] = (),
                     pending_updates: Sequence[PendingUpdate] = ()) -> CustomerOutlook:
    """The customer's committed and upper MRR ahead (module docstring). ``history`` is
    ``customer_history(data, policies)``: the outlook reuses it, it never recomputes it."""
    policies = policies or Policies()
    cid = data.customer.id
    if history.excluded:
        return CustomerOutlook(cid, now, {}, {})
    by_sub: dict[str, list[ItemInterval]] = {}
    for interval in history.intervals:
        by_sub.setdefault(interval.subscription_id, []).append(interval)
    subs = {sub.id: sub for sub in data.subscriptions if sub.customer_id == cid}
    schedule_of = {s.subscription_id: s for s in schedules
                   if s.subscription_id and s.status in COUNTED_SCHEDULE_STATUSES}
    pending_of = {p.subscription_id: p for p in pending_updates}
    if not any(_trial_ahead(sub, now) is not None or sub.id in schedule_of or sub.id in pending_of
               or _resumes_ahead(sub, now, policies) for sub in subs.values()) \
            and not any(at > now for steps in history.points.values() for at, _ in steps):
        # Nothing scheduled (the common case): the customer stays as it is.
        return CustomerOutlook(cid, now, history.points, history.points)
    ledger_by_sub: dict[str, list[LedgerChange]] = {}
    for change in history.ledger:
        if change.subscription_id is not None and change.effective_at > now:
            ledger_by_sub.setdefault(change.subscription_id, []).append(change)

    committed: dict[str, list[list[tuple[int, int]]]] = {}
    upper: dict[str, list[list[tuple[int, int]]]] = {}
    changes: list[ScheduledChange] = []
    upper_intervals: list[ItemInterval] = list(history.intervals)
    for sub_id in sorted(set(by_sub) | set(subs)):
        intervals = by_sub.get(sub_id, [])
        sub = subs.get(sub_id)
        real_steps = _steps_of(intervals)
        currency = sub.currency if sub is not None else (intervals[0].currency if intervals else "")
        real = real_steps.get(currency, [])
        real_piece = _Piece(-FOREVER, FOREVER, real, tuple(ledger_by_sub.get(sub_id, ())))
        if sub is None:
            pieces_upper = pieces_committed = [real_piece]
        else:
            pieces_upper, pieces_committed, extra = _subscription_pieces(
                sub, real_piece, data, policies, now, schedule_of.get(sub_id), pending_of.get(sub_id))
            upper_intervals.extend(extra)
        pieces_upper = sorted(pieces_upper, key=_start)
        pieces_committed = sorted(pieces_committed, key=_start)
        steps_upper = _compose(pieces_upper)
        steps_committed = _compose(pieces_committed)
        if steps_upper:
            upper.setdefault(currency, []).append(steps_upper)
        if steps_committed:
            committed.setdefault(currency, []).append(steps_committed)
        sub_changes_committed = _changes(cid, sub_id, currency, steps_committed, pieces_committed,
                                         now, "committed")
        sub_changes_upper = _changes(cid, sub_id, currency, steps_upper, pieces_upper, now, "upper")
        keys = {(c.effective_at, c.mrr_before_micro, c.mrr_after_micro) for c in sub_changes_committed}
        changes.extend(sub_changes_committed)
        changes.extend(c for c in sub_changes_upper
                       if (c.effective_at, c.mrr_before_micro, c.mrr_after_micro) not in keys)
    changes.sort(key=lambda c: (c.effective_at, c.subscription_id, c.bound))
    return CustomerOutlook(
        cid, now, {cur: _sum_steps(parts) for cur, parts in committed.items()},
        {cur: _sum_steps(parts) for cur, parts in upper.items()},
        tuple(changes), tuple(upper_intervals))


def _start(piece: _Piece) -> int:
    return piece.start


def _sum_steps(parts: Sequence[Sequence[tuple[int, int]]]) -> Steps:
    """The sum of several step functions, compressed."""
    instants = sorted({at for part in parts for at, _ in part})
    result: list[tuple[int, int]] = []
    for at in instants:
        value = sum(value_at(part, at) for part in parts)
        if (result and result[-1][1] == value) or (not result and value == 0):
            continue
        result.append((at, value))
    return tuple(result)


def _subscription_pieces(sub: Subscription, real: _Piece, data: CustomerData, policies: Policies,
                         now: int, schedule: SubscriptionSchedule | None,
                         pending: PendingUpdate | None
                         ) -> tuple[list[_Piece], list[_Piece], list[ItemInterval]]:
    """(upper pieces, committed pieces, upper item intervals of the pieces)."""
    future_phases: list[tuple[int, SchedulePhase]] = []
    schedule_end: int | None = None
    if schedule is not None:
        phases = sorted(schedule.phases, key=lambda p: p.start)
        future_phases = [(i, p) for i, p in enumerate(phases) if p.start > now]
        if schedule.end_behavior == "cancel" and phases and phases[-1].end is not None \
                and phases[-1].end > now:
            schedule_end = phases[-1].end
    upper: list[_Piece] = [real]
    committed: list[_Piece] = [real]
    extra: list[ItemInterval] = []
    assert schedule is not None or not future_phases
    for position, (index, phase) in enumerate(future_phases):
        last = position == len(future_phases) - 1
        end = future_phases[position + 1][1].start if not last else FOREVER
        piece_sub, discounts = _phase_subscription(sub, schedule, index, phase, data,
                                                   end_at=schedule_end if last else None)
        piece_history = domain_history.customer_history(
            replace(data, subscriptions=(piece_sub,), lines=(), discounts=discounts), policies)
        extra.extend(i for i in piece_history.intervals if i.start < end)
        steps = _steps_of(piece_history.intervals).get(sub.currency, [])
        ids: dict[str, Any] = {"subscription": sub.id, "subscription_schedule": schedule.id}  # type: ignore[union-attr]
        prices = sorted({item.price_id for item in phase.items if item.price_id})
        if prices:
            ids["price"] = prices[0] if len(prices) == 1 else prices
        piece = _Piece(phase.start, end, steps,
                       tuple(ch for ch in piece_history.ledger if ch.effective_at > phase.start),
                       "schedule_phase", ids)
        upper.append(piece)
        trial_from = phase.start if phase.trial_end is not None and phase.trial_end > phase.start else None
        committed.append(_Piece(phase.start, end, [], (), "trial_end", ids) if trial_from is not None
                         else piece)
    if schedule_end is not None and not future_phases:
        # The phase in force now is the last: the subscription ends with the schedule.
        ids = {"subscription": sub.id, "subscription_schedule": schedule.id}  # type: ignore[union-attr]
        ended = _Piece(schedule_end, FOREVER, [], (), "scheduled_cancellation", ids)
        upper.append(ended)
        committed.append(ended)
    if pending is not None and (pending.expires_at is None or pending.expires_at > now):
        first_phase = future_phases[0][1].start if future_phases else FOREVER
        pending_sub = _pending_subscription(sub, pending, now)
        piece_history = domain_history.customer_history(
            replace(data, subscriptions=(pending_sub,), lines=()), policies)
        steps = _steps_of(piece_history.intervals).get(sub.currency, [])
        # Its ledger names what happens inside it later (a trial of the update ending).
        piece = _Piece(now, first_phase, steps,
                       tuple(ch for ch in piece_history.ledger if ch.effective_at > now),
                       "pending_update",
                       {"subscription": sub.id, **({"price": sorted({i.price_id for i in pending.items
                                                                     if i.price_id})}
                                                   if pending.items else {})})
        upper.insert(1, piece)
        extra.extend(i for i in piece_history.intervals if i.start < first_phase)
    resumes_at = sub.pause_collection_resumes_at
    first_phase = future_phases[0][1].start if future_phases else FOREVER
    if resumes_at is not None and _resumes_ahead(sub, now, policies) and resumes_at < first_phase:
        # Invoices of the paused periods are not service under ``exclude``; from
        # ``resumes_at`` Stripe bills again: today's items from then on.
        resumed = replace(sub, pause_collection_behavior=None, pause_collection_resumes_at=None,
                          start_date=resumes_at, created=None,
                          items=tuple(replace(item, created=None) for item in sub.items))
        piece_history = domain_history.customer_history(
            replace(data, subscriptions=(resumed,), lines=(), observed=()), policies)
        piece = _Piece(resumes_at, first_phase, _steps_of(piece_history.intervals).get(sub.currency, []),
                       tuple(ch for ch in piece_history.ledger if ch.effective_at > resumes_at),
                       "pause", {"subscription": sub.id})
        upper.append(piece)
        committed.append(piece)
        extra.extend(piece_history.intervals)
    trial_start = _trial_ahead(sub, now)
    if trial_start is not None:
        # Committed bound: a trial ahead (or running) never converts.
        first_phase = future_phases[0][1].start if future_phases else FOREVER
        committed = [committed[0], _Piece(trial_start, first_phase, [], (), "trial_end",
                                          {"subscription": sub.id}), *committed[1:]]
    return upper, committed, extra


def _resumes_ahead(sub: Subscription, now: int, policies: Policies) -> bool:
    """Collection paused under ``pause_collection=exclude`` and resuming after now."""
    return (policies.pause_collection == "exclude" and sub.pause_collection_behavior is not None
            and sub.pause_collection_resumes_at is not None and sub.pause_collection_resumes_at > now)


def _trial_ahead(sub: Subscription, now: int) -> int | None:
    """Where the committed bound stops counting a subscription whose trial ends after now."""
    if sub.trial_end is None or sub.trial_end <= now:
        return None
    start = sub.trial_start if sub.trial_start is not None else now
    return max(start, now)


def _phase_subscription(sub: Subscription, schedule: SubscriptionSchedule | None, index: int,
                        phase: SchedulePhase, data: CustomerData, *, end_at: int | None
                        ) -> tuple[Subscription, dict[str, Discount]]:
    """The subscription as phase ``index`` describes it, and the discounts it carries."""
    assert schedule is not None
    prefix = f"{schedule.id}#{index}"
    discounts = {d.id: d for d in data.discounts.values()
                 if d.subscription_id is None and d.subscription_item_id is None and d.invoice_id is None}

    def resolve(entries: Sequence[PhaseDiscount], key: str, item_id: str | None) -> tuple[str, ...]:
        ids: list[str] = []
        for n, entry in enumerate(entries):
            if entry.discount_id is not None and entry.discount_id in data.discounts:
                # An existing discount keeps its own start and end.
                disc = replace(data.discounts[entry.discount_id],
                               subscription_id=sub.id if item_id is None else None,
                               subscription_item_id=item_id, removed_at=None)
            elif entry.coupon_id is not None:
                disc = Discount(id=f"{prefix}:{key}:{n}", coupon_id=entry.coupon_id,
                                customer_id=sub.customer_id,
                                subscription_id=sub.id if item_id is None else None,
                                subscription_item_id=item_id, start=phase.start)
            else:
                continue
            discounts[disc.id] = disc
            ids.append(disc.id)
        return tuple(ids)

    period_ends = [it.current_period_end for it in sub.items if it.current_period_end is not None]
    items = []
    for n, item in enumerate(phase.items):
        item_id = f"{prefix}:item:{n}"
        items.append(SubscriptionItem(
            id=item_id, subscription_id=sub.id, price_id=item.price_id, quantity=item.quantity,
            current_period_end=max(period_ends) if period_ends else None,
            discount_ids=resolve(item.discounts, f"item{n}", item_id)))
    trial_start, trial_end = sub.trial_start, sub.trial_end
    if phase.trial_end is not None and phase.trial_end > phase.start:
        trial_start, trial_end = phase.start, phase.trial_end
    elif trial_end is not None and trial_end <= phase.start:
        trial_start = trial_end = None
    cancel_at = sub.cancel_at
    if end_at is not None:
        cancel_at = end_at if cancel_at is None else min(cancel_at, end_at)
    piece = replace(sub, items=tuple(items), start_date=phase.start, created=None,
                    trial_start=trial_start, trial_end=trial_end, cancel_at=cancel_at,
                    ended_at=None, discount_ids=resolve(phase.discounts, "sub", None))
    return piece, discounts


def _pending_subscription(sub: Subscription, pending: PendingUpdate, now: int) -> Subscription:
    """The subscription as it will be once the pending update is paid (from ``now``)."""
    updated = {p.item_id: p for p in pending.items if p.item_id}
    items = []
    for item in sub.items:
        change = updated.pop(item.id, None)
        if change is not None:
            item = replace(item, price_id=change.price_id or item.price_id,
                           quantity=change.quantity if change.quantity is not None else item.quantity)
        items.append(replace(item, created=None))
    added = [p for p in pending.items if not p.item_id or p.item_id in updated]
    for n, change in enumerate(added):
        items.append(SubscriptionItem(id=change.item_id or f"{sub.id}#pending:{n}",
                                      subscription_id=sub.id, price_id=change.price_id,
                                      quantity=change.quantity))
    # ``pending_update.trial_end``: paid, the update puts the subscription in a trial until
    # then (nothing charged), and its items count from the trial's end, as a trial does.
    trial_end = pending.trial_end if pending.trial_end is not None and pending.trial_end > now \
        else None
    return replace(sub, items=tuple(items), start_date=now, created=None,
                   trial_start=now if trial_end is not None else None, trial_end=trial_end,
                   ended_at=None)


# --------------------------------------------------------------------------- causes

_LEDGER_CAUSES = {
    "cancellation": "scheduled_cancellation",
    "discount_end": "discount_end",
    "discount_start": "schedule_phase",
    "trial_conversion": "trial_end",
}


def _ledger_cause(entries: Sequence[LedgerChange]) -> tuple[str, dict[str, Any]]:
    """The outlook cause of a subscription's change from its ledger entries at one instant
    (the largest change names it) and the Stripe ids behind them."""
    main = max(entries, key=lambda e: (abs(e.mrr_after_micro - e.mrr_before_micro),
                                       e.subscription_item_id or ""))
    ids: dict[str, Any] = {}
    for entry in entries:
        for key, value in entry.stripe_ids.items():
            ids.setdefault(key, value)
    cause = _LEDGER_CAUSES.get(main.cause)
    if cause is None:
        status_after = (main.after or {}).get("status")
        status_before = (main.before or {}).get("status")
        if "past_due" in (status_after, status_before):
            cause = "past_due_policy"
        elif main.cause in ("pause", "resume"):
            cause = "pause"
        else:
            cause = "schedule_phase"
    return cause, ids


def _changes(cid: str, sub_id: str, currency: str, steps: Sequence[tuple[int, int]],
             pieces: Sequence[_Piece], now: int, bound: str) -> list[ScheduledChange]:
    result: list[ScheduledChange] = []
    for at, value in steps:
        if at < now or (at == now and not any(p.start == now and p.cause for p in pieces)):
            continue
        owner = next((p for p in reversed(pieces) if p.start <= at), pieces[0])
        before = value_at(steps, at - 1)
        if owner.start == at and owner.cause is not None:
            cause, ids = owner.cause, dict(owner.stripe_ids)
        else:
            entries = [e for e in owner.ledger if e.effective_at == at]
            cause, ids = _ledger_cause(entries) if entries else (owner.cause or "schedule_phase",
                                                                 {})
            ids.setdefault("subscription", sub_id)
            if owner.cause == "schedule_phase" and "subscription_schedule" in owner.stripe_ids:
                ids.setdefault("subscription_schedule", owner.stripe_ids["subscription_schedule"])
        result.append(ScheduledChange(at, cid, sub_id, currency, cause, before, value, bound, ids))
    return result


# --------------------------------------------------------------------------- months


@dataclass(slots=True)
class ProjectedFact:
    """One customer's projected month under both bounds (reporting currency, micro)."""

    month: str
    customer_id: str
    opening_micro: int
    closing_micro: int
    movement: str | None
    movement_micro: int
    opening_upper_micro: int
    closing_upper_micro: int
    movement_upper: str | None
    movement_upper_micro: int


def classify(opening: int, closing: int, *, paid_before: bool) -> tuple[str | None, int]:
    """The movement table of docs/revenue-definitions.md ("Movements")."""
    if opening == 0 and closing > 0:
        return ("reactivation" if paid_before else "new"), closing
    if opening > 0 and closing == 0:
        return "churn", opening
    if opening > 0 and closing > opening:
        return "expansion", closing - opening
    if opening > 0 and 0 < closing < opening:
        return "contraction", opening - closing
    return None, 0


Convert = Callable[[str, int], int]


def converter(factors: Mapping[str, tuple[int, int]], reporting: str) -> Convert:
    """``(currency, micro) -> reporting micro`` at one exact factor per currency."""
    reporting = reporting.lower()

    def convert(currency: str, value: int) -> int:
        if not value or currency == reporting:
            return value
        return convert_micro_by(value, factors[currency])

    return convert


def _total(steps: Mapping[str, Steps], at: int, convert: Convert) -> int:
    return sum(convert(cur, value_at(s, at)) for cur, s in steps.items())


def _paid_before(steps: Mapping[str, Steps], at: int) -> bool:
    return any(mrr > 0 and t < at for s in steps.values() for t, mrr in s)


def project_customer_months(outlook: CustomerOutlook, months: Sequence[tuple[str, int, int]],
                            convert: Convert) -> list[ProjectedFact]:
    """Projected months ``(month, first instant, next month's first instant)`` of one
    customer; months where it pays at neither edge under either bound are left out."""
    rows: list[ProjectedFact] = []
    for month, begin, end in months:
        o = _total(outlook.committed, begin - 1, convert)
        c = _total(outlook.committed, end - 1, convert)
        ou = _total(outlook.upper, begin - 1, convert)
        cu = _total(outlook.upper, end - 1, convert)
        if not (o or c or ou or cu):
            continue
        movement, amount = classify(o, c, paid_before=_paid_before(outlook.committed, begin))
        movement_u, amount_u = classify(ou, cu, paid_before=_paid_before(outlook.upper, begin))
        rows.append(ProjectedFact(month, outlook.customer_id, o, c, movement, amount, ou, cu,
                                  movement_u, amount_u))
    return rows


def static_customer_months(customer_id: str, opening: int, now_mrr: int, paid_before: bool,
                           months: Sequence[tuple[str, int, int]]) -> list[ProjectedFact]:
    """Projected months of a customer with no scheduled change: the current month from its
    real opening to its MRR now, every later month flat at its MRR now."""
    rows = []
    for position, (month, _begin, _end) in enumerate(months):
        o = opening if position == 0 else now_mrr
        if not (o or now_mrr):
            continue
        movement, amount = classify(o, now_mrr, paid_before=paid_before)
        rows.append(ProjectedFact(month, customer_id, o, now_mrr, movement, amount, o, now_mrr,
                                  movement, amount))
    return rows


def add_to_totals(totals: MonthTotals, opening: int, closing: int, movement: str | None,
                  amount: int) -> MonthTotals:
    """``totals`` with one customer's projected month folded in."""
    return add_group_to_totals(totals, movement, opening=opening, closing=closing,
                               amount=amount, customers=1,
                               customers_opening=1 if opening > 0 else 0,
                               customers_closing=1 if closing > 0 else 0)


def outlook_totals(rows: Iterable[ProjectedFact]) -> dict[str, dict[str, MonthTotals]]:
    """``{month: {"committed": totals, "upper": totals}}`` of projected customer months."""
    result: dict[str, dict[str, MonthTotals]] = {}
    for row in rows:
        per = result.setdefault(row.month, {"committed": MonthTotals(), "upper": MonthTotals()})
        per["committed"] = add_to_totals(per["committed"], row.opening_micro, row.closing_micro,
                                         row.movement, row.movement_micro)
        per["upper"] = add_to_totals(per["upper"], row.opening_upper_micro, row.closing_upper_micro,
                                     row.movement_upper, row.movement_upper_micro)
    return result


def known_in_advance(real: Mapping[str, tuple[str | None, int]],
                     projected: Mapping[str, tuple[str | None, int]]) -> dict[str, Any]:
    """Share of a closed month's churn and contraction the outlook at its opening held.

    ``real``/``projected``: customer -> (movement, amount). A customer's real churn (or
    contraction) counts as known up to the drop the outlook projected for it (its
    projected churn or contraction amount)."""
    sums = {"churn": [0, 0], "contraction": [0, 0]}
    for cid, (movement, amount) in real.items():
        if movement not in sums:
            continue
        sums[movement][0] += amount
        p_movement, p_amount = projected.get(cid, (None, 0))
        if p_movement in ("churn", "contraction"):
            sums[movement][1] += min(amount, p_amount)
    return {key: {"real_micro": total, "known_micro": known}
            for key, (total, known) in sums.items()}
