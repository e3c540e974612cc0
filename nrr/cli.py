"""The ``nrr`` command line. Subcommands live in ``nrr/commands/`` and register themselves."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys

import typer

from nrr import __version__

app = typer.Typer(
    name="nrr",
    help="Keep Net Revenue Retention true and current from a Stripe account.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Each module defines register(app); command modules import their heavy dependencies
# inside the command so that `nrr --help` and `nrr report` start fast.
COMMAND_MODULES = [
    "nrr.commands.sync",
    "nrr.commands.recompute",
    "nrr.commands.movements",
    "nrr.commands.fx",
    "nrr.commands.report",
    "nrr.commands.customer",
    "nrr.commands.cohorts",
    "nrr.commands.outlook",
    "nrr.commands.status",
    "nrr.commands.serve",
    "nrr.commands.dashboard",
    "nrr.commands.worker",
    "nrr.commands.snapshots",
    "nrr.commands.alerts",
    "nrr.commands.emulator",
    "nrr.commands.demo",
    "nrr.commands.db",
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"nrr-worker {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Keep Net Revenue Retention true and current from a Stripe account."""

    from nrr.logs import configure_from_settings, configure_logging, redact
    from nrr.settings import ConfigError, load_settings

    _sigterm_like_ctrl_c()

    try:
        configure_from_settings(load_settings())
    except ConfigError as exc:
        configure_logging("INFO")
        if not {"--help", "-h"} & set(sys.argv[1:]):
            # Every command stops here on a typo or an out-of-range value, before any work.
            sys.stderr.write(f"error: {redact(str(exc))}\n")
            raise typer.Exit(2) from None


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _sigterm_like_ctrl_c() -> None:
    """SIGTERM (`kill`, `docker stop`, a CI timeout) unwinds the command like Ctrl-C, so
    its locks are released and its transactions rolled back instead of the process
    vanishing with a lease that blocks the next run until it expires. Commands that
    manage their own shutdown (the Celery worker) install their own handler later."""
    import signal
    import threading

    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL):
        signal.signal(signal.SIGTERM, _interrupt)


def main() -> None:
    # Typer exits 2 on usage errors already (click's convention).
    code: int | str | None = 0
    try:
        app()
    except SystemExit as exc:
        code = exc.code
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        # `nrr report --format csv | head`: what is still buffered has no reader left; that
        # is the reader's choice, not a failure. stdout goes to /dev/null so the
        # interpreter's own final flush does not fail again.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(code)


if __name__ == "__main__":
    main()
