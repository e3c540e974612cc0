"""``nrr movements``: the ledger of one month, every change with its cause and Stripe ids."""

from __future__ import annotations

from typing import Any

import typer

from nrr.commands.common import (
    OutputFormat,
    emit_rows,
    engine,
    handle_errors,
    parse_month,
    settings,
)

COLUMNS = ["effective_at", "customer_id", "cause", "currency", "mrr_before", "mrr_after",
           "change", "subscription_id", "subscription_item_id", "stripe_ids"]


def ledger_rows(session: Any, month: str, customer: str | None) -> list[dict[str, Any]]:
    from datetime import UTC, datetime

    from sqlalchemy import select

    from models.derived import LedgerEntry
    from nrr.domain.money import major_rounded

    stmt = select(LedgerEntry).where(LedgerEntry.month == month)
    if customer:
        stmt = stmt.where(LedgerEntry.customer_id == customer)
    stmt = stmt.order_by(LedgerEntry.effective_at, LedgerEntry.customer_id, LedgerEntry.id)
    rows = []
    for entry in session.scalars(stmt):
        rows.append({
            "effective_at": datetime.fromtimestamp(entry.effective_at, tz=UTC).isoformat(),
            "customer_id": entry.customer_id,
            "cause": entry.cause,
            "currency": entry.currency,
            "mrr_before": major_rounded(entry.mrr_before_micro, entry.currency),
            "mrr_after": major_rounded(entry.mrr_after_micro, entry.currency),
            "change": major_rounded(entry.mrr_after_micro - entry.mrr_before_micro, entry.currency),
            "mrr_before_micro": entry.mrr_before_micro,
            "mrr_after_micro": entry.mrr_after_micro,
            "subscription_id": entry.subscription_id,
            "subscription_item_id": entry.subscription_item_id,
            "before": entry.before,
            "after": entry.after,
            "stripe_ids": entry.stripe_ids,
        })
    return rows


@handle_errors
def movements_command(
    month: str = typer.Option(..., "--month", help="The month, YYYY-MM (in NRR_TIMEZONE)."),
    customer: str | None = typer.Option(None, "--customer", help="Only this customer id."),
    output: OutputFormat = typer.Option(OutputFormat.table, "--format",
                                        help="Output format: table, json or csv."),
) -> None:
    """List the ledger of a month: each MRR change with its cause and the Stripe ids behind it.

    Amounts are in each change's own currency (major units); run `nrr recompute` first.
    """
    from nrr.db import session_scope

    month = parse_month(month)
    cfg = settings()
    with session_scope(engine(cfg)) as session:
        rows = ledger_rows(session, month, customer)
    document = {"month": month, "customer": customer, "entries": rows}
    emit_rows(rows, output, title=f"Movements {month}", columns=COLUMNS, document=document)


def register(app: typer.Typer) -> None:
    app.command("movements", help="List the ledger of a month (changes with causes and Stripe "
                                  "ids).")(movements_command)
