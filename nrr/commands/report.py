"""``nrr report``: NRR, GRR and the other retention metrics of a month, a segment or a series.

Imports stay light (no celery, stripe or numpy): the service is imported when the
command runs, so the whole command stays well under a second.
"""

from __future__ import annotations

import contextlib
import io
import sys
from enum import Enum
from pathlib import Path
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
    stderr,
    stdout,
)


class ReportFormat(str, Enum):
    """The common output formats plus ``html``: the self-contained page of the months."""

    table = "table"
    json = "json"
    csv = "csv"
    html = "html"


class Period(str, Enum):
    monthly = "monthly"
    t12m = "t12m"


MONTHLY_COLUMNS = ["opening_mrr", "new", "reactivation", "expansion", "contraction", "churn",
                   "closing_mrr", "fx_impact", "nrr", "grr", "band", "customers_opening",
                   "customers_new", "customers_reactivated", "customers_churned",
                   "customers_closing", "arr", "logo_churn_rate", "revenue_churn_rate",
                   "quick_ratio", "arpa", "partial"]
# The table of several segments or months keeps to the columns that fit a terminal.
MONTHLY_TABLE_COLUMNS = ["opening_mrr", "new", "reactivation", "expansion", "contraction",
                         "churn", "closing_mrr", "fx_impact", "nrr", "grr", "band"]
T12M_TABLE_COLUMNS = ["cohort_opening_mrr", "cohort_closing_mrr", "nrr", "grr", "band"]
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


LABELS = {
    "month": "month", "segment": "segment", "metric": "metric", "value": "value",
    "opening_mrr": "opening MRR", "new": "new", "reactivation": "reactivation",
    "expansion": "expansion", "contraction": "contraction", "churn": "churn",
    "closing_mrr": "closing MRR", "fx_impact": "FX impact", "nrr": "NRR %", "grr": "GRR %",
    "band": "band", "customers_opening": "customers at opening", "customers_new": "new customers",
    "customers_reactivated": "reactivated customers", "customers_churned": "churned customers",
    "customers_closing": "customers at closing", "arr": "ARR",
    "logo_churn_rate": "logo churn %", "revenue_churn_rate": "revenue churn %",
    "quick_ratio": "quick ratio", "arpa": "ARPA", "partial": "partial month",
    "first_month": "cohort from", "cohort_opening_mrr": "cohort opening MRR",
    "cohort_closing_mrr": "cohort closing MRR", "customers_cohort": "cohort customers",
    "customers_paying": "still paying",
}
# On a narrow terminal the highest numbers go first; 0 stays (the row's key).
PRIORITY = {"month": 0, "segment": 0, "name": 2, "closing_mrr": 1, "nrr": 1, "grr": 1,
            "cohort_opening_mrr": 2, "cohort_closing_mrr": 1, "opening_mrr": 2, "churn": 2,
            "new": 3, "expansion": 3, "contraction": 3, "band": 4, "reactivation": 4,
            "fx_impact": 5}
PERCENT_KEYS = {"nrr", "grr", "logo_churn_rate", "revenue_churn_rate"}
AMOUNT_KEYS = {"opening_mrr", "new", "reactivation", "expansion", "contraction", "churn",
               "closing_mrr", "fx_impact", "arr", "arpa", "cohort_opening_mrr",
               "cohort_closing_mrr", "mrr"}
COUNT_KEYS = {"customers_opening", "customers_new", "customers_reactivated",
              "customers_churned", "customers_closing", "customers_cohort", "customers_paying"}


def _kind(key: str) -> Any:
    if key in PERCENT_KEYS:
        return "percent"
    if key in AMOUNT_KEYS:
        return "money"
    if key in COUNT_KEYS:
        return "count"
    if key == "quick_ratio":
        return "ratio"
    return "text"


def _shown(key: str, value: Any, places: int) -> str:
    from nrr.commands.tables import cell

    return cell(value, _kind(key), places)


