"""Settings are validated when they load: typos and out-of-range values stop every entry
point with exit 2, naming the key and the nearest valid one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nrr.settings import ConfigError, load_settings

REPO = Path(__file__).resolve().parents[2]


def config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "nrr.toml"
    path.write_text(text)
    return str(path)


def problem(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as raised:
        load_settings(env)
    return str(raised.value)


def test_a_policy_value_typo_names_the_variable_and_the_nearest_value() -> None:
    message = problem({"NRR_POLICY_CHURN_AT": "reqest"})
    assert "NRR_POLICY_CHURN_AT" in message and "'request'" in message


def test_an_unknown_policy_variable_names_the_nearest_one() -> None:
    assert "NRR_POLICY_CHURN (did you mean NRR_POLICY_CHURN_AT?)" in problem(
        {"NRR_POLICY_CHURN": "request"})
    assert "unknown environment variable NRR_POLICY_FOO" in problem({"NRR_POLICY_FOO": "bar"})


def test_an_unknown_nrr_variable_names_the_nearest_one() -> None:
    assert "NRR_REPORTING_CURENCY (did you mean NRR_REPORTING_CURRENCY?)" in problem(
        {"NRR_REPORTING_CURENCY": "eur"})


def test_unknown_keys_and_sections_of_the_config_file(tmp_path: Path) -> None:
    top = problem({"NRR_CONFIG": config(tmp_path, 'reporting_curency = "eur"\n')})
    policy = problem({"NRR_CONFIG": config(tmp_path, '[policies]\nchurn-at = "request"\n')})
    section = problem({"NRR_CONFIG": config(tmp_path, "[schedul]\nsnapshot_day = 2\n")})
    rule = problem({"NRR_CONFIG": config(
        tmp_path, '[[alerts.rules]]\nname = "x"\nthreshhold = 90\n')})

    assert "'reporting_curency'" in top and "did you mean reporting_currency?" in top
    assert "'churn-at' in [policies]" in policy and "did you mean churn_at?" in policy
    assert "'schedul'" in section and "did you mean [schedule]?" in section
    assert "'threshhold'" in rule and "did you mean threshold?" in rule


def test_out_of_range_values_fail_at_load(tmp_path: Path) -> None:
    hour = problem({"NRR_CONFIG": config(tmp_path, "[schedule]\nnightly_recompute_hour = 99\n")})
    rate = problem({"NRR_STRIPE_RATE_LIMIT": "-5"})
    level = problem({"NRR_LOG_LEVEL": "LOUD"})

    assert "[schedule] nightly_recompute_hour" in hour and "less than or equal to 23" in hour
    assert "NRR_STRIPE_RATE_LIMIT" in rate and "greater than 0" in rate and "'-5'" in rate
    assert "NRR_LOG_LEVEL" in level


def test_every_problem_is_named_at_once(tmp_path: Path) -> None:
    message = problem({"NRR_POLICY_CHURN": "x", "NRR_TIMEZON": "UTC"})
    assert "NRR_POLICY_CHURN" in message and "NRR_TIMEZONE" in message


def test_the_documented_and_used_variables_are_accepted(tmp_path: Path) -> None:
    """Every variable of .env.example, and those the compose file and the tests read."""
    env: dict[str, str] = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        line = line.lstrip("# ").strip()
        if "=" in line and line.split("=", 1)[0].isupper() and " " not in line.split("=")[0]:
            key, value = line.split("=", 1)
            env[key] = value
    env.update({"NRR_CONFIG": "", "NRR_TEST_SKIP_POSTGRES": "1", "NRR_LOG_FORMAT": "json",
                "NRR_POLICY_CHURN_AT": "request", "NRR_POLICY_EXCLUDE_CUSTOMERS": "a=b,@x.com"})
    assert "NRR_WORKER_CONCURRENCY" in env and "NRR_ALERT_DIGEST" in env

    settings = load_settings(env)

    assert settings.policies.churn_at == "request" and settings.log_format == "json"


def test_secrets_can_come_from_files(tmp_path: Path) -> None:
    key_file = tmp_path / "stripe-key"
    key_file.write_text("rk_test_fromfile\n")
    url_file = tmp_path / "database-url"
    url_file.write_text("sqlite:///from-file.db")

    settings = load_settings({"STRIPE_API_KEY_FILE": str(key_file),
                              "DATABASE_URL_FILE": str(url_file)})

    assert settings.secret("stripe_api_key") == "rk_test_fromfile"
    assert settings.database_url == "sqlite:///from-file.db"
    assert "STRIPE_API_KEY_FILE: cannot read" in problem(
        {"STRIPE_API_KEY_FILE": str(tmp_path / "missing")})
    both = problem({"STRIPE_API_KEY_FILE": str(key_file), "STRIPE_API_KEY": "rk_test_x"})
    assert "both STRIPE_API_KEY and STRIPE_API_KEY_FILE" in both


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NRR_")}
    return {**env, **extra}


@pytest.mark.parametrize("command", [["nrr", "report"], ["nrr", "status"], ["nrr", "sync"]])
def test_every_cli_command_exits_2(tmp_path: Path, command: list[str]) -> None:
    env = _clean_env(NRR_POLICY_CHURN="request", DATABASE_URL=f"sqlite:///{tmp_path}/n.db")
    nrr = str(Path(sys.executable).parent / "nrr")

    result = subprocess.run([nrr, *command[1:]], env=env, capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert "NRR_POLICY_CHURN (did you mean NRR_POLICY_CHURN_AT?)" in result.stderr


def test_the_celery_app_exits_2(tmp_path: Path) -> None:
    env = _clean_env(NRR_POLICY_CHURN="request", DATABASE_URL=f"sqlite:///{tmp_path}/n.db",
                     PYTHONPATH=str(REPO))

    result = subprocess.run([sys.executable, "-c", "import worker.celery_app"], env=env,
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)

    assert result.returncode == 2
    assert "did you mean NRR_POLICY_CHURN_AT?" in result.stderr
