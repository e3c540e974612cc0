"""Rebuild the MRR timeline, the ledger and the monthly facts from the stored mirror.

Nothing here calls Stripe: a policy change is a recompute. The work is set-based:

* Only the invoice lines that can change a state are read. SQL window functions (LAG /
  LEAD over each subscription item's cycle lines, ordered by service period) keep every
  proration line, the first and the last cycle line of an item, the lines on either side
  of a gap, and a cycle line whose price, quantity or discounts differ from the previous
  one (metered lines, whose amount is the usage, whenever their amount changes). A cycle
  line that repeats the previous state tells the normaliser nothing new; this is the rule
  of ``nrr.domain.history.select_state_lines`` expressed in SQL, and a test checks the two
  agree.
* Customers are processed in chunks in id order; each chunk is six indexed queries, one
  pass of the pure domain functions per customer, and bulk inserts of the results
  (``executemany`` on SQLite, ``COPY`` on PostgreSQL). No ORM object per row: the
  domain hands back fact rows as tuples, JSON columns are serialised once per distinct
  value, and currency conversion uses exact integer factors cached per (currency, month).
* A full recompute writes a new run's rows beside the live run's and switches readers to
  it at once (``runs``); the run before the live one is deleted (by run id) while the
  workers compute.
  From ``PARALLEL_MIN_CUSTOMERS`` customers on (and when the database is reachable from
  another process), worker processes read and compute the chunks (one index range per
  chunk on SQLite) while this process writes them, in the same order, so the result is
  the same as a single-process run. ``NRR_RECOMPUTE_WORKERS`` sets the number of workers
  (0 or 1: none).
* An incremental recompute rebuilds the given customers' timeline and ledger rows and
  compares their facts with the stored ones: only facts that changed are rewritten. It
  also takes the customers *due* (``due``): a change their subscriptions scheduled took
  effect since the live rows were computed; after a month closed it is a full recompute.

The package, by job: ``queries`` (the SQL and the named rows it returns), ``load`` (rows
into the domain's records), ``compute`` (records into timeline, ledger and fact rows),
``write`` (rows into the derived tables), ``pool`` (worker processes), ``due`` (what
passing time made stale), ``service`` (the two entry points). The service never commits:
the caller's ``nrr.db.session_scope`` does.
"""

from nrr.services.recompute.common import (
    CHUNK,
    FACT_COLUMNS,
    LEDGER_COLUMNS,
    TIMELINE_COLUMNS,
    RecomputeError,
    RecomputeResult,
)
from nrr.services.recompute.compute import customer_rows
from nrr.services.recompute.load import (
    Catalogue,
    iter_customer_data,
    load_catalogue,
    load_chunk,
)
from nrr.services.recompute.pool import MAX_WORKERS, PARALLEL_MIN_CUSTOMERS
from nrr.services.recompute.queries import Query, Span, state_lines_query
from nrr.services.recompute.service import recompute, recompute_dirty

__all__ = [
    "CHUNK", "FACT_COLUMNS", "LEDGER_COLUMNS", "MAX_WORKERS", "PARALLEL_MIN_CUSTOMERS",
    "TIMELINE_COLUMNS", "Catalogue", "Query", "RecomputeError", "RecomputeResult", "Span",
    "customer_rows", "iter_customer_data", "load_catalogue", "load_chunk", "recompute",
    "recompute_dirty", "state_lines_query",
]
