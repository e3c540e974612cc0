"""``nrr alerts``: preview, run, test and list the Slack alerts on retention."""

from __future__ import annotations

import sys
from typing import Any

import typer

from nrr.commands.common import (
    EXIT_FAILED,
    OutputFormat,
    emit_json,
    emit_rows,
    engine,
    format_option,
    handle_errors,
    parse_month,
    settings,
    stderr,
    stdout,
)

alerts_app = typer.Typer(
    help="Slack alerts when retention goes wrong: preview, run, send a test, list pending.",
    no_args_is_help=True,
)

MONTH_HELP = ("Month to evaluate, YYYY-MM (default: the last closed month with a snapshot, "
              "else the last closed month).")
FORMAT_HELP = "Output format: table or json (json prints exactly one JSON document)."

_MESSAGE_COLUMNS = ["kind", "rule", "segment", "severity", "status", "summary"]


def _printer(fmt: OutputFormat) -> Any:
    """Printed messages go to stdout, or to stderr when stdout holds the JSON document."""
    stream = sys.stderr if fmt is OutputFormat.json else sys.stdout

    def emit(text: str) -> None:
        stream.write(text + "\n\n")
        stream.flush()

    return emit


def _finish(delivery: Any) -> None:
    """Exit 1 when some messages stay pending (an invalid webhook URL is a ConfigError:
    exit 2 before anything changed)."""
    if delivery is None:
        return
    if delivery.failed:
        stderr.print(f"[red]failed:[/red] {len(delivery.failed)} message(s) not delivered, kept "
                     f"pending for the next run: {delivery.failed[0]['error']}", highlight=False)
        raise typer.Exit(EXIT_FAILED)


@alerts_app.command("preview")
@handle_errors
def preview_command(
    month: str | None = typer.Option(None, "--month", help=MONTH_HELP),
    fmt: OutputFormat = format_option("table", "json", help=FORMAT_HELP),
) -> None:
    """Print what would be sent for a month, without sending or storing anything."""
    from nrr.services.alerts import preview

    month = parse_month(month) if month is not None else None
    cfg = settings()
    result = preview(engine(cfg), cfg, month)
    if fmt is OutputFormat.json:
        emit_json(result.as_dict(with_payload=True))
        return
    from integrations.slack_messages import render_text

    emit_rows([finding_row(f) for f in result.as_dict()["findings"]], fmt,
              title=f"Alert rules for {result.month}",
              columns=["rule", "segment", "value", "previous_value", "threshold", "state",
                       "severity", "band"])
    if not result.messages:
        stdout.print(f"Nothing would be sent for {result.month}.")
    for message in result.messages:
        stdout.print(f"--- {message.kind} {message.rule} {message.segment} "
                     f"(status: {message.status})", highlight=False)
        sys.stdout.write(render_text(message.payload) + "\n\n")
    for note in result.notes:
        stderr.print(f"note: {note}", highlight=False)


def finding_row(finding: dict[str, Any]) -> dict[str, Any]:
    return {**finding, "segment": finding["segment"] or "(total)"}


@alerts_app.command("run")
@handle_errors
def run_command(
    month: str | None = typer.Option(None, "--month", help=MONTH_HELP),
    fmt: OutputFormat = format_option("table", "json", help=FORMAT_HELP),
) -> None:
    """Evaluate the rules for a month, store each message once and deliver all pending ones."""
    from nrr.services.alerts import evaluate_alerts

    month = parse_month(month) if month is not None else None
    cfg = settings()
    result = evaluate_alerts(engine(cfg), cfg, month, printer=_printer(fmt))
    if fmt is OutputFormat.json:
        emit_json(result.as_dict())
    else:
        emit_rows([m.as_dict(with_payload=False) for m in result.messages], fmt,
                  title=f"Alerts for {result.month}", columns=_MESSAGE_COLUMNS)
        delivery = result.delivery
        if delivery is not None:
            stdout.print(f"sent {len(delivery.sent)}, printed {len(delivery.printed)}, "
                         f"kept pending {len(delivery.failed)}, "
                         f"taken by another worker {len(delivery.busy)}", highlight=False)
        for note in result.notes:
            stderr.print(f"note: {note}", highlight=False)
    _finish(result.delivery)


@alerts_app.command("test")
@handle_errors
def test_command(
    fmt: OutputFormat = format_option("table", "json", help=FORMAT_HELP),
) -> None:
    """Send a sample message to SLACK_WEBHOOK_URL (printed when it is not set)."""
    from nrr.services.alerts import send_test_message

    cfg = settings()
    delivery = send_test_message(engine(cfg), cfg, printer=_printer(fmt))
    if fmt is OutputFormat.json:
        emit_json(delivery.as_dict())
    elif delivery.sent:
        stdout.print("test message sent to Slack")
    elif delivery.printed:
        stdout.print("SLACK_WEBHOOK_URL is not set: the test message was printed above")
    _finish(delivery)


@alerts_app.command("pending")
@handle_errors
def pending_command(
    fmt: OutputFormat = format_option("table", "json", help=FORMAT_HELP),
) -> None:
    """List the messages not delivered yet (they are sent by the next run)."""
    from nrr.services.alerts import pending_deliveries

    cfg = settings()
    rows = pending_deliveries(engine(cfg))
    if not rows and fmt is OutputFormat.table:
        stdout.print("No pending alerts: everything was sent or printed.")
        return
    emit_rows(rows, fmt, title="Pending alerts",
              columns=["dedupe_key", "kind", "month", "severity", "status", "attempts",
                       "last_error"])


def register(app: typer.Typer) -> None:
    app.add_typer(alerts_app, name="alerts", help="Slack alerts on retention drops.")
