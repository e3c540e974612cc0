"""``nrr alerts preview | run | test | pending`` through the real CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from models.derived import AlertDelivery
from nrr.db import session_scope
from nrr.logs import configure_logging
from tests.alerts.conftest import make_settings, seed_drop
from tests.support.slack_recorder import SlackRecorder


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def nrr(db_url: str, tmp_path: Path) -> Callable[..., Run]:
    from typer.testing import CliRunner

    from nrr.cli import app

    config = tmp_path / "nrr.toml"
    config.write_text("[alerts]\nslack_backoff_seconds = 0.01\nslack_max_wait_seconds = 2\n")

    def run(*args: str, webhook: str | None = None) -> Run:
        env = {"DATABASE_URL": db_url, "NRR_CONFIG": str(config), "NRR_TIMEZONE": "UTC",
               "NRR_REPORTING_CURRENCY": "usd", "SLACK_WEBHOOK_URL": webhook or ""}
        try:
            result = CliRunner().invoke(app, ["alerts", *args], env=env, catch_exceptions=False)
        finally:
            configure_logging()  # the runner's stderr is closed once it returns
        return Run(result.exit_code, result.stdout, result.stderr)

    return run


def stored(engine: Engine) -> int:
    with session_scope(engine) as session:
        return int(session.execute(select(func.count()).select_from(AlertDelivery)).scalar_one())


def test_preview_prints_what_would_be_sent_without_sending(
        engine: Engine, db_url: str, nrr: Callable[..., Run], slack: SlackRecorder) -> None:
    seed_drop(engine, make_settings(db_url))

    as_json = nrr("preview", "--month", "2026-10", "--format", "json", webhook=slack.url)
    table = nrr("preview", "--month", "2026-10", webhook=slack.url)

    assert as_json.exit_code == 0, as_json.stderr
    document: dict[str, Any] = json.loads(as_json.stdout)
    assert document["month"] == "2026-10"
    assert [m["rule"] for m in document["messages"]] == ["nrr_monthly_below", "nrr_monthly_drop"]
    assert all(m["status"] == "new" for m in document["messages"])
    assert "50,000.00 USD" in json.dumps(document["messages"][0]["payload"])
    assert table.exit_code == 0, table.stderr
    assert "Monthly NRR below 100% — 2026-10" in table.stdout
    assert "Opening MRR: 50,000.00 USD" in table.stdout
    assert stored(engine) == 0 and slack.requests == []


def test_run_delivers_once_and_reruns_send_nothing(
        engine: Engine, db_url: str, nrr: Callable[..., Run], slack: SlackRecorder) -> None:
    seed_drop(engine, make_settings(db_url))

    first = nrr("run", "--month", "2026-10", "--format", "json", webhook=slack.url)
    second = nrr("run", "--month", "2026-10", webhook=slack.url)

    assert first.exit_code == 0, first.stderr
    assert len(json.loads(first.stdout)["delivery"]["sent"]) == 2
    assert second.exit_code == 0, second.stderr
    assert "sent 0, printed 0" in second.stdout
    assert len(slack.delivered) == 2
    assert slack.url not in first.stdout + first.stderr + second.stdout + second.stderr


def test_run_without_url_prints_and_keeps_json_on_stdout(
        engine: Engine, db_url: str, nrr: Callable[..., Run]) -> None:
    seed_drop(engine, make_settings(db_url))

    result = nrr("run", "--month", "2026-10", "--format", "json")

    assert result.exit_code == 0, result.stderr
    assert len(json.loads(result.stdout)["delivery"]["printed"]) == 2
    assert "Monthly NRR below 100% — 2026-10" in result.stderr


def test_run_with_an_invalid_url_exits_2_before_anything_changes(
        engine: Engine, db_url: str, nrr: Callable[..., Run]) -> None:
    from nrr.services.alerts import evaluate_alerts, pending_deliveries

    settings = make_settings(db_url)
    seed_drop(engine, settings)
    evaluate_alerts(engine, settings, "2026-10", deliver=False)  # two stored, pending
    before = pending_deliveries(engine)

    result = nrr("run", "--month", "2026-10", webhook="hooks.slack.com/services/T/B/secret-part")

    assert result.exit_code == 2
    assert "SLACK_WEBHOOK_URL is not a valid webhook URL" in result.stderr
    assert "secret-part" not in result.stderr + result.stdout
    assert "Monthly NRR below 100% — 2026-10" not in result.stdout  # not printed either
    assert [row["status"] for row in before] == ["pending", "pending"]
    assert pending_deliveries(engine) == before


def test_outage_exits_1_and_pending_lists_the_kept_alerts(
        engine: Engine, db_url: str, nrr: Callable[..., Run], slack: SlackRecorder) -> None:
    seed_drop(engine, make_settings(db_url))
    slack.fail_next(100, status=503)

    failed = nrr("run", "--month", "2026-10", webhook=slack.url)
    pending = nrr("pending", "--format", "json")
    slack.clear_failures()
    retried = nrr("run", "--month", "2026-10", webhook=slack.url)

    assert failed.exit_code == 1
    assert "kept pending" in failed.stderr and "Slack answered 503" in failed.stderr
    assert pending.exit_code == 0
    assert [row["status"] for row in json.loads(pending.stdout)] == ["pending", "pending"]
    assert retried.exit_code == 0, retried.stderr
    assert len(slack.delivered) == 2
    assert json.loads(nrr("pending", "--format", "json").stdout) == []


def test_test_command_sends_a_sample(nrr: Callable[..., Run], slack: SlackRecorder) -> None:
    result = nrr("test", webhook=slack.url)
    again = nrr("test", webhook=slack.url)

    assert result.exit_code == 0, result.stderr
    assert "test message sent" in result.stdout
    assert again.exit_code == 0
    assert len(slack.delivered) == 2  # a test message is sent every time it is asked for
    assert slack.delivered[0].payload["text"].startswith("nrr-worker test message")


def test_unknown_month_is_a_usage_error(nrr: Callable[..., Run]) -> None:
    result = nrr("preview", "--month", "2026-13")
    assert result.exit_code == 2
    assert "use YYYY-MM" in result.stderr
