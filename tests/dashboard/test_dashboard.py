"""The served dashboard: authentication, drill-down totals, CSV = JSON, escaping, Chromium.

The server is the real one (``nrr.dashboard.app.make_server``, a thread on a free loopback
port) over facts inserted as the recompute stores them (tests/demo/facts.py).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from nrr.dashboard.app import DashboardConfigError, check_listen, make_server
from nrr.settings import load_settings
from tests.demo.browser import ARTIFACTS, load_page, screenshot
from tests.demo.facts import CustomerPath, insert_world, sample_paths
from tests.report.conftest import CliResult
from tests.report.test_report_html import check_headlines

TOKEN = "t0ken-for-tests"
HOSTILE_TIER = "<img src=x onerror=alert(1)>&gold"
MOVEMENTS = ("new", "reactivation", "expansion", "contraction", "churn")


@pytest.fixture
def served(db_url: str, db_engine: Engine) -> Iterator[str]:
    settings = load_settings({"DATABASE_URL": db_url, "NRR_DASHBOARD_TOKEN": TOKEN,
                              "NRR_DASHBOARD_USER": "cfo", "NRR_DASHBOARD_PASSWORD": "pw"})
    paths = [*sample_paths(16), CustomerPath("cus_meta", "Meta & Sons", [0, 70] + [70] * 14,
                                             metadata={"tier": HOSTILE_TIER})]
    with Session(db_engine) as session:
        insert_world(session, settings, "2024-01", paths)
        session.commit()
    server, _dashboard = make_server(settings, db_engine, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def authed(url: str) -> str:
    status, body, _ = get(url, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200, body
    return body


def test_without_credentials_401(served: str) -> None:
    for path in ("/", "/movement?month=2024-06&movement=churn", "/customer?id=cus_beta",
                 "/movement?month=2024-06&format=csv"):
        status, body, headers = get(served + path)
        assert status == 401 and "Basic" in headers["WWW-Authenticate"]
        assert "cus_beta" not in body
    assert get(served + "/", {"Authorization": "Bearer wrong"})[0] == 401
    basic = base64.b64encode(b"cfo:pw").decode()
    assert get(served + "/", {"Authorization": f"Basic {basic}"})[0] == 200
    wrong = base64.b64encode(b"cfo:nope").decode()
    assert get(served + "/", {"Authorization": f"Basic {wrong}"})[0] == 401
    assert get(served + "/login?token=wrong")[0] == 401


def test_refuses_a_public_address_without_credentials(run_cli: Callable[..., CliResult]) -> None:
    bare = load_settings({"DATABASE_URL": "sqlite://"})
    with pytest.raises(DashboardConfigError, match="without authentication"):
        check_listen(bare, "0.0.0.0")
    assert check_listen(bare, "127.0.0.1")  # a token made for this run
    token = load_settings({"DATABASE_URL": "sqlite://", "NRR_DASHBOARD_TOKEN": "x"})
    assert check_listen(token, "0.0.0.0") is None
    result = run_cli("dashboard", "--host", "0.0.0.0", "--port", "0",
                     env={"NRR_DASHBOARD_TOKEN": ""})
    assert result.exit_code == 2 and "without authentication" in result.stderr


def test_drill_down_adds_up_to_every_movement_and_csv_equals_json(
        served: str, run_cli: Callable[..., CliResult]) -> None:
    for month in ("2024-03", "2024-05", "2024-06", "2024-07", "2024-10"):
        report = run_cli("report", "--month", month, "--format", "json").json()
        for movement in MOVEMENTS:
            url = f"{served}/movement?month={month}&movement={movement}"
            drill = json.loads(authed(url + "&format=json"))
            amounts = [row["amount"] for row in drill["rows"]]
            assert sum(amounts) == pytest.approx(report[movement], abs=1e-9), (month, movement)
            assert drill["total"] == pytest.approx(report[movement], abs=1e-9)
            rows = list(csv.DictReader(io.StringIO(authed(url + "&format=csv"))))
            assert [r["customer_id"] for r in rows] == [r["customer_id"] for r in drill["rows"]]
            for row, expected in zip(rows, drill["rows"], strict=True):
                assert float(row["amount"]) == expected["amount"]
                assert float(row["closing_mrr"]) == expected["closing_mrr"]
                assert row["name"] == (expected["name"] or "")
    # a segment filter keeps to the segment: 2024-06 churn is beta (plan starter) only
    drill = json.loads(authed(f"{served}/movement?month=2024-06&segment=plan:starter"
                              "&format=json"))
    assert [r["customer_id"] for r in drill["rows"]] == ["cus_beta"]


def test_pages_show_stripe_strings_as_text(served: str) -> None:
    page = authed(served + "/customer?id=cus_meta")
    assert "<img src=x" not in page
    assert "tier=&lt;img src=x onerror=alert(1)&gt;&amp;gold" in page
    assert 'href="https://dashboard.stripe.com/test/customers/cus_meta"' in page
    gamma = authed(served + "/customer?id=cus_gamma")
    assert "<script>alert" not in gamma and "&lt;script&gt;alert(&#39;x&#39;)" in gamma
    # the overview links its numbers to the customers behind them, filters kept
    overview = authed(served + "/?from=2024-01&to=2024-12")
    assert 'href="/movement?from=2024-01&amp;to=2024-12&amp;month=2024-06&amp;movement=churn"' in overview
    assert "/cohort?from=2024-01&amp;to=2024-12&amp;cohort=2024-01&amp;k=0" in overview


@pytest.mark.browser
def test_dashboard_in_chromium(served: str, db_url: str,
                               run_cli: Callable[..., CliResult]) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("one browser run is enough (SQLite)")
    loaded = load_page(f"{served}/login?token={TOKEN}")
    assert loaded.console == []
    assert "2025-04: last closed month" in loaded.dom
    check_headlines(loaded.dom, run_cli, "2025-04")
    assert re.search(r'data-charts-drawn="\d+"', loaded.dom)
    customer = load_page(f"{served}/login?token={TOKEN}")  # the cookie is per profile
    assert "Overview" in customer.dom
    for width in (1400, 400):
        shot = screenshot(f"{served}/login?token={TOKEN}", ARTIFACTS / f"dashboard-{width}.png",
                          width=width)
        assert shot.stat().st_size > 10_000
    shot = screenshot(f"{served}/login?token={TOKEN}", ARTIFACTS / "dashboard-400-top.png",
                      width=400, height=900)
    assert shot.stat().st_size > 5_000
