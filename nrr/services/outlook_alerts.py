"""Projected alert rules on the stored outlook (see :mod:`nrr.domain.outlook_alerts`).

Planned with the other rules by ``nrr.services.alerts.plan_messages`` (so after every
recompute: recompute -> snapshot -> alerts) and delivered by the same exactly-once
machinery. The current month and the next one are evaluated. The delivery key's version
is the projection's fingerprint: one message per change of the projection.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from integrations.slack_outlook import build_projected_alert, build_projected_recovery
from models.derived import AlertDelivery
from models.mirror import StripeCustomer
from models.outlook import OutlookMonth
from nrr.domain.alerts import Finding, Observation
from nrr.domain.months import add_months
from nrr.domain.outlook_alerts import ScheduledMovement, evaluate_projected, fingerprint
from nrr.logs import get_logger
from nrr.settings import AlertRule, Settings

log = get_logger(__name__)

MONTHS_EVALUATED = 2  # the current month and the next one


def _last_kind(session: Session, rule: str, segment: str, month: str) -> str | None:
    row = session.execute(
        select(AlertDelivery.kind).where(
            AlertDelivery.rule == rule, AlertDelivery.segment == segment,
            AlertDelivery.month == month, AlertDelivery.kind.in_(("alert", "recovery")))
        .order_by(AlertDelivery.id.desc()).limit(1)).first()
    return None if row is None else str(row[0])


def _segment_customers(session: Session, dimension: str, segment: str, month: str) -> set[str]:
    from nrr.services.report import NO_SEGMENT, segment_column

    column = segment_column(dimension, OutlookMonth)
    query = select(OutlookMonth.customer_id).where(OutlookMonth.month == month)
    query = query.where(column.is_(None) | (column == "")) if segment == NO_SEGMENT \
        else query.where(column == segment)
    return set(session.scalars(query))


def plan_projected(session: Session, settings: Settings) -> tuple[list[Finding], list[Any]]:
    """(findings, planned messages) of every ``projected`` rule; nothing when no outlook."""
    from nrr.services.alert_plan import PlannedMessage, _dedupe_key
    from nrr.services.outlook import OutlookUnavailable, outlook_report
    from nrr.services.report import parse_dimension

    rules: list[AlertRule] = [r for r in settings.alerts.rules if r.kind == "projected"]
    findings: list[Finding] = []
    messages: list[PlannedMessage] = []
    if not rules:
        return findings, messages
    documents: dict[str, dict[str, Any]] = {}
    labels: dict[str, str | None] = {}
    for rule in rules:
        try:
            dimension = parse_dimension(rule.segment) or ""
        except ValueError as exc:
            log.warning("alerts.rule_skipped", rule=rule.name, reason=str(exc))
            continue
        if dimension not in documents:
            try:
                documents[dimension] = outlook_report(session, settings, months=MONTHS_EVALUATED,
                                                      by=dimension or None)
            except OutlookUnavailable:
                return findings, messages
        document = documents[dimension]
        currency = document["reporting_currency"]
        for month_doc in document["months"][:MONTHS_EVALUATED]:
            month = month_doc["month"]
            segments = ({"": month_doc} if not dimension
                        else {str(s["segment"]): s for s in month_doc.get("segments", [])})
            for segment, values in sorted(segments.items()):
                members = _segment_customers(session, dimension, segment, month) if dimension else None
                moves = [m for m in document["movements"]
                         if m["month"] == month and m["bound"] == "committed"
                         and (members is None or m["customer_id"] in members)]
                missing = [m["customer_id"] for m in moves if m["customer_id"] not in labels]
                if missing:
                    for cid, name, email in session.execute(select(
                            StripeCustomer.id, StripeCustomer.name, StripeCustomer.email)
                            .where(StripeCustomer.id.in_(missing))):
                        labels[cid] = name or email
                movements = [ScheduledMovement(m["customer_id"], labels.get(m["customer_id"]),
                                               m["effective_at"], float(m["amount"]), m["cause"])
                             for m in moves]
                value = values.get(rule.metric)
                version = fingerprint(value, movements)
                observation = Observation(
                    metric=rule.metric, period="monthly", month=month, dimension=dimension,
                    segment=segment, value=None if value is None else float(value),
                    previous_month=add_months(month, -1), previous_value=None,
                    snapshot_version=version, reason=values.get(f"{rule.metric}_reason"))
                finding = evaluate_projected(rule, observation)
                findings.append(finding)
                segment_key = observation.segment_label[:255]
                if finding.firing:
                    message = build_projected_alert(finding, movements, currency, document["taken_at"])
                    kind = "alert"
                elif finding.state == "clear" and _last_kind(session, rule.name, segment_key, month) == "alert":
                    message = build_projected_recovery(finding, movements, currency, document["taken_at"])
                    kind = "recovery"
                else:
                    continue
                messages.append(PlannedMessage(
                    _dedupe_key(kind, rule.name, segment_key, month, version), kind, rule.name,
                    month, segment_key, version, finding.severity if kind == "alert" else "info",
                    finding.summary, message.as_payload()))
    return findings, messages
