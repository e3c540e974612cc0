"""``nrr sync``: bring the Stripe mirror and every derived number up to date, in the foreground."""

from __future__ import annotations

from typing import Any

import typer

from nrr.commands import common
from nrr.commands.common import (
    CommandFailed,
    OutputFormat,
    emit_json,
    emit_rows,
    engine,
    format_option,
    handle_errors,
    settings,
    stderr,
)


def register(app: typer.Typer) -> None:
    app.command("sync")(sync_command)


@handle_errors
def sync_command(
    full: bool = typer.Option(False, "--full",
                              help="List every object again (a new backfill) instead of "
                                   "reading the events since the last sync."),
    no_progress: bool = typer.Option(False, "--no-progress",
                                     help="Do not draw the progress bar on the terminal."),
    output: OutputFormat = format_option("table", "json", help="Output format: table or json."),
) -> None:
    """Sync from Stripe (backfill, then events), then recompute what changed.

    Returns when the mirror, the MRR timeline, the movements and the monthly facts are
    up to date (every customer left dirty by anything earlier included), with the
    snapshot of the last closed month and the alerts after them, so `nrr sync && nrr
    report` is the minimal flow. Needs STRIPE_API_KEY (a restricted read-only key);
    needs no Redis and no worker.
    """
    # Imported here: every `nrr` command loads this module.
    from integrations.stripe_client import StripeAccessDenied, StripeUnavailable
    from nrr.services import pipeline

    cfg = settings()
    cfg.require("stripe_api_key")
    db = engine(cfg)
    show_progress = not no_progress and output is OutputFormat.table and stderr.is_terminal
    try:
        if show_progress:
            result = _sync_with_progress(db, cfg, full)
        else:
            result = pipeline.sync_mirror(db, cfg, full=full)
    except pipeline.LockBusy as exc:
        raise CommandFailed(f"{exc}: the worker or another `nrr sync`; run it again when "
                            "that one has finished") from None
    except StripeAccessDenied as exc:
        raise CommandFailed(str(exc)) from None
    except StripeUnavailable as exc:
        raise CommandFailed(f"{exc}; run `nrr sync` again to resume where it stopped") from None
    document: dict[str, Any] = result.as_dict()
    try:
        refreshed = _refresh(db, cfg, result)
    except CommandFailed:
        raise
    except Exception as exc:  # noqa: BLE001 - the message names what to fix
        raise CommandFailed(
            f"the Stripe sync finished ({result.mode}, {result.objects_stored} objects, "
            f"{result.events_applied} events; the mirror is stored) but the recompute "
            f"failed: {type(exc).__name__}: {exc}") from None
    document["recompute"] = refreshed.recompute
    document["snapshot"] = {"month": refreshed.month, "taken": refreshed.snapshot is not None,
                            "skipped": refreshed.snapshot_skipped}
    document["alerts"] = refreshed.alerts
    if output is OutputFormat.json:
        emit_json(document)
        return
    rows = [{"resource": name, "pages": r.pages, "line_pages": r.line_pages,
             "stored": r.stored, "skipped": r.skipped}
            for name, r in result.resources.items()]
    rows.append({"resource": "events", "pages": "", "line_pages": "",
                 "stored": result.events_applied, "skipped": ""})
    emit_rows(rows, output, title=f"Stripe sync ({result.mode}): {result.requests} requests, "
                                  f"{len(result.customer_ids)} customers changed")
    for note in result.notes:
        stderr.print(f"note: {note}", highlight=False)


def _sync_with_progress(db: Any, cfg: Any, full: bool) -> Any:
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from nrr.services import pipeline

    with Progress(SpinnerColumn(), TextColumn("{task.description:<14}"), BarColumn(),
                  TextColumn("{task.completed:>8.0f} objects"), TimeElapsedColumn(),
                  console=stderr, transient=False) as bar:
        tasks: dict[str, Any] = {}

        def progress(resource: str, advanced: int, finished: bool) -> None:
            if resource not in tasks:
                tasks[resource] = bar.add_task(resource, total=None)
            bar.advance(tasks[resource], advanced)
            if finished:
                done = bar.tasks[tasks[resource]].completed
                bar.update(tasks[resource], total=max(done, 1), completed=max(done, 1))

        return pipeline.sync_mirror(db, cfg, full=full, progress=progress)


def _refresh(db: Any, cfg: Any, result: Any) -> Any:
    """The rest of the pipeline: every dirty customer recomputed under the account's
    recompute lock (a running recompute is waited for, up to the worker's time limit for
    one), then the snapshot and the alerts; the dirty marks survive a timeout."""
    from nrr.services import pipeline

    wait = float(cfg.worker.soft_time_limit_seconds + common.RECOMPUTE_WAIT_MARGIN_SECONDS)

    def waiting(seconds: float) -> None:
        stderr.print("another recompute of this account is running (the worker or another "
                     f"command): waiting for it to finish (at most {seconds:.0f} s)",
                     highlight=False)

    def print_alert(text: str) -> None:
        # Alerts without a Slack webhook are printed; stdout carries the sync's own output.
        stderr.print(text, highlight=False, markup=False)

    refreshed = pipeline.refresh(db, cfg, reason="nrr sync", touched=result.customer_ids,
                                 always=True, wait=wait, on_wait=waiting,
                                 printer=print_alert)
    if refreshed is None:
        raise CommandFailed(
            f"the Stripe sync finished ({result.mode}, {result.objects_stored} objects, "
            f"{result.events_applied} events; the mirror is stored) but another recompute of "
            f"this account held the recompute lock for {wait:.0f} s; the changed customers "
            "stay marked: run `nrr sync` again later, or let the worker recompute them")
    return refreshed
