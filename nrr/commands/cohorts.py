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
    def show(value: Any) -> str:
        return "-" if value is None else f"{value:.1f}"

    if retention is Retention.net:
        return show(cell["net_retention"])
    if retention is Retention.gross:
        return show(cell["gross_retention"])
    return f"{show(cell['net_retention'])} / {show(cell['gross_retention'])}"


def matrix_rows(document: dict[str, Any], retention: Retention) -> tuple[list[dict[str, Any]],
                                                                          list[str]]:
    """The table form: one row per cohort, one column per month since (M0, M1, ...)."""
    width = max((len(c["months"]) for c in document["cohorts"]), default=0)
    columns = ["cohort", "customers", "starting_mrr", *[f"M{k}" for k in range(width)]]
    rows = []
    for cohort in document["cohorts"]:
        row: dict[str, Any] = {"cohort": cohort["cohort"], "customers": cohort["customers"],
                               "starting_mrr": cohort["starting_mrr"]}
        for cell in cohort["months"]:
            row[f"M{cell['months_since']}"] = _cell(cell, retention)
        rows.append(row)
    return rows, columns


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
        rows, columns = matrix_rows(document, retention)
        label = {"net": "net", "gross": "gross", "both": "net / gross"}[retention.value]
        emit_rows(rows, output, columns=columns,
                  title=f"MRR retention (%) by first paying month, {label} "
                        f"({document['currency'].upper()})")
        for note in document.get("notes") or []:
            stdout.print(f"note: {note}", highlight=False, markup=False)
