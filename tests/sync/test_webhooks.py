"""The webhook endpoint over real HTTP: signatures, duplicates, shuffled deliveries, health."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from integrations.webhook_app import WEBHOOK_PATH, WebhookApp, create_app, make_webhook_server
from models.mirror import StripeEvent
from nrr.db import make_engine, session_scope
from nrr.services.pipeline import InProcessPipeline
from tests import stripe_world as sw
from tests.sync.conftest import make_settings, mirror_snapshot
from tests.sync.test_sync_events import event

SECRET = "whsec_testsecret"


def signed(body: bytes, *, secret: str = SECRET, timestamp: int | None = None) -> str:
    stamp = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={mac}"


def post(url: str, body: bytes, signature: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    request = urllib.request.Request(url + WEBHOOK_PATH, data=body, headers=headers,
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


class Served:
    def __init__(self, app: WebhookApp) -> None:
        self.app = app
        self.server = make_webhook_server(app, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorded(sqlite_url: str) -> Iterator[tuple[Served, list[str], Engine]]:
    engine = make_engine(sqlite_url)
    dispatched: list[str] = []
    served = Served(create_app(make_settings(sqlite_url), engine, dispatch=dispatched.append))
    yield served, dispatched, engine
    served.stop()


def _events(engine: Engine) -> int:
    with session_scope(engine) as session:
        return int(session.scalar(select(func.count()).select_from(StripeEvent)) or 0)


def test_a_valid_signature_is_recorded_and_dispatched(recorded: Any) -> None:
    served, dispatched, engine = recorded
    payload = event("customer.updated", sw.customer("cus_1"), int(time.time()))
    body = json.dumps(payload).encode()

    status, answer = post(served.url, body, signed(body))

    assert (status, answer) == (200, {"received": True, "duplicate": False})
    assert dispatched == [payload["id"]]
    with session_scope(engine) as session:
        row = session.get(StripeEvent, payload["id"])
        assert row is not None and row.source == "webhook" and row.object_id == "cus_1"


@pytest.mark.parametrize("case", ["wrong_secret", "tampered", "stale", "missing", "garbage"])
def test_bad_signatures_are_rejected_with_400(recorded: Any, case: str) -> None:
    served, dispatched, engine = recorded
    body = json.dumps(event("customer.updated", sw.customer("cus_1"), int(time.time()))).encode()
    signature: str | None = {
        "wrong_secret": signed(body, secret="whsec_other"),
        "tampered": signed(body),
        "stale": signed(body, timestamp=int(time.time()) - 301),
        "missing": None,
        "garbage": "t=abc,v1=nothex",
    }[case]
    if case == "tampered":
        body = body.replace(b"cus_1", b"cus_2")

    status, answer = post(served.url, body, signature)

    assert status == 400 and "error" in answer
    assert dispatched == [] and _events(engine) == 0


def test_a_signed_body_that_is_not_an_event_is_rejected(recorded: Any) -> None:
    served, dispatched, engine = recorded
    for body in (b"{not json", b'{"object": "customer", "id": "cus_1"}'):
        status, _answer = post(served.url, body, signed(body))
        assert status == 400
    assert dispatched == [] and _events(engine) == 0


def test_duplicates_are_no_ops(recorded: Any) -> None:
    served, dispatched, engine = recorded
    payload = event("customer.updated", sw.customer("cus_1"), int(time.time()))
    body = json.dumps(payload).encode()
    post(served.url, body, signed(body))
    with session_scope(engine) as session:
        row = session.get(StripeEvent, payload["id"])
        assert row is not None
        row.processed_at = row.received_at  # the worker has processed it

    status, answer = post(served.url, body, signed(body))

    assert (status, answer["duplicate"]) == (200, True)
    assert dispatched == [payload["id"]] and _events(engine) == 1


def test_health(recorded: Any) -> None:
    served, _dispatched, _engine = recorded
    with urllib.request.urlopen(served.url + "/healthz", timeout=5) as response:
        assert response.status == 200 and json.loads(response.read()) == {"status": "ok"}


def _history() -> list[dict[str, Any]]:
    """Several objects each changing several times, at distinct instants, then one deletion."""
    events = []
    base = int(time.time()) - 3_600
    price = sw.price("price_1")
    for n in range(6):
        cid = f"cus_{n}"
        events.append(event("customer.created", sw.customer(cid, email=f"{n}a@x.io"), base + n))
        events.append(event("customer.updated", sw.customer(cid, email=f"{n}b@x.io"), base + 100 + n))
        for step, quantity in enumerate((1, 4, 2)):
            item = sw.subscription_item(f"si_{n}", price, subscription=f"sub_{n}",
                                        quantity=quantity, current_period_start=base,
                                        current_period_end=base + 2_592_000)
            events.append(event(
                "customer.subscription.updated" if step else "customer.subscription.created",
                sw.subscription(f"sub_{n}", cid, [item], start_date=base, created=base),
                base + 200 + 10 * step + n))
    events.append(event("customer.deleted", sw.customer("cus_5"), base + 500))
    return events


def test_duplicate_and_shuffled_deliveries_end_in_the_ordered_state(tmp_path: Any,
                                                                     sqlite_url: str) -> None:
    history = _history()
    ordered_url = sqlite_url.replace("nrr.db", "ordered.db")
    import shutil

    shutil.copy(sqlite_url.removeprefix("sqlite:///"), ordered_url.removeprefix("sqlite:///"))
    finals = []
    rng = random.Random(4)
    deliveries = {
        ordered_url: history,
        sqlite_url: rng.sample(history + rng.sample(history, 12), len(history) + 12),
    }
    for url, sequence in deliveries.items():
        engine = make_engine(url)
        settings = make_settings(url)
        # Processed in-process on a background thread, as `nrr serve` does without Redis.
        pipeline = InProcessPipeline(settings, engine)
        served = Served(create_app(settings, engine, dispatch=pipeline))
        try:
            for payload in sequence:
                body = json.dumps(payload).encode()
                status, _ = post(served.url, body, signed(body))
                assert status == 200
            assert pipeline.join(timeout=60)
        finally:
            served.stop()
            pipeline.close()
        with session_scope(engine) as session:
            assert session.scalar(select(func.count()).select_from(StripeEvent)) == len(history)
            assert session.scalar(select(func.count()).select_from(StripeEvent).where(
                StripeEvent.processed_at.is_(None))) == 0
        finals.append(mirror_snapshot(engine))
    assert finals[0] == finals[1]
    assert finals[0]["stripe_customers"] and finals[0]["stripe_subscription_items"]
