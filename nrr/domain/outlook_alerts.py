"""Projected alerts: the outlook's NRR or GRR of the current or next month below a threshold.

A ``projected`` rule (``nrr.settings.AlertRule`` with ``kind="projected"``) is a ``below``
rule on the outlook's committed projection. It fires once per change of the projection:
the message's key carries a fingerprint of the projected value and of the scheduled
movements behind it, so the same projection seen by every recompute plans one message,
and a changed one (another cancellation, a larger one) plans a new one. When the rule is
clear again after an alert (a scheduled cancellation was undone), one recovery message
says so. Plain data in, plain data out; the Slack messages are built in
``integrations.slack_outlook`` beside the other Block Kit messages.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

from nrr.domain.alerts import (
    METRIC_LABEL,
    Finding,
    Observation,
    evaluate_rule,
)
from nrr.settings import AlertRule


@dataclass(frozen=True)
class ScheduledMovement:
    """One scheduled change behind a projection; ``amount`` in major units, signed."""

    customer_id: str
    label: str | None
    effective_at: str  # ISO date-time
    amount: float
    cause: str


def fingerprint(value: float | None, movements: list[ScheduledMovement]) -> int:
    """A stable positive int naming one projection (value and the movements behind it)."""
    text = repr((value, sorted((m.customer_id, m.effective_at, m.amount, m.cause) for m in movements)))
    return int(hashlib.sha256(text.encode()).hexdigest()[:7], 16)


def evaluate_projected(rule: AlertRule, observation: Observation) -> Finding:
    """A ``projected`` rule is a ``below`` rule on the projected value."""
    finding = evaluate_rule(rule.model_copy(update={"kind": "below"}), observation)
    label = f"Projected {METRIC_LABEL[observation.metric]}"
    summary = finding.summary.replace(f"Monthly {METRIC_LABEL[observation.metric]}", label, 1)
    return replace(finding, rule=rule, summary=summary)
