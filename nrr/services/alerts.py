"""Alert evaluation and exactly-once Slack delivery.

Evaluation reads the month's retention snapshots (``retention_snapshots``, latest version
per month, period, dimension and segment), falling back to ``nrr.services.report`` when a
month, period or dimension has no snapshot (version 0 in the delivery key then). Each rule
of ``settings.alerts.rules`` is evaluated by :mod:`nrr.domain.alerts`; a firing rule plans
an *alert*, a rule that is clear again after an alert plans one *recovery*, and with
``settings.alerts.digest`` a *digest* is planned for the month whatever the thresholds.

Exactly once. Every planned message has a ``dedupe_key`` (kind, rule, segment, month,
snapshot version) and becomes an ``alert_deliveries`` row through an insert that does
nothing on conflict, so re-runs, task retries and concurrent workers plan each message
once. Delivery then claims a row with one atomic
``UPDATE ... SET status='sending', attempts=attempts+1, claimed_until=now+lease WHERE
id=? AND (status='pending' OR (status='sending' AND claimed_until < now))``: only one
worker wins; the claim's ``attempts`` value is its fencing token, so a sender whose lease
expired cannot overwrite the row of the worker that retook it. After Slack answered, the
row becomes ``sent``; a failure puts it back to ``pending`` with ``last_error`` (never
dropped: the next run sends it); with no webhook URL the message is printed and the row
becomes ``printed``. An invalid webhook URL is a configuration error raised before any row
is stored or claimed, so the alerts stay pending until a valid destination has them.
A worker killed between Slack's answer and the ``sent`` update leaves a ``sending`` row
whose lease expires; it is then sent again (at-least-once in that one crash window).

This service takes an engine or a session factory rather than a session, because the
claim must be committed before the message goes out and the result after: each step is
its own short transaction.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from integrations.slack import SlackConfigError, SlackWebhook, webhook_from_settings
from integrations.slack_messages import (
    SlackMessage,
    build_alert_message,
    build_digest_message,
    build_recovery_message,
    build_test_message,
    render_text,
)
from models.derived import AlertDelivery, RetentionSnapshot
from models.mirror import StripeCustomer
from nrr.db import session_scope
from nrr.domain.alerts import (
    T12M_WATERFALL,
    WATERFALL,
    CustomerMovement,
    Finding,
    MessageContext,
    Observation,
    evaluate_rule,
)
from nrr.domain.months import add_months, current_month
from nrr.logs import get_logger
from nrr.services.alert_plan import PlannedMessage, _dedupe_key
from nrr.services.report_files import report_url
from nrr.settings import AlertRule, ConfigError, Settings

log = get_logger(__name__)

SessionSource = Engine | sessionmaker[Session]
Printer = Callable[[str], None]


class AlertError(Exception):
    """Alerts cannot be evaluated (the message says why)."""


# --------------------------------------------------------------------------- results


@dataclass
class DeliveryResult:
    sent: list[str] = field(default_factory=list)
    printed: list[str] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)  # still pending, with the error
    busy: list[str] = field(default_factory=list)  # claimed by another worker

    def as_dict(self) -> dict[str, Any]:
        return {"sent": self.sent, "printed": self.printed, "failed": self.failed,
                "busy": self.busy}


@dataclass
class AlertRunResult:
    month: str
    findings: list[Finding] = field(default_factory=list)
    messages: list[PlannedMessage] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    delivery: DeliveryResult | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self, *, with_payload: bool = False) -> dict[str, Any]:
        return {
            "month": self.month,
            "findings": [finding_dict(f) for f in self.findings],
            "messages": [m.as_dict(with_payload=with_payload) for m in self.messages],
            "created": self.created,
            "delivery": self.delivery.as_dict() if self.delivery else None,
            "notes": self.notes,
        }


def finding_dict(finding: Finding) -> dict[str, Any]:
    obs = finding.observation
    return {
        "rule": finding.rule.name, "metric": obs.metric, "period": obs.period,
        "month": obs.month, "segment": obs.segment_label, "value": obs.value,
        "previous_month": obs.previous_month, "previous_value": obs.previous_value,
        "threshold": finding.rule.threshold, "kind": finding.rule.kind,
        "state": finding.state, "severity": finding.severity, "band": finding.band,
        "snapshot_version": obs.snapshot_version, "summary": finding.summary,
    }


# --------------------------------------------------------------------------- sessions


def _factory(source: SessionSource) -> sessionmaker[Session]:
    if isinstance(source, Engine):
        return sessionmaker(bind=source, expire_on_commit=False)
    return source


def _utcnow() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- metric documents


@dataclass(frozen=True)
class _Doc:
    version: int  # 0 = computed by the report service, no snapshot
    metrics: dict[str, Any]
    policies: dict[str, Any]


class _Documents:
    """Report documents per (month, period, dimension): snapshots first, else the report."""

    def __init__(self, session: Session, settings: Settings, now: datetime | None) -> None:
        self.session = session
        self.settings = settings
        self.now = now
        self._cache: dict[tuple[str, str, str], dict[str, _Doc]] = {}

    def get(self, month: str, period: str, dimension: str) -> dict[str, _Doc]:
        key = (month, period, dimension)
        if key not in self._cache:
            self._cache[key] = (self._from_snapshots(month, period, dimension)
                                or self._from_report(month, period, dimension))
        return self._cache[key]

    def _from_snapshots(self, month: str, period: str, dimension: str) -> dict[str, _Doc]:
        rows = self.session.execute(
            select(RetentionSnapshot.segment, RetentionSnapshot.version,
                   RetentionSnapshot.metrics, RetentionSnapshot.policies)
            .where(RetentionSnapshot.month == month, RetentionSnapshot.period == period,
                   RetentionSnapshot.dimension == dimension)
            .order_by(RetentionSnapshot.version)
        ).all()
        found: dict[str, _Doc] = {}
        for segment, version, metrics, policies in rows:  # ascending: the latest version wins
            metrics = dict(metrics or {})
            found[segment or ""] = _Doc(int(version), metrics,
                                        dict(policies or metrics.get("policies") or {}))
        return found

    def _from_report(self, month: str, period: str, dimension: str) -> dict[str, _Doc]:
        from nrr.services.report import monthly_report

        document = monthly_report(self.session, self.settings, month, period=period,
                                  by=dimension or None, now=self.now)
        policies = dict(document.get("policies") or {})
        if not dimension:
            return {"": _Doc(0, document, policies)}
        return {str(seg["segment"]): _Doc(0, seg, policies)
                for seg in document.get("segments") or []}


def default_month(session: Session, settings: Settings, now: datetime | None = None) -> str:
    """The last closed month with a snapshot, else the last closed month."""
    current = current_month(settings.tz, now)
    latest = session.execute(
        select(func.max(RetentionSnapshot.month)).where(RetentionSnapshot.month < current)
    ).scalar_one_or_none()
    return str(latest) if latest else add_months(current, -1)


# --------------------------------------------------------------------------- context


def _causes(entries: Sequence[Any]) -> tuple[str, ...]:
    """The ledger causes that took MRR down (all causes when none did), in order, once each."""
    items = [e for e in entries if isinstance(e, dict)]
    down = [e for e in items if (e.get("change") or 0) < 0] or items
    seen: list[str] = []
    for entry in down:
        cause = str(entry.get("cause") or "")
        if cause and cause not in seen:
            seen.append(cause)
    return tuple(seen)


class _Contexts:
    def __init__(self, session: Session, settings: Settings, documents: _Documents) -> None:
        self.session = session
        self.settings = settings
        self.documents = documents
        self._cache: dict[tuple[str, str, str, str], MessageContext] = {}

    def get(self, month: str, dimension: str, segment: str, version: int,
            period: str = "monthly") -> MessageContext:
        key = (month, dimension, segment, period)
        if key not in self._cache:
            self._cache[key] = (self._build_t12m(month, dimension, segment) if period == "t12m"
                                else self._build(month, dimension, segment))
        ctx = self._cache[key]
        return replace(ctx, snapshot_version=version)

    def _livemode(self, items: list[dict[str, Any]]) -> dict[str, bool | None]:
        ids = [str(item["customer_id"]) for item in items]
        return dict(self.session.execute(
            select(StripeCustomer.id, StripeCustomer.livemode).where(StripeCustomer.id.in_(ids))
        ).all()) if ids else {}

    def _build_t12m(self, month: str, dimension: str, segment: str) -> MessageContext:
        """A T12M message tells the T12M story: the cohort paying at the opening of M-11,
        its own waterfall to M's closing, and its churned and contracted customers over
        those twelve months (not the month's)."""
        from nrr.services.report import policies_in_force, t12m_movers

        settings = self.settings
        doc = self.documents.get(month, "t12m", dimension).get(segment)
        metrics = doc.metrics if doc else {}
        waterfall = {key: metrics.get(key) for key, _label, _sign in T12M_WATERFALL}
        seg = segment if dimension else None
        dim = dimension or None
        churned, churned_total = t12m_movers(self.session, settings, month, kind="churn",
                                             limit=5, dimension=dim, segment=seg)
        contracted, contracted_total = t12m_movers(self.session, settings, month,
                                                   kind="contraction", limit=5,
                                                   dimension=dim, segment=seg)
        livemode = self._livemode(churned + contracted)

        def movement(item: dict[str, Any]) -> CustomerMovement:
            return _customer_movement(item, livemode)

        policies = (doc.policies if doc and doc.policies else policies_in_force(settings))
        from nrr.services.isolation import left_out_count

        return MessageContext(
            month=month, currency=str(metrics.get("currency") or settings.reporting_currency),
            waterfall=waterfall, period="t12m", first_month=add_months(month, -11),
            left_out=left_out_count(self.session),
            churned=[movement(i) for i in churned], churned_total=churned_total,
            contracted=[movement(i) for i in contracted], contracted_total=contracted_total,
            policies=policies, dashboard_url=settings.alerts.stripe_dashboard_url,
            test_mode=settings.stripe_livemode is False,
            report_url=report_url(settings, month),
        )

    def _build(self, month: str, dimension: str, segment: str) -> MessageContext:
        from nrr.services.report import month_totals, policies_in_force, top_movements

        settings = self.settings
        doc = self.documents.get(month, "monthly", dimension).get(segment)
        metrics = doc.metrics if doc else {}
        waterfall = {key: metrics.get(key) for key, _label, _sign in WATERFALL}
        seg = segment if dimension else None
        dim = dimension or None
        churned = top_movements(self.session, settings, month, kinds=("churn",), limit=5,
                                dimension=dim, segment=seg)
        contracted = top_movements(self.session, settings, month, kinds=("contraction",),
                                   limit=5, dimension=dim, segment=seg)
        totals = month_totals(self.session, month, dimension=dim).get((month, seg))
        livemode = self._livemode(churned + contracted)

        def movement(item: dict[str, Any]) -> CustomerMovement:
            return _customer_movement(item, livemode)

        policies = (doc.policies if doc and doc.policies else policies_in_force(settings))
        from nrr.services.isolation import left_out_count

        return MessageContext(
            month=month, currency=str(metrics.get("currency") or settings.reporting_currency),
            waterfall=waterfall,
            churned=[movement(i) for i in churned],
            churned_total=totals.customers_churned if totals else len(churned),
            contracted=[movement(i) for i in contracted],
            contracted_total=totals.customers_contracted if totals else len(contracted),
            policies=policies, dashboard_url=settings.alerts.stripe_dashboard_url,
            test_mode=settings.stripe_livemode is False,
            left_out=left_out_count(self.session),
            report_url=report_url(settings, month),
        )


def _customer_movement(item: dict[str, Any],
                       livemode: dict[str, bool | None]) -> CustomerMovement:
    """One churned or contracted customer of a report (``top_movements`` or the T12M
    movers) as an alert message shows it."""
    cid = str(item["customer_id"])
    return CustomerMovement(cid, item.get("name") or item.get("email"),
                            float(item.get("amount") or 0), str(item.get("movement")),
                            _causes(item.get("causes") or []), livemode.get(cid))


# --------------------------------------------------------------------------- planning


def _last_state(session: Session, rule: str, segment: str, month: str,
                version: int) -> tuple[str, str] | None:
    """(kind, month) of the latest alert/recovery of ``rule`` and ``segment`` before (month, version)."""
    rows = session.execute(
        select(AlertDelivery.kind, AlertDelivery.month, AlertDelivery.snapshot_version,
               AlertDelivery.id)
        .where(AlertDelivery.rule == rule, AlertDelivery.segment == segment,
               AlertDelivery.kind.in_(("alert", "recovery")))
    ).all()
    earlier = [r for r in rows if (r.month, r.snapshot_version) < (month, version)]
    if not earlier:
        return None
    last = max(earlier, key=lambda r: (r.month, r.snapshot_version, r.id))
    return str(last.kind), str(last.month)


def _check_dimension(rule: AlertRule) -> str:
    from nrr.services.report import parse_dimension

    return parse_dimension(rule.segment) or ""


def plan_messages(session: Session, settings: Settings, month: str, *,
                  now: datetime | None = None) -> AlertRunResult:
    """Evaluate every rule for ``month`` and build the messages it calls for (writes nothing)."""
    result = AlertRunResult(month=month)
    documents = _Documents(session, settings, now)
    contexts = _Contexts(session, settings, documents)
    previous_month = add_months(month, -1)
    for rule in settings.alerts.rules:
        if rule.kind == "projected":
            continue  # evaluated on the outlook below
        try:
            dimension = _check_dimension(rule)
        except ValueError as exc:
            note = f"rule {rule.name} skipped: {exc}"
            log.warning("alerts.rule_skipped", rule=rule.name, reason=str(exc))
            result.notes.append(note)
            continue
        current = documents.get(month, rule.period, dimension)
        previous = documents.get(previous_month, rule.period, dimension)
        if not current:
            result.notes.append(f"rule {rule.name}: no {rule.period} data for {month}"
                                + (f" by {dimension}" if dimension else ""))
        for segment in sorted(current):
            doc = current[segment]
            before = previous.get(segment)
            observation = Observation(
                metric=rule.metric, period=rule.period, month=month, dimension=dimension,
                segment=segment, value=_number(doc.metrics.get(rule.metric)),
                previous_month=previous_month,
                previous_value=_number(before.metrics.get(rule.metric)) if before else None,
                snapshot_version=doc.version,
                reason=doc.metrics.get(f"{rule.metric}_reason"),
            )
            finding = evaluate_rule(rule, observation)
            result.findings.append(finding)
            segment_key = observation.segment_label[:255]
            if finding.firing:
                message = build_alert_message(
                    finding, contexts.get(month, dimension, segment, doc.version, rule.period))
                result.messages.append(_planned("alert", finding, segment_key, message))
            elif finding.state == "clear":
                last = _last_state(session, rule.name, segment_key, month, doc.version)
                if last and last[0] == "alert":
                    message = build_recovery_message(
                        finding, contexts.get(month, dimension, segment, doc.version,
                                              rule.period), last[1])
                    result.messages.append(_planned("recovery", finding, segment_key, message))
    # Projected rules read the stored outlook (the current and the next month), whatever
    # ``month`` is: nrr.services.outlook_alerts.
    from nrr.services.outlook_alerts import plan_projected

    projected_findings, projected_messages = plan_projected(session, settings)
    result.findings.extend(projected_findings)
    result.messages.extend(projected_messages)
    if settings.alerts.digest:
        total = documents.get(month, "monthly", "").get("")
        if total is not None:
            t12m = documents.get(month, "t12m", "").get("")
            numbers = {
                "nrr": _number(total.metrics.get("nrr")), "grr": _number(total.metrics.get("grr")),
                "t12m_nrr": _number(t12m.metrics.get("nrr")) if t12m else None,
                "t12m_grr": _number(t12m.metrics.get("grr")) if t12m else None,
            }
            message = build_digest_message(contexts.get(month, "", "", total.version), numbers,
                                           result.findings)
            result.messages.append(PlannedMessage(
                _dedupe_key("digest", "digest", "", month, total.version), "digest", "digest",
                month, "", total.version, None, message.text, message.as_payload()))
    return result


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _planned(kind: str, finding: Finding, segment_key: str, message: SlackMessage) -> PlannedMessage:
    obs = finding.observation
    return PlannedMessage(
        _dedupe_key(kind, finding.rule.name, segment_key, obs.month, obs.snapshot_version),
        kind, finding.rule.name, obs.month, segment_key, obs.snapshot_version,
        finding.severity if kind == "alert" else "info", finding.summary, message.as_payload())


def _store(session: Session, messages: list[PlannedMessage]) -> list[str]:
    """Insert-if-absent by ``dedupe_key``; the keys actually inserted by this call."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    created = []
    now = _utcnow()
    for message in messages:
        statement = insert(AlertDelivery).values(
            dedupe_key=message.dedupe_key, rule=message.rule, kind=message.kind,
            month=message.month, segment=message.segment,
            snapshot_version=message.snapshot_version, severity=message.severity,
            status="pending", payload=message.payload, attempts=0, created_at=now,
        ).on_conflict_do_nothing(index_elements=["dedupe_key"]).returning(AlertDelivery.id)
        if session.execute(statement).first() is not None:  # None: the key was already there
            created.append(message.dedupe_key)
    return created


def _annotate(session: Session, messages: list[PlannedMessage]) -> None:
    keys = [m.dedupe_key for m in messages]
    if not keys:
        return
    status = dict(session.execute(
        select(AlertDelivery.dedupe_key, AlertDelivery.status)
        .where(AlertDelivery.dedupe_key.in_(keys))).all())
    for message in messages:
        message.status = status.get(message.dedupe_key, "new")


# --------------------------------------------------------------------------- public API


def preview(source: SessionSource, settings: Settings, month: str | None = None, *,
            now: datetime | None = None) -> AlertRunResult:
    """What an evaluation of ``month`` would send, each with its stored status (or ``new``)."""
    with session_scope(_factory(source)) as session:
        month = month or default_month(session, settings, now)
        result = plan_messages(session, settings, month, now=now)
        _annotate(session, result.messages)
    return result


def evaluate_alerts(source: SessionSource, settings: Settings, month: str | None = None, *,
                    now: datetime | None = None, deliver: bool = True,
                    webhook: SlackWebhook | None = None,
                    printer: Printer | None = None) -> AlertRunResult:
    """Evaluate the rules for ``month`` (default: the last closed month with a snapshot),
    store the messages once each, then deliver every pending message (older ones too)."""
    factory = _factory(source)
    if deliver and webhook is None:
        # Before any row is written or claimed: a bad SLACK_WEBHOOK_URL stops the run here,
        # so the stored alerts stay pending until a valid destination has them.
        webhook = configured_webhook(settings)
    with session_scope(factory) as session:
        month = month or default_month(session, settings, now)
        result = plan_messages(session, settings, month, now=now)
    with session_scope(factory) as session:
        result.created = _store(session, result.messages)
    with session_scope(factory) as session:
        _annotate(session, result.messages)
    log.info("alerts.evaluated", month=month, findings=len(result.findings),
             firing=sum(1 for f in result.findings if f.firing), planned=len(result.messages),
             created=len(result.created))
    if deliver:
        result.delivery = deliver_pending(factory, settings, webhook=webhook, printer=printer)
        with session_scope(factory) as session:
            _annotate(session, result.messages)
    return result


def _print_stdout(text: str) -> None:
    sys.stdout.write(text + "\n\n")
    sys.stdout.flush()


def deliver_pending(source: SessionSource, settings: Settings, *,
                    webhook: SlackWebhook | None = None, printer: Printer | None = None,
                    keys: Sequence[str] | None = None) -> DeliveryResult:
    """Send every pending delivery (and every expired claim), oldest first, each exactly once.

    ``webhook`` defaults to the one configured (``SLACK_WEBHOOK_URL``); with none the
    messages are printed with ``printer`` (stdout by default). An invalid one raises
    :class:`ConfigError` before any delivery is claimed: nothing changes state.
    """
    factory = _factory(source)
    result = DeliveryResult()
    if webhook is None:
        webhook = configured_webhook(settings)
    emit = printer or _print_stdout
    lease = timedelta(seconds=settings.alerts.claim_lease_seconds)
    with session_scope(factory) as session:
        now = _utcnow()
        query = (select(AlertDelivery.id, AlertDelivery.dedupe_key)
                 .where(or_(AlertDelivery.status == "pending",
                            and_(AlertDelivery.status == "sending",
                                 AlertDelivery.claimed_until < now)))
                 .order_by(AlertDelivery.id))
        if keys is not None:
            query = query.where(AlertDelivery.dedupe_key.in_(list(keys)))
        candidates = session.execute(query).all()
    for delivery_id, key in candidates:
        claim = _claim(factory, delivery_id, lease)
        if claim is None:
            result.busy.append(key)
            continue
        token, payload = claim
        if webhook is None:
            emit(render_text(payload))
            _finish(factory, delivery_id, token, "printed", None)
            result.printed.append(key)
            log.info("alert.printed", dedupe_key=key)
            continue
        outcome = webhook.send(payload)
        if outcome.delivered:
            _finish(factory, delivery_id, token, "sent", None)
            result.sent.append(key)
            log.info("alert.sent", dedupe_key=key, attempts=outcome.attempts)
        else:
            _release(factory, delivery_id, token, outcome.error or "not sent")
            result.failed.append({"dedupe_key": key, "error": outcome.error,
                                  "status_code": outcome.status_code})
            log.warning("alert.kept_pending", dedupe_key=key, error=outcome.error)
    return result


def configured_webhook(settings: Settings) -> SlackWebhook | None:
    """The ``SLACK_WEBHOOK_URL`` webhook, None when unset; :class:`ConfigError` when invalid."""
    try:
        return webhook_from_settings(settings)
    except SlackConfigError as exc:
        log.error("slack.invalid_webhook_url", error=str(exc))
        raise ConfigError(f"{exc}; nothing was sent or printed, the alerts stay pending "
                          "until the URL is fixed") from None


def _claim(factory: sessionmaker[Session], delivery_id: int,
           lease: timedelta) -> tuple[int, dict[str, Any]] | None:
    """Take the delivery for this sender: (fencing token, payload), or None when another has it."""
    with session_scope(factory) as session:
        now = _utcnow()
        claimed = session.execute(
            update(AlertDelivery)
            .where(AlertDelivery.id == delivery_id,
                   or_(AlertDelivery.status == "pending",
                       and_(AlertDelivery.status == "sending",
                            AlertDelivery.claimed_until < now)))
            .values(status="sending", attempts=AlertDelivery.attempts + 1,
                    claimed_until=now + lease)
            .execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]
        if claimed != 1:
            return None
        attempts, payload = session.execute(
            select(AlertDelivery.attempts, AlertDelivery.payload)
            .where(AlertDelivery.id == delivery_id)).one()
        return int(attempts), dict(payload)


def _finish(factory: sessionmaker[Session], delivery_id: int, token: int, status: str,
            error: str | None) -> None:
    with session_scope(factory) as session:
        done = session.execute(
            update(AlertDelivery)
            .where(AlertDelivery.id == delivery_id, AlertDelivery.status == "sending",
                   AlertDelivery.attempts == token)
            .values(status=status, sent_at=_utcnow(), claimed_until=None, last_error=error)
            .execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]
    if done != 1:
        log.warning("alert.claim_lost", delivery_id=delivery_id, status=status)


def _release(factory: sessionmaker[Session], delivery_id: int, token: int, error: str) -> None:
    with session_scope(factory) as session:
        session.execute(
            update(AlertDelivery)
            .where(AlertDelivery.id == delivery_id, AlertDelivery.status == "sending",
                   AlertDelivery.attempts == token)
            .values(status="pending", claimed_until=None, last_error=error[:2000])
            .execution_options(synchronize_session=False)
        )


def send_test_message(source: SessionSource, settings: Settings, *,
                      webhook: SlackWebhook | None = None,
                      printer: Printer | None = None) -> DeliveryResult:
    """Store and deliver one sample message (kind ``test``) to check the Slack set-up."""
    ctx = sample_context(settings)
    message = build_test_message(ctx)
    key = f"test|{_utcnow().strftime('%Y%m%dT%H%M%S')}|{uuid.uuid4().hex}"
    planned = PlannedMessage(key, "test", "test", ctx.month, "", 0, None, message.text,
                             message.as_payload())
    if webhook is None:
        webhook = configured_webhook(settings)
    factory = _factory(source)
    with session_scope(factory) as session:
        _store(session, [planned])
    return deliver_pending(factory, settings, webhook=webhook, printer=printer, keys=[key])


def sample_context(settings: Settings) -> MessageContext:
    """Made-up numbers for the test message (the worked example of the definitions page)."""
    month = add_months(current_month(settings.tz), -1)
    return MessageContext(
        month=month, currency=settings.reporting_currency,
        waterfall={"opening_mrr": 50000.0, "new": 2500.0, "reactivation": 500.0,
                   "expansion": 8000.0, "contraction": 2000.0, "churn": 3000.0,
                   "closing_mrr": 56000.0},
        churned=[CustomerMovement("cus_sample_churned", "Sample churned customer", 3000.0,
                                  "churn", ("cancellation",), False)],
        churned_total=1,
        contracted=[CustomerMovement("cus_sample_contracted", "Sample contracted customer",
                                     2000.0, "contraction", ("seat_change",), False)],
        contracted_total=1,
        policies={**settings.policies.as_dict(), "reporting_currency": settings.reporting_currency,
                  "timezone": settings.timezone},
        dashboard_url=settings.alerts.stripe_dashboard_url, test_mode=True,
    )


def pending_deliveries(source: SessionSource) -> list[dict[str, Any]]:
    """Deliveries not yet sent or printed (pending, or claimed by a sender), oldest first."""
    with session_scope(_factory(source)) as session:
        rows = session.execute(
            select(AlertDelivery).where(AlertDelivery.status.in_(("pending", "sending")))
            .order_by(AlertDelivery.id)).scalars().all()
        return [{
            "dedupe_key": row.dedupe_key, "kind": row.kind, "rule": row.rule,
            "month": row.month, "segment": row.segment,
            "snapshot_version": row.snapshot_version, "severity": row.severity,
            "status": row.status, "attempts": row.attempts, "last_error": row.last_error,
            "created_at": row.created_at.isoformat() if row.created_at else None,
        } for row in rows]
