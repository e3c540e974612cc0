"""``nrr serve``'s HTTP server under abuse: bursts, stalled connections, big bodies and
signed input the database cannot store. Real sockets on 127.0.0.1 against the real
server (waitress) and the real app, on SQLite and PostgreSQL where storage matters."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from integrations.webhook_app import WEBHOOK_PATH, create_app, make_webhook_server
from integrations.webhook_server import ServerLimits
from models.mirror import StripeEvent
from nrr.db import make_engine, session_scope
from nrr.settings import load_settings

SECRET = "whsec_limits"


def sign(body: bytes, *, ahead: int = 0) -> str:
    stamp = int(time.time()) + ahead
    mac = hmac.new(SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={mac}"


def customer_event(event_id: str = "evt_limits_1", customer_id: str = "cus_limits",
                   **customer: Any) -> dict[str, Any]:
    obj = {"id": customer_id, "object": "customer", "created": 1_700_000_000,
           "email": "a@example.com", "name": "A", "metadata": {}, "livemode": False,
           "currency": "usd", **customer}
    return {"id": event_id, "object": "event", "type": "customer.updated",
            "created": int(time.time()), "api_version": "2026-10-28.endive",
            "livemode": False, "data": {"object": obj}, "pending_webhooks": 0,
            "request": {"id": None}}


class Served:
    def __init__(self, database_url: str, limits: ServerLimits) -> None:
        self.engine = make_engine(database_url)
        self.dispatched: list[str] = []
        settings = load_settings({"DATABASE_URL": database_url,
                                  "STRIPE_WEBHOOK_SECRET": SECRET})
        self.app = create_app(settings, self.engine, dispatch=self.dispatched.append)
        self.server = make_webhook_server(self.app, "127.0.0.1", 0, limits)
        self.port = self.server.server_port
        self.thread: threading.Thread | None = None

    def start(self) -> Served:
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def post(self, body: bytes, signature: str | None = None) -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("POST", WEBHOOK_PATH, body=body, headers={
                "Content-Type": "application/json",
                "Stripe-Signature": signature if signature is not None else sign(body)})
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"{}")
        finally:
            conn.close()

    def stored(self) -> int:
        with session_scope(self.engine) as session:
            return int(session.scalar(select(func.count()).select_from(StripeEvent)) or 0)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        getattr(self.app, "close", lambda: None)()
        self.engine.dispose()


@pytest.fixture
def served(sqlite_url: str) -> Iterator[Served]:
    server = Served(sqlite_url, ServerLimits(read_timeout=1.0, idle_timeout=2.0)).start()
    yield server
    server.stop()


@pytest.fixture
def served_on(db_url: str) -> Iterator[Served]:
    server = Served(db_url, ServerLimits()).start()
    yield server
    server.stop()


def test_a_burst_of_connections_waits_in_the_backlog(sqlite_url: str) -> None:
    """The server is listening but busy (not accepting yet): 300 connections still complete
    their handshake in the listen backlog, where a backlog of 5 drops them."""
    server = Served(sqlite_url, ServerLimits())
    sockets = []
    try:
        for _ in range(300):
            sockets.append(socket.create_connection(("127.0.0.1", server.port), timeout=3))
        server.start()
        body = json.dumps(customer_event()).encode()
        assert server.post(body)[0] == 200
    finally:
        for sock in sockets:
            sock.close()
        server.stop()


def _closed_by_server(sock: socket.socket, limit: float) -> float | None:
    sock.settimeout(limit)
    started = time.monotonic()
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return None
    return time.monotonic() - started


def test_stalled_connections_are_closed_within_the_read_timeout_and_hold_no_thread(
        served: Served) -> None:
    threads_before = threading.active_count()
    stalled = []
    for index in range(40):
        sock = socket.create_connection(("127.0.0.1", served.port), timeout=5)
        sock.sendall(b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\n" if index % 2 else
                     b"POST /webhooks/stripe HTTP/1.1\r\nContent-Length: 90\r\n\r\n{\"id\"")
        stalled.append(sock)
    time.sleep(0.3)

    # Meanwhile a real delivery is answered, and no thread waits on a stalled connection.
    body = json.dumps(customer_event()).encode()
    assert served.post(body)[0] == 200
    assert threading.active_count() <= threads_before + 1

    closes = [_closed_by_server(sock, 10) for sock in stalled]
    for sock in stalled:
        sock.close()
    assert all(close is not None for close in closes), closes
    # Read timeout 1 s, checked once a second.
    assert max(c for c in closes if c is not None) <= 1.0 + 1.5


def test_a_trickling_request_is_closed_by_the_read_timeout(served: Served) -> None:
    """One byte every 0.3 s keeps a connection active but never completes a request."""
    sock = socket.create_connection(("127.0.0.1", served.port), timeout=5)
    started = time.monotonic()
    closed = False
    try:
        for byte in b"POST /webhooks/stripe HTTP/1.1\r\nHost: trickle\r\nX-Pad: " + b"a" * 60:
            sock.sendall(bytes([byte]))
            time.sleep(0.3)
    except (BrokenPipeError, ConnectionResetError):
        closed = True
    elapsed = time.monotonic() - started
    if not closed:
        closed = _closed_by_server(sock, 5) is not None
    sock.close()
    assert closed and elapsed <= 1.0 + 1.5 + 0.3 * 2


def test_an_idle_keep_alive_connection_is_closed(served: Served) -> None:
    sock = socket.create_connection(("127.0.0.1", served.port), timeout=5)
    assert _closed_by_server(sock, 10) is not None  # idle timeout 2 s
    sock.close()


def test_a_body_over_the_limit_gets_a_413_not_a_broken_pipe(served: Served) -> None:
    body = b'{"id": "' + b"x" * 2_000_000 + b'"}'
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    conn.request("POST", WEBHOOK_PATH, body=body,
                 headers={"Content-Type": "application/json", "Stripe-Signature": sign(body)})
    response = conn.getresponse()
    document = json.loads(response.read())
    conn.close()

    assert response.status == 413 and "larger than" in document["error"]
    assert served.stored() == 0


@pytest.mark.parametrize("case", ["deep_50000", "deep_100", "long_event_id",
                                  "long_customer_id", "nul_in_string", "nul_in_key",
                                  "nan", "huge_created", "long_type"])
def test_input_that_cannot_be_stored_is_a_400(served_on: Served, case: str) -> None:
    event = customer_event()
    if case.startswith("deep_"):
        depth = int(case.split("_")[1])
        text = json.dumps(event)[:-1] + ', "extra": ' + "[" * depth + "]" * depth + "}"
    else:
        if case == "long_event_id":
            event["id"] = "evt_" + "a" * 5000
        elif case == "long_customer_id":
            event["data"]["object"]["id"] = "cus_" + "b" * 5000
        elif case == "nul_in_string":
            event["data"]["object"]["name"] = "Acme\x00Ltd"
        elif case == "nul_in_key":
            event["data"]["object"]["metadata"] = {"k\x00": "v"}
        elif case == "huge_created":
            event["created"] = 10**30
        elif case == "long_type":
            event["type"] = "customer." + "u" * 500
        text = json.dumps(event)
        if case == "nan":
            text = text.replace('"pending_webhooks": 0', '"pending_webhooks": NaN')
    body = text.encode()

    status, document = served_on.post(body)

    assert status == 400, document
    assert served_on.stored() == 0 and served_on.dispatched == []


def test_a_storable_event_on_the_same_server_is_stored(served_on: Served) -> None:
    event = customer_event()
    event["data"]["object"]["metadata"] = {"nested": "x" * 200}
    assert served_on.post(json.dumps(event).encode())[0] == 200
    assert served_on.stored() == 1


@pytest.mark.parametrize(("ahead", "status"), [(3600 * 24 * 365 * 3, 400), (3600, 400),
                                               (60, 200)])
def test_signatures_from_the_future_are_bounded(served: Served, ahead: int, status: int) -> None:
    body = json.dumps(customer_event()).encode()
    assert served.post(body, sign(body, ahead=ahead))[0] == status
