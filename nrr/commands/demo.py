"""``nrr demo``: the whole pipeline on a bundled demo Stripe account (what ``make demo`` runs)."""

from __future__ import annotations

import io
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import typer

from nrr.commands.common import (
    CommandFailed,
    OutputFormat,
    UsageError,
    emit_json,
    emit_rows,
    handle_errors,
    stderr,
    stdout,
)

COLUMNS = ["month", "opening_mrr", "new", "reactivation", "expansion", "contraction", "churn",
           "closing_mrr", "fx_impact", "nrr", "grr", "band", "customers"]


TABLE_COLUMNS = [("month", "month", 0), ("opening_mrr", "opening MRR", 2), ("new", "new", 3),
                 ("reactivation", "reactivation", 4), ("expansion", "expansion", 3),
                 ("contraction", "contraction", 3), ("churn", "churn", 2),
                 ("closing_mrr", "closing MRR", 1), ("fx_impact", "FX impact", 5),
                 ("nrr", "NRR %", 1), ("grr", "GRR %", 1), ("band", "band", 4),
                 ("customers", "customers", 4)]


# One string per paragraph: the help renderer keeps a docstring's line breaks.
HELP = (
    "Run the whole pipeline on a bundled demo Stripe account: no keys, no servers.\n\n"
    "Starts the local Stripe emulator on 127.0.0.1 with a generated account (hundreds of "
    "customers, two years of history), then runs the worker's own tasks in this process: "
    "sync, recompute, the snapshot of every closed month and the alerts (sent to "
    "SLACK_WEBHOOK_URL when set, printed otherwise).\n\n"
    "Prints the month-by-month retention table and writes a self-contained HTML report "
    "(OUTPUT/report.html). This is what `make demo` runs."
)


def register(app: typer.Typer) -> None:
    app.command("demo", help=HELP)(demo_command)


@handle_errors
def demo_command(
    output_dir: Path = typer.Option(Path("demo-output"), "--output", "-o",
                                    help="Folder for the demo's SQLite database and report.html "
                                         "(created if missing; the demo database in it is "
                                         "replaced on every run)."),
    customers: int = typer.Option(300, "--customers", min=1, max=100_000,
                                  help="Customers in the generated demo account."),
    months: int = typer.Option(24, "--months", min=2, max=120,
                               help="Months of history in the generated demo account."),
    seed: int = typer.Option(20240101, "--seed",
                             help="Seed of the demo account generator (same seed, same day: "
                                  "same numbers)."),
    database_url: str | None = typer.Option(
        None, "--database-url",
        help="Write to this database instead of a fresh SQLite file in the output folder. "
             "DATABASE_URL from the environment is never used by the demo."),
    output: OutputFormat = typer.Option(OutputFormat.table, "--format",
                                        help="Output format of the retention table: table, json "
                                             "or csv (progress always goes to stderr)."),
) -> None:
    """Run the whole pipeline on a bundled demo Stripe account (see HELP)."""
    from nrr.demo import DemoError, DemoOptions, run_demo

    started = time.monotonic()
    _quiet_logs()

    def progress(message: str) -> None:
        stderr.print(f"[dim]{time.monotonic() - started:6.1f}s[/dim] {message}", highlight=False)

    options = DemoOptions(output=output_dir, customers=customers, months=months, seed=seed,
                          database_url=database_url)
    # The alerts the pipeline prints (no SLACK_WEBHOOK_URL) are held back and shown after
    # the table, so the first screen is the results; other formats keep stdout for exactly
    # one document and show them on stderr.
    printed_alerts = io.StringIO()
    try:
        with redirect_stdout(printed_alerts):
            result = run_demo(options, progress=progress)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except DemoError as exc:
        raise CommandFailed(str(exc)) from None

    alerts_text = printed_alerts.getvalue().strip()
    if alerts_text and output is not OutputFormat.table:
        sys.stderr.write(alerts_text + "\n")
    document = result.as_dict()
    if output is OutputFormat.json:
        emit_json(document)
        progress(f"report: {result.report_path}")
        return
    rows = [_row(month) for month in result.months]
    title = (f"Net revenue retention, demo account ({result.first_month} to "
             f"{result.months[-1]['month']}, {result.months[-1]['currency'].upper()})")
    if output is OutputFormat.csv:  # plain numbers, for a spreadsheet
        emit_rows([{**m, "customers": (m.get("customers") or {}).get("closing")}
                   for m in result.months], output, columns=COLUMNS)
        progress(f"report: {result.report_path}")
        return
    _print_table(rows, title)
    stdout.print(f"\nAlerts for {result.last_closed_month}: {_alerts_line(result.alerts)}",
                 highlight=False)
    if alerts_text:
        stdout.print(f"\n{alerts_text}\n", highlight=False, markup=False, soft_wrap=True)
    stdout.print(f"Finished in {time.monotonic() - started:.1f} s "
                 f"({', '.join(f'{k} {v:.1f} s' for k, v in result.steps.items())}).",
                 highlight=False, soft_wrap=True)
    stdout.print(f"\n[bold]Report:[/bold] {result.report_path}", highlight=False)
    stdout.print("[bold]Next:[/bold]", highlight=False)
    for line in document["next_steps"][1:]:
        stdout.print(f"  - {line}", highlight=False, soft_wrap=True)


