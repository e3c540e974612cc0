"""``nrr fx``: exchange rates for the reporting currency (import a CSV, list)."""

from __future__ import annotations

from pathlib import Path

import typer

from nrr.commands.common import (
    OutputFormat,
    UsageError,
    emit_json,
    emit_rows,
    engine,
    format_option,
    handle_errors,
    settings,
    stdout,
)

fx_app = typer.Typer(help="Exchange rates used to convert MRR to the reporting currency.",
                     no_args_is_help=True)


@fx_app.command("import")
@handle_errors
def import_command(
    file: Path = typer.Argument(..., help="CSV file with the header date,currency,rate "
                                          "(rate = reporting-currency units per unit)."),
    output: OutputFormat = format_option("table", "json", help="Output format: table or json."),
) -> None:
    """Import (upsert) exchange rates from a CSV file; a bad row (a rate that is not a positive
    number within 1e-9 .. 1e9) aborts the import with its number and exit code 2, importing nothing."""
    from nrr.db import session_scope
    from nrr.services.fx import RateFileError, import_rates_file

    cfg = settings()
    db = engine(cfg)
    try:
        with session_scope(db) as session:
            result = import_rates_file(session, file, reporting_currency=cfg.reporting_currency)
    except RateFileError as exc:
        raise UsageError(str(exc)) from None
    document = {
        "imported": result.rows,
        "reporting_currency": cfg.reporting_currency,
        "currencies": result.currencies,
        "first_date": result.first_date.isoformat() if result.first_date else None,
        "last_date": result.last_date.isoformat() if result.last_date else None,
        "next_step": "run `nrr recompute` so the facts use the new rates",
    }
    if output is OutputFormat.json:
        emit_json(document)
        return
    currencies = ", ".join(c.upper() for c in result.currencies) or "no currency"
    span = (f" from {document['first_date']} to {document['last_date']}"
            if document["first_date"] else "")
    stdout.print(f"Imported {document['imported']:,} exchange rate(s) into "
                 f"{cfg.reporting_currency.upper()} for {currencies}{span}.",
                 highlight=False, markup=False, soft_wrap=True)
    typer.echo(f"Next: {document['next_step']}", err=True)


@fx_app.command("list")
@handle_errors
def list_command(
    currency: str | None = typer.Option(None, "--currency", help="Only this currency (e.g. eur)."),
    output: OutputFormat = typer.Option(OutputFormat.table, "--format",
                                        help="Output format: table, json or csv."),
) -> None:
    """List the stored exchange rates into the reporting currency."""
    from nrr.db import session_scope
    from nrr.services.fx import list_rates

    cfg = settings()
    with session_scope(engine(cfg)) as session:
        rows = list_rates(session, reporting_currency=cfg.reporting_currency, currency=currency)
    emit_rows(rows, output, title=f"Exchange rates into {cfg.reporting_currency.upper()}",
              columns=["date", "currency", "reporting_currency", "rate"])


def register(app: typer.Typer) -> None:
    app.add_typer(fx_app, name="fx", help="Exchange rates: import a CSV (date,currency,rate), list.")
