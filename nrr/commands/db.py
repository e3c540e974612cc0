"""``nrr db``: database migrations (upgrade to head, check)."""

from __future__ import annotations

import typer

from nrr.commands.common import (
    CommandFailed,
    OutputFormat,
    emit_json,
    emit_rows,
    format_option,
    handle_errors,
    settings,
)

db_app = typer.Typer(help="Database schema: apply and check the migrations.", no_args_is_help=True)


@db_app.command("upgrade")
@handle_errors
def upgrade_command(
    output: OutputFormat = format_option("table", "json", help="Output format: table or json."),
) -> None:
    """Apply the migrations up to head (idempotent)."""
    from nrr.db import current_revision, engine_for, head_revision, upgrade

    cfg = settings()
    db = engine_for(cfg.database_url)
    before = current_revision(db)
    upgrade(db)
    document = {"before": before, "after": current_revision(db), "head": head_revision()}
    if output is OutputFormat.json:
        emit_json(document)
    else:
        emit_rows([document], output, title="Database upgraded")


@db_app.command("check")
@handle_errors
def check_command(
    output: OutputFormat = format_option("table", "json", help="Output format: table or json."),
) -> None:
    """Check the database is at head and matches the models; exit 1 when it does not."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from models import Base
    from nrr.db import current_revision, engine_for, head_revision

    cfg = settings()
    db = engine_for(cfg.database_url)
    current, head = current_revision(db), head_revision()
    differences: list[str] = []
    if current == head:
        with db.connect() as conn:
            differences = [str(d) for d in compare_metadata(MigrationContext.configure(conn),
                                                           Base.metadata)]
    document = {"current": current, "head": head, "at_head": current == head,
                "differences": differences}
    if output is OutputFormat.json:
        emit_json(document)
    else:
        emit_rows([{**document, "differences": len(differences)}], output, title="Database check")
    if current != head:
        raise CommandFailed(f"database is at revision {current or 'none'}, head is {head}: "
                            "run `nrr db upgrade`")
    if differences:
        raise CommandFailed(f"the schema differs from the models in {len(differences)} place(s)")


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db", help="Database migrations: upgrade, check.")
