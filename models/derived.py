"""What the normalisation computes from the mirror: timeline, ledger, monthly facts, snapshots.

Normalised MRR is stored as exact integers at a finer scale: ``*_micro`` columns hold
millionths of the currency's minor unit (1 USD = 100 minor = 100_000_000 micro). See
``nrr.domain.money``.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigIntPK, JSONType, UTCDateTime, utcnow


class MrrTimelinePoint(Base):
    """Step function: the customer's MRR in ``currency`` from ``effective_at`` on (native currency)."""

    __tablename__ = "mrr_timeline"
    __table_args__ = (
        UniqueConstraint("run_id", "customer_id", "currency", "effective_at"),
        # The customers with a point in a span of time (``nrr.services.recompute.due``).
        Index("ix_mrr_timeline_run_effective_at", "run_id", "effective_at", "customer_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    # The full recompute that wrote the row (``LiveRun``: the one readers see).
    run_id: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    customer_id: Mapped[str] = mapped_column(String(255))
    currency: Mapped[str] = mapped_column(String(3))
    effective_at: Mapped[int] = mapped_column(BigInteger)
    mrr_micro: Mapped[int] = mapped_column(BigInteger)


class LedgerEntry(Base):
    """One change of one subscription item, with its cause and the Stripe ids behind it."""

    __tablename__ = "mrr_ledger"
    __table_args__ = (
        Index("ix_mrr_ledger_run_month_customer", "run_id", "month", "customer_id"),
        Index("ix_mrr_ledger_run_customer", "run_id", "customer_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    month: Mapped[str] = mapped_column(String(7))
    effective_at: Mapped[int] = mapped_column(BigInteger)
    customer_id: Mapped[str] = mapped_column(String(255))
    subscription_id: Mapped[str | None] = mapped_column(String(255))
    subscription_item_id: Mapped[str | None] = mapped_column(String(255))
    cause: Mapped[str] = mapped_column(String(32))
    currency: Mapped[str] = mapped_column(String(3))
    mrr_before_micro: Mapped[int] = mapped_column(BigInteger)
    mrr_after_micro: Mapped[int] = mapped_column(BigInteger)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    stripe_ids: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class CustomerMonthFact(Base):
    """Per customer and month: opening/closing MRR in the reporting currency at the month's rate.

    ``fx_impact_micro`` = this month's opening minus last month's closing (rate change only).
    Segment columns are fixed at the month's opening (or the first paying instant in it).
    """

    __tablename__ = "customer_month_facts"
    __table_args__ = (
        # A month's rows are a range of the primary key (run, month, customer); the
        # reports' sums come from ``segment_month_totals``. The customers of a movement
        # (the drill-down) are found among the facts that have one, about one in six:
        # a partial index, so a full recompute writes no entry for the others.
        Index("ix_customer_month_facts_run_customer", "run_id", "customer_id"),
        Index("ix_customer_month_facts_run_month_moved", "run_id", "month", "movement",
              sqlite_where=text("movement IS NOT NULL"),
              postgresql_where=text("movement IS NOT NULL")),
    )

    run_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, default=0,
                                        server_default="0")
    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    opening_mrr_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    closing_mrr_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    movement: Mapped[str | None] = mapped_column(String(16))
    movement_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    fx_impact_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    first_paid_month: Mapped[str | None] = mapped_column(String(7))
    currency: Mapped[str | None] = mapped_column(String(3))
    plan: Mapped[str | None] = mapped_column(String(255))
    product: Mapped[str | None] = mapped_column(String(255))
    country: Mapped[str | None] = mapped_column(String(8))
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONType)
    # The opening at the rate of the first day of month + 11 (T12M in constant currency);
    # None on rows written before it existed (read as the opening).
    opening_t12m_micro: Mapped[int | None] = mapped_column(BigInteger)


class SegmentMonthTotal(Base):
    """The sums a report reads, per month, segment and movement, kept beside the facts.

    Each row is one group of ``customer_month_facts`` exactly as the report's SQL would
    group them (``nrr.services.recompute.totals``): ``period`` ``monthly`` groups a month's
    facts by ``dimension`` (``""`` the whole account, ``plan``, ``product``, ``currency``,
    ``country``, ``first_paid_month``, or ``metadata`` whose segment is the customer's whole
    metadata as JSON) and movement; ``t12m`` groups the T12M cohort of ``month`` (members
    paying at the opening of month - 11, segment fixed there). Every recompute rewrites
    them from the facts it writes, so a report reads a few hundred rows instead of every
    customer's. Rows of a sharded run carry their ``shard`` until its final step adds
    them up."""

    __tablename__ = "segment_month_totals"
    __table_args__ = (
        Index("ix_segment_month_totals_run_period_dimension_month", "run_id", "period",
              "dimension", "month"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    shard: Mapped[int | None] = mapped_column(Integer)
    period: Mapped[str] = mapped_column(String(8))
    month: Mapped[str] = mapped_column(String(7))
    dimension: Mapped[str] = mapped_column(String(255))
    # The facts' raw value (None and "" kept apart, as a GROUP BY over the facts keeps them).
    segment: Mapped[str | None] = mapped_column(Text)
    movement: Mapped[str | None] = mapped_column(String(16))
    # Monthly: facts; T12M: cohort members.
    customers: Mapped[int] = mapped_column(BigInteger, default=0)
    # T12M: the members' opening in constant currency (``opening_t12m_micro``).
    opening_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    closing_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    fx_impact_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    paying_at_opening: Mapped[int] = mapped_column(BigInteger, default=0)
    # T12M: members still paying at the closing of ``month``.
    paying_at_closing: Mapped[int] = mapped_column(BigInteger, default=0)
    # T12M only: per-member sums (min(closing, opening), gains, losses) and churned members.
    kept_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    expansion_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    contraction_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    churn_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    churned: Mapped[int] = mapped_column(BigInteger, default=0)


class SegmentTotalsBuilt(Base):
    """A run whose ``segment_month_totals`` are complete (readers use them only then; a
    database upgraded from before they existed reads the facts until its next recompute).
    ``dimensions``: the ones stored (``metadata`` is left out when the account has too many
    distinct metadata objects for totals to be smaller than the facts)."""

    __tablename__ = "segment_totals_built"

    run_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    dimensions: Mapped[list[str]] = mapped_column(JSONType, default=list)
    built_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LeftOutCustomer(Base):
    """A customer whose history could not be computed: left out of every number (the
    rest of the account is computed), with the reason and the Stripe ids to look at. A
    full recompute replaces the rows; an incremental one replaces its customers' rows."""

    __tablename__ = "left_out_customers"

    customer_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    reason: Mapped[str] = mapped_column(Text)
    stripe_ids: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    run_id: Mapped[int | None] = mapped_column(BigInteger)
    left_out_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ExchangeRate(Base):
    """rate = reporting-currency units per unit of ``currency`` (decimal string, exact)."""

    __tablename__ = "exchange_rates"
    __table_args__ = (UniqueConstraint("date", "currency", "reporting_currency"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    date: Mapped[date] = mapped_column(Date)
    currency: Mapped[str] = mapped_column(String(3))
    reporting_currency: Mapped[str] = mapped_column(String(3))
    rate: Mapped[str] = mapped_column(String(64))


class RecomputeRun(Base):
    __tablename__ = "recompute_runs"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # full | incremental
    # A full run: building -> live -> retired (or failed); an incremental one: done.
    status: Mapped[str] = mapped_column(String(16), default="done", server_default="done")
    # A sharded full run: how many shards it was split into (``RecomputeShard``).
    shards: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    customers: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    policies: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    reporting_currency: Mapped[str] = mapped_column(String(3))
    timezone: Mapped[str] = mapped_column(String(64))


class LiveRun(Base):
    """The full recompute whose timeline, ledger and facts readers see (one row, id 1).

    A full recompute writes its rows beside the live run's and then moves this pointer in
    one short transaction: readers never wait for it and never see half of it
    (``models.live_rows``)."""

    __tablename__ = "live_run"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    run_id: Mapped[int] = mapped_column(BigInteger)
    # The run that was live before (its rows are kept until the next switch, for readers
    # that pinned it).
    previous_run_id: Mapped[int | None] = mapped_column(BigInteger)
    switched_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RecomputeShard(Base):
    """One customer range of a sharded full recompute; ``finished_at`` set in the same
    transaction as its rows, so a shard is either wholly written or not at all."""

    __tablename__ = "recompute_shards"

    run_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    # Customer ids from ``from_customer`` (inclusive) to ``to_customer`` (exclusive; None:
    # no end), in Python's (binary) order.
    from_customer: Mapped[str] = mapped_column(String(255))
    to_customer: Mapped[str | None] = mapped_column(String(255))
    customers: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The shard's figures (``RecomputeResult.as_dict`` and its skips) for the final step.
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class RetentionSnapshot(Base):
    """Immutable monthly retention snapshot; a changed history adds a new ``version``."""

    __tablename__ = "retention_snapshots"
    __table_args__ = (
        UniqueConstraint("month", "period", "dimension", "segment", "version"),
        Index("ix_retention_snapshots_key", "month", "period", "dimension", "segment"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    month: Mapped[str] = mapped_column(String(7))
    period: Mapped[str] = mapped_column(String(8))  # monthly | t12m
    dimension: Mapped[str] = mapped_column(String(255), default="")  # "" = total
    segment: Mapped[str] = mapped_column(String(255), default="")
    version: Mapped[int] = mapped_column(Integer, default=1)
    content_hash: Mapped[str] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType)
    policies: Mapped[dict[str, Any]] = mapped_column(JSONType)
    definitions: Mapped[dict[str, Any]] = mapped_column(JSONType)
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AlertDelivery(Base):
    """One Slack message per rule, month, segment and snapshot version (``dedupe_key``)."""

    __tablename__ = "alert_deliveries"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    dedupe_key: Mapped[str] = mapped_column(String(512), unique=True)
    rule: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))  # alert | recovery | digest | test
    month: Mapped[str] = mapped_column(String(7))
    segment: Mapped[str] = mapped_column(String(255), default="")
    snapshot_version: Mapped[int] = mapped_column(Integer, default=1)
    severity: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|sending|sent|printed
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    # Lease of a sender's claim (status 'sending'); an expired claim can be retaken.
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class JobLock(Base):
    """Database lock used when there is no Redis (``REDIS_URL`` unset)."""

    __tablename__ = "job_locks"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
