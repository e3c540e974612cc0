"""What ``segment_month_totals`` holds, shared by its writer (``nrr.services.recompute.totals``)
and its readers (``nrr.services.report``, the HTML report's cohort heat map).

Rows are the facts' groups: ``period`` ``monthly`` (by month, segment and movement) or
``t12m`` (the T12M cohort of a month by the segment at its start); ``dimension`` one of
:data:`DIMENSIONS`. A run's totals are read only when ``segment_totals_built`` says they
are complete; otherwise (a database upgraded before its next recompute, or
``session.info[READ_FACTS]`` set) the reports aggregate the facts, as before.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from models.derived import SegmentMonthTotal, SegmentTotalsBuilt
from models.live_rows import live_run_id

T_TOTALS: Table = SegmentMonthTotal.__table__  # type: ignore[assignment]
T_BUILT: Table = SegmentTotalsBuilt.__table__  # type: ignore[assignment]

TOTAL = ""  # the dimension of the whole account
BASE_DIMENSIONS = ("plan", "product", "currency", "country")
FIRST_PAID = "first_paid_month"  # the cohort heat map's rows
METADATA = "metadata"  # segment: the customer's metadata as JSON (``--by metadata:KEY``)
DIMENSIONS = (TOTAL, *BASE_DIMENSIONS, FIRST_PAID, METADATA)

# ``session.info`` key: when true, the reports of this session aggregate the facts (the
# totals' tests compare both; a diagnosis can too).
READ_FACTS = "nrr_report_from_facts"


def built_dimensions(session: Session, run_id: int) -> list[str] | None:
    """The dimensions run ``run_id``'s totals hold, or None when they were never built."""
    found = session.execute(select(T_BUILT.c.dimensions)
                            .where(T_BUILT.c.run_id == run_id)).scalar_one_or_none()
    return None if found is None else list(found)


def stored_dimension(dimension: str | None) -> str:
    """The stored dimension a report's dimension reads (``metadata:KEY`` reads ``metadata``)."""
    if dimension is None:
        return TOTAL
    return METADATA if dimension.startswith(METADATA + ":") else dimension


def readable_run(session: Session, dimension: str | None) -> int | None:
    """The live run, when its totals can answer a report on ``dimension``; else None."""
    if session.info.get(READ_FACTS):
        return None
    run_id = live_run_id(session)
    dimensions = built_dimensions(session, run_id)
    if dimensions is None or stored_dimension(dimension) not in dimensions:
        return None
    return run_id


def metadata_segment(metadata: Any) -> str | None:
    """The stored segment of a metadata object: canonical JSON (None stays None)."""
    if isinstance(metadata, str):  # a driver that hands JSON back as text
        metadata = json.loads(metadata)
    if metadata is None:
        return None
    return json.dumps(metadata, sort_keys=True, separators=(",", ":"))


def metadata_value(segment: str | None, key: str) -> Any:
    """A metadata key's value in a stored metadata segment, as the facts' SQL reads it
    (``metadata ->> key``): a string as it is, another JSON value as JSON text."""
    if segment is None:
        return None
    found = json.loads(segment)
    value = found.get(key) if isinstance(found, dict) else None
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)
