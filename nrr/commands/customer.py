"""``nrr customer ID``: one customer's MRR history, movements and their causes."""

from __future__ import annotations

from typing import Any

import typer

from nrr.commands.common import (
    CommandFailed,
    OutputFormat,
    UsageError,
    emit_json,
    emit_rows,
    engine,
    handle_errors,
    settings,
    stdout,
)


def _history_rows(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"month": h["month"], "opening_mrr": h["opening_mrr"], "closing_mrr": h["closing_mrr"],
             "movement": h["movement"] or "", "amount": h["amount"] if h["movement"] else "",
             "fx_impact": h["fx_impact"], "plan": h["segment"]["plan"],
             "causes": ", ".join(h["causes"])} for h in document["history"]]


def _ledger_rows(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"effective_at": e["effective_at"], "cause": e["cause"],
             "subscription": e["subscription_id"], "item": e["subscription_item_id"],
             "currency": e["currency"], "mrr_before": e["mrr_before"], "mrr_after": e["mrr_after"],
             "change": e["change"], "stripe_ids": e["stripe_ids"]} for e in document["ledger"]]


def register(app: typer.Typer) -> None:
    @app.command("customer")
    @handle_errors
    def customer_command(
        customer_id: str = typer.Argument(..., metavar="ID",
                                          help="The Stripe customer id (cus_...)."),
        output: OutputFormat = typer.Option(OutputFormat.table, "--format",
                                            help="Output format: table or json."),
    ) -> None:
        """Show one customer's MRR history, movements and the ledger causes behind them."""
        if output is OutputFormat.csv:
            raise UsageError("nrr customer prints table or json; csv has no single shape here")
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
        who = ", ".join(str(v) for v in (document["name"], document["email"], document["country"])
                        if v)
        deleted = " (deleted in Stripe)" if document["deleted"] else ""
        stdout.print(f"{customer_id}: {who or 'not in the mirror'}{deleted}; first paid "
                     f"{document['first_paid_month'] or 'never'}; MRR now "
                     f"{document['current_mrr'] if document['current_mrr'] is not None else 0} "
                     f"{document['currency'].upper()}", highlight=False, markup=False)
        emit_rows(_history_rows(document), output,
                  title=f"MRR history ({document['currency'].upper()})",
                  columns=["month", "opening_mrr", "closing_mrr", "movement", "amount",
                           "fx_impact", "plan", "causes"])
        emit_rows(_ledger_rows(document), output, title="Ledger: every change and its cause",
                  columns=["effective_at", "cause", "subscription", "item", "currency",
                           "mrr_before", "mrr_after", "change", "stripe_ids"])
