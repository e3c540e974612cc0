"""``nrr serve``: the Stripe webhook endpoint, on waitress (see integrations/webhook_server.py)."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import typer

from nrr.commands.common import engine, handle_errors, settings, stderr


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)


@handle_errors
def serve_command(
    host: str = typer.Option("127.0.0.1", "--host",
                             help="Interface to listen on (put a TLS proxy in front for Stripe)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port to listen on."),
    threads: int = typer.Option(8, "--threads", min=1, max=256,
                                help="Requests handled at once; more wait their turn."),
    max_connections: int = typer.Option(1000, "--max-connections", min=1,
                                        help="Open connections at most; beyond it new ones "
                                             "wait in the listen backlog."),
    backlog: int = typer.Option(2048, "--backlog", min=1,
                                help="Listen backlog (the kernel caps it at somaxconn)."),
    read_timeout: float = typer.Option(10.0, "--read-timeout", min=0.5,
                                       help="Seconds a request may take to arrive, headers "
                                            "and body; then the connection is closed."),
    idle_timeout: float = typer.Option(30.0, "--idle-timeout", min=0.5,
                                       help="Seconds a kept-alive connection may wait "
                                            "without a request."),
) -> None:
    """Serve POST /webhooks/stripe (signed with STRIPE_WEBHOOK_SECRET) and GET /healthz.

    Events are verified, recorded and handed on: to the worker when REDIS_URL is set,
    otherwise processed in this process (every dirty customer recomputed under the
    account's recompute lock, then the snapshot and the alerts). Stops on Ctrl-C or SIGTERM.
    """
    # Imported here: every `nrr` command loads this module, and only serve needs these.
    from integrations.webhook_app import create_app, make_webhook_server
    from integrations.webhook_server import ServerLimits
    from nrr.services.pipeline import InProcessPipeline

    cfg = settings()
    cfg.require("stripe_webhook_secret")
    db = engine(cfg)
    # The command chooses how work is dispatched: the worker's queue, or this process.
    in_process = None if cfg.redis_url else InProcessPipeline(cfg, db)
    dispatch: Callable[[str], None]
    if in_process is not None:
        dispatch = in_process
    else:
        from worker.dispatch import celery_dispatch

        dispatch = celery_dispatch(cfg)
    app = create_app(cfg, db, dispatch=dispatch)
    limits = ServerLimits(backlog=backlog, threads=threads, max_connections=max_connections,
                          read_timeout=read_timeout, idle_timeout=idle_timeout)
    server = make_webhook_server(app, host, port, limits)
    stderr.print(f"listening on http://{host}:{server.server_port}/webhooks/stripe "
                 f"({'in-process' if in_process else 'worker'} processing; {threads} threads, "
                 f"read timeout {read_timeout:g} s)", highlight=False)

    def _stop(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt  # `docker stop` ends it like Ctrl-C

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
        if in_process is not None:
            in_process.close()
