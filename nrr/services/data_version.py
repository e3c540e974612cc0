"""The version of the data the reports show: it changes whenever a writer changes anything a
report of the live run reads, so a page kept for one version is never served for another
(the dashboard's page cache, ``nrr.dashboard.app``).

Each writer of facts and totals leaves a mark this version reads:

* every recompute (full, incremental, sharded) adds a ``recompute_runs`` row and sets its
  ``finished_at`` when it is done (the left-out customers are written then too);
* a full run, in one process or in shards, moves the ``live_run`` pointer (``switched_at``);
* every writer of ``segment_month_totals`` (a build, the shards' merge, an incremental
  run's difference) stamps ``segment_totals_built.built_at``;
* every recompute stores an outlook (``outlook_runs``);
* facts written without any of these (tests, benchmarks) still move the newest month.

One statement, cheap enough to read on every view (a few index look-ups).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.derived import CustomerMonthFact, LiveRun, RecomputeRun, SegmentTotalsBuilt
from models.outlook import OutlookRun


def data_version(session: Session) -> tuple[Any, ...]:
    """The marks of every writer of the live run's facts and totals, as one tuple."""
    row = session.execute(select(
        select(LiveRun.run_id).where(LiveRun.id == 1).scalar_subquery(),
        select(LiveRun.switched_at).where(LiveRun.id == 1).scalar_subquery(),
        select(func.max(RecomputeRun.id)).scalar_subquery(),
        select(func.count()).select_from(RecomputeRun).scalar_subquery(),
        select(func.max(RecomputeRun.finished_at)).scalar_subquery(),
        select(func.max(SegmentTotalsBuilt.built_at)).scalar_subquery(),
        select(func.max(OutlookRun.id)).scalar_subquery(),
        # Through the live-rows filter: the newest month of the live run's facts.
        select(func.max(CustomerMonthFact.month)).scalar_subquery(),
    )).one()
    return tuple(row)
