"""A local stand-in for a Slack incoming webhook: real HTTP on 127.0.0.1 that records posts.

    with SlackRecorder() as slack:
        slack.fail_next(2, status=429, retry_after=1)   # then answers 200 "ok"
        ... post to slack.url ...
        assert len(slack.delivered) == 1

``requests`` holds every request received (failed ones too); ``delivered`` only those
answered 200. ``delay_seconds`` slows every answer, to widen race windows in concurrency
tests. It answers like Slack: 200 ``ok``, 429 ``rate_limited`` with ``Retry-After``, 500
``internal_error``, 400 ``invalid_payload`` for a body that is not JSON.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class RecordedPost:
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    status: int
    at: float

    @property
    def payload(self) -> dict[str, Any]:
        """The JSON body (a request whose body was not JSON was answered 400)."""
        if self.body is None:
            raise AssertionError("the request body was not JSON")
        return self.body


class SlackRecorder:
    def __init__(self, delay_seconds: float = 0.0) -> None:
        self.delay_seconds = delay_seconds
        self.requests: list[RecordedPost] = []
        self._failures: list[tuple[int, float | None]] = []
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                recorder._answer(self, raw)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # ------------------------------------------------------------------ control

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/services/T0000/B0000/recorder-secret-token"

    def fail_next(self, count: int, *, status: int = 500, retry_after: float | None = None) -> None:
        """Answer the next ``count`` requests with ``status`` (and Retry-After when given)."""
        with self._lock:
            self._failures.extend([(status, retry_after)] * count)

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    @property
    def delivered(self) -> list[RecordedPost]:
        with self._lock:
            return [r for r in self.requests if r.status == 200]

    def start(self) -> SlackRecorder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> SlackRecorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ serving

    def _answer(self, handler: BaseHTTPRequestHandler, raw: bytes) -> None:
        if self.delay_seconds:
            time.sleep(self.delay_seconds)
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            body = None
        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
            if body is None:
                status, text, retry_after = 400, "invalid_payload", None
            elif failure is not None:
                status, retry_after = failure
                text = "rate_limited" if status == 429 else "internal_error"
            else:
                status, text, retry_after = 200, "ok", None
            self.requests.append(RecordedPost(handler.path, dict(handler.headers.items()), body,
                                              status, time.monotonic()))
        payload = text.encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "text/plain; charset=utf-8")
        handler.send_header("Content-Length", str(len(payload)))
        if retry_after is not None:
            handler.send_header("Retry-After", f"{retry_after:g}")
        handler.end_headers()
        handler.wfile.write(payload)
