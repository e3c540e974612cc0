"""Mirror of the Stripe objects: parsed columns for the heavy paths plus the raw payload.

Stripe instants are kept as they come, integer Unix seconds (UTC). ``state_at`` is the
instant the stored state describes (the event's ``created`` for event-fed updates, the
fetch time for list-fed ones); an update whose ``state_at`` is older than the stored
one is ignored, so out-of-order deliveries never overwrite newer state.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigIntPK, JSONType, UTCDateTime, utcnow


class StripeObjectMixin:
    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    livemode: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[int | None] = mapped_column(BigInteger)
    state_at: Mapped[int] = mapped_column(BigInteger, default=0)
    raw: Mapped[dict[str, Any]] = mapped_column(JSONType)
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class StripeCustomer(StripeObjectMixin, Base):
    __tablename__ = "stripe_customers"

    email: Mapped[str | None] = mapped_column(String(512))
    name: Mapped[str | None] = mapped_column(String(512))
    country: Mapped[str | None] = mapped_column(String(8))
    currency: Mapped[str | None] = mapped_column(String(3))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    # The customer-level discount (``discount.id``).
    discount_id: Mapped[str | None] = mapped_column(String(255))


class StripeProduct(StripeObjectMixin, Base):
    __tablename__ = "stripe_products"

    name: Mapped[str | None] = mapped_column(String(512))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)


class StripePrice(StripeObjectMixin, Base):
    __tablename__ = "stripe_prices"

    product_id: Mapped[str | None] = mapped_column(String(255), index=True)
    currency: Mapped[str] = mapped_column(String(3))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    type: Mapped[str | None] = mapped_column(String(32))
    billing_scheme: Mapped[str | None] = mapped_column(String(32))
    tiers_mode: Mapped[str | None] = mapped_column(String(32))
    # Exact decimal string in minor units (Stripe's unit_amount_decimal).
    unit_amount_decimal: Mapped[str | None] = mapped_column(String(64))
    interval: Mapped[str | None] = mapped_column(String(16))
    interval_count: Mapped[int | None] = mapped_column(Integer)
    usage_type: Mapped[str | None] = mapped_column(String(16))
    tax_behavior: Mapped[str | None] = mapped_column(String(16))
    nickname: Mapped[str | None] = mapped_column(String(512))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)


class StripeCoupon(StripeObjectMixin, Base):
    __tablename__ = "stripe_coupons"

    percent_off: Mapped[str | None] = mapped_column(String(32))
    amount_off: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    duration: Mapped[str | None] = mapped_column(String(16))
    duration_in_months: Mapped[int | None] = mapped_column(Integer)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)


class StripeSubscription(StripeObjectMixin, Base):
    __tablename__ = "stripe_subscriptions"

    customer_id: Mapped[str] = mapped_column(String(255), index=True)
    status: Mapped[str] = mapped_column(String(32))
    currency: Mapped[str | None] = mapped_column(String(3))
    start_date: Mapped[int | None] = mapped_column(BigInteger)
    trial_start: Mapped[int | None] = mapped_column(BigInteger)
    trial_end: Mapped[int | None] = mapped_column(BigInteger)
    cancel_at: Mapped[int | None] = mapped_column(BigInteger)
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, default=False)
    canceled_at: Mapped[int | None] = mapped_column(BigInteger)
    ended_at: Mapped[int | None] = mapped_column(BigInteger)
    paused_at: Mapped[int | None] = mapped_column(BigInteger)
    pause_collection: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    discount_ids: Mapped[list[str]] = mapped_column(JSONType, default=list)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    billing_cycle_anchor: Mapped[int | None] = mapped_column(BigInteger)
    # Exact decimal string: the percent of tax included by ``default_tax_rates`` (None: none).
    default_inclusive_tax_percent: Mapped[str | None] = mapped_column(String(64))


class StripeSubscriptionItem(StripeObjectMixin, Base):
    __tablename__ = "stripe_subscription_items"

    subscription_id: Mapped[str] = mapped_column(String(255), index=True)
    customer_id: Mapped[str | None] = mapped_column(String(255), index=True)
    price_id: Mapped[str | None] = mapped_column(String(255))
    quantity: Mapped[int | None] = mapped_column(BigInteger)
    current_period_start: Mapped[int | None] = mapped_column(BigInteger)
    current_period_end: Mapped[int | None] = mapped_column(BigInteger)
    discount_ids: Mapped[list[str]] = mapped_column(JSONType, default=list)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    # Exact decimal string: the percent of tax included by the item's ``tax_rates`` (None: none).
    inclusive_tax_percent: Mapped[str | None] = mapped_column(String(64))


class StripeDiscount(StripeObjectMixin, Base):
    """Discounts seen on subscriptions, items, customers and invoices (they cannot be listed)."""

    __tablename__ = "stripe_discounts"

    coupon_id: Mapped[str | None] = mapped_column(String(255))
    customer_id: Mapped[str | None] = mapped_column(String(255), index=True)
    subscription_id: Mapped[str | None] = mapped_column(String(255), index=True)
    subscription_item_id: Mapped[str | None] = mapped_column(String(255))
    invoice_id: Mapped[str | None] = mapped_column(String(255))
    start: Mapped[int | None] = mapped_column(BigInteger)
    end: Mapped[int | None] = mapped_column(BigInteger)
    # Set when the worker saw the discount removed (event), else None.
    removed_at: Mapped[int | None] = mapped_column(BigInteger)


class StripeInvoice(StripeObjectMixin, Base):
    __tablename__ = "stripe_invoices"
    # A customer's invoices, with what the recompute filters them by (unpaid, or paid
    # late): a chunk of customers reads only the matching rows (an invoice row with its
    # raw payload fills about a page).
    __table_args__ = (
        Index("ix_stripe_invoices_customer_status", "customer_id", "status", "paid_at",
              "finalized_at"),
    )

    customer_id: Mapped[str | None] = mapped_column(String(255))
    subscription_id: Mapped[str | None] = mapped_column(String(255), index=True)
    status: Mapped[str | None] = mapped_column(String(32))
    billing_reason: Mapped[str | None] = mapped_column(String(64))
    currency: Mapped[str | None] = mapped_column(String(3))
    period_start: Mapped[int | None] = mapped_column(BigInteger)
    period_end: Mapped[int | None] = mapped_column(BigInteger)
    finalized_at: Mapped[int | None] = mapped_column(BigInteger)
    paid_at: Mapped[int | None] = mapped_column(BigInteger)
    total: Mapped[int | None] = mapped_column(BigInteger)
    discount_ids: Mapped[list[str]] = mapped_column(JSONType, default=list)
    # False until every line was stored (paging /v1/invoices/{id}/lines when needed).
    lines_complete: Mapped[bool] = mapped_column(Boolean, default=False)


class StripeInvoiceLine(Base):
    __tablename__ = "stripe_invoice_lines"
    __table_args__ = (
        Index("ix_stripe_invoice_lines_item_period", "subscription_item_id", "period_start"),
        # A customer's lines with every column the recompute groups its cycle lines by
        # (``state_lines_query``): the grouping reads the index, not the rows.
        Index("ix_stripe_invoice_lines_customer_state", "customer_id", "proration",
              "livemode", "subscription_item_id", "price_id", "quantity", "discount_ids",
              "invoice_status", "period_start", "period_end"),
    )

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    invoice_id: Mapped[str] = mapped_column(String(255), index=True)
    customer_id: Mapped[str | None] = mapped_column(String(255))
    subscription_id: Mapped[str | None] = mapped_column(String(255))
    subscription_item_id: Mapped[str | None] = mapped_column(String(255))
    price_id: Mapped[str | None] = mapped_column(String(255))
    # Denormalised from the invoice so the history query needs no join.
    invoice_status: Mapped[str | None] = mapped_column(String(32))
    quantity: Mapped[int | None] = mapped_column(BigInteger)
    quantity_decimal: Mapped[str | None] = mapped_column(String(64))
    period_start: Mapped[int | None] = mapped_column(BigInteger)
    period_end: Mapped[int | None] = mapped_column(BigInteger)
    amount: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    proration: Mapped[bool] = mapped_column(Boolean, default=False)
    discount_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    discount_ids: Mapped[list[str]] = mapped_column(JSONType, default=list)
    livemode: Mapped[bool] = mapped_column(Boolean, default=False)
    raw: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # Proration lines: the credit of unused time (``proration_details.credited_items`` set),
    # False the new state's line, None unknown (no proration details, or not a proration).
    credited: Mapped[bool | None] = mapped_column(Boolean)
    # The tax included in ``amount`` (``taxes`` of ``tax_behavior: inclusive``); None: 0.
    tax_inclusive_amount: Mapped[int | None] = mapped_column(BigInteger)


class StripeEvent(Base):
    """Every event seen, from /v1/events or the webhook; the id makes duplicates no-ops."""

    __tablename__ = "stripe_events"
    __table_args__ = (Index("ix_stripe_events_created", "created"),
                      Index("ix_stripe_events_customer", "customer_id", "created"))

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(128))
    created: Mapped[int] = mapped_column(BigInteger)
    api_version: Mapped[str | None] = mapped_column(String(64))
    object_id: Mapped[str | None] = mapped_column(String(255))
    object_type: Mapped[str | None] = mapped_column(String(64))
    # The customer of the event's object (``data.object.customer``) when it names one.
    customer_id: Mapped[str | None] = mapped_column(String(255))
    livemode: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[str] = mapped_column(String(16), default="events")
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    raw: Mapped[dict[str, Any]] = mapped_column(JSONType)


class SyncState(Base):
    """Per-resource sync progress; ``cursor`` is the last stored id of an unfinished backfill."""

    __tablename__ = "sync_state"

    resource: Mapped[str] = mapped_column(String(64), primary_key=True)
    phase: Mapped[str] = mapped_column(String(16), default="idle")
    cursor: Mapped[str | None] = mapped_column(String(255))
    event_cursor: Mapped[int | None] = mapped_column(BigInteger)
    objects_synced: Mapped[int] = mapped_column(BigInteger, default=0)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)


class QuarantinedObject(Base):
    """An object that could not be understood, kept with the reason; the work went on."""

    __tablename__ = "quarantine"
    __table_args__ = (Index("ix_quarantine_object", "object_type", "object_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    object_type: Mapped[str] = mapped_column(String(64))
    object_id: Mapped[str | None] = mapped_column(String(255))
    stage: Mapped[str] = mapped_column(String(32), default="sync")
    reason: Mapped[str] = mapped_column(Text)
    raw: Mapped[Any | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DirtyCustomer(Base):
    """Customers whose Stripe data changed since the last recompute (incremental recompute)."""

    __tablename__ = "dirty_customers"

    customer_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    marked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
