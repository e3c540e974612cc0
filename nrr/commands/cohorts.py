"""``nrr cohorts``: MRR retention of customers grouped by the month they first paid."""

from __future__ import annotations

from enum import Enum
from typing import Any

import typer

from nrr.commands.common import (
    OutputFormat,
    emit_json,
    emit_rows,
    engine,
    handle_errors,
    settings,
    stdout,
)


class Retention(str, Enum):
    net = "net"
    gross = "gross"
    both = "both"


def long_rows(document: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per cohort and month since (the CSV form)."""
    return [
        {"cohort": cohort["cohort"], "customers": cohort["customers"],
         "starting_mrr": cohort["starting_mrr"], **cell}
        for cohort in document["cohorts"] for cell in cohort["months"]
    ]


def _cell(cell: dict[str, Any], retention: Retention) -> str:
    from nrr.commands.tables import percent

    def show(value: Any) -> str:
        return percent(value)

    if retention is Retention.net:
        return show(cell["net_retention"])
    if retention is Retention.gross:
        return show(cell["gross_retention"])
    return f"{show(cell['net_retention'])} / {show(cell['gross_retention'])}"


def matrix_rows(document: dict[str, Any], retention: Retention,
                months: int | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """The table form: one row per cohort, one column per month since (M0, M1, ...)."""
    width = max((len(c["months"]) for c in document["cohorts"]), default=0)
    if months is not None:
        width = min(width, months)
    columns = ["cohort", "customers", "starting_mrr", *[f"M{k}" for k in range(width)]]
    rows = []
    for cohort in document["cohorts"]:
        row: dict[str, Any] = {"cohort": cohort["cohort"], "customers": cohort["customers"],
                               "starting_mrr": cohort["starting_mrr"]}
        for cell in cohort["months"][:width]:
            row[f"M{cell['months_since']}"] = _cell(cell, retention)
        rows.append(row)
    return rows, columns


def _plain_cell(column: Any, value: Any, currency: str) -> str:
    from nrr.commands.tables import cell
    from nrr.domain.money import minor_exponent

    return cell(value, column.kind, minor_exponent(currency))


def register(app: typer.Typer) -> None:
    @app.command("cohorts")
    @handle_errors
    def cohorts_command(
        output: OutputFormat = typer.Option(OutputFormat.table, "--format",
                                            help="Output format: table (a cohort x month "
                                                 "matrix), json or csv (one row per cell)."),
        retention: Retention = typer.Option(Retention.both, "--retention",
                                            help="Which retention the table shows: net, "
                                                 "gross or both (json and csv hold both)."),
        months: int | None = typer.Option(None, "--months", min=1, metavar="N",
                                          help="Show the first N months since each cohort's "
                                               "first paying month (M0 .. MN-1); default: all "
                                               "that fit the terminal (json and csv hold all)."),
    ) -> None:
        """Net and gross MRR retention of each first-paid-month cohort, per month since."""
        from nrr.db import session_scope
        from nrr.services.report import cohort_table

        cfg = settings()
        with session_scope(engine(cfg)) as session:
            document = cohort_table(session, cfg)
        if output is OutputFormat.json:
            emit_json(document)
            return
        if output is OutputFormat.csv:
            emit_rows(long_rows(document), output,
                      columns=["cohort", "customers", "starting_mrr", "month", "months_since",
                               "mrr", "customers_paying", "net_retention", "gross_retention",
                               "partial"])
            for note in document.get("notes") or []:
                typer.echo(f"note: {note}", err=True)
            return
        from nrr.commands.tables import Column, print_table
        from nrr.domain.money import minor_exponent

        rows, columns = matrix_rows(document, retention, months)
        label = {"net": "net", "gross": "gross", "both": "net / gross"}[retention.value]
        # Later months go first when the terminal is narrow (the note under the table says).
        table_columns = [Column("cohort", "cohort", "text", 0),
                         Column("customers", "customers", "count", 1),
                         Column("starting_mrr", "starting MRR", "money", 1)]
        table_columns += [Column(c, c, "ratio", 2 + int(c[1:])) for c in columns[3:]]
        print_table(f"MRR retention (%) by first paying month, {label} "
                    f"({document['currency'].upper()})", table_columns, rows, console=stdout,
                    places=minor_exponent(document["currency"]),
                    formatter=lambda column, value: (
                        "" if value is None and column.key.startswith("M")
                        else value if column.key.startswith("M")
                        else _plain_cell(column, value, document["currency"])))
        for note in document.get("notes") or []:
            stdout.print(f"note: {note}", highlight=False, markup=False)
