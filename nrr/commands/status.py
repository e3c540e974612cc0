"""``nrr status``: what the worker has done lately."""

from __future__ import annotations

from typing import Any

import typer
from sqlalchemy.exc import InterfaceError, OperationalError

from nrr.commands.common import (
    EXIT_FAILED,
    OutputFormat,
    emit_json,
    emit_rows,
    engine,
    format_option,
    handle_errors,
    settings,
    stderr,
    stdout,
)
from nrr.logs import redact


def register(app: typer.Typer) -> None:
    app.command("status")(status_command)


def _fmt(value: Any) -> str:
    return "-" if value is None else str(value)


@handle_errors
def status_command(
    output: OutputFormat = format_option("table", "json", help="Output format: table or json."),
) -> None:
    """Show the last sync per resource, the event cursor's age, the queue depth, the last
    snapshot, the last alert, quarantined objects, the last recompute and the customers
    left out of the numbers (their history could not be computed) with their reasons.

    Exits 1 (a failed health check), each reason on stderr, when the database or the broker
    does not answer, the sync is stale ([schedule] stale_after_intervals sync intervals)
    or the last sync of a resource failed."""
    from nrr.db import session_scope
    from nrr.services.status import health_problems, worker_status

    cfg = settings()
    try:
        with session_scope(engine(cfg)) as session:
            document = worker_status(session, cfg)
    except (OperationalError, InterfaceError) as exc:
        # No document without the database: one line saying so, and unhealthy.
        reason = str(exc.orig or exc).splitlines()[0]
        problem = redact(f"database: cannot connect ({type(exc).__name__}: {reason})")
        if output is OutputFormat.json:
            emit_json({"healthy": False, "problems": [problem]})
        stderr.print(f"[red]unhealthy:[/red] {problem}", highlight=False)
        raise typer.Exit(EXIT_FAILED) from None
    problems = health_problems(document, cfg)
    document["healthy"] = not problems
    document["problems"] = problems
    if output is OutputFormat.json:
        emit_json(document)
        _exit_unhealthy(problems)
        return
    emit_rows(document["sync"], output, title="Sync per resource",
              columns=["resource", "phase", "objects_synced", "windows", "finished_at",
                       "last_error"])
    cursor = document["event_cursor"]
    queue = document["queue"]
    snap = document["last_snapshot"] or {}
    alert = document["last_alert"] or {}
    run = document["last_recompute"] or {}
    rows = [
        {"item": "event cursor", "value": f"{_fmt(cursor['at'])} "
                                          f"(age {_fmt(cursor['age_seconds'])} s)"},
        {"item": f"queue ({queue['broker']})", "value": queue.get("error") or _fmt(queue["depth"])},
        {"item": "last snapshot", "value": (f"{snap['month']} {snap['period']} v{snap['version']} "
                                            f"at {snap['created_at']}" if snap else "-")},
        {"item": "last alert", "value": (f"{alert['kind']} {alert['rule']} {alert['month']} "
                                         f"{alert['status']} at {alert['created_at']}"
                                         if alert else "-")},
        {"item": "quarantined objects", "value": str(document["quarantined"])},
        {"item": "customers to recompute", "value": str(document["dirty_customers"])},
        {"item": "last recompute", "value": (f"{run['kind']} {run['customers']} customers, "
                                             f"finished {_fmt(run['finished_at'])}"
                                             if run else "-")},
    ]
    left = document["left_out_customers"]
    rows.append({"item": "customers left out", "value": str(left["count"])})
    emit_rows(rows, output, title="Worker status", columns=["item", "value"])
    if left["first"]:
        emit_rows([{"customer": e["customer_id"], "reason": e["reason"]} for e in left["first"]],
                  output, title=f"Customers left out of the numbers ({left['count']}; "
                                f"`nrr customer ID` shows one)", columns=["customer", "reason"])
    stdout.print(f"checked at {document['checked_at']}", highlight=False)
    _exit_unhealthy(problems)


def _exit_unhealthy(problems: list[str]) -> None:
    for problem in problems:
        stderr.print(f"[red]unhealthy:[/red] {redact(problem)}", highlight=False)
    if problems:
        raise typer.Exit(EXIT_FAILED)
