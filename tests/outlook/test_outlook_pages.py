"""The outlook in the HTML report, the dashboard and the monthly snapshot (SQLite and
PostgreSQL; Chromium once, on SQLite).

The account of ``test_outlook_service`` (now is 2 December 2025 12:00 UTC), hand-computed:

- December (current, partial): opening 100 + 300 + 60 = 460; cus_a's cancellation on the
  20th takes 100: closing 360 (409 with cus_b's trial of 49 converting on the 25th);
  NRR = GRR = 360 / 460 = 78.261 % (critical) in both bounds (a conversion is new MRR).
- January: opening 360; cus_d's schedule drops 5 seats to 3 on the 1st: contraction 24,
  closing 336 (385 when the trial converted); NRR = 336 / 360 = 93.333 % (concerning),
  with the trial (409 - 24) / 409 = 94.132 %.
- February: nothing scheduled: 336 -> 336 (385), NRR 100 % (good).
"""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from models.derived import RetentionSnapshot
from nrr.dashboard.app import make_server
from nrr.html_report import render_html_report
from nrr.services.recompute import recompute
from nrr.services.snapshots import take_snapshots
from tests.demo.browser import ARTIFACTS, load_page, screenshot
from tests.outlook.test_outlook_service import NOW, _store, _world
from tests.recompute.conftest import make_settings
from tests.stripe_world import ts

MONTHS = [
    # month, opening, churn, contraction, expansion, trials, closing, NRR, GRR, band
    ("2025-12 (current, partial)", "460.00", "100.00", "0.00", "0.00", "0.00 / 49.00",
     "360.00 / 409.00", "78.261 %", "78.261 %", "projected critical"),
    ("2026-01 (projected)", "360.00", "0.00", "24.00", "0.00", "0.00 / 0.00",
     "336.00 / 385.00", "93.333 % / 94.132 %", "93.333 % / 94.132 %", "projected concerning"),
    ("2026-02 (projected)", "336.00", "0.00", "0.00", "0.00", "0.00 / 0.00",
     "336.00 / 385.00", "100.000 %", "100.000 %", "projected good"),
]


def _text(cell: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", cell)).split())


def _table(page: str, name: str) -> list[list[str]]:
    found = re.search(rf'<table class="[^"]*" data-table="{name}">(.*?)</table>', page, re.S)
    assert found, name
    body = found.group(1).split("<tbody>", 1)[1]
    return [[_text(c) for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


def _check_outlook(page: str) -> None:
    assert "Outlook: the months ahead (projected)" in page
    assert [tuple(row) for row in _table(page, "outlook")] == MONTHS
    section = page.split('<section id="outlook">', 1)[1].split("</section>", 1)[0]
    # Projected bands are outlined, never the filled badge of a closed month.
    assert section.count('class="band projected"') == 3
    assert 'class="band" ' not in section
    movements = _table(page, "outlook-movements")
    assert [row[:5] for row in movements] == [
        ["cus_a", "2025-12-20", "-100.00", "scheduled cancellation", "committed"],
        ["cus_b", "2025-12-25", "49.00", "trial ends", "if trials convert"],
        ["cus_d", "2026-01-01", "-24.00", "schedule phase", "committed"],
    ]
    assert "subscription_schedule sub_sched_d" in movements[2][5]
    assert 'href="https://dashboard.stripe.com/test/subscription_schedules/sub_sched_d"' in section


@pytest.fixture
def stored(session: Session, db_url: str) -> Session:
    w, plan = _world()
    _store(session, w, plan)
    recompute(session, make_settings(db_url), now=datetime.fromtimestamp(NOW, UTC))
    session.commit()
    return session


def test_the_html_report_shows_the_outlook(stored: Session, db_url: str) -> None:
    page = render_html_report(stored, make_settings(db_url), now=datetime.fromtimestamp(NOW, UTC))
    _check_outlook(page)


def test_without_an_outlook_the_section_says_so(session: Session, db_url: str) -> None:
    page = render_html_report(session, make_settings(db_url), now=datetime.fromtimestamp(NOW, UTC))
    assert "No outlook yet" in page and 'data-table="outlook"' not in page


def test_the_monthly_snapshot_holds_the_outlook(stored: Session, db_url: str) -> None:
    settings = make_settings(db_url)
    take_snapshots(stored, settings, "2025-11", now=datetime.fromtimestamp(NOW, UTC))
    rows = stored.scalars(select(RetentionSnapshot).where(
        RetentionSnapshot.month == "2025-11", RetentionSnapshot.period == "monthly",
        RetentionSnapshot.dimension == "")).all()
    assert len(rows) == 1
    outlook = rows[0].metrics["outlook"]
    assert outlook["taken_at"] == "2025-12-02T12:00:00Z"
    assert outlook["scheduled_movements"] == 3
    assert [(m["month"], m["opening"], m["churn"], m["contraction"], m["closing"],
             m["closing_all_converting"], m["nrr"]) for m in outlook["months"]] == [
        ("2025-12", 460.0, 100.0, 0.0, 360.0, 409.0, 78.261),
        ("2026-01", 360.0, 0.0, 24.0, 336.0, 385.0, 93.333),
        ("2026-02", 336.0, 0.0, 0.0, 336.0, 385.0, 100.0)]


@pytest.fixture
def served(stored: Session, db_url: str, db_engine: Engine) -> Iterator[str]:
    settings = make_settings(db_url, NRR_DASHBOARD_TOKEN="t0ken-outlook")
    server, dashboard = make_server(settings, db_engine, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_dashboard_shows_the_outlook(served: str, db_url: str) -> None:
    import urllib.request

    # The dashboard's "today" is the wall clock; the stored outlook is the one taken on
    # 2 December 2025, so the section shows it as taken then.
    request = urllib.request.Request(served + "/", headers={
        "Authorization": "Bearer t0ken-outlook"})
    with urllib.request.urlopen(request, timeout=120) as response:
        page = response.read().decode()
    _check_outlook(page)


@pytest.mark.browser
def test_the_dashboard_in_chromium(served: str, db_url: str) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("one browser run is enough (SQLite)")
    loaded = load_page(f"{served}/login?token=t0ken-outlook")
    assert loaded.console == []
    _check_outlook(loaded.dom)


@pytest.mark.browser
def test_the_report_file_in_chromium(stored: Session, db_url: str, tmp_path: Path) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("one browser run is enough (SQLite)")
    target = tmp_path / "report.html"
    target.write_text(render_html_report(stored, make_settings(db_url),
                                         now=datetime.fromtimestamp(ts(2025, 12, 2, 12), UTC)),
                      encoding="utf-8")
    loaded = load_page(target)
    assert loaded.console == []
    _check_outlook(loaded.dom)
    # The script adds a CSV button to the outlook tables like to every data table.
    assert loaded.dom.count('class="csv"') == loaded.dom.count('<table class="data')
    shot = screenshot(target, ARTIFACTS / "report-outlook-1400.png", width=1400)
    assert shot.stat().st_size > 10_000
