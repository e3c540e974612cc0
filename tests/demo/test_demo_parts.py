"""The demo's own parts, without running the pipeline: rates and the environment it sets."""

from __future__ import annotations

import os
from decimal import Decimal

import pytest

from nrr.demo import DemoError, demo_environment, demo_rates, next_steps
from nrr.settings import get_settings


def test_rates_cover_every_month_and_currency_but_the_reporting_one() -> None:
    rows = demo_rates("2025-11", "2026-02", "usd", ("usd", "eur", "gbp", "jpy"))
    assert {(d, c) for d, c, _ in rows} == {
        (f"{m}-01", c) for m in ("2025-11", "2025-12", "2026-01", "2026-02")
        for c in ("eur", "gbp", "jpy")}
    eur = [Decimal(r) for _d, c, r in rows if c == "eur"]
    assert all(Decimal("1.0") < r < Decimal("1.2") for r in eur)
    assert len(set(eur)) > 1  # rates move, so the report shows FX impact


def test_rates_in_another_reporting_currency_are_cross_rates() -> None:
    rows = demo_rates("2026-01", "2026-01", "eur", ("usd", "eur", "gbp"))
    rates = {c: Decimal(r) for _d, c, r in rows}
    assert set(rates) == {"usd", "gbp"}
    assert Decimal("0.85") < rates["usd"] < Decimal("1.0")  # euros per dollar


def test_unknown_reporting_currency_is_a_clear_error() -> None:
    with pytest.raises(DemoError, match="NRR_REPORTING_CURRENCY=chf"):
        demo_rates("2026-01", "2026-02", "chf", ("usd", "eur"))


def test_environment_is_the_demos_during_the_run_and_the_users_after(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://me@db/prod")
    monkeypatch.setenv("REDIS_URL", "redis://localhost:6379/0")
    monkeypatch.setenv("NRR_POLICY_CHURN_AT", "request")
    monkeypatch.delenv("STRIPE_API_BASE", raising=False)
    with demo_environment({"DATABASE_URL": "sqlite:////tmp/demo.db",
                           "STRIPE_API_BASE": "http://127.0.0.1:1"}):
        settings = get_settings()
        assert settings.database_url == "sqlite:////tmp/demo.db"
        assert settings.redis_url is None  # no broker or Redis lock in the demo
        assert settings.policies.churn_at == "request"  # the user's policies stay
    assert os.environ["DATABASE_URL"] == "postgresql://me@db/prod"
    assert os.environ["REDIS_URL"] == "redis://localhost:6379/0"
    assert "STRIPE_API_BASE" not in os.environ
    assert get_settings().database_url == "postgresql://me@db/prod"
    get_settings.cache_clear()  # monkeypatch restores the environment after this test


def test_next_steps_name_the_report_and_the_way_to_production(tmp_path: os.PathLike[str]) -> None:
    text = "\n".join(next_steps(tmp_path / "report.html"))  # type: ignore[operator]
    for hint in ("report.html", "STRIPE_API_KEY", "nrr worker", "docker compose"):
        assert hint in text