def _quiet_logs() -> None:
    """Progress lines tell the story; info logs (and the stripe SDK's request log) would
    bury them. NRR_LOG_LEVEL set by the user wins."""
    import logging
    import os

    from nrr.logs import configure_logging

    if "NRR_LOG_LEVEL" not in os.environ:
        os.environ["NRR_LOG_LEVEL"] = "WARNING"  # the worker configures logging from it
        configure_logging("WARNING")
        logging.getLogger().setLevel(logging.WARNING)  # alembic, celery, kombu, stripe
    # kombu warns that the embedded broker URL (filesystem://) names no host: true and harmless.
    logging.getLogger("kombu.connection").addFilter(
        lambda record: "No hostname was supplied" not in record.getMessage())


def _print_table(rows: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console

    from nrr.commands.tables import Column, print_table

    columns = [Column(key, label, "text" if key in ("month", "band") else "money", priority)
               for key, label, priority in TABLE_COLUMNS]
    # A pipe or a file gets the whole table rather than an 80-column squeeze.
    console = stdout if stdout.is_terminal else Console(width=max(stdout.width, 180))
    print_table(title, columns, rows, console=console, formatter=lambda column, value: value)


def _percent(value: Any) -> str:
    from nrr.commands.tables import percent

    return percent(value)


def _row(month: dict[str, Any]) -> dict[str, Any]:
    customers = month.get("customers") or {}
    return {
        "month": month["month"] + (" (partial)" if month.get("partial") else ""),
        "opening_mrr": f"{month['opening_mrr']:,.2f}",
        "new": f"{month['new']:,.2f}",
        "reactivation": f"{month['reactivation']:,.2f}",
        "expansion": f"{month['expansion']:,.2f}",
        "contraction": f"{month['contraction']:,.2f}",
        "churn": f"{month['churn']:,.2f}",
        "closing_mrr": f"{month['closing_mrr']:,.2f}",
        "fx_impact": f"{month.get('fx_impact') or 0:,.2f}",
        "nrr": _percent(month.get("nrr")),
        "grr": _percent(month.get("grr")),
        "band": month.get("band") or "–",
        "customers": f"{customers.get('closing') or 0:,}",
    }


def _alerts_line(alerts: dict[str, Any]) -> str:
    by_status = alerts.get("messages") or {}
    if not by_status:
        return "no rule fired"
    where = {"printed": "printed below", "sent": "sent to Slack", "pending": "pending"}
    return ", ".join(f"{count} {where.get(status, status)}"
                     for status, count in sorted(by_status.items()))
