"""``nrr dashboard``: the retention report served read-only, with drill-down (nrr.dashboard)."""

from __future__ import annotations

import typer

from nrr.commands.common import UsageError, engine, handle_errors, settings, stderr


def register(app: typer.Typer) -> None:
    app.command("dashboard")(dashboard_command)


@handle_errors
def dashboard_command(
    host: str = typer.Option("127.0.0.1", "--host",
                             help="Interface to listen on; anything but loopback needs "
                                  "NRR_DASHBOARD_TOKEN or NRR_DASHBOARD_USER and "
                                  "NRR_DASHBOARD_PASSWORD."),
    port: int = typer.Option(8050, "--port", min=0, max=65535,
                             help="TCP port to listen on (0 picks a free one)."),
) -> None:
    """Serve the retention dashboard (overview, drill-down to customers, CSV of every table).

    Every request needs the token (Authorization: Bearer, or open /login?token=...) or the
    user and password (HTTP Basic) from the settings; without configured credentials a
    random token is made on loopback and printed. Read-only; stops on Ctrl-C.
    """
    from nrr.dashboard.app import DashboardConfigError, check_listen, make_server

    cfg = settings()
    try:
        session_token = check_listen(cfg, host)
    except DashboardConfigError as exc:
        raise UsageError(str(exc)) from None
    try:
        server, dashboard = make_server(cfg, engine(cfg), host, port,
                                        session_token=session_token)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    dashboard.warm()  # the overview is ready by the time a browser asks
    url = f"http://{host}:{server.server_port}/"
    if session_token:
        stderr.print(f"dashboard at {url}login?token={session_token} (a token for this run: "
                     "set NRR_DASHBOARD_TOKEN to choose one)", highlight=False, markup=False,
                     soft_wrap=True)
    else:
        stderr.print(f"dashboard at {url} (credentials from the settings)", highlight=False,
                     markup=False, soft_wrap=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
