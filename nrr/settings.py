"""The one settings object, read from the environment and an optional config file.

Precedence (highest first): environment variables, the config file named by
``NRR_CONFIG`` (TOML), the defaults below. Secrets are ``SecretStr`` so they never
print in logs, reprs or reports.

Each command asks only for what it uses: ``settings.require("stripe_api_key")``
raises :class:`ConfigError` with the variable to set.

Everything is checked when the settings load, for every entry point (the CLI and the
Celery app): an unknown ``NRR_*`` variable, an unknown key or section of the config file,
or a value out of range is a :class:`ConfigError` (exit 2) naming the key and the nearest
valid one, so a typo never runs silently with the defaults.

Each secret may also be given as a file (``STRIPE_API_KEY_FILE=/run/secrets/stripe``),
the way container secrets are mounted: the file's content, stripped, is the value.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConfigError(Exception):
    """A setting is missing or invalid; the message says which variable to set."""


class _Section(BaseModel):
    """A config file section: an unknown key is an error, never silently ignored."""

    model_config = ConfigDict(extra="forbid")


class Policies(_Section):
    """The named policies of docs/revenue-definitions.md, with their defaults."""

    churn_at: Literal["period_end", "request"] = "period_end"
    discounts: Literal["recurring", "all", "none"] = "recurring"
    past_due_churn_after_days: int | None = Field(default=None, ge=0)
    pause_collection: Literal["count", "exclude"] = "count"
    metered: Literal["exclude", "invoiced"] = "exclude"
    # Entries are metadata pairs ``key=value`` or email domains ``@example.com``.
    exclude_customers: list[str] = Field(default_factory=list)

    @field_validator("past_due_churn_after_days", mode="before")
    @classmethod
    def _none_words(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in {"", "none", "null", "off"}:
            return None
        return value

    @field_validator("exclude_customers", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump()


class AlertRule(_Section):
    """One alert rule; ``segment`` is a dimension (``plan``, ``metadata:tier``) or None for the total."""

    name: str
    metric: Literal["nrr", "grr"] = "nrr"
    period: Literal["monthly", "t12m"] = "monthly"
    # ``projected``: a ``below`` rule on the outlook's NRR/GRR of the current and next month.
    kind: Literal["below", "drop", "projected"] = "below"
    threshold: float = 100.0
    segment: str | None = None


def default_alert_rules() -> list[AlertRule]:
    return [
        AlertRule(name="nrr_monthly_below", metric="nrr", period="monthly", kind="below", threshold=100.0),
        AlertRule(name="nrr_t12m_below", metric="nrr", period="t12m", kind="below", threshold=100.0),
        AlertRule(name="grr_monthly_below", metric="grr", period="monthly", kind="below", threshold=90.0),
        AlertRule(name="nrr_monthly_drop", metric="nrr", period="monthly", kind="drop", threshold=5.0),
        AlertRule(name="nrr_projected_below", metric="nrr", period="monthly", kind="projected",
                  threshold=100.0),
        AlertRule(name="grr_projected_below", metric="grr", period="monthly", kind="projected",
                  threshold=90.0),
    ]


class AlertSettings(_Section):
    rules: list[AlertRule] = Field(default_factory=default_alert_rules)
    digest: bool = False
    stripe_dashboard_url: str = "https://dashboard.stripe.com"
    # Slack delivery: attempts per run (429/5xx/connection errors), backoff base, the longest
    # wait (a longer Retry-After leaves the alert pending for the next run), request timeout.
    slack_max_attempts: int = Field(default=3, ge=1)
    slack_backoff_seconds: float = Field(default=1.0, ge=0)
    slack_max_wait_seconds: float = Field(default=30.0, ge=0)
    slack_timeout_seconds: float = Field(default=10.0, gt=0)
    # A sender's claim on a delivery expires after this; then another worker may retake it.
    claim_lease_seconds: int = Field(default=300, ge=1)


class ScheduleSettings(_Section):
    sync_every_minutes: float = Field(default=15, gt=0)
    nightly_recompute_hour: int = Field(default=2, ge=0, le=23)
    # At most 28: every month has that day, so no month goes without its snapshot.
    snapshot_day: int = Field(default=1, ge=1, le=28)
    snapshot_hour: int = Field(default=1, ge=0, le=23)
    # `nrr status` calls the sync stale (and fails) when the last finished sync is older
    # than this many sync intervals.
    stale_after_intervals: float = Field(default=3, ge=1)


class WorkerSettings(_Section):
    """Celery worker tuning (config file ``[worker]``); defaults suit one account."""

    # A lock's lease; its holder renews it every third of this while it works.
    lock_ttl_seconds: float = Field(default=120, gt=0)
    # An unacknowledged task (its worker died) is delivered again after this (Redis broker).
    visibility_timeout_seconds: int = Field(default=7200, ge=1)
    # Time limits of the long tasks (sync, backfill, recompute); short tasks get a tenth.
    soft_time_limit_seconds: int = Field(default=3600, ge=1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    database_url: str = Field(default="sqlite:///nrr.db", alias="DATABASE_URL")
    stripe_api_key: SecretStr | None = Field(default=None, alias="STRIPE_API_KEY")
    stripe_api_base: str | None = Field(default=None, alias="STRIPE_API_BASE")
    stripe_webhook_secret: SecretStr | None = Field(default=None, alias="STRIPE_WEBHOOK_SECRET")
    redis_url: str | None = Field(default=None, alias="REDIS_URL")
    slack_webhook_url: SecretStr | None = Field(default=None, alias="SLACK_WEBHOOK_URL")
    reporting_currency: str = Field(default="usd", alias="NRR_REPORTING_CURRENCY")
    timezone: str = Field(default="UTC", alias="NRR_TIMEZONE")
    config_path: str | None = Field(default=None, alias="NRR_CONFIG")
    # Stripe rate limits (requests per second); None means "from the key's mode".
    stripe_rate_limit: float | None = Field(default=None, gt=0, alias="NRR_STRIPE_RATE_LIMIT")
    stripe_endpoint_rate_limit: float = Field(default=25.0, gt=0,
                                              alias="NRR_STRIPE_ENDPOINT_RATE_LIMIT")
    # `created` windows the backfill lists invoices in side by side; None: 4 live, 2 test.
    stripe_backfill_windows: int | None = Field(default=None, ge=1, le=16,
                                                alias="NRR_STRIPE_BACKFILL_WINDOWS")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", alias="NRR_LOG_LEVEL")
    # `text` (key=value lines for a terminal) or `json` (one object a line, for collectors).
    log_format: Literal["text", "json"] = Field(default="text", alias="NRR_LOG_FORMAT")
    # Processes of a full recompute of 5,000 customers or more; None: one per core, at
    # most 4; 0 or 1: the recompute runs in the calling process only.
    recompute_workers: int | None = Field(default=None, ge=0, alias="NRR_RECOMPUTE_WORKERS")
    # Customers per shard of the worker's full recompute: a larger account is split into
    # shards that every Celery worker (on any machine) takes part in.
    recompute_shard_customers: int = Field(default=5000, ge=1,
                                           alias="NRR_RECOMPUTE_SHARD_CUSTOMERS")
    # Path to a metric catalogue YAML replacing the shipped nrr/catalogue/metrics.yaml.
    metric_catalogue: str | None = Field(default=None, alias="NRR_METRIC_CATALOGUE")
    # The worker writes the HTML report here after each snapshot; Slack messages link to it
    # under the base URL (where a web server serves that folder).
    report_dir: str | None = Field(default=None, alias="NRR_REPORT_DIR")
    report_base_url: str | None = Field(default=None, alias="NRR_REPORT_BASE_URL")
    # `nrr dashboard` asks for this token (or this user and password) on every request.
    dashboard_token: SecretStr | None = Field(default=None, alias="NRR_DASHBOARD_TOKEN")
    dashboard_user: str | None = Field(default=None, alias="NRR_DASHBOARD_USER")
    dashboard_password: SecretStr | None = Field(default=None, alias="NRR_DASHBOARD_PASSWORD")

    # Overrides of the alert rules' thresholds (applied to every matching rule) and the digest.
    alert_nrr_threshold: float | None = Field(default=None, alias="NRR_ALERT_NRR_THRESHOLD")
    alert_t12m_threshold: float | None = Field(default=None, alias="NRR_ALERT_T12M_THRESHOLD")
    alert_grr_threshold: float | None = Field(default=None, alias="NRR_ALERT_GRR_THRESHOLD")
    alert_drop_points: float | None = Field(default=None, alias="NRR_ALERT_DROP_POINTS")
    alert_digest: bool | None = Field(default=None, alias="NRR_ALERT_DIGEST")

    policies: Policies = Field(default_factory=Policies)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)

    @model_validator(mode="after")
    def _apply_alert_overrides(self) -> Settings:
        overrides = {
            ("nrr", "monthly", "below"): self.alert_nrr_threshold,
            ("nrr", "t12m", "below"): self.alert_t12m_threshold,
            ("grr", "monthly", "below"): self.alert_grr_threshold,
            ("nrr", "monthly", "drop"): self.alert_drop_points,
            # Projected rules take the thresholds of the monthly NRR and GRR rules.
            ("nrr", "monthly", "projected"): self.alert_nrr_threshold,
            ("grr", "monthly", "projected"): self.alert_grr_threshold,
        }
        for rule in self.alerts.rules:
            value = overrides.get((rule.metric, rule.period, rule.kind))
            if value is not None:
                rule.threshold = value
        if self.alert_digest is not None:
            self.alerts.digest = self.alert_digest
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_format(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("reporting_currency")
    @classmethod
    def _lower_currency(cls, value: str) -> str:
        value = value.strip().lower()
        if len(value) != 3 or not value.isalpha():
            raise ValueError("NRR_REPORTING_CURRENCY must be a 3-letter ISO currency code")
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"NRR_TIMEZONE {value!r} is not a known IANA time zone") from exc
        return value

    @field_validator("stripe_api_key", "stripe_webhook_secret", "slack_webhook_url", "redis_url",
                     "stripe_api_base", "report_dir", "report_base_url", "dashboard_token",
                     "dashboard_user", "dashboard_password", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def stripe_livemode(self) -> bool | None:
        """True for live keys, False for test keys, None when unknown or unset."""
        if self.stripe_api_key is None:
            return None
        key = self.stripe_api_key.get_secret_value()
        if key.startswith(("sk_live_", "rk_live_")):
            return True
        if key.startswith(("sk_test_", "rk_test_")):
            return False
        return None

    _REQUIRE_HINTS = {
        "stripe_api_key": "STRIPE_API_KEY (a restricted read-only key, rk_live_... or rk_test_...; see README)",
        "stripe_webhook_secret": "STRIPE_WEBHOOK_SECRET (the endpoint's signing secret, whsec_...)",
        "redis_url": "REDIS_URL (for example redis://localhost:6379/0)",
        "slack_webhook_url": "SLACK_WEBHOOK_URL (a Slack incoming webhook URL)",
    }

    def require(self, *names: str) -> None:
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            hints = "; ".join(self._REQUIRE_HINTS.get(n, n.upper()) for n in missing)
            raise ConfigError(f"missing setting: set {hints}")

    def secret(self, name: str) -> str:
        self.require(name)
        value = getattr(self, name)
        return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


_POLICY_ENV_PREFIX = "NRR_POLICY_"
_ENV_PREFIX = "NRR_"
# NRR_* variables read by something other than these settings: the compose file's worker
# concurrency and the test suite's switch for the PostgreSQL half.
OTHER_NRR_VARIABLES = frozenset({"NRR_WORKER_CONCURRENCY", "NRR_TEST_SKIP_POSTGRES"})
# Secrets that may be given as ``<NAME>_FILE`` (a path whose content is the value).
SECRET_VARIABLES = ("STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET", "SLACK_WEBHOOK_URL",
                    "DATABASE_URL", "REDIS_URL")
FILE_SUFFIX = "_FILE"
_SECRET_FIELDS = frozenset({"stripe_api_key", "stripe_webhook_secret", "slack_webhook_url",
                            "database_url", "redis_url"})
_SECTIONS: dict[str, type[BaseModel]] = {
    "policies": Policies, "alerts": AlertSettings, "schedule": ScheduleSettings,
    "worker": WorkerSettings,
}


def _read_config_file(path: str) -> dict[str, Any]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"NRR_CONFIG points to {file}, which does not exist")
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"NRR_CONFIG file {file} is not valid TOML: {exc}") from exc


def _nearest(word: str, candidates: list[str]) -> str:
    """`` (did you mean X?)`` for the closest candidate, or the list of valid ones."""
    match = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    if not match:
        # Case and separators differ more often than letters (`churn-at`, `Churn_At`).
        folded = {c.lower().replace("-", "_"): c for c in candidates}
        near = difflib.get_close_matches(word.lower().replace("-", "_"), list(folded), n=1,
                                         cutoff=0.6)
        match = [folded[near[0]]] if near else []
    if match:
        return f" (did you mean {match[0]}?)"
    return f" (valid: {', '.join(sorted(candidates))})"


def _env_names() -> list[str]:
    names = [f.alias for f in Settings.model_fields.values() if f.alias]
    names += [_POLICY_ENV_PREFIX + name.upper() for name in Policies.model_fields]
    names += [name + FILE_SUFFIX for name in SECRET_VARIABLES]
    return names + sorted(OTHER_NRR_VARIABLES)


def _unknown_environment(env: dict[str, str]) -> list[str]:
    known = _env_names()
    return [f"unknown environment variable {key}{_nearest(key, known)}"
            for key in sorted(env) if key.startswith(_ENV_PREFIX) and key not in known]


def _unknown_file_keys(values: dict[str, Any]) -> list[str]:
    top = [name for name in Settings.model_fields if name not in _SECTIONS]
    top += [f.alias for f in Settings.model_fields.values() if f.alias]
    problems = []
    for key, value in values.items():
        section = _SECTIONS.get(key)
        if section is None:
            kind = "section" if isinstance(value, dict) else "key"
            problems.append(f"unknown {kind} {key!r} in the config file"
                            f"{_nearest(key, top + [f'[{s}]' for s in _SECTIONS])}")
            continue
        if not isinstance(value, dict):
            problems.append(f"{key!r} in the config file must be a [{key}] section")
            continue
        problems += _unknown_section_keys(key, section, value)
    return problems


def _unknown_section_keys(path: str, model: type[BaseModel], values: dict[str, Any]) -> list[str]:
    fields = list(model.model_fields)
    problems = [f"unknown key {key!r} in [{path}] of the config file{_nearest(key, fields)}"
                for key in values if key not in fields]
    if model is AlertSettings and isinstance(values.get("rules"), list):
        for index, rule in enumerate(values["rules"]):
            if isinstance(rule, dict):
                problems += _unknown_section_keys(f"alerts.rules #{index + 1}", AlertRule, rule)
    return problems


def _read_secret_files(env: dict[str, str]) -> list[str]:
    """Replace ``<NAME>_FILE`` by ``<NAME>`` (the file's content); the problems found."""
    problems = []
    for name in SECRET_VARIABLES:
        path = env.get(name + FILE_SUFFIX)
        if not path:
            continue
        if env.get(name):
            problems.append(f"both {name} and {name}{FILE_SUFFIX} are set: keep one")
            continue
        try:
            env[name] = Path(path).expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            problems.append(f"{name}{FILE_SUFFIX}: cannot read {path} ({exc.strerror})")
    return problems


def _describe_error(err: Any, names: dict[tuple[str, ...], str]) -> str:
    """One validation error as ``<the key the user wrote>: <what is wrong> (got ...)``."""
    loc = tuple(str(part) for part in err["loc"])
    name = names.get(loc[:2]) or names.get(loc[:1]) or ".".join(loc)
    if len(loc) > 2 and loc[:2] not in names:
        name = ".".join(loc)
    message = f"{name}: {err['msg']}"
    value = err.get("input")
    secret = loc[0] in _SECRET_FIELDS
    if not secret and not isinstance(value, (dict, list)) and err["type"] != "missing":
        message += f" (got {value!r})"
        if err["type"] == "literal_error" and isinstance(value, str):
            choices = re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", "")))
            near = difflib.get_close_matches(value, choices, n=1, cutoff=0.5)
            if near:
                message += f"; did you mean {near[0]!r}?"
    return message


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Build the settings from ``env`` (default ``os.environ``) and the optional config file.

    The config file (TOML) may hold ``[policies]``, ``[alerts]`` (with ``[[alerts.rules]]``),
    ``[schedule]``, ``[worker]`` and top-level keys named like the settings fields
    (``reporting_currency = "eur"``). Environment variables win over the file. Anything
    unknown or out of range raises :class:`ConfigError` naming every problem.
    """
    env = dict(os.environ if env is None else env)
    problems = _unknown_environment(env) + _read_secret_files(env)
    file_values: dict[str, Any] = {}
    config_path = env.get("NRR_CONFIG") or None
    if config_path:
        file_values = _read_config_file(config_path)
        problems += _unknown_file_keys(file_values)
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))

    # Where each value came from, to name it in an error the way the user wrote it.
    names: dict[tuple[str, ...], str] = {}
    policies: dict[str, Any] = dict(file_values.pop("policies", {}) or {})
    for key in policies:
        names[("policies", key)] = f"[policies] {key}"
    for key, value in env.items():
        if key.startswith(_POLICY_ENV_PREFIX):
            name = key[len(_POLICY_ENV_PREFIX):].lower()
            policies[name] = value
            names[("policies", name)] = key

    init: dict[str, Any] = {}
    field_by_alias = {f.alias: name for name, f in Settings.model_fields.items() if f.alias}
    for key, value in file_values.items():
        field_name = field_by_alias.get(key, key)
        init[field_name] = value
        if field_name in _SECTIONS and isinstance(value, dict):
            for inner in value:
                names[(field_name, inner)] = f"[{field_name}] {inner}"
        else:
            names[(field_name,)] = f"{key} (config file)"
    for alias, name in field_by_alias.items():
        if alias in env:
            init[name] = env[alias]
            names[(name,)] = alias
    init["policies"] = policies
    try:
        # _env_file None and explicit init values: environment was already merged above.
        return Settings.model_validate(init)
    except ValidationError as exc:
        problems = [_describe_error(err, names) for err in exc.errors()]
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from exc


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
