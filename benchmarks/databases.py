"""Where a benchmark keeps its account: a given URL, a fresh SQLite file, or a database on a
PostgreSQL server started for the run (``--postgres``)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def bench_database(*, postgres: bool, url: str | None, name: str) -> Iterator[str]:
    """The database URL to benchmark on; a PostgreSQL server started here stops after."""
    if not postgres:
        yield url or f"sqlite:///{tempfile.mkdtemp(prefix='nrr-bench-')}/{name}.db"
        return
    from sqlalchemy import text

    from nrr.db import make_engine
    from tests.support.servers import start_postgres

    server = start_postgres()
    try:
        admin = make_engine(server.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("CREATE DATABASE nrr_bench"))
        admin.dispose()
        yield server.url("nrr_bench")
    finally:
        server.stop()
