"""``nrr emulator serve`` as a user runs it: a real process, the real SDK against it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.emulator.conftest import NOW, make_client

NRR = [sys.executable, "-m", "nrr.cli"]
ROOT = Path(__file__).resolve().parents[2]


def read_document(process: subprocess.Popen[str], timeout: float = 60.0) -> dict[str, Any]:
    """The one JSON document the command prints before serving."""
    assert process.stdout is not None
    text = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        text += line
        try:
            document: dict[str, Any] = json.loads(text)
            return document
        except json.JSONDecodeError:
            continue
    raise AssertionError(f"no JSON document on stdout: {text!r}")


def test_serve_prints_url_and_key_then_serves_until_terminated() -> None:
    process = subprocess.Popen(
        [*NRR, "emulator", "serve", "--customers", "15", "--months", "6", "--seed", "2",
         "--now", str(NOW), "--port", "0", "--format", "json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        document = read_document(process)
        assert document["url"].startswith("http://127.0.0.1:")
        assert document["api_key"].startswith("sk_test_")
        assert document["counts"]["customers"] + document["counts"]["deleted_customers"] == 15
        client = make_client(document["url"], key=document["api_key"])
        customers = list(client.v1.customers.list({"limit": 100}).auto_paging_iter())
        assert len(customers) == document["counts"]["customers"]
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert "stopped" in err


def test_serve_refuses_a_non_loopback_host() -> None:
    done = subprocess.run([*NRR, "emulator", "serve", "--host", "0.0.0.0", "--port", "0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "loopback" in done.stderr
    assert done.stdout == ""


def test_serve_help_documents_every_option() -> None:
    done = subprocess.run([*NRR, "emulator", "serve", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for option in ("--customers", "--months", "--seed", "--port", "--latency-ms",
                   "--fail-every", "--format"):
        assert option in done.stdout
