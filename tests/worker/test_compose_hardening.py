"""The deployment files, parsed (Docker cannot run here): each service gets only the
settings it uses, secrets only as files, Flower on loopback with credentials from a file,
the beat schedule on a volume, an init process, a reproducible image build."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from nrr.settings import SECRET_VARIABLES, load_settings

ROOT = Path(__file__).resolve().parents[2]
OURS = ("migrate", "worker", "beat", "webhooks")
# What each of our services reads (from the code: the worker syncs and sends alerts; beat
# schedules and runs `nrr status`; the webhook server verifies signatures and hands events
# to the worker through Redis; migrate only needs the database).
USES = {
    "migrate": {"DATABASE_URL"},
    "worker": {"DATABASE_URL", "REDIS_URL", "STRIPE_API_KEY", "SLACK_WEBHOOK_URL"},
    "beat": {"DATABASE_URL", "REDIS_URL"},
    "webhooks": {"DATABASE_URL", "REDIS_URL", "STRIPE_WEBHOOK_SECRET"},
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(document, dict)
    return document


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "environment as a mapping"
    return {str(k): str(v) for k, v in env.items()}


def _default(value: str) -> str:
    """``${NAME:-default}`` as compose fills it in when NAME is not set."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_no_service_gets_the_whole_env_file(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert "env_file" not in service, name


def test_secrets_reach_services_only_as_files(compose: dict[str, Any]) -> None:
    declared = compose["secrets"]
    for name, service in compose["services"].items():
        env = _environment(service)
        for variable in SECRET_VARIABLES:
            if variable == "REDIS_URL":
                continue  # the compose Redis has no password: its address is not a secret
            assert variable not in env, (name, variable)
        for variable, path in env.items():
            if variable.endswith("_FILE"):
                secret = path.removeprefix("/run/secrets/")
                assert path.startswith("/run/secrets/") and secret in declared, (name, variable)
                assert secret in service.get("secrets", []), (name, secret)
    assert all(set(spec) == {"file"} for spec in declared.values())
    assert "POSTGRES_PASSWORD" not in _environment(compose["services"]["postgres"])
    assert _environment(compose["services"]["postgres"])["POSTGRES_PASSWORD_FILE"] == \
        "/run/secrets/postgres_password"


def test_each_service_gets_only_the_settings_it_uses(compose: dict[str, Any]) -> None:
    for name in OURS:
        env = _environment(compose["services"][name])
        given = {v.removesuffix("_FILE") for v in env if not v.startswith("NRR_")}
        assert given == USES[name], name
        # Every variable is one the settings accept (an unknown one would stop the service).
        load_settings({k: _default(v) for k, v in env.items() if not k.endswith("_FILE")})
    assert "STRIPE_API_KEY_FILE" not in _environment(compose["services"]["webhooks"])
    flower = compose["services"]["flower"]
    assert not any(k.startswith(("STRIPE", "DATABASE", "SLACK")) for k in _environment(flower))


def test_flower_on_loopback_with_credentials_from_a_file(compose: dict[str, Any]) -> None:
    flower = compose["services"]["flower"]
    command = " ".join(flower["command"])
    assert "basic-auth" not in command and "--conf=" in command
    assert flower["ports"] == ["127.0.0.1:5555:5555"]
    assert "flower_basic_auth" in flower["secrets"]
    conf = command.split("--conf=")[1].split()[0]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in flower["volumes"]}
    source = ROOT / mounted[conf]
    namespace: dict[str, Any] = {}
    text = source.read_text().replace('"/run/secrets/flower_basic_auth"', "CREDENTIALS")
    assert "/run/secrets/flower_basic_auth" in source.read_text()
    exec(compile(text, str(source), "exec"),  # noqa: S102 - our own config file
         {"CREDENTIALS": str(ROOT / "tests" / "worker" / "flower_credentials.txt")}, namespace)
    assert namespace["basic_auth"] == ["admin:from-a-file"]


def test_the_beat_schedule_is_on_a_volume(compose: dict[str, Any]) -> None:
    beat = compose["services"]["beat"]
    schedule = beat["command"][beat["command"].index("--schedule") + 1]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in beat["volumes"]}
    folder = str(Path(schedule).parent)
    assert folder in mounts and mounts[folder] in compose["volumes"]
    assert not schedule.startswith("/tmp")
    assert "/beat" in (ROOT / "Dockerfile").read_text()  # created, owned by the nrr user


def test_every_long_running_service_has_an_init_process(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert service.get("init") is True, name


def test_the_image_is_built_from_pinned_constraints() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"pip install --constraint constraints\.txt \"\.\[postgres\]\"", dockerfile)
    assert "COPY constraints.txt" in dockerfile
    lines = [line for line in (ROOT / "constraints.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[^\s=]+", line) for line in lines), lines
    pinned = {re.split(r"[=\[]", line)[0].lower().replace("_", "-") for line in lines}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] not in pinned
    for requirement in [*project["dependencies"], *project["optional-dependencies"]["postgres"]]:
        name = re.split(r"[<>=\[ ;]", requirement)[0].lower().replace("_", "-")
        assert name in pinned, f"{name} is not pinned in constraints.txt"


def test_the_build_context_leaves_out_local_state() -> None:
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for entry in (".venv", "*.db", ".git", ".env", "secrets", "nrr-state"):
        assert entry in ignored, entry
