"""The HTML report as a file in a folder (``NRR_REPORT_DIR``), written after each snapshot.

Two files per run: ``nrr-report-YYYY-MM.html`` for the snapshot's month (what that month's
Slack messages link to, under ``NRR_REPORT_BASE_URL``) and ``nrr-report-latest.html``.
Each is written through a temporary file and a rename, so a web server serving the
folder never hands out half a page.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.orm import Session

from nrr.logs import get_logger
from nrr.settings import Settings

log = get_logger(__name__)

LATEST = "nrr-report-latest.html"


def report_name(month: str) -> str:
    return f"nrr-report-{month}.html"


def report_url(settings: Settings, month: str) -> str | None:
    """Where the month's report is served, when a folder and a base URL are configured."""
    if not settings.report_dir or not settings.report_base_url:
        return None
    return f"{settings.report_base_url.rstrip('/')}/{report_name(month)}"


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def publish_report(session: Session, settings: Settings, month: str) -> Path | None:
    """Render every stored month into the report folder; ``None`` when none is configured.

    A folder that cannot be written is logged and skipped: the snapshot and the alerts
    after it matter more than the page.
    """
    if not settings.report_dir:
        return None
    from nrr.html_report import render_html_report

    folder = Path(settings.report_dir).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        page = render_html_report(session, settings)
        target = folder / report_name(month)
        write_atomically(target, page)
        write_atomically(folder / LATEST, page)
    except OSError as exc:
        log.warning("report_file.skipped", folder=str(folder), reason=str(exc))
        return None
    log.info("report_file.written", path=str(target), month=month)
    return target
