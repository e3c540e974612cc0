"""Shared CLI plumbing: settings, database, output formats and exit codes.

Exit codes: 0 the command finished (skips and alarming numbers are reported, not
failures); 1 it failed; 2 usage or configuration error. No command ever prompts.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import sys
from collections.abc import Callable, Iterable
from enum import Enum
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from nrr.settings import ConfigError, Settings, load_settings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

class PipeConsole(Console):
    """A rich console for which a reader that went away (``nrr report | head``) ends the
    command with exit 0: the output was wanted only that far, nothing failed. (rich's own
    answer is exit 1.)"""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(EXIT_OK)


# Messages on stderr are never hard-wrapped: a path or id stays whole for grep and scripts.
stderr = PipeConsole(stderr=True, soft_wrap=True)
stdout = PipeConsole()


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


def format_option(*choices: str, help: str) -> Any:  # noqa: A002 - typer's own name
    """A ``--format`` option offering only ``choices`` (its help and its checks list
    exactly what the command prints); the value is an :class:`OutputFormat`."""

    def parse(value: Any) -> OutputFormat:
        name = value.value if isinstance(value, OutputFormat) else str(value)
        if name not in choices:
            raise typer.BadParameter(f"{name!r} is not one of {', '.join(choices)}")
        return OutputFormat(name)

    return typer.Option(OutputFormat(choices[0]), "--format",
                        metavar="[" + "|".join(choices) + "]", parser=parse, help=help)


class UsageError(Exception):
    """Bad arguments; exit code 2 with the message."""


class CommandFailed(Exception):
    """The command could not finish; exit code 1 with the message."""


_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


def parse_month(value: str) -> str:
    match = _MONTH.match(value or "")
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise UsageError(f"unknown month {value!r}: use YYYY-MM, for example 2026-10")
    return value


def settings() -> Settings:
    return load_settings()


def engine(cfg: Settings) -> Engine:
    from nrr.db import ready_engine

    return ready_engine(cfg.database_url)


F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Map domain errors to exit codes and clear one-line messages on stderr."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from nrr.logs import redact

        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except BrokenPipeError:
            # `nrr report | head`: the reader has gone; not a failure of ours.
            # Point stdout at /dev/null so the interpreter's final flush does not fail again.
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except (UsageError, ConfigError) as exc:
            stderr.print(f"[red]error:[/red] {redact(str(exc))}", highlight=False)
            raise typer.Exit(EXIT_USAGE) from None
        except CommandFailed as exc:
            stderr.print(f"[red]failed:[/red] {redact(str(exc))}", highlight=False)
            raise typer.Exit(EXIT_FAILED) from None
        except Exception as exc:  # noqa: BLE001 - last line of defence, message without secrets
            stderr.print(f"[red]failed:[/red] {type(exc).__name__}: {redact(str(exc))}",
                         highlight=False)
            raise typer.Exit(EXIT_FAILED) from None

    return wrapper  # type: ignore[return-value]


def emit_json(document: Any) -> None:
    """Exactly one JSON document on stdout."""
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=False, default=str))
    sys.stdout.write("\n")
    sys.stdout.flush()


def emit_rows(rows: Iterable[dict[str, Any]], fmt: OutputFormat, title: str | None = None,
              columns: list[str] | None = None, document: Any = None) -> None:
    """Print rows as a rich table, CSV, or JSON (``document`` if given, else the rows)."""
    rows = list(rows)
    if fmt is OutputFormat.json:
        emit_json(rows if document is None else document)
        return
    columns = columns or (list(rows[0].keys()) if rows else [])
    if fmt is OutputFormat.csv:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row.get(k)) for k in columns})
        sys.stdout.write(buffer.getvalue())
        return
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*[_cell(row.get(c)) for c in columns])
    stdout.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)


# A worker's recompute is killed after its soft time limit plus this (its hard limit): the
# CLI waits no longer than that for the recompute lock.
RECOMPUTE_WAIT_MARGIN_SECONDS = 60

T = TypeVar("T")


def under_recompute_lock(db: Engine, cfg: Settings, work: Callable[[], T],
                         timeout_message: str) -> T:
    """Run ``work`` holding the account's recompute lock, the one the worker's recompute
    takes, so two recomputes of one account never run at once. A running one is waited for
    (up to the worker's time limit for a recompute); then ``timeout_message`` fails the
    command."""
    from nrr.locks import RECOMPUTE_LOCK, account_lock, lock_holder

    with account_lock(RECOMPUTE_LOCK, cfg, db) as acquired:
        if acquired:
            return work()
    wait = float(cfg.worker.soft_time_limit_seconds + RECOMPUTE_WAIT_MARGIN_SECONDS)
    holder = lock_holder(RECOMPUTE_LOCK, cfg, db)
    held = f" ({holder.describe()})" if holder is not None else ""
    stderr.print("another recompute of this account is running (the worker or another "
                 f"command){held}: waiting for it to finish (at most {wait:.0f} s)",
                 highlight=False)
    with account_lock(RECOMPUTE_LOCK, cfg, db, blocking=True, timeout=wait) as acquired:
        if acquired:
            return work()
    raise CommandFailed(timeout_message.format(wait=wait))