def _csv_cell(key: str, value: Any, places: int) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if key in AMOUNT_KEYS:
        return f"{value:.{places}f}"
    if key in PERCENT_KEYS:
        return f"{value:.3f}"
    return value


def _print_table(title: str, rows: list[dict[str, Any]], columns: list[str], places: int,
                 *, key_column: str | None = None) -> None:
    from nrr.commands.tables import Column, print_table

    if columns == ["metric", "value"]:  # one month: a label per line, numbers already shown
        table_columns = [Column("metric", "metric", "text", 0), Column("value", "value", "money", 0)]
        print_table(title, table_columns, rows, console=stdout,
                    formatter=lambda column, value: str(value))
        return
    table_columns = [Column(c, LABELS.get(c, c.replace("_", " ")), _kind(c),
                            PRIORITY.get(c, 3)) for c in columns]
    print_table(title, table_columns, rows, console=stdout, places=places)


def _print_context(document: dict[str, Any], fmt: OutputFormat) -> None:
    """Policies, definitions and notes after a table (stdout) or beside a CSV (stderr)."""
    lines = []
    policies = document.get("policies") or {}
    if policies:
        from nrr.commands.tables import text

        lines.append("policies: " + ", ".join(
            f"{k}={'none' if v in (None, [], '') else text(v)}" for k, v in policies.items()))
    definitions = document.get("definitions") or {}
    for name in ("nrr", "grr", "nrr_t12m", "grr_t12m"):
        if name in definitions:
            lines.append(f"{name}: {definitions[name]['formula']} "
                         f"(cohort: {definitions[name]['cohort']})")
    lines.extend(_reasons(document))
    lines.extend(f"note: {note}" for note in document.get("notes") or [])
    for line in lines:
        if fmt is OutputFormat.csv:
            typer.echo(line, err=True)
        else:
            stdout.print(line, highlight=False, markup=False)


def _reasons(document: dict[str, Any], where: str | None = None) -> list[str]:
    found = []
    if document.get("nrr_reason"):
        label = document.get("segment") or where or document.get("month")
        found.append(f"{label}: NRR and GRR are null: {document['nrr_reason']}")
    if document.get("total"):
        found.extend(_reasons(document["total"], "total"))
    for child in [*(document.get("segments") or []), *(document.get("months") or [])]:
        found.extend(_reasons(child))
    return found


