"""``nrr snapshots``: take, list and compare the monthly retention snapshots."""

from __future__ import annotations

import typer

from nrr.commands.common import (
    OutputFormat,
    UsageError,
    emit_json,
    emit_rows,
    engine,
    format_option,
    handle_errors,
    parse_month,
    settings,
    stdout,
)

snapshots_app = typer.Typer(help="Monthly retention snapshots: immutable, versioned.",
                            no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(snapshots_app, name="snapshots")


@snapshots_app.command("take")
@handle_errors
def take_command(
    month: str | None = typer.Option(None, "--month",
                                     help="Closed month YYYY-MM (default: the month that "
                                          "just ended in NRR_TIMEZONE)."),
    reason: str | None = typer.Option(None, "--reason",
                                      help="Why this snapshot is taken (stored with it)."),
    output: OutputFormat = format_option("table", "json", help="Output format: table or json."),
) -> None:
    """Snapshot a closed month (every period and segment). Same content again: nothing is
    written; changed history: a new version beside the old one."""
    from nrr.db import session_scope
    from nrr.services.snapshots import SnapshotError, last_closed_month, take_snapshots

    cfg = settings()
    chosen = parse_month(month) if month else last_closed_month(cfg)
    try:
        with session_scope(engine(cfg)) as session:
            result = take_snapshots(session, cfg, chosen, reason=reason or "nrr snapshots take")
    except SnapshotError as exc:
        raise UsageError(str(exc)) from None
    document = result.as_dict()
    if output is OutputFormat.json:
        emit_json(document)
        return
    emit_rows(result.created, output, title=f"Snapshots of {chosen}: {len(result.created)} "
                                            f"written, {result.unchanged} unchanged",
              columns=["period", "dimension", "segment", "version"])


@snapshots_app.command("list")
@handle_errors
def list_command(
    month: str | None = typer.Option(None, "--month", help="Only this month (YYYY-MM)."),
    by: str | None = typer.Option(None, "--by",
                                  help="Show the segments of this dimension (plan, product, "
                                       "currency, country) instead of the totals."),
    all_segments: bool = typer.Option(False, "--all", help="Show the totals and every segment."),
    output: OutputFormat = typer.Option(OutputFormat.table, "--format",
                                        help="Output format: table, json or csv."),
) -> None:
    """List the stored snapshots (every version), newest month first."""
    from nrr.db import session_scope
    from nrr.services.snapshots import SNAPSHOT_DIMENSIONS, list_snapshots

    if by is not None and by not in SNAPSHOT_DIMENSIONS:
        raise UsageError(f"unknown dimension {by!r}: use {', '.join(SNAPSHOT_DIMENSIONS)}")
    cfg = settings()
    with session_scope(engine(cfg)) as session:
        rows = list_snapshots(session, month=parse_month(month) if month else None,
                              dimension=by, all_segments=all_segments)
    for row in rows:
        row["content_hash"] = row["content_hash"][:12]
    emit_rows(rows, output, title="Retention snapshots",
              columns=["month", "period", "dimension", "segment", "version", "nrr", "grr",
                       "closing_mrr", "created_at", "content_hash", "reason"])


@snapshots_app.command("diff")
@handle_errors
def diff_command(
    month: str = typer.Option(..., "--month", help="The month YYYY-MM to compare."),
    period: str | None = typer.Option(None, "--period", help="monthly or t12m (default both)."),
    by: str | None = typer.Option(None, "--by",
                                  help="Compare the segments of this dimension (default the "
                                       "totals)."),
    old: int | None = typer.Option(None, "--from", min=1,
                                   help="Old version (default: the one before --to)."),
    new: int | None = typer.Option(None, "--to", min=1,
                                   help="New version (default: the latest)."),
    output: OutputFormat = format_option("table", "json", help="Output format: table or json."),
) -> None:
    """Show what changed between two versions of a month's snapshots, and why (policies,
    definitions or data)."""
    from nrr.db import session_scope
    from nrr.services.snapshots import diff_snapshots

    chosen = parse_month(month)
    if period is not None and period not in ("monthly", "t12m"):
        raise UsageError(f"unknown period {period!r}: use monthly or t12m")
    cfg = settings()
    with session_scope(engine(cfg)) as session:
        diffs = diff_snapshots(session, chosen, period=period, dimension=by or "",
                               old_version=old, new_version=new)
    if output is OutputFormat.json:
        emit_json({"month": chosen, "diffs": diffs})
        return
    if not diffs:
        stdout.print(f"no snapshot of {chosen} has more than one version: nothing changed",
                     highlight=False)
        return
    for diff in diffs:
        label = f"{diff['period']} {diff['dimension'] or 'total'} {diff['segment']}".strip()
        stdout.print(f"[bold]{chosen} {label}: v{diff['old_version']} -> "
                     f"v{diff['new_version']}[/bold] ({diff['reason'] or 'no reason given'})",
                     highlight=False)
        stdout.print(f"why: {diff['why']}", highlight=False)
        emit_rows(diff["numbers"] + [{"metric": f"policy {p['name']}", "old": p["old"],
                                      "new": p["new"]} for p in diff["policies"]],
                  output, columns=["metric", "old", "new", "change"])
