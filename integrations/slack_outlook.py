"""Slack Block Kit messages of the projected alert rules (``nrr.domain.outlook_alerts``):
the projection, its band and threshold, and the scheduled movements behind it."""

from __future__ import annotations

from typing import Any

from integrations.slack_messages import (
    SEVERITY_ICON,
    SlackMessage,
    escape_mrkdwn,
    fit_to_limits,
    fmt_money,
    month_title,
    truncate,
)
from nrr.domain.alerts import METRIC_LABEL, Finding, fmt_pct
from nrr.domain.outlook_alerts import ScheduledMovement

TOP_MOVEMENTS = 10
CAUSE_LABEL = {
    "scheduled_cancellation": "cancels", "schedule_phase": "schedule phase",
    "discount_end": "discount ends", "trial_end": "trial ends", "pause": "pause",
    "past_due_policy": "past due (policy)", "pending_update": "pending update",
}


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
