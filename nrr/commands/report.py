"""``nrr report``: NRR, GRR and the other retention metrics of a month, a segment or a series.

Imports stay light (no celery, stripe or numpy): the service is imported when the
command runs, so the whole command stays well under a second.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import typer

from nrr.commands.common import (
    OutputFormat,
    UsageError,
    emit_json,
    emit_rows,
    engine,
    handle_errors,
    parse_month,
    settings,
    stdout,
)


class Period(str, Enum):
    monthly = "monthly"
    t12m = "t12m"


MONTHLY_COLUMNS = ["opening_mrr", "new", "reactivation", "expansion", "contraction", "churn",
                   "closing_mrr", "fx_impact", "nrr", "grr", "band", "customers_opening",
                   "customers_new", "customers_reactivated", "customers_churned",
                   "customers_closing", "arr", "logo_churn_rate", "revenue_churn_rate",
                   "quick_ratio", "arpa", "partial"]
T12M_COLUMNS = ["first_month", "cohort_opening_mrr", "cohort_closing_mrr", "expansion",
                "contraction", "churn", "nrr", "grr", "band", "customers_cohort",
                "customers_paying", "customers_churned", "logo_churn_rate", "partial"]


def flat_row(report: dict[str, Any]) -> dict[str, Any]:
    """A report object as one flat row (``customers.opening`` -> ``customers_opening``)."""
    row: dict[str, Any] = {}
    for key, value in report.items():
        if key in {"policies", "definitions", "notes", "segments", "total"}:
            continue
        if key == "customers" and isinstance(value, dict):
            for sub, count in value.items():
                row[f"customers_{sub}"] = count
            continue
        row[key] = value
    return row


def _percent(value: Any) -> Any:
    return "" if value is None else f"{value:.3f}"


def _table_row(row: dict[str, Any]) -> dict[str, Any]:
    shown = dict(row)
    for key in ("nrr", "grr", "logo_churn_rate", "revenue_churn_rate"):
        if key in shown:
            shown[key] = _percent(shown[key])
    return shown


def _print_context(document: dict[str, Any], fmt: OutputFormat) -> None:
    """Policies, definitions and notes after a table (stdout) or beside a CSV (stderr)."""
    to_stderr = fmt is OutputFormat.csv
    lines = []
    policies = document.get("policies") or {}
    if policies:
        lines.append("policies: " + ", ".join(f"{k}={v}" for k, v in policies.items()))
    for name, definition in (document.get("definitions") or {}).items():
        lines.append(f"{name}: {definition['formula']} (cohort: {definition['cohort']})")
    reasons = {f"{key}: {value}" for key, value in _reasons(document)}
    lines.extend(sorted(reasons))
    lines.extend(f"note: {note}" for note in document.get("notes") or [])
    for line in lines:
        if to_stderr:
            typer.echo(line, err=True)
        else:
            stdout.print(line, highlight=False, markup=False)


def _reasons(document: dict[str, Any]) -> list[tuple[str, str]]:
    found = [(key, value) for key, value in document.items()
             if key in {"nrr_reason", "grr_reason"} and value]
    for child in [document.get("total") or {}, *(document.get("segments") or []),
                  *(document.get("months") or [])]:
        found.extend(_reasons(child))
    return found


def render(document: dict[str, Any], fmt: OutputFormat) -> None:
    if fmt is OutputFormat.json:
        emit_json(document)
        return
    period = document.get("period", "monthly")
    columns = MONTHLY_COLUMNS if period == "monthly" else T12M_COLUMNS
    if "months" in document:  # a series
        rows = [flat_row(report.get("total", report)) for report in document["months"]]
        if document.get("dimension"):
            rows = [{**flat_row(segment), "month": report["month"]}
                    for report in document["months"] for segment in report["segments"]]
            columns = ["month", "segment", *columns]
        else:
            columns = ["month", *columns]
        title = f"{period} retention {document['from']} to {document['to']} " \
                f"({document['currency'].upper()})"
    elif "segments" in document:
        rows = [flat_row(segment) for segment in document["segments"]]
        rows.append({**flat_row(document["total"]), "segment": "total"})
        columns = ["segment", *columns]
        title = f"{period} retention {document['month']} by {document['dimension']} " \
                f"({document['currency'].upper()})"
    else:
        row = flat_row(document)
        if fmt is OutputFormat.csv:
            rows, columns = [row], ["month", *columns]
        else:
            rows = [{"metric": key, "value": _table_row(row).get(key)} for key in columns]
            columns = ["metric", "value"]
        title = f"{period} retention {document['month']} ({document['currency'].upper()})"
    if fmt is OutputFormat.table and columns != ["metric", "value"]:
        rows = [_table_row(r) for r in rows]
    emit_rows(rows, fmt, title=title, columns=columns)
    _print_context(document, fmt)


def register(app: typer.Typer) -> None:
    @app.command("report")
    @handle_errors
    def report_command(
        month: str | None = typer.Option(None, "--month", metavar="YYYY-MM",
                                         help="The month to report (in NRR_TIMEZONE); the "
                                              "current month is allowed and marked partial."),
        first: str | None = typer.Option(None, "--from", metavar="YYYY-MM",
                                         help="First month of a series (with --to)."),
        last: str | None = typer.Option(None, "--to", metavar="YYYY-MM",
                                        help="Last month of a series (with --from)."),
        period: Period = typer.Option(Period.monthly, "--period",
                                      help="monthly: the month's own cohort; t12m: the "
                                           "cohort paying at the opening of M-11, seen at M."),
        by: str | None = typer.Option(None, "--by", metavar="DIMENSION",
                                      help="One result per segment: plan, product, currency, "
                                           "country or metadata:KEY."),
        output: OutputFormat = typer.Option(OutputFormat.table, "--format",
                                            help="Output format: table, json (one JSON "
                                                 "document on stdout) or csv."),
    ) -> None:
        """Report NRR, GRR, MRR movements and the other retention metrics (docs/report-schema.md)."""
        if month is not None and (first is not None or last is not None):
            raise UsageError("give either --month or --from/--to, not both")
        if month is None and (first is None or last is None):
            if first is not None or last is not None:
                raise UsageError("a series needs both --from and --to")
            raise UsageError("give --month YYYY-MM, or --from YYYY-MM --to YYYY-MM for a series")
        from nrr.db import session_scope
        from nrr.services.report import (
            InvalidDimension,
            monthly_report,
            parse_dimension,
            report_series,
        )

        try:
            dimension = parse_dimension(by)
        except InvalidDimension as exc:
            raise UsageError(str(exc)) from None
        cfg = settings()
        if month is not None:
            month = parse_month(month)
            with session_scope(engine(cfg)) as session:
                document = monthly_report(session, cfg, month, period=period.value,
                                          by=dimension)
        else:
            first_month, last_month = parse_month(first or ""), parse_month(last or "")
            if first_month > last_month:
                raise UsageError(f"--from {first_month} is after --to {last_month}")
            with session_scope(engine(cfg)) as session:
                document = report_series(session, cfg, first_month, last_month,
                                         period=period.value, by=dimension)
        render(document, output)
