"""Plain typed records the normalisation works on (input) and produces (output).

Inputs are built from Stripe-shaped dicts by :mod:`nrr.domain.stripe_shapes` (or from
mirror rows by the recompute service). All instants are integer Unix seconds (UTC), all
amounts integers in the currency's minor unit, exact decimals as :class:`Decimal`.
Currencies are lower-case ISO codes. Records are frozen, slotted dataclasses: cheap to
build, hashable where their fields are, never mutated.

Outputs (:class:`TimelinePoint`, :class:`LedgerChange`, :class:`ItemInterval`,
:class:`CustomerHistory`, :class:`MonthFact`) are what :mod:`nrr.domain.history` and
:mod:`nrr.domain.movements` return; their fields match the tables in ``models.derived``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

# Subscription statuses whose items count towards MRR (definitions: "Which subscriptions count").
COUNTED_STATUSES = frozenset({"active", "past_due"})
# Invoice statuses whose lines describe service; draft and void never do.
SERVICE_INVOICE_STATUSES = frozenset({"paid", "open", "uncollectible"})

LedgerCause = Literal[
    "new_subscription",
    "seat_change",
    "plan_change",
    "price_change",
    "discount_start",
    "discount_end",
    "trial_conversion",
    "pause",
    "resume",
    "cancellation",
    "reactivation",
]
LEDGER_CAUSES: tuple[str, ...] = (
    "new_subscription", "seat_change", "plan_change", "price_change", "discount_start",
    "discount_end", "trial_conversion", "pause", "resume", "cancellation", "reactivation",
)

Movement = Literal["new", "reactivation", "expansion", "contraction", "churn"]


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class Skip:
    """An object the normaliser could not understand, and why. Everything else goes on."""

    object_type: str
    object_id: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Customer:
    id: str
    email: str | None = None
    country: str | None = None
    currency: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    deleted: bool = False
    livemode: bool = False
    # Customer-level discounts (applied after subscription ones).
    discount_ids: tuple[str, ...] = ()
    name: str | None = None
    created: int | None = None


@dataclass(frozen=True, slots=True)
class Product:
    id: str
    name: str | None = None
    active: bool = True
    livemode: bool = False
    created: int | None = None


@dataclass(frozen=True, slots=True)
class Tier:
    """One price tier; ``up_to`` None means infinity. Amounts per unit / flat, minor units."""

    up_to: int | None
    unit_amount_decimal: Decimal | None = None
    flat_amount_decimal: Decimal | None = None


@dataclass(frozen=True, slots=True)
class TransformQuantity:
    divide_by: int
    round: str  # "up" | "down"


@dataclass(frozen=True, slots=True)
class CurrencyOption:
    """The price in another currency (``Price.currency_options[currency]``)."""

    unit_amount_decimal: Decimal | None = None
    tiers: tuple[Tier, ...] = ()
    tax_behavior: str | None = None


@dataclass(frozen=True, slots=True)
class Price:
    id: str
    currency: str
    product_id: str | None = None
    billing_scheme: str = "per_unit"  # per_unit | tiered
    unit_amount_decimal: Decimal | None = None
    tiers: tuple[Tier, ...] = ()
    tiers_mode: str | None = None  # graduated | volume
    transform_quantity: TransformQuantity | None = None
    interval: str | None = None  # day | week | month | year; None for one_time prices
    interval_count: int = 1
    usage_type: str = "licensed"  # licensed | metered
    tax_behavior: str | None = None  # inclusive | exclusive | unspecified
    currency_options: Mapping[str, CurrencyOption] = field(default_factory=dict)
    nickname: str | None = None
    livemode: bool = False
    active: bool = True
    type: str | None = None  # recurring | one_time
    created: int | None = None

    @property
    def recurring(self) -> bool:
        return self.interval is not None


@dataclass(frozen=True, slots=True)
class Coupon:
    id: str
    percent_off: Decimal | None = None
    amount_off: int | None = None
    currency: str | None = None
    duration: str = "forever"  # once | repeating | forever
    duration_in_months: int | None = None
    # ``currency_options[cur].amount_off`` for amount coupons usable in several currencies.
    amount_off_by_currency: Mapping[str, int] = field(default_factory=dict)
    livemode: bool = False
    created: int | None = None


@dataclass(frozen=True, slots=True)
class Discount:
    """A coupon applied to a customer, subscription or item from ``start`` until ``end``.

    ``removed_at`` is when the worker saw it removed (an event), if it was removed before
    its ``end``.
    """

    id: str
    coupon_id: str | None
    customer_id: str | None = None
    subscription_id: str | None = None
    subscription_item_id: str | None = None
    start: int | None = None
    end: int | None = None
    removed_at: int | None = None
    invoice_id: str | None = None


@dataclass(frozen=True, slots=True)
class SubscriptionItem:
    id: str
    subscription_id: str
    price_id: str | None
    quantity: int | None = None  # None for metered items
    current_period_start: int | None = None
    current_period_end: int | None = None
    discount_ids: tuple[str, ...] = ()
    created: int | None = None
    # The item as Stripe sent it, when it was read from a payload (the mirror keeps it).
    payload: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)
    # Percent of tax included by the item's own ``tax_rates`` (sum of the inclusive ones);
    # None when the item lists no tax rate (the subscription's ``default_tax_rates`` apply).
    inclusive_tax_percent: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    customer_id: str
    status: str
    currency: str
    start_date: int | None = None
    created: int | None = None
    trial_start: int | None = None
    trial_end: int | None = None
    cancel_at: int | None = None
    cancel_at_period_end: bool = False
    canceled_at: int | None = None
    ended_at: int | None = None
    # ``status_details.paused.transitioned_at`` when status is paused.
    paused_at: int | None = None
    # ``pause_collection.behavior`` / ``resumes_at`` (None when collection is not paused).
    pause_collection_behavior: str | None = None
    pause_collection_resumes_at: int | None = None
    billing_cycle_anchor: int | None = None
    items: tuple[SubscriptionItem, ...] = ()
    discount_ids: tuple[str, ...] = ()
    livemode: bool = False
    # The Stripe state this record describes was observed at this instant (for "now").
    state_at: int | None = None
    # ``items`` holds every item (the embedded list said ``has_more: false``).
    items_complete: bool = field(default=False, compare=False)
    # Percent of tax included by ``default_tax_rates`` (None: none listed).
    default_inclusive_tax_percent: Decimal | None = None


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    """One invoice line of a subscription item (other lines are not MRR).

    ``amount`` is the line's amount in minor units before discounts (negative for the
    credit half of a proration); ``discount_amount`` the sum of ``discount_amounts``;
    ``tax_inclusive_amount`` the tax included in ``amount`` for tax-inclusive prices.
    """

    id: str
    invoice_id: str
    invoice_status: str | None
    customer_id: str | None
    subscription_id: str | None
    subscription_item_id: str | None
    price_id: str | None
    quantity: int | None
    period_start: int
    period_end: int
    amount: int
    currency: str
    proration: bool = False
    discount_ids: tuple[str, ...] = ()
    discount_amount: int = 0
    tax_inclusive_amount: int = 0
    livemode: bool = False
    # For proration lines: is this the credit for unused time of the old state ("Unused
    # time on ...": ``proration_details.credited_items`` set)? False: proration details
    # without credited items; None: no details. Only True is decisive: otherwise the
    # normaliser compares the line with the state in force (never the sign or the id).
    credited: bool | None = None
    # For non-proration lines: does this line NOT start where the previous non-proration
    # line of its item ended? None = unknown: history then compares the lines it was given
    # (correct only when given every line). See ``nrr.domain.history.select_state_lines``.
    follows_gap: bool | None = None
    # Kept for the mirror; the rules read ``quantity`` (a metered line's is its usage).
    quantity_decimal: Decimal | None = field(default=None, compare=False)
    # The line as Stripe sent it, when it was read from a payload (the mirror keeps it).
    payload: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Invoice:
    id: str
    customer_id: str | None
    subscription_id: str | None
    status: str | None
    currency: str
    billing_reason: str | None = None
    created: int | None = None
    period_start: int | None = None
    period_end: int | None = None
    finalized_at: int | None = None
    paid_at: int | None = None
    voided_at: int | None = None
    marked_uncollectible_at: int | None = None
    total: int | None = None
    discount_ids: tuple[str, ...] = ()
    livemode: bool = False
    # The embedded ``lines`` list holds every line (``has_more: false``).
    lines_complete: bool = field(default=False, compare=False)


@dataclass(frozen=True, slots=True)
class ObservedChange:
    """A change the worker saw itself (an event or a sync) with its exact instant.

    kinds:
    - ``item``: from ``at`` the item has ``price_id`` / ``quantity`` (a change made without
      proration; proration lines already date their changes).
    - ``discount_removed``: ``discount_id`` stopped applying at ``at``.
    - ``pause_collection``: collection paused (``paused=True``) or resumed at ``at``.
    - ``status``: the subscription paused (``paused=True``) or resumed at ``at``.
    """

    kind: str
    at: int
    subscription_id: str
    event_id: str | None = None
    subscription_item_id: str | None = None
    price_id: str | None = None
    quantity: int | None = None
    discount_id: str | None = None
    paused: bool | None = None


@dataclass(frozen=True, slots=True)
class CustomerData:
    """Everything one customer's history needs. Lookup dicts may hold more than needed."""

    customer: Customer
    subscriptions: tuple[Subscription, ...] = ()
    invoices: Mapping[str, Invoice] = field(default_factory=dict)
    lines: tuple[InvoiceLine, ...] = ()
    discounts: Mapping[str, Discount] = field(default_factory=dict)
    prices: Mapping[str, Price] = field(default_factory=dict)
    coupons: Mapping[str, Coupon] = field(default_factory=dict)
    observed: tuple[ObservedChange, ...] = ()


# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True, slots=True)
class TimelinePoint:
    """From ``effective_at`` on, the customer's MRR in ``currency`` is ``mrr_micro``."""

    currency: str
    effective_at: int
    mrr_micro: int


@dataclass(frozen=True, slots=True)
class LedgerChange:
    """One change of one subscription item (fields match ``models.derived.LedgerEntry``)."""

    effective_at: int
    customer_id: str
    subscription_id: str | None
    subscription_item_id: str | None
    cause: str
    currency: str
    mrr_before_micro: int
    mrr_after_micro: int
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    stripe_ids: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ItemInterval:
    """Item ``item_id`` had MRR ``mrr_micro`` (native currency) over [start, end)."""

    item_id: str
    subscription_id: str
    price_id: str | None
    product_id: str | None
    currency: str
    start: int
    end: int | None  # None = still in force
    mrr_micro: int


@dataclass(frozen=True, slots=True)
class CustomerHistory:
    customer_id: str
    points: Mapping[str, tuple[tuple[int, int], ...]]  # currency -> ((effective_at, mrr_micro), ...)
    ledger: tuple[LedgerChange, ...] = ()
    intervals: tuple[ItemInterval, ...] = ()
    skips: tuple[Skip, ...] = ()
    excluded: bool = False  # left out by policy exclude_customers

    def timeline(self) -> list[TimelinePoint]:
        return [
            TimelinePoint(currency, at, mrr)
            for currency, steps in sorted(self.points.items())
            for at, mrr in steps
        ]


@dataclass(slots=True)  # not frozen: built by the million, frozen init costs twice as much
class MonthFact:
    """Fields match ``models.derived.CustomerMonthFact`` (reporting currency micro units)."""

    month: str
    customer_id: str
    opening_mrr_micro: int
    closing_mrr_micro: int
    movement: str | None
    movement_micro: int
    fx_impact_micro: int
    first_paid_month: str | None
    currency: str | None
    plan: str | None
    product: str | None
    country: str | None
    metadata_: dict[str, Any] | None
    # The opening converted at the rate of the first day of the month eleven months later
    # (the last month of the trailing twelve months starting here): T12M in constant currency.
    opening_t12m_micro: int = 0
