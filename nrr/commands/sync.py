"""``nrr sync``: bring the Stripe mirror and every derived number up to date, in the foreground."""

from __future__ import annotations

from typing import Any

import typer

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
    under_recompute_lock,
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
    up to date, so `nrr sync && nrr report` is the minimal flow. Needs STRIPE_API_KEY
    (a restricted read-only key); needs no Redis and no worker.
    """
    from integrations.stripe_client import StripeAccessDenied, StripeUnavailable
    from integrations.stripe_sync import run_sync

    cfg = settings()
    cfg.require("stripe_api_key")
    db = engine(cfg)
    show_progress = not no_progress and output is OutputFormat.table and stderr.is_terminal
    lock = _sync_lock(cfg, db)
    try:
        if show_progress:
            result = _sync_with_progress(db, cfg, full)
        else:
            result = run_sync(db, cfg, full=full)
    except StripeAccessDenied as exc:
        raise CommandFailed(str(exc)) from None
    except StripeUnavailable as exc:
        raise CommandFailed(f"{exc}; run `nrr sync` again to resume where it stopped") from None
    finally:
        lock.close()
    document: dict[str, Any] = result.as_dict()
    try:
        document["recompute"] = _recompute_under_lock(db, cfg, result)
    except CommandFailed:
        raise
    except Exception as exc:  # noqa: BLE001 - the message names what to fix
        raise CommandFailed(
            f"the Stripe sync finished ({result.mode}, {result.objects_stored} objects, "
            f"{result.events_applied} events; the mirror is stored) but the recompute "
            f"failed: {type(exc).__name__}: {exc}") from None
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

    from integrations.stripe_sync import run_sync

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

        return run_sync(db, cfg, full=full, progress=progress)


def _recompute(db: Any, cfg: Any) -> Any:
    """Recompute the customers the sync marked dirty (timeline, movements, monthly facts)."""
    try:
        from nrr.services.recompute import recompute_dirty
    except ImportError as exc:
        if exc.name != "nrr.services.recompute":
            raise
        raise CommandFailed("the mirror is synced, but this build has no recompute service "
                            "(nrr.services.recompute); derived numbers were not updated") from None
    from nrr.db import session_scope

    with session_scope(db) as session:
        outcome = recompute_dirty(session, cfg)
    if hasattr(outcome, "as_dict"):
        return outcome.as_dict()
    if isinstance(outcome, (dict, list, int, str)) or outcome is None:
        return outcome
    return str(outcome)


def _recompute_under_lock(db: Any, cfg: Any, result: Any) -> Any:
    """Recompute under the account's recompute lock; the dirty marks survive a timeout."""
    return under_recompute_lock(db, cfg, lambda: _recompute(db, cfg), (
        f"the Stripe sync finished ({result.mode}, {result.objects_stored} objects, "
        f"{result.events_applied} events; the mirror is stored) but another recompute of "
        "this account held the recompute lock for {wait:.0f} s; the changed customers "
        "stay marked: run `nrr sync` again later, or let the worker recompute them"))


def _sync_lock(cfg: Any, db: Any) -> Any:
    """Hold the account's sync lock (shared with the worker) until ``close()``."""
    from contextlib import ExitStack

    from nrr.locks import SYNC_LOCK, account_lock, lock_holder

    stack = ExitStack()
    if not stack.enter_context(account_lock(SYNC_LOCK, cfg, db)):
        stack.close()
        holder = lock_holder(SYNC_LOCK, cfg, db)
        held = holder.describe() if holder is not None else "its holder just released it"
        raise CommandFailed("another sync of this account is running (the worker or another "
                            f"`nrr sync`): {held}; run it again when that one has finished")
    return stack
