"""Taking a test database back to an earlier revision (``nrr.db.upgrade`` brings it to head
again): rows stored by today's mirror then meet the migrations as older rows would."""

from __future__ import annotations

from alembic import command
from sqlalchemy import Engine

from nrr.db import alembic_config


def downgrade_to(engine: Engine, revision: str) -> None:
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)
