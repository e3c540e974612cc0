"""Every ``nrr`` command has help text (itself and each of its options and arguments) and is
documented in README.md by its full path (``nrr report``, ``nrr snapshots take``).

The command tree is walked from the real Typer app, so a command added without help or
without README documentation fails here under its own name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main

from nrr.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"


def walk(command: Any, path: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
    # Typer ships its own copy of click, so groups are recognised by their ``commands``.
    yield " ".join(path), command
    subcommands = getattr(command, "commands", None) or {}
    for name in sorted(subcommands):
        yield from walk(subcommands[name], (*path, name))


ROOT = typer.main.get_command(app)
COMMANDS = dict(walk(ROOT, ("nrr",)))
SUBCOMMANDS = sorted(path for path in COMMANDS if path != "nrr")


def test_the_tree_has_the_commands_of_the_architecture() -> None:
    # Every command module of nrr.cli registers its commands.
    assert "nrr demo" in COMMANDS
    assert len(SUBCOMMANDS) >= 5


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_command_has_help(path: str) -> None:
    command = COMMANDS[path]
    assert (command.help or command.short_help or "").strip(), f"`{path}` has no help text"


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_option_and_argument_has_help(path: str) -> None:
    command = COMMANDS[path]
    missing = [param.name for param in command.params
               if not (getattr(param, "help", None) or "").strip()]
    assert not missing, f"`{path}`: no help text for {', '.join(map(str, missing))}"


@pytest.mark.parametrize("path", SUBCOMMANDS)
def test_command_is_documented_in_readme(path: str) -> None:
    readme = README.read_text(encoding="utf-8")
    assert re.search(rf"(?<![\w-]){re.escape(path)}(?![\w-])", readme), (
        f"`{path}` is not documented in README.md")


def test_help_runs_for_every_command() -> None:
    from typer.testing import CliRunner

    runner = CliRunner()
    for path in COMMANDS:
        result = runner.invoke(app, [*path.split()[1:], "--help"])
        assert result.exit_code == 0, f"`{path} --help` exited {result.exit_code}: {result.output}"
        assert "Usage" in result.output
