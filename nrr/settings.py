"""The one settings object, read from the environment and an optional config file.

Precedence (highest first): environment variables, the config file named by
``NRR_CONFIG`` (TOML), the defaults below. Secrets are ``SecretStr`` so they never
print in logs, reprs or reports.

Each command asks only for what it uses: ``settings.require("stripe_api_key")``
raises :class:`ConfigError` with the variable to set.
"""

from __future__ import annotations

import os
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConfigError(Exception):
    """A setting is missing or invalid; the message says which variable to set."""


class Policies(BaseModel):
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


class AlertRule(BaseModel):
    """One alert rule; ``segment`` is a dimension (``plan``, ``metadata:tier``) or None for the total."""

    name: str
    metric: Literal["nrr", "grr"] = "nrr"
    period: Literal["monthly", "t12m"] = "monthly"
    kind: Literal["below", "drop"] = "below"
    threshold: float = 100.0
    segment: str | None = None


def default_alert_rules() -> list[AlertRule]:
    return [
        AlertRule(name="nrr_monthly_below", metric="nrr", period="monthly", kind="below", threshold=100.0),
        AlertRule(name="nrr_t12m_below", metric="nrr", period="t12m", kind="below", threshold=100.0),
        AlertRule(name="grr_monthly_below", metric="grr", period="monthly", kind="below", threshold=90.0),
        AlertRule(name="nrr_monthly_drop", metric="nrr", period="monthly", kind="drop", threshold=5.0),
    ]


class AlertSettings(BaseModel):
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


class ScheduleSettings(BaseModel):
    sync_every_minutes: float = Field(default=15, gt=0)
    nightly_recompute_hour: int = 2
    snapshot_day: int = 1
    snapshot_hour: int = 1


class WorkerSettings(BaseModel):
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
    stripe_rate_limit: float | None = Field(default=None, alias="NRR_STRIPE_RATE_LIMIT")
    stripe_endpoint_rate_limit: float = Field(default=25.0, alias="NRR_STRIPE_ENDPOINT_RATE_LIMIT")
    # `created` windows the backfill lists invoices in side by side; None: 4 live, 2 test.
    stripe_backfill_windows: int | None = Field(default=None, ge=1, le=16,
                                                alias="NRR_STRIPE_BACKFILL_WINDOWS")
    log_level: str = Field(default="INFO", alias="NRR_LOG_LEVEL")
    # Processes of a full recompute of 5,000 customers or more; None: one per core, at
    # most 4; 0 or 1: the recompute runs in the calling process only.
    recompute_workers: int | None = Field(default=None, ge=0, alias="NRR_RECOMPUTE_WORKERS")
    # Path to a metric catalogue YAML replacing the shipped nrr/catalogue/metrics.yaml.
    metric_catalogue: str | None = Field(default=None, alias="NRR_METRIC_CATALOGUE")
    # The worker writes the HTML report here after each snapshot; Slack messages link to it
    # under the base URL (where a web server serves that folder).
    report_dir: str | None = Field(default=None, alias="NRR_REPORT_DIR")
    report_base_url: str | None = Field(default=None, alias="NRR_REPORT_BASE_URL")

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
        }
        for rule in self.alerts.rules:
            value = overrides.get((rule.metric, rule.period, rule.kind))
            if value is not None:
                rule.threshold = value
        if self.alert_digest is not None:
            self.alerts.digest = self.alert_digest
        return self

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
                     "stripe_api_base", "report_dir", "report_base_url", mode="before")
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


def _read_config_file(path: str) -> dict[str, Any]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"NRR_CONFIG points to {file}, which does not exist")
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"NRR_CONFIG file {file} is not valid TOML: {exc}") from exc


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Build the settings from ``env`` (default ``os.environ``) and the optional config file.

    The config file (TOML) may hold ``[policies]``, ``[alerts]`` (with ``[[alerts.rules]]``),
    ``[schedule]`` and top-level keys named like the settings fields
    (``reporting_currency = "eur"``). Environment variables win over the file.
    """
    env = dict(os.environ if env is None else env)
    file_values: dict[str, Any] = {}
    config_path = env.get("NRR_CONFIG") or None
    if config_path:
        file_values = _read_config_file(config_path)

    policies: dict[str, Any] = dict(file_values.pop("policies", {}) or {})
    for key, value in env.items():
        if key.startswith(_POLICY_ENV_PREFIX):
            policies[key[len(_POLICY_ENV_PREFIX):].lower()] = value

    init: dict[str, Any] = {}
    field_by_alias = {f.alias: name for name, f in Settings.model_fields.items() if f.alias}
    for key, value in file_values.items():
        if key in Settings.model_fields:
            init[key] = value
        elif key in field_by_alias:
            init[field_by_alias[key]] = value
    for alias, name in field_by_alias.items():
        if alias in env:
            init[name] = env[alias]
    init["policies"] = policies
    try:
        # _env_file None and explicit init values: environment was already merged above.
        return Settings.model_validate(init)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from exc


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
