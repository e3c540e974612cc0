"""Alerts end to end: stored facts and snapshots -> rules -> Slack (a local recorder over HTTP)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from models.derived import AlertDelivery
from nrr.db import make_engine, session_scope
from nrr.services.alerts import (
    deliver_pending,
    evaluate_alerts,
    pending_deliveries,
    preview,
)
from nrr.settings import ConfigError
from tests.alerts.conftest import NOW, Printed, make_settings, seed_drop, seed_recovery
from tests.support.slack_recorder import SlackRecorder

BELOW = "alert|nrr_monthly_below||2026-10|v1"
DROP = "alert|nrr_monthly_drop||2026-10|v1"


def deliveries(engine: Engine) -> dict[str, AlertDelivery]:
    with session_scope(engine) as session:
        return {row.dedupe_key: row for row in session.execute(select(AlertDelivery)).scalars()}


def all_text(body: dict[str, Any]) -> str:
    """Every text of a Block Kit payload, joined (sections, fields, context, header)."""
    parts = [body.get("text", "")]
    for block in body.get("blocks", []):
        if "text" in block:
            parts.append(block["text"]["text"])
        parts += [f["text"] for f in block.get("fields", [])]
        parts += [e.get("text", "") for e in block.get("elements", [])]
    return "\n".join(parts)


def posts_for(slack: SlackRecorder, rule_text: str) -> list[dict[str, Any]]:
    return [p.body for p in slack.delivered if p.body and rule_text in all_text(p.body)]


def test_drop_below_threshold_sends_one_message_with_numbers_and_customers(
        engine: Engine, db_url: str, slack: SlackRecorder) -> None:
    settings = make_settings(db_url, slack.url)
    seed_drop(engine, settings)

    result = evaluate_alerts(engine, settings, "2026-10", now=NOW)

    assert sorted(result.created) == sorted([BELOW, DROP])
    assert result.delivery is not None and sorted(result.delivery.sent) == sorted([BELOW, DROP])
    assert len(slack.delivered) == 2
    below = posts_for(slack, "rule nrr_monthly_below")
    assert len(below) == 1
    text = all_text(below[0])
    # The metric, its band, the previous month and the threshold.
    assert "95%" in text and "band *concerning*" in text
    assert "Previous month (2026-09): 101.215% (good)" in text
    assert "alert when below 100%" in text
    assert below[0]["text"].startswith("[warning] Monthly NRR 95% is below 100%")
    # The waterfall: opening 50,000 + new 3,000 + expansion 1,000 - 1,000 - 2,500 = 50,500.
    for figure in ("*Opening MRR*\n50,000.00 USD", "*New*\n+3,000.00 USD",
                   "*Reactivation*\n+0.00 USD", "*Expansion*\n+1,000.00 USD",
                   "*Contraction*\n-1,000.00 USD", "*Churn*\n-2,500.00 USD",
                   "*Closing MRR*\n50,500.00 USD"):
        assert figure in text
    # Top churned and contracted customers, largest first, with ledger causes and test-mode links.
    churned = text[text.index("*Churned customers*"):text.index("*Contracted customers*")]
    assert "(largest 2 of 2)" in churned
    assert churned.index("cus_c|carol@example.com") < churned.index("cus_e|Echo GmbH")
    assert "<https://dashboard.stripe.com/test/customers/cus_c|carol@example.com> — 1,500.00 USD — cancellation" in churned
    assert "1,000.00 USD — cancellation" in churned
    contracted = text[text.index("*Contracted customers*"):]
    assert "<https://dashboard.stripe.com/test/customers/cus_b|Beta &amp; Co &lt;billing&gt;> — 1,000.00 USD — seat change" in contracted
    assert "cus_a" not in text  # an expansion is neither churn nor contraction
    assert "churn_at=period_end" in text and "discounts=recurring" in text
    rows = deliveries(engine)
    assert rows[BELOW].status == "sent" and rows[BELOW].severity == "warning"
    assert rows[BELOW].sent_at is not None and rows[BELOW].attempts == 1
    assert rows[DROP].status == "sent"
    # GRR 93 % is above its threshold 90 %: no message; T12M has no data: no message.
    states = {f.rule.name: f.state for f in result.findings}
    assert states == {"nrr_monthly_below": "firing", "nrr_t12m_below": "unknown",
                      "grr_monthly_below": "clear", "nrr_monthly_drop": "firing"}


def test_rerun_sends_nothing_more(engine: Engine, db_url: str, slack: SlackRecorder) -> None:
    settings = make_settings(db_url, slack.url)
    seed_drop(engine, settings)
    evaluate_alerts(engine, settings, "2026-10", now=NOW)
    assert len(slack.requests) == 2

    again = evaluate_alerts(engine, settings, "2026-10", now=NOW)
    deliver_pending(engine, settings)

    assert again.created == []
    assert again.delivery is not None and again.delivery.sent == []
    assert [m.status for m in again.messages] == ["sent", "sent"]
    assert len(slack.requests) == 2


def test_concurrent_workers_send_each_message_once(db_url: str, slack: SlackRecorder) -> None:
    slack.delay_seconds = 0.3  # both workers are mid-send at the same time
    setup = make_engine(db_url)
    settings = make_settings(db_url, slack.url)
    seed_drop(setup, settings)
    engines = [make_engine(db_url) for _ in range(3)]  # separate pools, separate connections
    barrier = threading.Barrier(len(engines))
    errors: list[BaseException] = []
    results: list[Any] = []

    def worker(engine: Engine) -> None:
        try:
            barrier.wait()
            results.append(evaluate_alerts(engine, settings, "2026-10", now=NOW))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert len(slack.requests) == 2
    assert sorted(p.payload["text"][:40] for p in slack.delivered) == sorted(
        {p.payload["text"][:40] for p in slack.delivered})
    assert sorted(k for r in results for k in r.created) == sorted([BELOW, DROP])
    assert sorted(k for r in results for k in r.delivery.sent) == sorted([BELOW, DROP])
    assert {row.status for row in deliveries(setup).values()} == {"sent"}
    for engine in [setup, *engines]:
        engine.dispose()


def test_rate_limited_then_success_delivers_once(engine: Engine, db_url: str,
                                                 slack: SlackRecorder) -> None:
    settings = make_settings(db_url, slack.url)
    seed_drop(engine, settings)
    slack.fail_next(1, status=429, retry_after=0.5)

    result = evaluate_alerts(engine, settings, "2026-10", now=NOW)

    assert result.delivery is not None and len(result.delivery.sent) == 2
    assert [r.status for r in slack.requests] == [429, 200, 200]
    assert slack.requests[1].at - slack.requests[0].at >= 0.45  # Retry-After honoured
    assert slack.requests[0].body == slack.requests[1].body
    assert len(slack.delivered) == 2
    assert {row.status for row in deliveries(engine).values()} == {"sent"}


def test_retry_after_longer_than_allowed_keeps_the_alert_pending(
        engine: Engine, db_url: str, slack: SlackRecorder) -> None:
    settings = make_settings(db_url, slack.url, slack_max_wait_seconds=1.0)
    seed_drop(engine, settings)
    slack.fail_next(1, status=429, retry_after=120)
    started = time.monotonic()

    result = evaluate_alerts(engine, settings, "2026-10", now=NOW)

    assert time.monotonic() - started < 10
    assert result.delivery is not None
    assert [f["status_code"] for f in result.delivery.failed] == [429]
    assert len(result.delivery.sent) == 1  # the other alert went out
    later = deliver_pending(engine, settings)
    assert len(later.sent) == 1
    assert len(slack.delivered) == 2


def test_server_errors_keep_the_alert_pending_and_a_later_run_delivers_it(
        engine: Engine, db_url: str, slack: SlackRecorder, capsys: Any) -> None:
    settings = make_settings(db_url, slack.url)
    seed_drop(engine, settings)
    slack.fail_next(100, status=500)

    first = evaluate_alerts(engine, settings, "2026-10", now=NOW)

    assert first.delivery is not None and first.delivery.sent == []
    assert len(first.delivery.failed) == 2
    assert len(slack.requests) == 2 * settings.alerts.slack_max_attempts  # bounded retries
    assert slack.delivered == []
    rows = deliveries(engine)
    assert {row.status for row in rows.values()} == {"pending"}
    assert "Slack answered 500" in (rows[BELOW].last_error or "")
    assert {p["dedupe_key"] for p in pending_deliveries(engine)} == {BELOW, DROP}
    # The webhook URL is a secret: not in errors, logs or results.
    out = capsys.readouterr()
    assert "recorder-secret-token" not in out.err + out.out
    assert "recorder-secret-token" not in str(first.as_dict())

    slack.clear_failures()
    second = evaluate_alerts(engine, settings, "2026-10", now=NOW)

    assert second.created == []
    assert second.delivery is not None and sorted(second.delivery.sent) == sorted([BELOW, DROP])
    assert len(slack.delivered) == 2
    assert pending_deliveries(engine) == []
    assert {row.status for row in deliveries(engine).values()} == {"sent"}


def test_recovery_sends_one_recovery_message(engine: Engine, db_url: str,
                                             slack: SlackRecorder) -> None:
    settings = make_settings(db_url, slack.url)
    seed_drop(engine, settings)
    evaluate_alerts(engine, settings, "2026-10", now=NOW)
    seed_recovery(engine, settings, "2026-11")

    november = evaluate_alerts(engine, settings, "2026-11", now=NOW)

    recoveries = [m for m in november.messages if m.kind == "recovery"]
    assert sorted(m.rule for m in recoveries) == ["nrr_monthly_below", "nrr_monthly_drop"]
    assert [m for m in november.messages if m.kind == "alert"] == []
    assert len(slack.delivered) == 4
    recovered = posts_for(slack, "RECOVERED")
    below = [p for p in recovered if "rule nrr_monthly_below" in all_text(p)]
    assert len(below) == 1
    assert "alerted for 2026-10" in all_text(below[0])
    assert "Monthly NRR 100.99% is at or above 100%" in all_text(below[0])

    # Once: re-running November, or a December that stays healthy, sends nothing more.
    evaluate_alerts(engine, settings, "2026-11", now=NOW)
    seed_recovery(engine, settings, "2026-12")
    december = evaluate_alerts(engine, settings, "2026-12", now=NOW)
    assert december.messages == []
    assert len(slack.requests) == 4


def test_without_webhook_url_messages_are_printed(engine: Engine, db_url: str,
                                                   printed: Printed) -> None:
    settings = make_settings(db_url)
    seed_drop(engine, settings)

    result = evaluate_alerts(engine, settings, "2026-10", now=NOW, printer=printed)

    assert result.delivery is not None and sorted(result.delivery.printed) == sorted([BELOW, DROP])
    assert len(printed.messages) == 2
    assert "Monthly NRR below 100% — 2026-10" in printed.messages[0]
    assert "Opening MRR: 50,000.00 USD" in printed.messages[0]
    assert "Beta & Co <billing> (https://dashboard.stripe.com/test/customers/cus_b)" in printed.messages[0]
    assert {row.status for row in deliveries(engine).values()} == {"printed"}
    evaluate_alerts(engine, settings, "2026-10", now=NOW, printer=printed)
    assert len(printed.messages) == 2


def test_invalid_webhook_url_stops_the_run_and_keeps_every_alert_pending(
        engine: Engine, db_url: str, printed: Printed, slack: SlackRecorder, capsys: Any) -> None:
    secret = "hooks.slack.com/services/T1/B1/very-secret"
    seed_drop(engine, make_settings(db_url))
    evaluate_alerts(engine, make_settings(db_url), "2026-10", now=NOW, deliver=False)
    before = {key: (row.status, row.attempts) for key, row in deliveries(engine).items()}
    assert before == {BELOW: ("pending", 0), DROP: ("pending", 0)}
    broken = make_settings(db_url, f"htps://{secret}")

    with pytest.raises(ConfigError) as raised:
        evaluate_alerts(engine, broken, "2026-10", now=NOW, printer=printed)
    with pytest.raises(ConfigError):
        deliver_pending(engine, broken, printer=printed)

    error = str(raised.value)
    assert "SLACK_WEBHOOK_URL is not a valid webhook URL" in error and "https://" in error
    assert "very-secret" not in error
    assert printed.messages == []
    after = {key: (row.status, row.attempts) for key, row in deliveries(engine).items()}
    assert after == before
    out = capsys.readouterr()
    assert "very-secret" not in out.err + out.out
    # Once the URL is fixed, the next run sends both: nothing was lost.
    fixed = evaluate_alerts(engine, make_settings(db_url, slack.url), "2026-10", now=NOW)
    assert fixed.delivery is not None and sorted(fixed.delivery.sent) == sorted([BELOW, DROP])
    assert len(slack.delivered) == 2


def test_an_expired_claim_is_retaken_and_a_live_one_is_left_alone(
        engine: Engine, db_url: str, slack: SlackRecorder) -> None:
    from datetime import UTC, datetime, timedelta

    settings = make_settings(db_url, slack.url)
    seed_drop(engine, settings)
    evaluate_alerts(engine, settings, "2026-10", now=NOW, deliver=False)
    with session_scope(engine) as session:  # one crashed sender, one still working
        session.execute(update(AlertDelivery).where(AlertDelivery.dedupe_key == BELOW).values(
            status="sending", attempts=1,
            claimed_until=datetime.now(UTC) - timedelta(seconds=1)))
        session.execute(update(AlertDelivery).where(AlertDelivery.dedupe_key == DROP).values(
            status="sending", attempts=1,
            claimed_until=NOW.replace(year=2999)))

    result = deliver_pending(engine, settings)

    assert result.sent == [BELOW]
    assert len(slack.delivered) == 1
    rows = deliveries(engine)
    assert rows[BELOW].status == "sent" and rows[BELOW].attempts == 2
    assert rows[DROP].status == "sending"


def test_without_snapshot_the_report_is_used(engine: Engine, db_url: str,
                                             slack: SlackRecorder) -> None:
    settings = make_settings(db_url, slack.url)
    seed_drop(engine, settings, snapshots=False)

    result = evaluate_alerts(engine, settings, "2026-10", now=NOW)

    assert sorted(result.created) == ["alert|nrr_monthly_below||2026-10|v0",
                                      "alert|nrr_monthly_drop||2026-10|v0"]
    assert len(slack.delivered) == 2
    assert "95%" in slack.delivered[0].payload["text"]


def test_segment_rules_alert_per_segment(engine: Engine, db_url: str,
                                         slack: SlackRecorder) -> None:
    from nrr.settings import AlertRule

    settings = make_settings(db_url, slack.url)
    settings.alerts.rules = [AlertRule(name="nrr_by_plan", metric="nrr", kind="below",
                                       threshold=100, segment="plan")]
    seed_drop(engine, settings)

    result = evaluate_alerts(engine, settings, "2026-10", now=NOW)

    by_segment = {f.observation.segment: f for f in result.findings}
    # basic: e churns entirely (NRR 0 %, critical); pro: a +1,000, b -1,000, c churns 1,500,
    # so its cohort keeps 47,500 of 49,000 = 96.939 % (warning).
    assert by_segment["basic"].severity == "critical" and by_segment["basic"].observation.value == 0
    assert by_segment["pro"].observation.value == 96.939
    assert by_segment["pro"].severity == "warning"
    assert sorted(result.created) == ["alert|nrr_by_plan|plan=basic|2026-10|v1",
                                      "alert|nrr_by_plan|plan=pro|2026-10|v1"]
    basic = posts_for(slack, "plan=basic")
    assert len(basic) == 1
    text = all_text(basic[0])
    assert "Echo GmbH" in text and "carol@example.com" not in text  # only the segment's customers


def test_digest_once_per_snapshot_whatever_the_thresholds(engine: Engine, db_url: str,
                                                          slack: SlackRecorder) -> None:
    settings = make_settings(db_url, slack.url, digest=True, rules=[])
    seed_drop(engine, settings)

    evaluate_alerts(engine, settings, "2026-09", now=NOW)  # a healthy month
    evaluate_alerts(engine, settings, "2026-09", now=NOW)

    assert len(slack.delivered) == 1
    body = slack.delivered[0].payload
    assert body["text"] == "Retention digest 2026-09: NRR 101.215%, GRR 100%"
    assert "No alert rule is firing." in all_text(body)


def test_preview_writes_nothing_and_shows_the_status(engine: Engine, db_url: str,
                                                     slack: SlackRecorder) -> None:
    settings = make_settings(db_url, slack.url)
    seed_drop(engine, settings)

    before = preview(engine, settings, "2026-10", now=NOW)
    assert [m.status for m in before.messages] == ["new", "new"]
    assert deliveries(engine) == {} and slack.requests == []
    evaluate_alerts(engine, settings, "2026-10", now=NOW)
    after = preview(engine, settings, "2026-10", now=NOW)
    assert [m.status for m in after.messages] == ["sent", "sent"]


def test_two_worker_processes_send_each_message_once(engine: Engine, db_url: str,
                                                     tmp_path: Any) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    seed_drop(engine, make_settings(db_url))
    nrr = str(Path(sys.executable).with_name("nrr"))
    with SlackRecorder(delay_seconds=0.5) as slack:
        env = {**os.environ, "DATABASE_URL": db_url, "SLACK_WEBHOOK_URL": slack.url,
               "NRR_CONFIG": "", "NRR_TIMEZONE": "UTC", "NRR_REPORTING_CURRENCY": "usd"}
        procs = [subprocess.Popen([nrr, "alerts", "run", "--month", "2026-10", "--format", "json"],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
        outputs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outputs
        sent = [key for out, _err in outputs for key in json.loads(out)["delivery"]["sent"]]
        assert sorted(sent) == sorted([BELOW, DROP])
        assert len(slack.requests) == 2
    assert {row.status for row in deliveries(engine).values()} == {"sent"}


def test_unreachable_slack_keeps_the_alert_pending(engine: Engine, db_url: str) -> None:
    from tests.support.servers import free_port

    url = f"http://127.0.0.1:{free_port()}/services/T0/B0/unreachable-secret"
    settings = make_settings(db_url, url)
    seed_drop(engine, settings)

    result = evaluate_alerts(engine, settings, "2026-10", now=NOW)

    assert result.delivery is not None and result.delivery.sent == []
    errors = [f["error"] for f in result.delivery.failed]
    assert len(errors) == 2 and all("could not reach Slack" in e for e in errors)
    assert all("unreachable-secret" not in e for e in errors)
    assert {row.status for row in deliveries(engine).values()} == {"pending"}


def test_alert_messages_say_how_many_customers_were_left_out(
        engine: Engine, db_url: str, slack: SlackRecorder) -> None:
    """Customers the last recompute could not compute are in no number: the message says
    how many and where to look."""
    from nrr.services.isolation import LeftOut, record_left_out

    settings = make_settings(db_url, slack.url)
    seed_drop(engine, settings)
    with session_scope(engine) as session:
        record_left_out(session, [LeftOut("cus_x", "compute", "UnusableCustomerData: bad"),
                                  LeftOut("cus_y", "load", "JSONDecodeError: bad")],
                        customer_ids=None, run_id=None)
    evaluate_alerts(engine, settings, "2026-10", now=NOW)
    below = posts_for(slack, "rule nrr_monthly_below")
    assert len(below) == 1
    assert "2 customers left out of these numbers" in all_text(below[0])
    assert "`nrr status` lists them" in all_text(below[0])
    assert "(2 customer(s) left out: see `nrr status`)" in below[0]["text"]
