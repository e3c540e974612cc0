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
    if output is not OutputFormat.table:
        emit_rows(rows, output, title=f"Movements {month}", columns=COLUMNS, document=document)
        return
    print_movements(month, rows)


TABLE_COLUMNS = [("day", "day", "text", 0), ("customer_id", "customer", "text", 0),
                 ("name", "name", "text", 2), ("cause", "cause", "text", 0),
                 ("change", "change", "money", 0), ("currency", "currency", "text", 1),
                 ("mrr_before", "MRR before", "money", 2), ("mrr_after", "MRR after", "money", 2),
                 ("changed", "what changed", "text", 3),
                 ("subscription_id", "subscription", "text", 4),
                 ("invoice", "invoice", "text", 6)]


def _changed(before: Any, after: Any, prices: dict[str, str]) -> str:
    """``quantity 120 → 60, price Pro (price_1) → Team (price_2)``: the fields that changed."""
    from nrr.commands.tables import text

    before = before if isinstance(before, dict) else {}
    after = after if isinstance(after, dict) else {}
    parts = []
    for key in ("price", "quantity", "discount", "status"):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if key == "price":
            old = f"{prices[old]} ({old})" if isinstance(old, str) and old in prices else old
            new = f"{prices[new]} ({new})" if isinstance(new, str) and new in prices else new
        parts.append(f"{key} {text(old)} → {text(new)}")
    return ", ".join(parts)


def print_movements(month: str, rows: list[dict[str, Any]]) -> None:
    """The ledger as people read it: amounts in each change's currency with its code, plan
    names beside price ids, no JSON; changes of 0.00 are left out (counted under the table)."""
    from sqlalchemy import select

    from models.mirror import StripeCustomer, StripePrice
    from nrr.commands.common import stdout
    from nrr.commands.tables import Column, money, print_table, text
    from nrr.db import session_scope
    from nrr.domain.money import minor_exponent

    cfg = settings()
    price_ids = {str(side.get("price")) for row in rows for side in (row["before"] or {},
                                                                      row["after"] or {})
                 if isinstance(side, dict) and side.get("price")}
    customer_ids = {row["customer_id"] for row in rows}
    with session_scope(engine(cfg)) as session:
        prices = {pid: nick for pid, nick in session.execute(
            select(StripePrice.id, StripePrice.nickname)
            .where(StripePrice.id.in_(sorted(price_ids)))) if nick} if price_ids else {}
        names = {cid: name or email for cid, name, email in session.execute(
            select(StripeCustomer.id, StripeCustomer.name, StripeCustomer.email)
            .where(StripeCustomer.id.in_(sorted(customer_ids))))} if customer_ids else {}
    shown = []
    unchanged = 0
    for row in rows:
        if row["mrr_before_micro"] == row["mrr_after_micro"]:
            unchanged += 1
            continue
        places = minor_exponent(row["currency"])
        change = row["change"]
        shown.append({
            "day": row["effective_at"][:10], "customer_id": row["customer_id"],
            "name": text(names.get(row["customer_id"])),
            "cause": text(str(row["cause"] or "").replace("_", " ")),
            "change": ("+" if change > 0 else "") + money(change, places),
            "currency": str(row["currency"] or "").upper(),
            "mrr_before": money(row["mrr_before"], places),
            "mrr_after": money(row["mrr_after"], places),
            "changed": text(_changed(row["before"], row["after"], prices)),
            "subscription_id": text(row["subscription_id"]),
            "invoice": text((row["stripe_ids"] or {}).get("invoice")),
        })
    print_table(f"Movements {month} (amounts in each change's currency)",
                [Column(*spec) for spec in TABLE_COLUMNS], shown, console=stdout,  # type: ignore[arg-type]
                formatter=lambda column, value: value)
    if unchanged:
        stdout.print(f"{unchanged:,} ledger entr{'y' if unchanged == 1 else 'ies'} that left MRR "
                     "unchanged not shown (--format json lists every entry)",
                     highlight=False, markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("movements", help="List the ledger of a month (changes with causes and Stripe "
                                  "ids).")(movements_command)
