"""The metric catalogue: shipped with the package, overridable, validated, shown in reports."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from models.derived import RecomputeRun
from nrr.catalogue import REQUIRED_FIELDS, load_catalogue, parse_catalogue
from nrr.services.report import COHORT_DEFINITIONS, MONTHLY_DEFINITIONS, T12M_DEFINITIONS
from nrr.settings import ConfigError, Policies, load_settings
from tests.report.conftest import CliResult, fact

OVERRIDE = """
metrics:
  - name: nrr
    description: Our NRR.
    formula: closing of the cohort / opening of the cohort x 100
    cohort: paying at the opening
    period: monthly
    dimensions: [plan]
    owner: revenue-ops@example.com
"""


def test_shipped_catalogue_defines_every_metric_the_reports_show() -> None:
    catalogue = load_catalogue(load_settings({}))
    for name in (*MONTHLY_DEFINITIONS, *T12M_DEFINITIONS, *COHORT_DEFINITIONS):
        definition = catalogue.get(name)
        assert definition is not None, name
        for field in REQUIRED_FIELDS:
            assert getattr(definition, field) is not None, (name, field)
    assert catalogue.get("nrr_t12m").period == "t12m"  # type: ignore[union-attr]
    assert "metadata:KEY" in catalogue.get("nrr").dimensions  # type: ignore[union-attr]


def test_catalogue_ships_as_package_data() -> None:
    root = Path(__file__).resolve().parents[2]
    text = (root / "pyproject.toml").read_text()
    assert '"*.yaml"' in text  # setuptools package-data pattern covers nrr/catalogue/metrics.yaml
    assert (root / "nrr" / "catalogue" / "metrics.yaml").is_file()


def test_override_file_is_used_by_reports(tmp_path: Path, add_facts: Callable[..., None],
                                          run_cli: Callable[..., CliResult]) -> None:
    path = tmp_path / "catalogue.yaml"
    path.write_text(OVERRIDE)
    add_facts([fact("2026-03", "cus_1", 100, 110)])
    result = run_cli("report", "--month", "2026-03", "--format", "json",
                     env={"NRR_METRIC_CATALOGUE": str(path)})
    assert result.exit_code == 0, result.stderr
    definitions = result.json()["definitions"]
    assert definitions == {"nrr": {
        "name": "nrr", "description": "Our NRR.",
        "formula": "closing of the cohort / opening of the cohort x 100",
        "cohort": "paying at the opening", "period": "monthly", "dimensions": ["plan"],
        "owner": "revenue-ops@example.com"}}


@pytest.mark.parametrize(("text", "message"), [
    ("metrics: [", "not valid YAML"),
    ("other: 1", "top-level 'metrics' list"),
    ("metrics:\n  - name: nrr\n    description: x\n", "lacks formula, cohort, period"),
    (OVERRIDE.replace("monthly", "weekly"), "period 'weekly'"),
    (OVERRIDE + OVERRIDE.split("metrics:")[1], "defined twice"),
])
def test_bad_catalogue_is_a_clear_configuration_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_catalogue(text, "custom.yaml")


def test_bad_or_missing_override_exits_2(tmp_path: Path, add_facts: Callable[..., None],
                                         run_cli: Callable[..., CliResult]) -> None:
    add_facts([fact("2026-03", "cus_1", 100, 110)])
    missing = run_cli("report", "--month", "2026-03", "--format", "json",
                      env={"NRR_METRIC_CATALOGUE": str(tmp_path / "nope.yaml")})
    assert missing.exit_code == 2 and "nope.yaml" in missing.stderr and missing.stdout == ""
    bad = tmp_path / "bad.yaml"
    bad.write_text("metrics: 5")
    broken = run_cli("report", "--month", "2026-03", "--format", "json",
                     env={"NRR_METRIC_CATALOGUE": str(bad)})
    assert broken.exit_code == 2 and "bad.yaml" in broken.stderr


def test_policies_in_force_are_stated(add_facts: Callable[..., None],
                                      run_cli: Callable[..., CliResult]) -> None:
    add_facts([fact("2026-03", "cus_1", 100, 110)])
    result = run_cli("report", "--month", "2026-03", "--format", "json",
                     env={"NRR_POLICY_CHURN_AT": "request", "NRR_POLICY_DISCOUNTS": "none",
                          "NRR_REPORTING_CURRENCY": "eur", "NRR_TIMEZONE": "Europe/Berlin"})
    report = result.json()
    assert report["policies"]["churn_at"] == "request"
    assert report["policies"]["discounts"] == "none"
    assert report["policies"]["reporting_currency"] == "eur"
    assert report["policies"]["timezone"] == "Europe/Berlin"
    assert report["currency"] == "eur"


def test_report_says_when_facts_were_computed_under_other_policies(
        add_facts: Callable[..., None], db_engine: Engine,
        run_cli: Callable[..., CliResult]) -> None:
    add_facts([fact("2026-03", "cus_1", 100, 110)])
    with Session(db_engine) as session:
        session.add(RecomputeRun(kind="full", finished_at=datetime.now(UTC),
                                 policies={**Policies().as_dict(), "churn_at": "request"},
                                 reporting_currency="usd", timezone="UTC"))
        session.commit()
    stale = run_cli("report", "--month", "2026-03", "--format", "json").json()
    assert any("churn_at" in note and "nrr recompute" in note for note in stale["notes"])
    current = run_cli("report", "--month", "2026-03", "--format", "json",
                      env={"NRR_POLICY_CHURN_AT": "request"}).json()
    assert "notes" not in current


def test_every_report_command_and_option_has_help() -> None:
    import typer.main

    from nrr.cli import app

    group = typer.main.get_command(app)
    for name in ("report", "cohorts", "customer"):
        command = group.commands[name]  # type: ignore[attr-defined]
        assert command.help, name
        for param in command.params:
            assert getattr(param, "help", None), (name, param.name)