def render(document: dict[str, Any], fmt: OutputFormat,
           names: dict[str, str] | None = None) -> None:
    from nrr.domain.money import minor_exponent

    if fmt is OutputFormat.json:
        emit_json(document)
        return
    places = minor_exponent(document["currency"])
    period = document.get("period", "monthly")
    columns = MONTHLY_COLUMNS if period == "monthly" else T12M_COLUMNS
    if fmt is OutputFormat.table and ("months" in document or "segments" in document):
        columns = MONTHLY_TABLE_COLUMNS if period == "monthly" else T12M_TABLE_COLUMNS
    key_column = None
    if "months" in document:  # a series
        rows = [flat_row(report.get("total", report)) for report in document["months"]]
        if document.get("dimension"):
            rows = [{**flat_row(segment), "month": report["month"]}
                    for report in document["months"] for segment in report["segments"]]
            columns = ["month", "segment", *columns]
        else:
            columns = ["month", *columns]
        key_column = "month"
        title = (f"{period} retention {document['from']} to {document['to']} "
                 f"({document['currency'].upper()})")
    elif "segments" in document:
        rows = [flat_row(segment) for segment in document["segments"]]
        rows.append({**flat_row(document["total"]), "segment": "total"})
        columns = ["segment", *columns]
        if names and fmt is OutputFormat.table:  # plan and product names beside the ids
            rows = [{**row, "name": names.get(str(row.get("segment")), "")} for row in rows]
            columns = ["segment", "name", *columns[1:]]
        key_column = "segment"
        title = (f"{period} retention {document['month']} by {document['dimension']} "
                 f"({document['currency'].upper()})")
    else:
        row = flat_row(document)
        title = f"{period} retention {document['month']} ({document['currency'].upper()})"
        if fmt is OutputFormat.csv:
            rows, columns = [row], ["month", *columns]
        else:
            rows = [{"metric": LABELS.get(key, key), "value": _shown(key, row.get(key), places)}
                    for key in columns]
            columns, key_column = ["metric", "value"], "metric"
    if fmt is OutputFormat.csv:
        # Amounts with the currency's decimals (927414.00), percents with three.
        rows = [{k: _csv_cell(k, v, places) for k, v in r.items()} for r in rows]
        emit_rows(rows, fmt, columns=columns)
    else:
        _print_table(title, rows, columns, places, key_column=key_column)
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
        output: ReportFormat = typer.Option(ReportFormat.table, "--format",
                                            help="Output format: table, json (one JSON "
                                                 "document on stdout), csv, or html (the "
                                                 "self-contained report page of the months; "
                                                 "all stored months without --month or "
                                                 "--from/--to)."),
        output_file: Path | None = typer.Option(None, "--output", "-o", metavar="FILE",
                                                help="Write the report to FILE instead of "
                                                     "stdout (written whole or not at all)."),
    ) -> None:
        """Report NRR, GRR, MRR movements and the other retention metrics (docs/report-schema.md)."""
        if month is not None and (first is not None or last is not None):
            raise UsageError("give either --month or --from/--to, not both")
        if (first is None) != (last is None):
            raise UsageError("a series needs both --from and --to")
        if output is ReportFormat.html:
            if by is not None or period is not Period.monthly:
                raise UsageError("--format html shows every dimension and both periods: "
                                 "leave out --by and --period")
            _html(month, first, last, output_file)
            return
        if month is None and first is None:
            raise UsageError("give --month YYYY-MM, or --from YYYY-MM --to YYYY-MM for a series")
        from nrr.db import session_scope
        from nrr.services.report import (
            InvalidDimension,
            monthly_report,
            parse_dimension,
            report_series,
            segment_names,
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
                names = segment_names(session, dimension, (
                    str(s.get("segment")) for s in document.get("segments") or []))
        else:
            first_month, last_month = parse_month(first or ""), parse_month(last or "")
            if first_month > last_month:
                raise UsageError(f"--from {first_month} is after --to {last_month}")
            with session_scope(engine(cfg)) as session:
                document = report_series(session, cfg, first_month, last_month,
                                         period=period.value, by=dimension)
                names = segment_names(session, dimension, (
                    str(s.get("segment")) for m in document["months"]
                    for s in m.get("segments") or []))
        fmt = OutputFormat(output.value)
        if output_file is None:
            render(document, fmt, names)
            return
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            render(document, fmt, names)
        write_whole(output_file, buffer.getvalue())
        stderr.print(f"report written to {output_file}", highlight=False, markup=False)


def write_whole(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (a temporary file and a rename)."""
    from nrr.services.report_files import write_atomically

    path = path.expanduser()
    if not path.parent.is_dir():
        raise UsageError(f"the folder {path.parent} does not exist")
    write_atomically(path, text)


def _html(month: str | None, first: str | None, last: str | None,
          output_file: Path | None) -> None:
    from nrr.db import session_scope
    from nrr.domain.months import month_range
    from nrr.html_report import render_html_report

    months: list[str] | None = None
    if month is not None:
        months = [parse_month(month)]
    elif first is not None and last is not None:
        first_month, last_month = parse_month(first), parse_month(last)
        if first_month > last_month:
            raise UsageError(f"--from {first_month} is after --to {last_month}")
        months = month_range(first_month, last_month)
    cfg = settings()
    with session_scope(engine(cfg)) as session:
        page = render_html_report(session, cfg, months=months)
    if output_file is None:
        sys.stdout.write(page)
        sys.stdout.flush()
        return
    write_whole(output_file, page)
    stderr.print(f"report written to {output_file}", highlight=False, markup=False)
