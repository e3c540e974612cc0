"""SQLAlchemy models of nrr-worker: the Stripe mirror and what is derived from it."""

from models.base import Base, UTCDateTime
from models.derived import (
    AlertDelivery,
    CustomerMonthFact,
    ExchangeRate,
    JobLock,
    LedgerEntry,
    MrrTimelinePoint,
    RecomputeRun,
    RetentionSnapshot,
)
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
    "AlertDelivery", "Base", "CustomerMonthFact", "DirtyCustomer", "ExchangeRate", "JobLock",
    "LedgerEntry", "MrrTimelinePoint", "QuarantinedObject", "RecomputeRun", "RetentionSnapshot",
    "StripeCoupon", "StripeCustomer", "StripeDiscount", "StripeEvent", "StripeInvoice",
    "StripeInvoiceLine", "StripePrice", "StripeProduct", "StripeSubscription",
    "StripeSubscriptionItem", "SyncState", "UTCDateTime",
    "OutlookChange", "OutlookMonth", "OutlookOpening", "OutlookOpeningDrop", "OutlookRun",
    "StripeSubscriptionSchedule",
]
