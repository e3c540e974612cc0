"""`nrr report --format html`: the page of any month range, its numbers equal to the JSON report."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from nrr.settings import load_settings
from tests.demo.browser import ARTIFACTS, load_page, screenshot
from tests.demo.facts import insert_world, sample_paths
from tests.report.conftest import CliResult

# (data-metric, period, JSON key): what each headline on the page shows.
HEADLINES = [("mrr", "monthly", "closing_mrr"), ("arr", "monthly", "arr"),
             ("nrr", "monthly", "nrr"), ("grr", "monthly", "grr"),
             ("t12m_nrr", "t12m", "nrr"), ("t12m_grr", "t12m", "grr"),
             ("logo_churn_rate", "monthly", "logo_churn_rate"),
             ("revenue_churn_rate", "monthly", "revenue_churn_rate"),
             ("arpa", "monthly", "arpa"), ("quick_ratio", "monthly", "quick_ratio")]


@pytest.fixture
def world(db_url: str, db_engine: Engine) -> None:
    settings = load_settings({"DATABASE_URL": db_url})
    with Session(db_engine) as session:  # 2024-01 .. 2025-04, all closed by now
        insert_world(session, settings, "2024-01", sample_paths(16))
        session.commit()


def _number(text: str) -> float | None:
    plain = html.unescape(re.sub(r"<[^>]+>", " ", text)).replace(",", "").replace("%", "")
    plain = plain.replace("USD", "").strip()
    return None if plain in ("–", "") else float(plain)


def headlines(page: str) -> dict[str, float | None]:
    found = {}
    for key, shown in re.findall(r'<div class="kpi" data-metric="([a-z0-9_]+)"[^>]*>'
                                 r'<span class="label">[^<]*</span><b>(.*?)</b>', page):
        found[key] = _number(shown)
    return found


def check_headlines(page: str, run_cli: Callable[..., CliResult], month: str) -> None:
    documents = {period: run_cli("report", "--month", month, "--period", period,
                                 "--format", "json").json() for period in ("monthly", "t12m")}
    shown = headlines(page)
    assert set(shown) >= {key for key, _p, _k in HEADLINES}
    for key, period, json_key in HEADLINES:
        expected = documents[period].get(json_key)
        if expected is None:
            assert shown[key] is None, key
        else:
            assert shown[key] == pytest.approx(expected, abs=0.0051), key
    customers = documents["monthly"]["customers"]["closing"]
    assert shown["paying_customers"] == customers


@pytest.mark.usefixtures("world")
def test_html_of_a_month_range_equals_the_json(run_cli: Callable[..., CliResult],
                                                tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    result = run_cli("report", "--from", "2024-03", "--to", "2025-02", "--format", "html",
                     "--output", str(target))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "" and f"report written to {target}" in result.stderr
    page = target.read_text(encoding="utf-8")
    assert "2024-03 to 2025-02" in page and "2025-02: last closed month" in page
    check_headlines(page, run_cli, "2025-02")
    series = run_cli("report", "--from", "2024-03", "--to", "2025-02", "--format",
                     "json").json()["months"]
    table = re.search(r'<table class="data sortable waterfall".*?</table>', page).group(0)
    rows = re.findall(r"<tr><td>(\d{4}-\d{2})[^<]*</td>(.*?)</tr>", table)
    assert [month for month, _cells in rows] == [m["month"] for m in series]
    for (_month, cells), expected in zip(rows, series, strict=True):
        values = [_number(c) for c in re.findall(r"<td>(.*?)</td>", cells)[:9]]
        keys = ["opening_mrr", "new", "reactivation", "expansion", "contraction", "churn",
                "closing_mrr", "fx_impact"]
        assert values[:8] == [pytest.approx(expected[k], abs=0.005) for k in keys]
        assert values[8] == (None if expected["nrr"] is None
                             else pytest.approx(expected["nrr"], abs=0.0005))


@pytest.mark.usefixtures("world")
def test_html_of_every_month_on_stdout(run_cli: Callable[..., CliResult]) -> None:
    result = run_cli("report", "--format", "html")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("<!DOCTYPE html>")
    assert "2024-01 to 2025-04" in result.stdout


@pytest.mark.usefixtures("world")
def test_html_of_one_month_shows_names_as_text(run_cli: Callable[..., CliResult]) -> None:
    result = run_cli("report", "--month", "2024-07", "--format", "html")  # gamma comes back
    assert result.exit_code == 0, result.stderr
    assert "2024-07: last closed month" in result.stdout
    assert "<script>alert" not in result.stdout
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; Co" in result.stdout


def test_html_refuses_by_and_period(run_cli: Callable[..., CliResult]) -> None:
    for extra in (["--by", "plan"], ["--period", "t12m"]):
        result = run_cli("report", "--format", "html", *extra)
        assert result.exit_code == 2
        assert "leave out --by and --period" in result.stderr


def test_output_into_a_missing_folder_is_a_usage_error(run_cli: Callable[..., CliResult],
                                                       tmp_path: Path) -> None:
    result = run_cli("report", "--format", "html", "--output", str(tmp_path / "no" / "r.html"))
    assert result.exit_code == 2 and "does not exist" in result.stderr


@pytest.mark.browser
@pytest.mark.usefixtures("world")
def test_html_file_in_chromium(run_cli: Callable[..., CliResult], tmp_path: Path,
                               db_url: str) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("one browser run is enough (SQLite)")
    target = tmp_path / "report.html"
    result = run_cli("report", "--format", "html", "--output", str(target))
    assert result.exit_code == 0, result.stderr
    loaded = load_page(target)
    assert loaded.console == []
    assert re.search(r'data-charts-drawn="8"', loaded.dom)
    check_headlines(loaded.dom, run_cli, "2025-04")
    # the script added one CSV button per data table
    assert loaded.dom.count('class="csv"') == loaded.dom.count('<table class="data')
    for width in (1400, 400):
        shot = screenshot(target, ARTIFACTS / f"report-cli-{width}.png", width=width)
        assert shot.stat().st_size > 10_000


@pytest.mark.usefixtures("world")
def test_cohort_heat_maps_match_the_cohort_table(db_engine: Engine, db_url: str) -> None:
    from datetime import UTC, datetime

    from nrr.html_report.collect import cohort_heat
    from nrr.services.report import cohort_table

    settings = load_settings({"DATABASE_URL": db_url})
    now = datetime(2025, 5, 10, tzinfo=UTC)
    with Session(db_engine) as session:
        heat = cohort_heat(session, settings, now=now)
        table = cohort_table(session, settings, now=now)
    assert [c["cohort"] for c in heat["cohorts"]] == [c["cohort"] for c in table["cohorts"]]
    for ours, theirs in zip(heat["cohorts"], table["cohorts"], strict=True):
        assert ours["customers"] == theirs["customers"]
        assert ([m["net_retention"] for m in ours["months"]]
                == [m["net_retention"] for m in theirs["months"]])
    # 2024-02: beta alone, 50 -> 50 -> 30 -> 30 -> 0 (churned in 2024-06, month 4)
    beta = next(c for c in heat["cohorts"] if c["cohort"] == "2024-02")
    assert [m["logo_retention"] for m in beta["months"][:6]] == [100.0] * 4 + [0.0, 0.0]
    assert [m["net_retention"] for m in beta["months"][:5]] == [100.0, 100.0, 60.0, 60.0, 0.0]
