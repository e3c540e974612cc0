"""SQLAlchemy models of nrr-worker: the Stripe mirror and what is derived from it."""

from models.base import Base, UTCDateTime
from models.derived import (
    AlertDelivery,
    CustomerMonthFact,
    ExchangeRate,
    JobLock,
    LedgerEntry,
    LiveRun,
    MrrTimelinePoint,
    RecomputeRun,
    RecomputeShard,
    RetentionSnapshot,
    SegmentMonthTotal,
    SegmentTotalsBuilt,
)
from models.live_rows import ALL_RUNS, live_run_id, pin_live_run
from models.mirror import (
    DirtyCustomer,
    QuarantinedObject,
    StripeCoupon,
    StripeCustomer,
    StripeDiscount,
    StripeEvent,
    StripeInvoice,
    StripeInvoiceLine,
    StripePrice,
    StripeProduct,
    StripeSubscription,
    StripeSubscriptionItem,
    SyncState,
)
from models.outlook import (
    OutlookChange,
    OutlookMonth,
    OutlookOpening,
    OutlookOpeningDrop,
    OutlookRun,
    StripeSubscriptionSchedule,
)

__all__ = [
    "ALL_RUNS", "live_run_id", "pin_live_run",
    "AlertDelivery", "Base", "CustomerMonthFact", "DirtyCustomer", "ExchangeRate", "JobLock",
    "LedgerEntry", "LiveRun", "MrrTimelinePoint", "QuarantinedObject", "RecomputeRun",
    "RecomputeShard", "RetentionSnapshot", "SegmentMonthTotal", "SegmentTotalsBuilt",
    "StripeCoupon", "StripeCustomer", "StripeDiscount", "StripeEvent", "StripeInvoice",
    "StripeInvoiceLine", "StripePrice", "StripeProduct", "StripeSubscription",
    "StripeSubscriptionItem", "SyncState", "UTCDateTime",
    "OutlookChange", "OutlookMonth", "OutlookOpening", "OutlookOpeningDrop", "OutlookRun",
    "StripeSubscriptionSchedule",
]
