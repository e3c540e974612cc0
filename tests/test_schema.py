"""The schema is built from the migrations and matches the models on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from models import Base
from nrr.db import current_revision, head_revision, quick_head_revision, upgrade


def test_migrations_reach_head_and_match_models(db_engine: Engine) -> None:
    assert current_revision(db_engine) == head_revision()
    with db_engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    tables = set(inspect(db_engine).get_table_names())
    assert {"stripe_invoice_lines", "mrr_timeline", "customer_month_facts"} <= tables


def test_the_quick_head_is_alembics_head(db_engine: Engine) -> None:
    """The CLI's cheap schema check reads the same head as alembic, and an upgraded
    database passes it without alembic being asked."""
    assert quick_head_revision() == head_revision()
    upgrade(db_engine)  # already at head: returns at once
    assert current_revision(db_engine) == quick_head_revision()
