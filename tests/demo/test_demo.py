"""`nrr demo` end to end, as a newcomer runs it: a fresh folder (or a clean copy of the
checkout), the installed command, no servers and no keys. The pipeline is the real one (emulator over HTTP, the worker's tasks,
the report service); the checks are on what the user sees: the table, the report file, and
the report drawn in headless Chromium.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from tests.demo.browser import ARTIFACTS, REPO, load_page, screenshot

NRR = Path(sys.executable).with_name("nrr")
SMALL = ["--customers", "60", "--months", "14"]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NRR_", "STRIPE_", "SLACK_", "REDIS_"))}
    # A user's own database: the demo must leave it alone.
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'users-own.db'}"
    env["COLUMNS"] = "200"
    return env


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(NRR), "demo", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def table_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    home = tmp_path_factory.mktemp("newcomer")
    completed = _run(SMALL, home, _env(home))
    assert completed.returncode == 0, completed.stderr[-4000:]
    return home, completed


def _checkout(target: Path) -> Path:
    """The files a clone would hold (tracked, plus new files not ignored) copied to ``target``."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                            cwd=REPO, capture_output=True, check=True).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.fixture(scope="module")
def json_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    """The demo run from a clean copy of the checkout (its packages first on the path)."""
    home = tmp_path_factory.mktemp("newcomer-json")
    checkout = _checkout(home / "checkout")
    env = {**_env(home), "PYTHONPATH": str(checkout)}
    where = subprocess.run([sys.executable, "-c", "import nrr.demo, worker.tasks, integrations."
                            "emulator, models; print(nrr.demo.__file__)"],
                           cwd=checkout, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.strip() == str(checkout / "nrr" / "demo.py")
    completed = subprocess.run(
        [sys.executable, "-m", "nrr.cli", "demo", *SMALL, "--format", "json",
         "--output", str(home / "out")],
        cwd=checkout, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 0, completed.stderr[-4000:]
    return home, json.loads(completed.stdout), completed.stderr


def test_table_lists_every_month_and_says_where_the_report_is(
        table_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    home, completed = table_run
    out = completed.stdout
    months = re.findall(r"^\W*(\d{4}-\d{2})(?: \(partial\))?\s", out, flags=re.M)
    assert len(months) >= 13 and months == sorted(months)
    assert "(partial)" in out  # the current month is shown and marked
    report = home / "demo-output" / "report.html"
    assert f"Report: {report}" in out.replace("\n", "") or str(report) in out
    assert report.is_file()
    assert (home / "demo-output" / "nrr-demo.db").is_file()
    assert not (home / "users-own.db").exists()
    for hint in ("STRIPE_API_KEY", "nrr worker", "docker compose"):
        assert hint in out
    assert re.search(r"Finished in \d+\.\d s", out)
    # progress went to stderr, task by task: the worker's own chain ran
    for task in ("nrr.sync", "nrr.recompute", "nrr.snapshot", "nrr.evaluate_alerts"):
        assert f"task {task} success in" in completed.stderr
    assert re.search(r"Alerts for \d{4}-\d{2}: ", out)


def test_json_is_one_document_whose_months_add_up(json_run: tuple[Path, dict[str, Any], str]) -> None:
    home, document, _stderr = json_run
    assert document["emulator_url"].startswith("http://127.0.0.1:")
    assert Path(document["report"]) == (home / "out" / "report.html").resolve()
    assert document["snapshots"] >= 12
    months = document["months"]
    assert len(months) >= 13
    moved = set()
    for month in months:
        total = (month["opening_mrr"] + month["new"] + month["reactivation"]
                 + month["expansion"] - month["contraction"] - month["churn"])
        assert abs(total - month["closing_mrr"]) < 0.06, month["month"]
        moved |= {k for k in ("new", "reactivation", "expansion", "contraction", "churn")
                  if month[k] > 0}
    # A 60-customer world need not have a reactivation; the 300-customer default does.
    assert {"new", "expansion", "contraction", "churn"} <= moved
    # Every kind of change reached the ledger, with its cause.
    with closing(sqlite3.connect(home / "out" / "nrr-demo.db")) as db:
        causes = {row[0] for row in db.execute("SELECT DISTINCT cause FROM mrr_ledger")}
    assert {"new_subscription", "seat_change", "plan_change", "cancellation",
            "trial_conversion"} <= causes
    for before, after in zip(months, months[1:], strict=False):
        assert abs(before["closing_mrr"] + after["fx_impact"] - after["opening_mrr"]) < 0.06
    assert document["elapsed_seconds"] > 0


def test_same_seed_same_numbers(json_run: tuple[Path, dict[str, Any], str], tmp_path: Path) -> None:
    _home, first, _ = json_run
    again = _run([*SMALL, "--format", "json", "--output", str(tmp_path / "again")], tmp_path,
                 _env(tmp_path))
    assert again.returncode == 0, again.stderr[-4000:]
    second = json.loads(again.stdout)
    strip = ("partial",)
    assert ([{k: v for k, v in m.items() if k not in strip} for m in second["months"]]
            == [{k: v for k, v in m.items() if k not in strip} for m in first["months"]])


def test_bad_option_is_a_usage_error(tmp_path: Path) -> None:
    completed = _run(["--months", "1"], tmp_path, _env(tmp_path))
    assert completed.returncode == 2
    assert not (tmp_path / "demo-output").exists()


@pytest.mark.browser
def test_demo_report_opens_in_headless_chromium(json_run: tuple[Path, dict[str, Any], str]) -> None:
    _home, document, _ = json_run
    report = Path(document["report"])
    page = report.read_text(encoding="utf-8")
    for section in ("waterfall", "movements", "retention", "cohorts", "segments",
                    "top-movements", "definitions"):
        assert f'<section id="{section}">' in page
    assert not re.search(r"<(link|img|iframe)\b|\ssrc=|@import|url\(", page)  # nothing to fetch
    assert page.count("<script>") == 1
    result = load_page(report)
    assert result.console == [], result.console
    drawn = re.search(r'data-charts-drawn="(\d+)"', result.dom)
    assert drawn and int(drawn.group(1)) == 8
    assert len(re.findall(r'<td class="heat"', result.dom)) > 20
    shot = screenshot(report, ARTIFACTS / "report.png")
    assert shot.stat().st_size > 50_000


def test_alerts_go_to_slack_when_a_webhook_is_set(tmp_path: Path) -> None:
    from tests.support.slack_recorder import SlackRecorder

    # A rule that always fires (monthly NRR below 10,000 %), so the test never depends on
    # the day's demo numbers.
    config = tmp_path / "nrr.toml"
    config.write_text('[alerts]\n[[alerts.rules]]\nname = "demo_always"\nmetric = "nrr"\n'
                      'period = "monthly"\nkind = "below"\nthreshold = 10000\n', encoding="utf-8")
    with SlackRecorder() as slack:
        env = {**_env(tmp_path), "NRR_CONFIG": str(config),
               "SLACK_WEBHOOK_URL": f"{slack.url}/services/T000/B000/demo"}
        completed = _run([*SMALL, "--format", "json", "--output", str(tmp_path / "out")],
                         tmp_path, env)
        assert completed.returncode == 0, completed.stderr[-4000:]
        delivered = list(slack.delivered)
    document = json.loads(completed.stdout)
    assert document["alerts"]["messages"] == {"sent": len(delivered)}
    assert len(delivered) >= 1
    assert "demo_always" in json.dumps(delivered[0].payload)
    assert document["last_closed_month"] in json.dumps(delivered[0].payload)
    assert "demo_always" not in completed.stderr  # sent, not printed
