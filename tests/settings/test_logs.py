"""NRR_LOG_FORMAT=json: our events, the standard library's and Celery's own lines come out
as one JSON object a line, through the same redaction."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from nrr.logs import configure_logging, get_logger

ROOT = Path(__file__).resolve().parents[2]


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_structlog_and_stdlib_records_share_the_json_pipeline(
        capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json_output=True)
    try:
        get_logger("nrr.test").info("ours", key="sk_live_abcdef123")
        logging.getLogger("celery.worker.strategy").warning(
            "Received task with key %s", "rk_live_zzz999")
        err = capsys.readouterr().err
    finally:
        configure_logging()

    lines = [line for line in err.splitlines() if line.strip()]
    documents = [json.loads(line) for line in lines]  # every line is JSON
    ours = next(d for d in documents if d["event"] == "ours")
    theirs = next(d for d in documents if d.get("logger") == "celery.worker.strategy")
    assert ours["level"] == "info" and "timestamp" in ours
    assert theirs["level"] == "warning" and "timestamp" in theirs
    assert "sk_live_abcdef123" not in err and "rk_live_zzz999" not in err
    assert "redacted" in ours["key"] and "redacted" in theirs["event"]


def test_text_is_the_default_and_stdlib_lines_are_rendered_by_structlog(
        capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")
    logging.getLogger("kombu").warning("broker at redis://:hunter2@h:6379/0 lost")
    err = capsys.readouterr().err
    assert "[warning" in err and "hunter2" not in err and not err.lstrip().startswith("{")


def test_a_celery_worker_logs_json_lines(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NRR_", "REDIS_", "DATABASE_", "STRIPE_", "SLACK_"))}
    env.update({"DATABASE_URL": f"sqlite:///{tmp_path}/nrr.db", "NRR_LOG_FORMAT": "json",
                "PYTHONPATH": str(ROOT)})
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "celery"), "-A", "worker.celery_app", "worker",
         "--concurrency", "1", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
         "--queues", "nrr"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        assert process.stderr is not None
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            lines.append(line)
            if " ready." in line:
                break
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    logged = [line for line in lines if line.strip()]
    ready = [d for d in _json_lines("".join(logged)) if " ready." in str(d.get("event"))]
    assert ready, "".join(lines)[-3000:]
    assert ready[0]["logger"].startswith("celery") and ready[0]["level"] == "info"
    # Every line Celery logged on stderr is a JSON object (the banner goes to stdout).
    assert all(line.startswith("{") for line in logged), "".join(logged)[-3000:]
