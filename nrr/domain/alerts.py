"""Alert rules, severity and the context of a message: plain data in, plain data out.

Rules (``nrr.settings.AlertRule``) are evaluated on one metric value of one month, in total
or for one segment:

- ``below``: fires when the value is below ``threshold`` (percent);
- ``drop``: fires when the value fell by at least ``threshold`` points since the previous
  month (no previous value: unknown, neither firing nor clear).

A null metric (empty cohort) is *unknown*: it neither fires nor clears a rule.

Severity:

- NRR (monthly or T12M, ``below`` rules) follows the bands of the definitions page on the
  unrounded value: *critical* below 90, *warning* from 90 to below 100 (concerning). A
  threshold set above 100 can fire for a value that is still 100 or more (band good or
  better): that is *info*, an early signal, not a problem yet.
- GRR: *warning* below the threshold, *critical* more than 10 points below it.
- ``drop`` rules: at least *warning* (a sharp fall deserves attention even from a good
  level), *critical* when the new NRR itself is in the critical band.

The Slack Block Kit messages built from findings live beside the Slack client, in
:mod:`integrations.slack_messages`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

from nrr.domain.metrics import band as ratio_band
from nrr.settings import AlertRule

State = Literal["firing", "clear", "unknown"]
SEVERITY_ORDER = {"info": 0, "warning": 1, "critical": 2}

METRIC_LABEL = {"nrr": "NRR", "grr": "GRR"}
PERIOD_LABEL = {"monthly": "Monthly", "t12m": "Trailing-twelve-month"}
WATERFALL = (
    ("opening_mrr", "Opening MRR", ""),
    ("new", "New", "+"),
    ("reactivation", "Reactivation", "+"),
    ("expansion", "Expansion", "+"),
    ("contraction", "Contraction", "-"),
    ("churn", "Churn", "-"),
    ("closing_mrr", "Closing MRR", ""),
)
# The T12M cohort's own waterfall: paying at the opening of M-11, seen at M's closing. It
# has no new or reactivated customers by definition.
T12M_WATERFALL = (
    ("cohort_opening_mrr", "Cohort opening MRR", ""),
    ("expansion", "Expansion", "+"),
    ("contraction", "Contraction", "-"),
    ("churn", "Churn", "-"),
    ("cohort_closing_mrr", "Cohort closing MRR", ""),
)


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Observation:
    """One metric of one month, in total (``dimension`` "") or for one segment."""

    metric: str  # nrr | grr
    period: str  # monthly | t12m
    month: str
    dimension: str
    segment: str
    value: float | None
    previous_month: str
    previous_value: float | None
    snapshot_version: int
    reason: str | None = None

    @property
    def segment_label(self) -> str:
        return f"{self.dimension}={self.segment}" if self.dimension else ""


@dataclass(frozen=True)
class Finding:
    """A rule evaluated on an observation."""

    rule: AlertRule
    observation: Observation
    state: State
    severity: str | None
    band: str | None
    summary: str

    @property
    def firing(self) -> bool:
        return self.state == "firing"


def band_of_percent(value: float | None) -> str | None:
    """The definitions page's band of a percent value (95.0 -> concerning)."""
    if value is None:
        return None
    return ratio_band(Fraction(str(value)) / 100)


def nrr_severity(value: float) -> str:
    band = band_of_percent(value)
    if band == "critical":
        return "critical"
    if band == "concerning":
        return "warning"
    return "info"


def grr_severity(value: float, threshold: float) -> str:
    return "critical" if value < threshold - 10 else "warning"


def severity_for(rule: AlertRule, value: float) -> str:
    if rule.kind == "drop":
        level = nrr_severity(value) if rule.metric == "nrr" else grr_severity(value, 90.0)
        return level if SEVERITY_ORDER[level] > SEVERITY_ORDER["warning"] else "warning"
    if rule.metric == "grr":
        return grr_severity(value, rule.threshold)
    return nrr_severity(value)


def evaluate_rule(rule: AlertRule, observation: Observation) -> Finding:
    """Whether ``rule`` fires on ``observation``, with severity, band and a one-line summary."""
    label = f"{PERIOD_LABEL[observation.period]} {METRIC_LABEL[observation.metric]}"
    value = observation.value
    band = band_of_percent(value)
    if value is None:
        reason = observation.reason or "no value"
        return Finding(rule, observation, "unknown", None, None, f"{label}: {reason}")
    if rule.kind == "below":
        if value < rule.threshold:
            return Finding(rule, observation, "firing", severity_for(rule, value), band,
                           f"{label} {fmt_pct(value)} is below {fmt_pct(rule.threshold)}")
        return Finding(rule, observation, "clear", None, band,
                       f"{label} {fmt_pct(value)} is at or above {fmt_pct(rule.threshold)}")
    previous = observation.previous_value
    if previous is None:
        return Finding(rule, observation, "unknown", None, band,
                       f"{label} {fmt_pct(value)}: no value for {observation.previous_month} "
                       "to compare with")
    drop = previous - value
    if drop >= rule.threshold:
        return Finding(rule, observation, "firing", severity_for(rule, value), band,
                       f"{label} fell {fmt_points(drop)} from {fmt_pct(previous)} to "
                       f"{fmt_pct(value)} (alert at {fmt_points(rule.threshold)})")
    return Finding(rule, observation, "clear", None, band,
                   f"{label} {fmt_pct(value)} moved {fmt_points(-drop)} from {fmt_pct(previous)}")


# --------------------------------------------------------------------------- message context


@dataclass(frozen=True)
class CustomerMovement:
    """One churned or contracted customer of the month; ``amount`` in major units."""

    customer_id: str
    label: str | None
    amount: float
    movement: str
    causes: tuple[str, ...] = ()
    livemode: bool | None = None


@dataclass(frozen=True)
class MessageContext:
    """Everything around the metric a message shows: waterfall, top customers, policies."""

    month: str
    currency: str
    waterfall: dict[str, float | None]
    churned: list[CustomerMovement] = field(default_factory=list)
    churned_total: int = 0
    contracted: list[CustomerMovement] = field(default_factory=list)
    contracted_total: int = 0
    policies: dict[str, Any] = field(default_factory=dict)
    dashboard_url: str = "https://dashboard.stripe.com"
    test_mode: bool = False
    snapshot_version: int = 0
    # Customers left out of the numbers (their history could not be computed).
    left_out: int = 0
    report_url: str | None = None
    # "t12m": the waterfall and customers are the T12M cohort's, from first_month to month.
    period: str = "monthly"
    first_month: str | None = None


# --------------------------------------------------------------------------- formatting


def fmt_pct(value: float | None) -> str:
    if value is None:
        return "n/a"
    text = f"{value:,.3f}".rstrip("0").rstrip(".")
    return f"{text}%"


def fmt_points(value: float) -> str:
    return f"{value:,.3f}".rstrip("0").rstrip(".") + " points"
