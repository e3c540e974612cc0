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
    return "-" if value is None else f"{value:,.{places}f}"


def _print_tables(document: dict[str, Any]) -> None:
    from rich.table import Table

    from nrr.domain.money import minor_exponent

    cur = document["currency"]
    places = minor_exponent(cur)
    history = Table(title=f"MRR history ({cur.upper()})")
    for name, justify in (("month", "left"), ("opening", "right"), ("closing", "right"),
                          ("movement", "left"), ("amount", "right"), ("causes", "left")):
        history.add_column(name, justify=justify, no_wrap=name in {"month", "movement"})  # type: ignore[arg-type]
    for h in document["history"]:
        history.add_row(h["month"], _amount(h["opening_mrr"], places),
                        _amount(h["closing_mrr"], places), h["movement"] or "",
                        _amount(h["amount"], places) if h["movement"] else "",
                        ", ".join(h["causes"]))
    stdout.print(history)
    ledger = Table(title="Ledger: every change and its cause (subscription currency)")
    for name, justify in (("effective_at", "left"), ("cause", "left"),
                          ("subscription", "left"), ("before", "right"), ("after", "right"),
                          ("change", "right")):
        ledger.add_column(name, justify=justify, no_wrap=name == "cause")  # type: ignore[arg-type]
    for e in document["ledger"]:
        entry_places = minor_exponent(e["currency"])
        ledger.add_row(e["effective_at"], e["cause"], e["subscription_id"] or "",
                       f"{_amount(e['mrr_before'], entry_places)} {e['currency'].upper()}",
                       _amount(e["mrr_after"], entry_places),
                       _amount(e["change"], entry_places))
    stdout.print(ledger)
    if document.get("scheduled"):
        scheduled = Table(title=f"Scheduled changes from the outlook ({cur.upper()})")
        for name in ("effective_at", "cause", "bound", "change", "subscription"):
            scheduled.add_column(name, justify="right" if name == "change" else "left")  # type: ignore[arg-type]
        for c in document["scheduled"]:
            scheduled.add_row(c["effective_at"], c["cause"], c["bound"], _amount(c["amount"], places),
                              c["subscription_id"] or "")
        stdout.print(scheduled)


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
