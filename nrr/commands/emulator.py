"""``nrr emulator``: serve a generated Stripe account locally (demo, tests, benchmarks)."""

from __future__ import annotations

import signal
import time
from types import FrameType

import typer

from nrr.commands.common import (
    OutputFormat,
    UsageError,
    emit_json,
    format_option,
    handle_errors,
    stderr,
)

TEST_KEY = "sk_test_emulator"

emulator_app = typer.Typer(
    help="A local Stripe emulator: a generated account served on 127.0.0.1 with Stripe's "
         "list semantics (read-only).",
    no_args_is_help=True,
)


@emulator_app.command("serve")
@handle_errors
def serve_command(
    customers: int = typer.Option(300, "--customers", min=0,
                                  help="Number of customers to generate."),
    months: int = typer.Option(24, "--months", min=1, help="Months of history to generate."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed and --now give "
                                               "the same account."),
    now: int | None = typer.Option(None, "--now", help="The account's current instant (Unix "
                                                       "seconds); default the current time."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (loopback)."),
    port: int = typer.Option(12111, "--port", min=0, max=65535,
                             help="Port to listen on (0 picks a free port)."),
    latency_ms: float = typer.Option(0.0, "--latency-ms", min=0.0,
                                     help="Latency added to every response, in ms."),
    fail_every: int | None = typer.Option(None, "--fail-every", min=1,
                                          help="Answer every n-th request with "
                                               "--fail-status."),
    fail_status: int = typer.Option(429, "--fail-status", min=400, max=599,
                                    help="Status of the injected failures (429 or 5xx)."),
    output: OutputFormat = format_option("table", "json",
                                         help="How to print the URL and key: table or json "
                                              "(one document, then serve)."),
) -> None:
    """Generate an account and serve it in the foreground until interrupted (Ctrl-C).

    Point nrr at it with STRIPE_API_KEY=sk_test_emulator and STRIPE_API_BASE=<url>.
    """
    from integrations.emulator import EmulatorServer, generate_account

    if host not in ("127.0.0.1", "localhost", "::1"):
        raise UsageError("the emulator only listens on the loopback interface (127.0.0.1)")
    started = time.monotonic()
    account = generate_account(seed=seed, customers=customers, months=months, now=now)
    server = EmulatorServer(account, host=host, port=port, latency_ms=latency_ms,
                            fail_every=fail_every, fail_status=fail_status,
                            error_code="rate_limit" if fail_status == 429 else "api_error")
    try:
        server.start()
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    counts = account.counts()
    if output is OutputFormat.json:
        emit_json({"url": server.url, "api_key": TEST_KEY, "counts": counts,
                   "generated_in_s": round(time.monotonic() - started, 3)})
    else:
        typer.echo(f"Stripe emulator listening on {server.url}")
        typer.echo(f"  STRIPE_API_BASE={server.url}")
        typer.echo(f"  STRIPE_API_KEY={TEST_KEY}")
        typer.echo("  " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
    stderr.print("serving; press Ctrl-C to stop", highlight=False)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        stderr.print("stopped", highlight=False)
    finally:
        server.stop()


@emulator_app.command("rates")
@handle_errors
def rates_command(
    months: int = typer.Option(24, "--months", min=1,
                               help="Months of history of the served account (as given to "
                                    "`nrr emulator serve`)."),
) -> None:
    """Print the emulator account's exchange rates into NRR_REPORTING_CURRENCY as the CSV
    `nrr fx import` reads (the rates `nrr demo` imports): its accounts bill in several
    currencies, and a recompute needs a rate for each."""
    import sys
    from datetime import UTC, datetime

    from integrations.emulator.generator import CURRENCIES
    from nrr.commands.common import settings
    from nrr.demo import DemoError, demo_rates
    from nrr.domain.months import add_months, current_month

    cfg = settings()
    this_month = current_month(cfg.tz, datetime.now(UTC))
    try:
        rows = demo_rates(add_months(this_month, -months - 2), this_month,
                          cfg.reporting_currency, CURRENCIES)
    except DemoError as exc:
        raise UsageError(str(exc)) from None
    sys.stdout.write("date,currency,rate\n" + "".join(f"{d},{c},{r}\n" for d, c, r in rows))


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def register(app: typer.Typer) -> None:
    app.add_typer(emulator_app, name="emulator")
