"""End to end through the emulator over HTTP: ``nrr sync``, ``nrr outlook --format json``,
a signed webhook that undoes a scheduled cancellation, then the alert state.

One customer of a generated account asks to cancel at the end of its period. The outlook
holds that cancellation: its amount is the customer's whole MRR (its only subscription).
The projected NRR rule's threshold is set between the projection with the cancellation and
the one without it, so the rule fires; the webhook takes the cancellation back, the
projection recovers and one recovery message is planned (printed: no Slack configured).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from benchmarks.bench_webhook_latency import SECRET, post_event
from integrations.emulator import EmulatorServer, generate_account
from integrations.webhook_app import WEBHOOK_PATH, create_app, make_webhook_server
from models.derived import AlertDelivery
from nrr.db import make_engine, session_scope
from nrr.services.pipeline import InProcessPipeline
from nrr.settings import load_settings

KEY = "sk_test_outlook12345"


def nrr(args: list[str], env: dict[str, str]) -> Any:
    done = subprocess.run([sys.executable, "-m", "nrr.cli", *args], env=env, text=True,
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if "--format" in args else done.stdout


def _cancel_one(account: Any, now: int) -> tuple[str, str, int]:
    """Schedule the cancellation of a mid-period subscription of a one-subscription customer."""
    with account.lock:
        engine = account._engine
        counted = Counter(s["customer"] for s in account.subscriptions.values()
                          if s["status"] in ("active", "past_due", "trialing"))
        live = sorted((s for s in engine.states.values() if not s.done
                       and account.subscriptions[s.sub_id]["status"] == "active"
                       and not account.subscriptions[s.sub_id]["cancel_at_period_end"]
                       and not account.subscriptions[s.sub_id].get("discounts")
                       and counted[account.subscriptions[s.sub_id]["customer"]] == 1
                       and s.period_start < now < s.period_end - 86_400),
                      key=lambda s: s.sub_id)
        state = live[0]
        engine.schedule_cancel(state, now)
        engine.flush_events()
        sub = account.subscriptions[state.sub_id]
        return sub["customer"], sub["id"], int(sub["cancel_at"])


def _undo(account: Any, sub_id: str, at: int) -> list[dict[str, Any]]:
    with account.lock:
        engine = account._engine
        account.now = max(account.now, at)
        sub = account.subscriptions[sub_id]
        before = engine.before(sub, at)
        sub["cancel_at_period_end"] = False
        sub["cancel_at"] = None
        sub["canceled_at"] = None
        sub["cancellation_details"] = {"comment": None, "feedback": None, "reason": None}
        engine.updated("customer.subscription.updated", sub, at, before)
        events: list[dict[str, Any]] = engine.flush_events()
        return events


def _projected(document: dict[str, Any], month: str) -> list[dict[str, Any]]:  # planned ones
    return [m for m in document["messages"] if m["rule"] == "nrr_projected_below"
            and m["month"] == month]


def test_sync_outlook_webhook_undo_and_alert_state(tmp_path: Path) -> None:
    now = int(time.time())
    account = generate_account(seed=4, customers=30, months=4, now=now)
    customer_id, sub_id, cancel_at = _cancel_one(account, now)
    with EmulatorServer(account) as emulator:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("STRIPE_", "NRR_", "REDIS_", "DATABASE_", "SLACK_"))}
        env.update({"DATABASE_URL": f"sqlite:///{tmp_path / 'e2e.db'}", "NRR_LOG_LEVEL": "WARNING",
                    "STRIPE_API_KEY": KEY, "STRIPE_API_BASE": emulator.url,
                    "STRIPE_WEBHOOK_SECRET": SECRET})
        rates = tmp_path / "rates.csv"
        rates.write_text("date,currency,rate\n2000-01-01,eur,1.1\n2000-01-01,gbp,1.3\n"
                         "2000-01-01,jpy,0.0067\n", encoding="utf-8")
        nrr(["fx", "import", str(rates)], env)
        nrr(["sync", "--format", "json", "--no-progress"], env)

        outlook = nrr(["outlook", "--months", "3", "--format", "json"], env)
        mine = [m for m in outlook["movements"] if m["customer_id"] == customer_id]
        expected_at = datetime.fromtimestamp(cancel_at, UTC).isoformat().replace("+00:00", "Z")
        assert [(m["cause"], m["effective_at"], m["bound"]) for m in mine] \
            == [("scheduled_cancellation", expected_at, "committed")]
        current_mrr = nrr(["customer", customer_id, "--format", "json"], env)["current_mrr"]
        assert current_mrr > 0 and mine[0]["amount"] == -current_mrr
        month = mine[0]["month"]
        projected = next(m for m in outlook["months"] if m["month"] == month)
        with_cancel = projected["nrr"]
        without = with_cancel + 100 * current_mrr / projected["opening"]
        # Fires with the cancellation, clear without it.
        env["NRR_ALERT_NRR_THRESHOLD"] = f"{(with_cancel + without) / 2:.6f}"

        first = nrr(["alerts", "run", "--format", "json"], env)
        assert [m["kind"] for m in _projected(first, month)] == ["alert"]

        # The customer takes the cancellation back: a signed webhook to the endpoint.
        settings = load_settings(env)
        engine = make_engine(env["DATABASE_URL"])
        # Processed in-process (recompute, snapshot, alerts), as `nrr serve` does without Redis.
        pipeline = InProcessPipeline(settings, engine)
        app = create_app(settings, engine, dispatch=pipeline)
        server = make_webhook_server(app, "127.0.0.1", 0)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            events = _undo(account, sub_id, int(time.time()))
            assert [e["type"] for e in events] == ["customer.subscription.updated"]
            url = f"http://127.0.0.1:{server.server_port}{WEBHOOK_PATH}"
            assert post_event(url, events[0], SECRET) == 200
            assert pipeline.join(timeout=240)
        finally:
            server.shutdown()
            server.server_close()
            pipeline.close()

        after = nrr(["outlook", "--months", "3", "--format", "json"], env)
        assert [m for m in after["movements"] if m["customer_id"] == customer_id] == []
        # The alert state: the pipeline's evaluation after the webhook planned the recovery;
        # evaluating again sends nothing more.
        nrr(["alerts", "run", "--format", "json"], env)
        nrr(["alerts", "run", "--format", "json"], env)
        with session_scope(engine) as session:
            kinds = [kind for (kind,) in session.execute(
                select(AlertDelivery.kind).where(AlertDelivery.rule == "nrr_projected_below",
                                                 AlertDelivery.month == month)
                .order_by(AlertDelivery.id))]
        engine.dispose()
        assert kinds == ["alert", "recovery"]
