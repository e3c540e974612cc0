"""``nrr serve``: the Stripe webhook endpoint."""

from __future__ import annotations

from collections.abc import Callable

import typer

from nrr.commands.common import handle_errors, settings, stderr
from nrr.settings import Settings


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
    otherwise processed in this process. Stops on Ctrl-C.
    """
    from integrations.webhook_app import create_app, make_webhook_server
    from nrr.commands.common import engine

    cfg = settings()
    cfg.require("stripe_webhook_secret")
    db = engine(cfg)
    dispatch = _worker_dispatch(cfg) if cfg.redis_url else None
    app = create_app(cfg, db, dispatch=dispatch)
    server = make_webhook_server(app, host, port)
    stderr.print(f"listening on http://{host}:{server.server_port}/webhooks/stripe "
                 f"({'worker' if dispatch else 'in-process'} processing)", highlight=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        app.close()


def _worker_dispatch(cfg: Settings) -> Callable[[str], None] | None:
    """The worker's Celery dispatch when the worker package is installed, else None."""
    try:
        from worker.dispatch import celery_dispatch
    except ImportError:
        return None
    return celery_dispatch(cfg)
