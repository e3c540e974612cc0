"""``nrr worker``: the Celery worker with beat embedded, for a single machine."""

from __future__ import annotations

import typer

from nrr.commands.common import UsageError, engine, handle_errors, settings, stderr


def register(app: typer.Typer) -> None:
    app.command("worker")(worker_command)


@handle_errors
def worker_command(
    concurrency: int = typer.Option(2, "--concurrency", "-c", min=1,
                                    help="Worker processes running tasks in parallel."),
    loglevel: str | None = typer.Option(None, "--loglevel", "-l",
                                        help="Log level (DEBUG, INFO, WARNING, ERROR); "
                                             "default NRR_LOG_LEVEL."),
    beat: bool = typer.Option(True, "--beat/--no-beat",
                              help="Run the schedule (beat) inside this worker. Use --no-beat "
                                   "on every worker but one when several share a broker."),
    hostname: str | None = typer.Option(None, "--hostname", "-n",
                                        help="Worker node name (default celery@<host>)."),
) -> None:
    """Run the background worker: scheduled syncs, recomputes, snapshots and alerts.

    Uses REDIS_URL as the broker when set; otherwise an embedded broker in a folder next
    to the SQLite database (nothing to install). Applies the database migrations first.
    Stops on Ctrl-C (SIGTERM: finishes the running tasks first).
    """
    level = (loglevel or "").upper() or None
    if level is not None and level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise UsageError(f"unknown log level {loglevel!r}: use DEBUG, INFO, WARNING or ERROR")
    cfg = settings()
    engine(cfg)  # migrations up to head before any task runs
    from worker.celery_app import app as celery_app

    argv = ["worker", "--concurrency", str(concurrency),
            "--loglevel", level or cfg.log_level.upper(), "--queues", "nrr",
            "--without-gossip", "--without-mingle"]
    if beat:
        argv.append("--beat")
    if hostname:
        argv += ["--hostname", hostname]
    stderr.print(f"starting worker ({'redis' if cfg.redis_url else 'embedded'} broker, "
                 f"concurrency {concurrency}{', beat' if beat else ''})", highlight=False)
    celery_app.worker_main(argv=argv)
