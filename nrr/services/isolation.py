"""One customer never blanks an account: customers whose history cannot be computed.

A recompute computes each customer on its own. Whatever goes wrong for one customer (its
mirror rows cannot be read into records, the normaliser or the monthly facts raise, an
exchange rate it needs is missing or unusable) leaves that customer out, with the reason
and the Stripe ids to look at; every other customer is computed. The left-out customers
are stored in ``left_out_customers`` (a full recompute replaces the table, an
incremental one its customers' rows) and every report says how many there are and where
to look: ``nrr status`` lists them, ``nrr customer ID`` shows one's reason.

Services never commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, delete, func, select
from sqlalchemy.orm import Session

from models.derived import LeftOutCustomer
from nrr.domain.records import CustomerData

T_LEFT_OUT: Table = LeftOutCustomer.__table__  # type: ignore[assignment]

# Where a reader of a report finds the left-out customers.
WHERE_TO_LOOK = "`nrr status` lists them and `nrr customer ID` shows each one's reason"
# Ids of one kind kept per left-out customer (a customer with years of invoices).
MAX_IDS = 20


@dataclass(frozen=True)
class LeftOut:
    """A customer left out of a recompute: ``stage`` (load, compute), the reason, the ids."""

    customer_id: str
    stage: str
    reason: str
    stripe_ids: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_error(cls, customer_id: str, stage: str, exc: BaseException,
                   data: CustomerData | None = None) -> LeftOut:
        return cls(customer_id, stage, describe(exc), stripe_ids_of(customer_id, data))


def describe(exc: BaseException) -> str:
    """The reason as a reader needs it: the error's kind and message, one line."""
    message = " ".join(str(exc).split()) or "(no message)"
    if len(message) > 1_000:
        message = message[:999] + "…"
    return f"{type(exc).__name__}: {message}"


def stripe_ids_of(customer_id: str, data: CustomerData | None) -> dict[str, Any]:
    """The Stripe ids behind a customer's history (to look up in the Stripe dashboard)."""
    ids: dict[str, Any] = {"customer": customer_id}
    if data is None:
        return ids
    subscriptions = sorted({s.id for s in data.subscriptions}
                           | {ln.subscription_id for ln in data.lines if ln.subscription_id})
    invoices = sorted({ln.invoice_id for ln in data.lines if ln.invoice_id} | set(data.invoices))
    prices = sorted({ln.price_id for ln in data.lines if ln.price_id}
                    | {it.price_id for s in data.subscriptions for it in s.items if it.price_id})
    for name, values in (("subscriptions", subscriptions), ("invoices", invoices),
                         ("prices", prices)):
        if values:
            ids[name] = values[:MAX_IDS]
            if len(values) > MAX_IDS:
                ids[f"{name}_total"] = len(values)
    return ids


def record_left_out(session: Session, left_out: Sequence[LeftOut], *,
                    customer_ids: Iterable[str] | None, run_id: int | None) -> None:
    """Store the customers a recompute left out. ``customer_ids`` None: a full recompute
    (the table is replaced); otherwise the rows of these customers are."""
    if customer_ids is None:
        session.execute(delete(T_LEFT_OUT), execution_options={"synchronize_session": False})
    else:
        ids = sorted(set(customer_ids))
        for start in range(0, len(ids), 500):
            session.execute(delete(T_LEFT_OUT).where(T_LEFT_OUT.c.customer_id.in_(ids[start:start + 500])),
                            execution_options={"synchronize_session": False})
    if left_out:
        now = datetime.now(UTC)
        unique = {entry.customer_id: entry for entry in left_out}
        session.execute(T_LEFT_OUT.insert(), [
            {"customer_id": e.customer_id, "reason": f"{e.stage}: {e.reason}",
             "stripe_ids": e.stripe_ids, "run_id": run_id, "left_out_at": now}
            for e in unique.values()])


def left_out_count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(T_LEFT_OUT)) or 0)


def left_out_list(session: Session, *, limit: int = 20) -> list[dict[str, Any]]:
    """The first ``limit`` left-out customers (by id) with their reasons."""
    rows = session.execute(select(T_LEFT_OUT.c.customer_id, T_LEFT_OUT.c.reason,
                                  T_LEFT_OUT.c.stripe_ids, T_LEFT_OUT.c.left_out_at)
                           .order_by(T_LEFT_OUT.c.customer_id).limit(limit))
    return [_row(r) for r in rows]


def left_out_customer(session: Session, customer_id: str) -> dict[str, Any] | None:
    row = session.execute(select(T_LEFT_OUT.c.customer_id, T_LEFT_OUT.c.reason,
                                 T_LEFT_OUT.c.stripe_ids, T_LEFT_OUT.c.left_out_at)
                          .where(T_LEFT_OUT.c.customer_id == customer_id)).first()
    return None if row is None else _row(row)


def left_out_note(count: int) -> str | None:
    """The sentence every report carries when customers were left out."""
    if not count:
        return None
    who = "1 customer was" if count == 1 else f"{count} customers were"
    return (f"{who} left out of these numbers because their history could not be computed: "
            f"{WHERE_TO_LOOK}")


def _row(row: Any) -> dict[str, Any]:
    at = row.left_out_at
    return {"customer_id": row.customer_id, "reason": row.reason,
            "stripe_ids": row.stripe_ids or {},
            "left_out_at": at.isoformat() if isinstance(at, datetime) else at}
