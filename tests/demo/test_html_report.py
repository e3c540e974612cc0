"""The HTML report: built from stored facts, self-contained, and drawn without errors in Chromium."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from nrr.db import make_engine
from nrr.html_report import render_html_report
from nrr.settings import load_settings
from tests.demo.browser import ARTIFACTS, load_page, screenshot
from tests.demo.facts import insert_world, sample_paths

NOW = datetime(2025, 4, 10, tzinfo=UTC)  # the world runs 2024-01 .. 2025-03 closed, 2025-04 partial


@pytest.fixture
def report_html(db_url: str) -> str:
    settings = load_settings({"DATABASE_URL": db_url, "STRIPE_API_KEY": "sk_test_demo"})
    engine = make_engine(db_url)
    try:
        with Session(engine) as session:
            insert_world(session, settings, "2024-01", sample_paths(16))
            session.commit()
        with Session(engine) as session:
            return render_html_report(session, settings, now=NOW)
    finally:
        engine.dispose()


def test_report_has_every_section(report_html: str) -> None:
    for section in ("summary", "waterfall", "movements", "retention", "cohorts", "segments",
                    "top-movements", "definitions"):
        assert f'<section id="{section}">' in report_html
    assert "2025-03: last closed month" in report_html
    assert "2025-04 (partial)" in report_html


def test_waterfall_of_the_focus_month_matches_the_facts(report_html: str) -> None:
    # 2025-03 is month 14 of the paths: every customer is flat then, so opening = closing =
    # 200 (alpha) + 400 (delta) + 90 (gamma) + 60 (eps) = 750.
    waterfall = re.search(r'<section id="waterfall">.*?</section>', report_html).group(0)
    assert "opening: 750.00 USD" in waterfall
    assert "closing: 750.00 USD" in waterfall
    # 2024-06 (month 5): opening 200 + 30 + 250; beta churns 30, delta expands 250 -> 400.
    row = re.search(r"<tr><td>2024-06</td>(.*?)</tr>", report_html).group(1)
    cells = re.findall(r"<td>(.*?)</td>", row)
    assert cells[:7] == ["480.00", "0.00", "0.00", "150.00", "0.00", "30.00", "600.00"]


def test_band_lines_segments_and_causes(report_html: str) -> None:
    for floor in ("130", "110", "100", "90"):
        assert f'data-band="{floor}"' in report_html
    for dimension in ("plan", "product", "currency", "country"):
        assert f'data-chart="segments-{dimension}"' in report_html
    assert 'data-chart="cohorts"' in report_html
    assert "churn_at" in report_html and "period_end" in report_html
    assert "(opening + expansion - contraction - churn) / opening x 100" in report_html


def test_top_movements_with_causes_from_the_ledger(db_url: str) -> None:
    settings = load_settings({"DATABASE_URL": db_url, "STRIPE_API_KEY": "sk_test_demo"})
    engine = make_engine(db_url)
    with Session(engine) as session:
        insert_world(session, settings, "2024-01", sample_paths(16))
        session.commit()
        page = render_html_report(session, settings, months=[f"2024-{m:02d}" for m in range(1, 11)],
                                  now=NOW)
    engine.dispose()
    top = re.search(r'<section id="top-movements">.*?</section>', page).group(0)
    # 2024-10 is the focus month: eps contracts 120 -> 60 by a seat change.
    assert "Top movements, 2024-10" in top
    assert "cus_eps" in top and "contraction" in top and "60.00" in top
    # Readable causes: what changed, the change with its currency code, one link to Stripe.
    assert "seat change: quantity 120 → 60 (−60.00 GBP)" in top
    assert 'href="https://dashboard.stripe.com/test/invoices/in_cus_eps_9"' in top
    assert "(−0.00" not in top and "(+0.00" not in top  # no cause that changed nothing
    assert 'href="https://dashboard.stripe.com/test/customers/cus_eps"' in top


def test_stripe_strings_are_escaped_and_nothing_is_loaded(report_html: str, db_url: str) -> None:
    settings = load_settings({"DATABASE_URL": db_url})
    engine = make_engine(db_url)
    with Session(engine) as session:  # 2024-07: gamma (the hostile name) comes back
        page = render_html_report(session, settings, months=["2024-06", "2024-07"], now=NOW)
    engine.dispose()
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; Co" in page
    assert "<script>alert" not in report_html
    assert report_html.count("<script>") == 1  # the report's own inline script
    assert not re.search(r"<(link|img|iframe)\b", report_html)
    assert not re.search(r"\ssrc=", report_html)
    assert "@import" not in report_html and "url(" not in report_html
    assert "sk_test_demo" not in report_html


def test_empty_database_gives_a_page(sqlite_url: str) -> None:
    settings = load_settings({"DATABASE_URL": sqlite_url})
    engine = make_engine(sqlite_url)
    with Session(engine) as session:
        page = render_html_report(session, settings, now=NOW)
    engine.dispose()
    assert "No month yet" in page and "No cohorts yet." in page


@pytest.mark.browser
def test_report_opens_in_headless_chromium(sqlite_url: str, tmp_path: Path) -> None:
    settings = load_settings({"DATABASE_URL": sqlite_url, "STRIPE_API_KEY": "sk_test_demo"})
    engine = make_engine(sqlite_url)
    with Session(engine) as session:
        insert_world(session, settings, "2024-01", sample_paths(16))
        session.commit()
        page = render_html_report(session, settings, now=NOW)
    engine.dispose()
    report = tmp_path / "report.html"
    report.write_text(page, encoding="utf-8")

    result = load_page(report)
    assert result.console == []
    drawn = re.search(r'data-charts-drawn="(\d+)"', result.dom)
    assert drawn, "the report's script did not run"
    # waterfall, movements, MRR, retention, and one bar chart per segment dimension
    assert int(drawn.group(1)) == 8
    assert len(re.findall(r"<rect\b", result.dom)) >= 20
    assert len(re.findall(r"<circle\b", result.dom)) >= 40
    shot = screenshot(report, ARTIFACTS / "report-facts.png")
    assert shot.stat().st_size > 20_000


def test_plan_segments_show_the_price_nickname(sqlite_url: str) -> None:
    from models.mirror import StripePrice

    settings = load_settings({"DATABASE_URL": sqlite_url})
    engine = make_engine(sqlite_url)
    with Session(engine) as session:
        insert_world(session, settings, "2024-01", sample_paths(16))
        session.add(StripePrice(id="business", currency="usd", nickname="Business <annual>",
                                raw={"id": "business"}, state_at=0))
        session.commit()
        page = render_html_report(session, settings, now=NOW)
    engine.dispose()
    segments = re.search(r'<section id="segments">.*?</section>', page).group(0)
    assert "Business &lt;annual&gt; · business" in segments
    assert ">starter<" in segments  # no price row: the id itself


@pytest.mark.browser
def test_the_browser_check_sees_console_errors(tmp_path: Path) -> None:
    # The report test relies on this: a page that logs or throws is caught.
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><body><script>console.error("boom");'
                    "missingFunction();</script></body></html>", encoding="utf-8")
    console = load_page(page).console
    assert any("boom" in line for line in console)
    assert any("missingFunction" in line for line in console)
