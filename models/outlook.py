"""The outlook's tables: the subscription schedules mirrored from Stripe, and what each
recompute projects (docs/outlook-schema.md).

- ``stripe_subscription_schedules``: a mirror table like the others (parsed columns for
  the recompute's selection, the raw payload holds the phases).
- ``outlook_months``: per customer with something scheduled, each projected month under
  both bounds (reporting currency, micro). Customers with nothing scheduled have no row:
  their months are their current month's fact, flat after it.
- ``outlook_changes``: every scheduled change with its cause and Stripe ids.
- ``outlook_runs``: when the stored outlook was taken (one row per recompute that wrote it).
- ``outlook_openings`` / ``outlook_opening_drops``: the outlook taken at a month's opening
  (the first full recompute in the month), kept for "known in advance".
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigIntPK, JSONType, UTCDateTime, utcnow
from models.mirror import StripeObjectMixin


class StripeSubscriptionSchedule(StripeObjectMixin, Base):
    __tablename__ = "stripe_subscription_schedules"

    customer_id: Mapped[str | None] = mapped_column(String(255), index=True)
    subscription_id: Mapped[str | None] = mapped_column(String(255), index=True)
    status: Mapped[str | None] = mapped_column(String(32))
    end_behavior: Mapped[str | None] = mapped_column(String(32))


class OutlookRun(Base):
    __tablename__ = "outlook_runs"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    recompute_run_id: Mapped[int | None] = mapped_column(BigInteger)
    taken_at: Mapped[int] = mapped_column(BigInteger)  # the "now" of the projection (Unix s)
    first_month: Mapped[str] = mapped_column(String(7))
    months: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # full | incremental
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OutlookMonth(Base):
    __tablename__ = "outlook_months"

    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    opening_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    closing_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    movement: Mapped[str | None] = mapped_column(String(16))
    movement_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    opening_upper_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    closing_upper_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    movement_upper: Mapped[str | None] = mapped_column(String(16))
    movement_upper_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str | None] = mapped_column(String(3))
    plan: Mapped[str | None] = mapped_column(String(255))
    product: Mapped[str | None] = mapped_column(String(255))
    country: Mapped[str | None] = mapped_column(String(8))
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONType)


class OutlookChange(Base):
    __tablename__ = "outlook_changes"
    __table_args__ = (Index("ix_outlook_changes_customer", "customer_id", "effective_at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    month: Mapped[str] = mapped_column(String(7), index=True)
    effective_at: Mapped[int] = mapped_column(BigInteger)
    customer_id: Mapped[str] = mapped_column(String(255))
    subscription_id: Mapped[str] = mapped_column(String(255))
    cause: Mapped[str] = mapped_column(String(32))
    bound: Mapped[str] = mapped_column(String(16))  # committed | upper
    currency: Mapped[str] = mapped_column(String(3))  # the subscription's
    mrr_before_micro: Mapped[int] = mapped_column(BigInteger)
    mrr_after_micro: Mapped[int] = mapped_column(BigInteger)
    # The change in the reporting currency (the outlook's rate).
    amount_micro: Mapped[int] = mapped_column(BigInteger)
    stripe_ids: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class OutlookOpening(Base):
    """The month's opening outlook was taken (``taken_at``); its drops are in the next table."""

    __tablename__ = "outlook_openings"

    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    taken_at: Mapped[int] = mapped_column(BigInteger)


class OutlookOpeningDrop(Base):
    """A customer's churn or contraction that the outlook at the month's opening held."""

    __tablename__ = "outlook_opening_drops"

    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    movement: Mapped[str] = mapped_column(String(16))
    movement_micro: Mapped[int] = mapped_column(BigInteger)
