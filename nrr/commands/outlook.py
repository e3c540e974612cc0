"""``nrr outlook``: the months ahead as Stripe already knows them (docs/outlook-schema.md)."""

from __future__ import annotations

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
)

MONTH_COLUMNS = ["month", "partial", "opening", "new", "churn", "contraction", "expansion",
                 "reactivation", "trial_conversions", "closing", "closing_all_converting", "nrr",
                 "nrr_band", "grr", "grr_band", "nrr_all_converting", "grr_all_converting"]
MOVEMENT_COLUMNS = ["effective_at", "customer_id", "amount", "cause", "bound", "subscription_id",
                    "stripe_ids"]


def _month_row(month: dict[str, object], segment: str | None = None) -> dict[str, object]:
    row = dict(month)
    trials = month.get("trial_conversions")
    row["trial_conversions"] = trials.get("all_converting") if isinstance(trials, dict) else trials
    if segment is not None:
        row["segment"] = segment
    return row


@handle_errors
def outlook_command(
    months: int = typer.Option(3, "--months", help="Months ahead to show, the current one "
                                                  "included (1 to 12)."),
    by: str | None = typer.Option(None, "--by", help="Split by a dimension: plan, product, "
                                                     "currency, country or metadata:KEY."),
    output: OutputFormat = typer.Option(OutputFormat.table, "--format",
                                        help="Output format: table, json or csv."),
) -> None:
    """Show the months ahead from what Stripe already has scheduled.

    Per month: opening, scheduled churn, contraction and expansion, trial conversions (none
    converting / all converting), closing, projected NRR and GRR with their bands; then every
    scheduled movement with its customer, date, amount, cause and Stripe ids. The table is
    the committed bound (no trial converts); the *_all_converting columns are the upper one.
    Reads what the last `nrr recompute` stored.
    """
    from nrr.db import session_scope
    from nrr.services.outlook_read import OutlookUnavailable, quick_outlook_report

    cfg = settings()
    try:
        with session_scope(engine(cfg)) as session:
            # The whole account's outlook in plain SQL (a short-lived command spends most
            # of its time importing the ORM models); --by and a database whose stored
            # totals are not built yet go through the full reader.
            document = quick_outlook_report(session, cfg, months=months) if by is None else None
            if document is None:
                from nrr.services.outlook import outlook_report
                from nrr.services.report import InvalidDimension

                try:
                    document = outlook_report(session, cfg, months=months, by=by)
                except InvalidDimension as exc:
                    raise UsageError(str(exc)) from None
    except ValueError as exc:
        if "--months" in str(exc):
            raise UsageError(str(exc)) from None
        raise
    except OutlookUnavailable as exc:
        raise CommandFailed(str(exc)) from None
    if output is OutputFormat.json:
        emit_json(document)
        return
    rows: list[dict[str, object]] = []
    columns = list(MONTH_COLUMNS)
    for month in document["months"]:
        if by:
            rows.extend(_month_row(s, s["segment"]) for s in month.get("segments", []))
        else:
            rows.append(_month_row(month))
    if by:
        columns.insert(1, "segment")
    title = f"Outlook taken at {document['taken_at']} ({document['reporting_currency']})"
    emit_rows(rows, output, title=title, columns=columns)
    if output is OutputFormat.table:
        emit_rows(document["movements"], output, title="Scheduled movements", columns=MOVEMENT_COLUMNS)


def register(app: typer.Typer) -> None:
    app.command("outlook", help="Show the months ahead from what Stripe already has "
                                "scheduled.")(outlook_command)
