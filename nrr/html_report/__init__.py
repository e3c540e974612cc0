"""A self-contained HTML retention report: one file that opens from disk with no network.

Split by job, so each can be tested on its own:

* :mod:`~nrr.html_report.collect` asks the report service for every number the page shows
  (it computes no metric itself, so the page always agrees with ``nrr report``);
* :mod:`~nrr.html_report.charts` lays out the charts as plain shapes;
* :mod:`~nrr.html_report.page` renders the document with the Jinja2 templates of
  ``templates/`` (auto-escaped) and inlines ``static/report.css`` and ``static/report.js``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from nrr.html_report.charts import band_of
from nrr.html_report.collect import collect_report, report_months
from nrr.html_report.page import render_document
from nrr.settings import Settings


def render_html_report(session: Session, settings: Settings, *, months: Sequence[str] | None = None,
                       now: datetime | None = None, title: str = "Net Revenue Retention") -> str:
    """The self-contained HTML report of the stored facts."""
    return render_document(collect_report(session, settings, months=months, now=now), title=title)


__all__ = ["band_of", "collect_report", "render_document", "render_html_report", "report_months"]
