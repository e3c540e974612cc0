"""Projected alerts: fired once per change of the projection, recovered once when a scheduled
cancellation is undone. Slack is a local recorder over HTTP; SQLite and PostgreSQL.

The account of ``test_outlook_service`` (now 2 December 2025): December's projected NRR is
360 / 460 = 78.261 % (cus_a cancels 100 on the 20th), January's 336 / 360 = 93.333 %
(cus_d drops 24). GRR is the same (no expansion). Default rules: projected NRR below 100,
projected GRR below 90.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, select

from models.derived import AlertDelivery
from nrr.db import session_scope
from nrr.services.alerts import evaluate_alerts
from nrr.services.recompute import recompute
from tests.alerts.conftest import engine, make_settings, slack  # noqa: F401
from tests.alerts.test_alert_delivery import all_text
from tests.outlook.test_outlook_service import NOW, _store, _world
from tests.recompute.conftest import store_world
from tests.stripe_world import ts
from tests.support.slack_recorder import SlackRecorder


def _projected(engine: Engine) -> list[tuple[str, str, str]]:  # noqa: F811
    with session_scope(engine) as session:
        return [(r.kind, r.rule, r.month) for r in session.scalars(
            select(AlertDelivery).where(AlertDelivery.rule.like("%projected%")).order_by(AlertDelivery.id))]


def test_projected_alert_once_then_recovery_once(engine: Engine, db_url: str,  # noqa: F811
                                                 slack: SlackRecorder) -> None:  # noqa: F811
    settings = make_settings(db_url, slack.url)
    w, plan = _world()
    with session_scope(engine) as session:
        _store(session, w, plan)
        recompute(session, settings, now=datetime.fromtimestamp(NOW, UTC))

    evaluate_alerts(engine, settings, "2025-11", now=datetime.fromtimestamp(NOW, UTC))
    assert _projected(engine) == [("alert", "nrr_projected_below", "2025-12"),
                                  ("alert", "nrr_projected_below", "2026-01"),
                                  ("alert", "grr_projected_below", "2025-12")]
    december = [p.body for p in slack.delivered
                if p.body and p.body["text"].endswith("— 2025-12 (outlook)") and "NRR" in p.body["text"]]
    assert len(december) == 1
    text = all_text(december[0])
    assert "78.261%" in text and "cus_a" in text and "-100.00 USD on 2025-12-20" in text

    # The same projection seen again (another recompute, another evaluation): nothing new.
    with session_scope(engine) as session:
        recompute(session, settings, now=datetime.fromtimestamp(NOW, UTC))
    evaluate_alerts(engine, settings, "2025-11", now=datetime.fromtimestamp(NOW, UTC))
    assert len(_projected(engine)) == 3

    # cus_a takes its cancellation back on 3 December: December recovers (460 / 460 = 100 %),
    # January changes (436 / 460 = 94.783 %, still below 100: a new alert for the new projection).
    later = ts(2025, 12, 3, 12)
    next(life for life in w.lives.values() if life.customer_id == "cus_a").undo_cancel(at=later)
    with session_scope(engine) as session:
        store_world(session, w, state_at=later)
        recompute(session, settings, now=datetime.fromtimestamp(later, UTC))
    evaluate_alerts(engine, settings, "2025-11", now=datetime.fromtimestamp(later, UTC))
    assert _projected(engine)[3:] == [("recovery", "nrr_projected_below", "2025-12"),
                                      ("alert", "nrr_projected_below", "2026-01"),
                                      ("recovery", "grr_projected_below", "2025-12")]
    recovered = [p.body for p in slack.delivered if p.body and "RECOVERED" in all_text(p.body)]
    assert len(recovered) == 2

    # Evaluated again: the recovery is not sent twice.
    evaluate_alerts(engine, settings, "2025-11", now=datetime.fromtimestamp(later, UTC))
    assert len(_projected(engine)) == 6
    assert len([p for p in slack.delivered if p.body and "RECOVERED" in all_text(p.body)]) == 2
