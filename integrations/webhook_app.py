"""The Stripe webhook endpoint: a small WSGI app (waitress serves it, see
:mod:`integrations.webhook_server`).

``POST /webhooks/stripe`` verifies ``Stripe-Signature`` on the raw body with the endpoint
secret (the SDK's ``WebhookSignature.verify_header``, tolerance 300 s) and answers 400 on
a bad or stale signature (or one more than 300 s in the future), a body that is not a
JSON event or cannot be stored (:mod:`integrations.webhook_input`), and 413 on a body over
1 MB (after reading it). A good event is recorded in
``stripe_events`` (insert if absent by id) and its id handed to ``dispatch`` after the
commit; a duplicate of an event already processed is a no-op answered 200. Processing
never happens on the request path, so the answer is fast.

``dispatch(event_id)`` is given by the caller: ``nrr serve`` hands events to the worker
through Celery when Redis is configured, else to the in-process pipeline
(:class:`nrr.services.pipeline.InProcessPipeline`, no Redis needed). This module only
records and hands on; what runs after new data is the pipeline's.

``GET /healthz`` answers ``{"status": "ok"}`` when the database answers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import stripe
from sqlalchemy import Engine, text

from integrations.stripe_sync import record_event
from integrations.webhook_input import UnstorableInput, parse_event
from integrations.webhook_server import ServerLimits, WebhookServer
from models.mirror import StripeEvent
from nrr.db import session_scope
from nrr.logs import get_logger
from nrr.settings import Settings

log = get_logger(__name__)

WEBHOOK_PATH = "/webhooks/stripe"
HEALTH_PATH = "/healthz"
SIGNATURE_TOLERANCE_SECONDS = 300
# Stripe signs with its own clock; a few minutes ahead of ours is clock drift, more is not.
FUTURE_TOLERANCE_SECONDS = 300
MAX_BODY_BYTES = 1_000_000
REDISPATCH_AFTER_SECONDS = 60

Dispatch = Callable[[str], None]
StartResponse = Callable[..., Any]


class WebhookApp:
    """The WSGI application; ``dispatch`` receives the id of each new, unprocessed event."""

    def __init__(self, settings: Settings, engine: Engine, dispatch: Dispatch) -> None:
        settings.require("stripe_webhook_secret")
        self.settings = settings
        self.engine = engine
        self._secret = settings.secret("stripe_webhook_secret")
        self.dispatch = dispatch

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == WEBHOOK_PATH:
            if method != "POST":
                return _answer(start_response, 405, {"error": "use POST"}, [("Allow", "POST")])
            return self._webhook(environ, start_response)
        if path == HEALTH_PATH:
            if method not in ("GET", "HEAD"):
                return _answer(start_response, 405, {"error": "use GET"}, [("Allow", "GET")])
            return self._health(start_response)
        return _answer(start_response, 404, {"error": "not found"})

    def _health(self, start_response: StartResponse) -> Iterable[bytes]:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 - health reports, never raises
            return _answer(start_response, 503, {"status": "database unavailable",
                                                 "error": type(exc).__name__})
        return _answer(start_response, 200, {"status": "ok"})

    def _webhook(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if length < 0:
            return _answer(start_response, 400, {"error": "bad Content-Length"})
        if length > MAX_BODY_BYTES:
            # Read the body before answering: a sender still writing it would otherwise
            # see its connection reset (a broken pipe) instead of this 413.
            _drain(environ["wsgi.input"], length)
            log.warning("webhook.rejected", reason="body too large", bytes=length)
            return _answer(start_response, 413, {"error": f"body larger than {MAX_BODY_BYTES} "
                                                          "bytes"})
        raw = environ["wsgi.input"].read(length) if length > 0 else b""
        signature = environ.get("HTTP_STRIPE_SIGNATURE")
        try:
            payload = raw.decode("utf-8")
            stripe.WebhookSignature.verify_header(payload, signature, self._secret,
                                                  SIGNATURE_TOLERANCE_SECONDS)
        except UnicodeDecodeError:
            return self._reject(start_response, "body is not UTF-8")
        except stripe.SignatureVerificationError as exc:
            return self._reject(start_response, f"bad signature: {exc.user_message or exc}")
        future = _seconds_ahead(signature)
        if future > FUTURE_TOLERANCE_SECONDS:
            # The SDK bounds only the past; a time stamp far ahead is a replay kept for later
            # or a broken clock.
            return self._reject(start_response, f"signature time stamp {future} s in the "
                                                 f"future (at most {FUTURE_TOLERANCE_SECONDS})")
        try:
            event = parse_event(payload)
        except UnstorableInput as exc:
            return self._reject(start_response, str(exc))
        event_id = event["id"]
        with session_scope(self.engine) as session:
            new = record_event(session, event, source="webhook")
            row = session.get(StripeEvent, event_id)
            # A duplicate is handed on again only when the first hand-off looks lost (not
            # processed a while after it arrived): Stripe retries in bursts, and each
            # hand-off of one event costs the worker a task.
            pending = row is not None and row.processed_at is None and (
                new or _older_than(row.received_at, REDISPATCH_AFTER_SECONDS))
        if pending:
            # After the commit: the processor must find the event it is handed.
            self.dispatch(event_id)
        log.info("webhook.received", event_id=event_id, type=event.get("type"), duplicate=not new)
        return _answer(start_response, 200, {"received": True, "duplicate": not new})

    def _reject(self, start_response: StartResponse, reason: str) -> Iterable[bytes]:
        log.warning("webhook.rejected", reason=reason)
        return _answer(start_response, 400, {"error": reason})

def _older_than(instant: datetime | None, seconds: float) -> bool:
    if instant is None:
        return True
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    return datetime.now(UTC) - instant > timedelta(seconds=seconds)


def _drain(stream: Any, length: int) -> None:
    remaining = length
    while remaining > 0:
        chunk = stream.read(min(remaining, 65_536))
        if not chunk:
            return
        remaining -= len(chunk)


def _seconds_ahead(signature: str | None) -> int:
    """How far the signature's ``t=`` lies ahead of this machine's clock (0 if behind)."""
    for part in (signature or "").split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            return max(0, int(value) - int(time.time()))
    return 0


def _answer(start_response: StartResponse, status: int, document: dict[str, Any],
            headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    body = json.dumps(document).encode("utf-8")
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
              413: "Payload Too Large", 503: "Service Unavailable"}.get(status, "")
    start_response(f"{status} {reason}", [("Content-Type", "application/json"),
                                          ("Content-Length", str(len(body))),
                                          *(headers or [])])
    return [body]


def create_app(settings: Settings, engine: Engine, dispatch: Dispatch) -> WebhookApp:
    """The webhook WSGI app; ``dispatch`` is chosen by the caller (``nrr serve``): the
    worker's Celery hand-off, or :class:`nrr.services.pipeline.InProcessPipeline`."""
    return WebhookApp(settings, engine, dispatch)


def make_webhook_server(app: WebhookApp, host: str = "127.0.0.1", port: int = 8000,
                        limits: ServerLimits | None = None) -> WebhookServer:
    """The production server (waitress, :mod:`integrations.webhook_server`) for ``app``
    (port 0 picks a free port: ``server.server_port``)."""
    return WebhookServer(app, host, port, limits)
