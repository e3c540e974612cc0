"""Rule evaluation and severity (pure), and the settings that configure the rules."""

from __future__ import annotations

import pytest

from nrr.domain.alerts import Observation, band_of_percent, evaluate_rule, severity_for
from nrr.settings import AlertRule, load_settings


def observe(value: float | None, previous: float | None = 100.0, metric: str = "nrr") -> Observation:
    return Observation(metric, "monthly", "2026-10", "", "", value, "2026-09", previous, 1,
                       reason=None if value is not None else "the cohort is empty")


@pytest.mark.parametrize(("value", "state", "severity"), [
    (100.0, "clear", None),       # at the threshold is not below it
    (99.999, "firing", "warning"),  # concerning band
    (90.0, "firing", "warning"),
    (89.999, "firing", "critical"),  # critical band
    (0.0, "firing", "critical"),
])
def test_nrr_below_threshold_follows_the_bands(value: float, state: str,
                                               severity: str | None) -> None:
    finding = evaluate_rule(AlertRule(name="nrr", threshold=100), observe(value))
    assert (finding.state, finding.severity) == (state, severity)


def test_nrr_threshold_above_100_fires_as_info_while_still_good() -> None:
    rule = AlertRule(name="nrr", threshold=105)
    assert evaluate_rule(rule, observe(102.0)).severity == "info"
    assert evaluate_rule(rule, observe(102.0)).band == "good"
    assert evaluate_rule(rule, observe(97.0)).severity == "warning"


@pytest.mark.parametrize(("value", "state", "severity"), [
    (90.0, "clear", None),
    (85.0, "firing", "warning"),
    (80.0, "firing", "warning"),      # exactly 10 points below: still a warning
    (79.999, "firing", "critical"),   # more than 10 points below
])
def test_grr_severity(value: float, state: str, severity: str | None) -> None:
    finding = evaluate_rule(AlertRule(name="grr", metric="grr", threshold=90), observe(value, metric="grr"))
    assert (finding.state, finding.severity) == (state, severity)


def test_drop_rule_compares_with_the_previous_month() -> None:
    rule = AlertRule(name="drop", kind="drop", threshold=5)
    assert evaluate_rule(rule, observe(125.0, previous=130.0)).state == "firing"
    assert evaluate_rule(rule, observe(125.0, previous=130.0)).severity == "warning"
    assert evaluate_rule(rule, observe(85.0, previous=95.0)).severity == "critical"
    assert evaluate_rule(rule, observe(125.001, previous=130.0)).state == "clear"
    assert evaluate_rule(rule, observe(140.0, previous=130.0)).state == "clear"
    assert evaluate_rule(rule, observe(125.0, previous=None)).state == "unknown"


def test_a_null_metric_neither_fires_nor_clears() -> None:
    finding = evaluate_rule(AlertRule(name="nrr", threshold=100), observe(None))
    assert finding.state == "unknown" and "cohort is empty" in finding.summary


def test_bands_of_the_definitions_page() -> None:
    assert [band_of_percent(v) for v in (130, 129.999, 110, 100, 99.999, 90, 89.999)] == [
        "exceptional", "strong", "strong", "good", "concerning", "concerning", "critical"]
    assert severity_for(AlertRule(name="x", threshold=100), 95.0) == "warning"


def test_default_rules_and_environment_overrides() -> None:
    defaults = {(r.metric, r.period, r.kind): r.threshold for r in load_settings({}).alerts.rules}
    assert defaults == {("nrr", "monthly", "below"): 100, ("nrr", "t12m", "below"): 100,
                        ("grr", "monthly", "below"): 90, ("nrr", "monthly", "drop"): 5,
                        ("nrr", "monthly", "projected"): 100, ("grr", "monthly", "projected"): 90}
    settings = load_settings({"NRR_ALERT_NRR_THRESHOLD": "102", "NRR_ALERT_T12M_THRESHOLD": "98",
                              "NRR_ALERT_GRR_THRESHOLD": "85", "NRR_ALERT_DROP_POINTS": "3",
                              "NRR_ALERT_DIGEST": "true"})
    thresholds = {(r.metric, r.period, r.kind): r.threshold for r in settings.alerts.rules}
    assert thresholds == {("nrr", "monthly", "below"): 102, ("nrr", "t12m", "below"): 98,
                          ("grr", "monthly", "below"): 85, ("nrr", "monthly", "drop"): 3,
                          ("nrr", "monthly", "projected"): 102, ("grr", "monthly", "projected"): 85}
    assert settings.alerts.digest is True


def test_customer_links_point_at_the_dashboard_of_the_customer_mode() -> None:
    from integrations.slack_messages import customer_url
    from nrr.domain.alerts import CustomerMovement, MessageContext

    ctx = MessageContext(month="2026-10", currency="usd", waterfall={},
                         dashboard_url="https://dashboard.stripe.com/", test_mode=False)
    live = CustomerMovement("cus_live", None, 1.0, "churn", livemode=True)
    test = CustomerMovement("cus_test", None, 1.0, "churn", livemode=False)
    unknown = CustomerMovement("cus_unknown", None, 1.0, "churn")
    assert customer_url(ctx, live) == "https://dashboard.stripe.com/customers/cus_live"
    assert customer_url(ctx, test) == "https://dashboard.stripe.com/test/customers/cus_test"
    assert customer_url(ctx, unknown) == "https://dashboard.stripe.com/customers/cus_unknown"
    test_key = MessageContext(month="2026-10", currency="usd", waterfall={}, test_mode=True)
    assert customer_url(test_key, unknown).endswith("/test/customers/cus_unknown")
