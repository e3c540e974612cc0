"""The compose file, Dockerfile and example env: valid, and calling commands that exist."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from nrr.cli import app
from nrr.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
CELERY = str(ROOT / ".venv" / "bin" / "celery")


@pytest.fixture(scope="module")
def compose() -> dict:
    document = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(document, dict)
    return document


def _ours(service: dict) -> bool:
    return service.get("build") == "." or service.get("image") == "nrr-worker:latest"


def test_every_role_is_a_service(compose: dict) -> None:
    assert {"redis", "postgres", "migrate", "worker", "beat", "webhooks", "flower"} <= set(
        compose["services"])


def test_long_running_services_have_health_checks(compose: dict) -> None:
    for name, service in compose["services"].items():
        if name == "migrate":
            assert service.get("restart") == "no"
            continue
        assert "healthcheck" in service, name
        assert service["healthcheck"]["test"], name


def test_our_services_wait_for_the_migration(compose: dict) -> None:
    for name in ("worker", "beat", "webhooks"):
        depends = compose["services"][name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["redis"]["condition"] == "service_healthy"
    assert compose["services"]["migrate"]["command"] == ["nrr", "db", "upgrade"]


def test_nrr_commands_in_the_compose_file_exist(compose: dict) -> None:
    runner = CliRunner()
    seen = set()
    for name, service in compose["services"].items():
        if not _ours(service):
            continue
        command = service["command"]
        assert command[0] in ("nrr", "celery"), name
        if command[0] != "nrr":
            continue
        words = []
        for word in command[1:]:
            if word.startswith("-"):
                break
            words.append(word)
        seen.add(" ".join(words))
        # The subcommand and every option given exist: --help after them parses them.
        options = [w for w in command[1:] if w.startswith("--")]
        result = runner.invoke(app, [*words, "--help"])
        assert result.exit_code == 0, (name, result.output)
        for option in options:
            assert option.split("=")[0] in result.output, (name, option)
    assert {"db upgrade", "serve"} <= seen


def test_celery_commands_in_the_compose_file_run(compose: dict) -> None:
    for name in ("worker", "beat"):
        command = compose["services"][name]["command"]
        assert command[:3] == ["celery", "-A", "worker.celery_app"], name
        role = command[3]
        done = subprocess.run([CELERY, "-A", "worker.celery_app", role, "--help"], cwd=ROOT,
                              capture_output=True, text=True, timeout=120,
                              env={"PATH": "/usr/bin:/bin", "DATABASE_URL": "sqlite:////tmp/x.db",
                                   "REDIS_URL": "redis://127.0.0.1:1/0"})
        assert done.returncode == 0, done.stderr[-2000:]
        for option in (w for w in command[4:] if w.startswith("--")):
            assert option in done.stdout, (name, option)


def test_nrr_worker_command_exists() -> None:
    result = CliRunner().invoke(app, ["worker", "--help"])
    assert result.exit_code == 0
    assert "--concurrency" in result.output and "--loglevel" in result.output


def test_the_example_env_names_real_settings(compose: dict) -> None:
    aliases = {f.alias for f in Settings.model_fields.values() if f.alias}
    compose_text = COMPOSE.read_text()
    names = re.findall(r"^([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE)
    assert "STRIPE_API_KEY" in names and "REDIS_URL" in names and "DATABASE_URL" in names
    for variable in names:
        assert variable in aliases or variable in compose_text, variable


def test_the_dockerfile_installs_the_packages_the_services_run() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for package in ("nrr", "models", "integrations", "worker"):
        assert f"COPY {package} ./{package}" in text
    assert 'pip install --constraint constraints.txt ".[postgres]"' in text
    # The files pyproject.toml names must be in the image, or `pip install .` fails.
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    copied = " ".join(line for line in text.splitlines() if line.startswith("COPY "))
    for name in [project["readme"], *project.get("license-files", [])]:
        assert f" {name} " in f" {copied} ", f"{name} is not copied into the image"


def test_nrr_worker_rejects_an_unknown_log_level() -> None:
    result = CliRunner().invoke(app, ["worker", "--loglevel", "chatty"])
    assert result.exit_code == 2
    assert "unknown log level" in result.output
