"""Small command-line and test-suite conventions: a closed pipe is not a failure, each
``--format`` offers only what the command prints, the declared markers select tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main

from nrr.cli import app

ROOT = Path(__file__).resolve().parents[1]
NRR = str(Path(sys.executable).parent / "nrr")


def _commands() -> list[tuple[str, Any]]:
    root = typer.main.get_command(app)
    found: list[tuple[str, Any]] = []

    def walk(prefix: str, command: Any) -> None:
        if hasattr(command, "commands"):  # a group (typer may bring its own click)
            for name, sub in command.commands.items():
                walk(f"{prefix} {name}".strip(), sub)
        else:
            found.append((prefix, command))

    walk("", root)
    return found


def _format_choices(name: str) -> list[str] | None:
    """The ``--format`` choices ``nrr NAME --help`` offers (None: no such option)."""
    import re

    from typer.testing import CliRunner

    result = CliRunner().invoke(app, [*name.split(), "--help"], env={"COLUMNS": "200"},
                                terminal_width=200)
    assert result.exit_code == 0, result.output
    found = re.search(r"--format\s+(?:-\w\s+)?\[([a-z|]+)\]", result.output)
    return found.group(1).split("|") if found else None


def test_no_command_offers_a_format_it_refuses() -> None:
    """A command that prints only table and json does not offer csv (and refuses it as a
    usage error from the option itself)."""
    refusing = {"alerts preview", "alerts run", "alerts test", "alerts pending", "customer",
                "recompute", "status", "snapshots diff"}
    offered = {name: _format_choices(name) for name, _command in _commands()}
    for name in refusing:
        assert offered[name] == ["table", "json"], name
    for name, choices in offered.items():
        if choices is not None:
            assert choices[0] == "table" and "json" in choices, name
    source = "\n".join(p.read_text() for p in (ROOT / "nrr" / "commands").glob("*.py"))
    assert "csv is not available" not in source and "not csv" not in source


def test_status_rejects_csv_as_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run([NRR, "status", "--format", "csv"], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "DATABASE_URL":
                                 f"sqlite:///{tmp_path}/n.db"}, timeout=120)
    assert result.returncode == 2 and "'csv' is not one of table, json" in result.stderr


def _into_a_closed_pipe(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``nrr args`` with stdout a pipe whose reader is already gone (like ``| head``
    once head has its lines): every write fails with EPIPE, deterministically."""
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([NRR, *args], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, env=env, timeout=300)
    finally:
        os.close(write_end)


@pytest.mark.parametrize("args", [["report", "--month", "2026-10"],
                                  ["report", "--from", "2025-01", "--to", "2026-10"],
                                  ["report", "--month", "2026-10", "--format", "csv"],
                                  ["report", "--month", "2026-10", "--format", "json"],
                                  ["fx", "list"]])
def test_a_closed_pipe_exits_0(tmp_path: Path, args: list[str]) -> None:
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": f"sqlite:///{tmp_path}/n.db",
           "COLUMNS": "200"}
    subprocess.run([NRR, "db", "upgrade"], env=env, check=True, capture_output=True,
                   timeout=120)

    done = _into_a_closed_pipe(args, env)

    assert done.returncode == 0, done.stderr[-1500:]
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


def _collected(*args: str) -> list[str]:
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                           "-p", "no:randomly", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode in (0, 5), done.stdout[-2000:] + done.stderr[-2000:]
    return [line for line in done.stdout.splitlines() if "::" in line]


@pytest.mark.parametrize("module", ["tests/alerts/test_alert_delivery.py"])
def test_the_postgres_marker_selects_the_postgresql_half(module: str) -> None:
    every = _collected(module)
    without = _collected(module, "-m", "not postgres")
    only = _collected(module, "-m", "postgres")

    assert every and without and only
    assert all("postgresql" not in test for test in without)
    assert all("postgresql" in test for test in only)
    assert sorted(without + only) == sorted(every)


def test_the_redis_and_slow_markers_select_tests() -> None:
    every = _collected("tests/worker/test_locks.py")
    redis = _collected("tests/worker/test_locks.py", "-m", "redis")
    slow = _collected("tests/worker", "-m", "slow")

    # The lock tests run on both backends: the Redis half is selected, the database half not.
    assert redis and not any("[database-" in test for test in redis)
    assert {test for test in every if "[redis-" in test} <= set(redis)
    assert slow and all(test.startswith("tests/worker/") for test in slow)
    assert len(_collected("tests/worker", "-m", "not slow")) > 0
