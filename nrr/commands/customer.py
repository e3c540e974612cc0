"""``nrr customer ID``: one customer's MRR history, movements and their causes."""

from __future__ import annotations

from typing import Any

import typer

from nrr.commands.common import (
    CommandFailed,
    OutputFormat,
    emit_json,
    engine,
    format_option,
    handle_errors,
    settings,
    stdout,
)


def _amount(value: Any, places: int) -> str:
    from nrr.commands.tables import money

    return money(value, places)


def _print_tables(document: dict[str, Any]) -> None:
    from nrr.commands.tables import Column, money, print_table, text
    from nrr.domain.money import minor_exponent

    cur = document["currency"]
    places = minor_exponent(cur)
    history = [{
        "month": h["month"], "opening": money(h["opening_mrr"], places),
        "closing": money(h["closing_mrr"], places),
        "movement": h["movement"] or "",
        "amount": money(h["amount"], places) if h["movement"] else "",
        "plan": text((h.get("segment") or {}).get("plan")),
        "causes": text(", ".join(dict.fromkeys(c.replace("_", " ") for c in h["causes"]))),
    } for h in document["history"]]
    print_table(f"MRR history ({cur.upper()})", [
        Column("month", "month", "text", 0), Column("opening", "opening MRR", "money", 1),
        Column("closing", "closing MRR", "money", 0), Column("movement", "movement", "text", 1),
        Column("amount", "amount", "money", 1), Column("plan", "plan", "text", 3),
        Column("causes", "causes", "text", 2)], history, console=stdout,
        formatter=lambda column, value: value)
    ledger = []
    for e in document["ledger"]:
        if e["mrr_before"] == e["mrr_after"]:
            continue  # a ledger entry that left MRR unchanged says nothing here
        entry_places = minor_exponent(e["currency"])
        change = e["change"] or 0
        ledger.append({
            "day": str(e["effective_at"] or "")[:10],
            "cause": text(str(e["cause"] or "").replace("_", " ")),
            "change": ("+" if change > 0 else "") + money(change, entry_places),
            "currency": str(e["currency"] or "").upper(),
            "before": money(e["mrr_before"], entry_places),
            "after": money(e["mrr_after"], entry_places),
            "subscription": text(e["subscription_id"]),
        })
    print_table("Ledger: every change and its cause (in the subscription's currency)", [
        Column("day", "day", "text", 0), Column("cause", "cause", "text", 0),
        Column("change", "change", "money", 0), Column("currency", "currency", "text", 0),
        Column("before", "MRR before", "money", 2), Column("after", "MRR after", "money", 2),
        Column("subscription", "subscription", "text", 3)], ledger, console=stdout,
        formatter=lambda column, value: value)
    if document.get("scheduled"):
        scheduled = [{
            "day": str(c["effective_at"] or "")[:10],
            "cause": text(str(c["cause"] or "").replace("_", " ")),
            "bound": text(c["bound"]),
            "change": ("+" if (c["amount"] or 0) > 0 else "") + money(c["amount"], places),
            "subscription": text(c["subscription_id"]),
        } for c in document["scheduled"]]
        print_table(f"Scheduled changes from the outlook ({cur.upper()})", [
            Column("day", "day", "text", 0), Column("cause", "cause", "text", 0),
            Column("bound", "bound", "text", 2), Column("change", "change", "money", 0),
            Column("subscription", "subscription", "text", 3)], scheduled, console=stdout,
            formatter=lambda column, value: value)


def register(app: typer.Typer) -> None:
    @app.command("customer")
    @handle_errors
    def customer_command(
        customer_id: str = typer.Argument(..., metavar="ID",
                                          help="The Stripe customer id (cus_...)."),
        output: OutputFormat = format_option("table", "json", help="Output format: table or json."),
    ) -> None:
        """Show one customer's MRR history, movements and the ledger causes behind them."""
        from nrr.db import session_scope
        from nrr.services.report import CustomerNotFound, customer_detail

        cfg = settings()
        try:
            with session_scope(engine(cfg)) as session:
                document = customer_detail(session, cfg, customer_id)
        except CustomerNotFound as exc:
            raise CommandFailed(str(exc)) from None
        if output is OutputFormat.json:
            emit_json(document)
            return
        from nrr.domain.money import minor_exponent

        who = ", ".join(str(v) for v in (document["name"], document["email"], document["country"])
                        if v)
        deleted = " (deleted in Stripe)" if document["deleted"] else ""
        stdout.print(f"{customer_id}: {who or 'not in the mirror'}{deleted}; first paid "
                     f"{document['first_paid_month'] or 'never'}; MRR now "
                     f"{_amount(document['current_mrr'] or 0, minor_exponent(document['currency']))} "
                     f"{document['currency'].upper()}", highlight=False, markup=False)
        left_out = document.get("left_out")
        if left_out:
            ids = ", ".join(f"{kind}: {value if isinstance(value, str) else ' '.join(map(str, value))}"
                            for kind, value in left_out["stripe_ids"].items())
            stdout.print(f"LEFT OUT of every number by the last recompute "
                         f"({left_out['left_out_at']}): {left_out['reason']}\nStripe ids: {ids}",
                         highlight=False, markup=False)
        _print_tables(document)
