"""`.ci/run` on a machine that lacks the system packages: it runs `apt-get update`, then
installs Redis, Chromium and PostgreSQL (and make), then `make test`. apt-get and make are
stand-ins that record their arguments; nothing is installed."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _tools(folder: Path) -> None:
    """A PATH with only what the script needs besides the packages it may install."""
    for tool in ("bash", "dirname", "id", "env"):
        found = shutil.which(tool)
        assert found is not None, tool
        os.symlink(found, folder / tool)


def test_a_bare_machine_gets_every_package_then_the_tests(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _tools(bin_dir)
    calls = tmp_path / "calls.txt"
    _stub(bin_dir, "apt-get", f'echo "apt-get $*" >> {calls}')
    _stub(bin_dir, "apt-cache", 'test "$2" = postgresql-15')  # the distribution has 15
    _stub(bin_dir, "python3", "exit 1")  # a Debian python3 without its venv module
    _stub(bin_dir, "make", f'echo "make $*" >> {calls}')
    # make is present here; redis-server, chromium and PostgreSQL are not.
    env = {"PATH": str(bin_dir), "CI_POSTGRES_ROOT": str(tmp_path / "no-postgresql")}

    done = subprocess.run([str(bin_dir / "bash"), str(ROOT / ".ci" / "run")], env=env,
                          capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    lines = calls.read_text().splitlines()
    assert lines[0] == "apt-get update"
    install = lines[1].split()
    assert install[:4] == ["apt-get", "install", "-y", "--no-install-recommends"]
    assert {"redis-server", "chromium", "postgresql-15", "python3-venv"} <= set(install)
    assert lines[-1] == "make test"


def test_nothing_is_installed_when_everything_is_there(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _tools(bin_dir)
    calls = tmp_path / "calls.txt"
    for present in ("redis-server", "chromium", "python3"):
        _stub(bin_dir, present, "exit 0")
    _stub(bin_dir, "apt-get", f'echo "apt-get $*" >> {calls}')
    _stub(bin_dir, "make", f'echo "make $*" >> {calls}')
    postgres = tmp_path / "postgresql" / "15" / "bin"
    postgres.mkdir(parents=True)
    _stub(postgres, "initdb", "exit 0")
    env = {"PATH": str(bin_dir), "CI_POSTGRES_ROOT": str(tmp_path / "postgresql")}

    done = subprocess.run([str(bin_dir / "bash"), str(ROOT / ".ci" / "run")], env=env,
                          capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    assert calls.read_text().splitlines() == ["make test"]
