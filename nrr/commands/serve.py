"""``nrr serve``: the Stripe webhook endpoint."""

from __future__ import annotations

from collections.abc import Callable

import typer

from nrr.commands.common import engine, handle_errors, settings, stderr


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)


@handle_errors
def serve_command(
    host: str = typer.Option("127.0.0.1", "--host",
                             help="Interface to listen on (put a TLS proxy in front for Stripe)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port to listen on."),
) -> None:
    """Serve POST /webhooks/stripe (signed with STRIPE_WEBHOOK_SECRET) and GET /healthz.

    Events are verified, recorded and handed on: to the worker when REDIS_URL is set,
    otherwise processed in this process (every dirty customer recomputed under the
    account's recompute lock, then the snapshot and the alerts). Stops on Ctrl-C.
    """
    # Imported here: every `nrr` command loads this module, and only serve needs these.
    from integrations.webhook_app import create_app, make_webhook_server
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
    server = make_webhook_server(app, host, port)
    stderr.print(f"listening on http://{host}:{server.server_port}/webhooks/stripe "
                 f"({'in-process' if in_process else 'worker'} processing)", highlight=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if in_process is not None:
            in_process.close()
