"""Projected alerts: the outlook's NRR or GRR of the current or next month below a threshold.

A ``projected`` rule (``nrr.settings.AlertRule`` with ``kind="projected"``) is a ``below``
rule on the outlook's committed projection. It fires once per change of the projection:
the message's key carries a fingerprint of the projected value and of the scheduled
movements behind it, so the same projection seen by every recompute plans one message,
and a changed one (another cancellation, a larger one) plans a new one. When the rule is
clear again after an alert (a scheduled cancellation was undone), one recovery message
says so. Plain data in, plain data out (Slack Block Kit built here like the other alerts).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

from nrr.domain.alerts import (
    METRIC_LABEL,
    SEVERITY_ICON,
    Finding,
    Observation,
    SlackMessage,
    escape_mrkdwn,
    evaluate_rule,
    fit_to_limits,
    fmt_money,
    fmt_pct,
    month_title,
    truncate,
)
from nrr.settings import AlertRule

TOP_MOVEMENTS = 10
CAUSE_LABEL = {
    "scheduled_cancellation": "cancels", "schedule_phase": "schedule phase",
    "discount_end": "discount ends", "trial_end": "trial ends", "pause": "pause",
    "past_due_policy": "past due (policy)", "pending_update": "pending update",
}


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


def _movement_lines(movements: list[ScheduledMovement], currency: str) -> list[str]:
    down = sorted((m for m in movements if m.amount < 0), key=lambda m: (m.amount, m.customer_id))
    shown = down[:TOP_MOVEMENTS]
    if not shown:
        return ["No scheduled churn or contraction (the projection moved by what already happened)."]
    lines = [f"*Scheduled movements behind it* (largest {len(shown)} of {len(down):,}):"]
    for m in shown:
        who = escape_mrkdwn(truncate(" ".join((m.label or m.customer_id).split()), 80))
        lines.append(f"• {who} — {fmt_money(m.amount, currency)} on {m.effective_at[:10]} — "
                     f"{CAUSE_LABEL.get(m.cause, m.cause)}")
    if len(down) > len(shown):
        lines.append(f"_and {len(down) - len(shown):,} more_")
    return lines


def _lines(finding: Finding, taken_at: str) -> list[str]:
    obs = finding.observation
    scope = f"segment *{escape_mrkdwn(obs.segment_label)}*" if obs.dimension else "all customers"
    return [
        f"*Projected {METRIC_LABEL[obs.metric]}* for *{month_title(obs.month)}* ({scope}): "
        f"*{fmt_pct(obs.value)}*, band *{finding.band or 'n/a'}*, unless something changes.",
        f"From what Stripe already has scheduled (outlook taken {taken_at}); threshold "
        f"{fmt_pct(finding.rule.threshold)} (rule `{escape_mrkdwn(finding.rule.name)}`).",
    ]


def build_projected_alert(finding: Finding, movements: list[ScheduledMovement], currency: str,
                          taken_at: str) -> SlackMessage:
    obs = finding.observation
    severity = finding.severity or "warning"
    scope = f" ({obs.segment_label})" if obs.dimension else ""
    header = f"Projected {METRIC_LABEL[obs.metric]} below {fmt_pct(finding.rule.threshold)} — {obs.month}{scope}"
    text = "\n".join([f"{SEVERITY_ICON.get(severity, '')} *{severity.upper()}*: "
                      f"{escape_mrkdwn(finding.summary)}", *_lines(finding, taken_at)])
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        {"type": "section", "text": {"type": "mrkdwn",
                                     "text": "\n".join(_movement_lines(movements, currency))}},
    ]
    return fit_to_limits(SlackMessage(f"[{severity}] {finding.summary} — {obs.month}{scope} (outlook)",
                                      blocks))


def build_projected_recovery(finding: Finding, movements: list[ScheduledMovement], currency: str,
                             taken_at: str) -> SlackMessage:
    obs = finding.observation
    scope = f" ({obs.segment_label})" if obs.dimension else ""
    header = (f"Recovered: projected {METRIC_LABEL[obs.metric]} back at or above "
              f"{fmt_pct(finding.rule.threshold)} — {obs.month}{scope}")
    text = "\n".join([f":white_check_mark: *RECOVERED*: {escape_mrkdwn(finding.summary)} "
                      "(a scheduled change was undone).", *_lines(finding, taken_at)])
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        {"type": "section", "text": {"type": "mrkdwn",
                                     "text": "\n".join(_movement_lines(movements, currency))}},
    ]
    return fit_to_limits(SlackMessage(f"[recovered] {finding.summary} — {obs.month}{scope} (outlook)",
                                      blocks))
