"""The HTTP server in front of the webhook WSGI app: waitress, with hard limits.

Why waitress: pure Python (no compiler, one wheel), a production WSGI server used for
years, and it reads requests on one asynchronous loop, so a connection that stalls costs
a file descriptor and no thread: the application runs on a fixed pool of threads only once
a request has fully arrived. cheroot, the other candidate, gives each connection a thread
while it is read, which is what let 300 stalled connections take 302 threads before.

The limits (every one has a default in :class:`ServerLimits` and an ``nrr serve`` option):

- a real listen backlog (2,048; the kernel caps it at ``net.core.somaxconn``), so a burst
  queues instead of being reset;
- a read timeout: a request whose headers and body have not all arrived within it is
  closed (waitress has only an idle timeout; the read timeout is added here, checked once
  a second), and an idle timeout for keep-alive connections with no request;
- bounded concurrency: ``threads`` application threads, ``max_connections`` open
  connections (beyond it new ones wait in the backlog);
- a clean 413: waitress reads bodies up to ``drain_bytes`` before the application sees
  the request, so a body over the application's limit is read in full and answered 413
  (the sender gets the answer, not a broken pipe); only a body over ``drain_bytes`` is
  refused by waitress itself without being read.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

from nrr.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class ServerLimits:
    backlog: int = 2048
    threads: int = 8
    max_connections: int = 1000
    read_timeout: float = 10.0
    idle_timeout: float = 30.0
    drain_bytes: int = 8_000_000


class _Channel(HTTPChannel):  # type: ignore[misc]
    """Remembers when the request being read started, for the read timeout."""

    request_started: float | None = None

    def received(self, data: bytes) -> bool:
        if data and self.request is None:
            self.request_started = time.monotonic()
        result = bool(super().received(data))
        if self.request is None:
            self.request_started = None  # the request is complete (or none is under way)
        return result


class _Server(TcpWSGIServer):  # type: ignore[misc]
    channel_class = _Channel
    read_timeout: float = 10.0

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # the idle timeout (waitress's channel_timeout)
        cutoff = time.monotonic() - self.read_timeout
        for channel in list(self.active_channels.values()):
            started = getattr(channel, "request_started", None)
            if started is not None and started < cutoff and not channel.will_close:
                channel.will_close = True
                log.info("webhook.read_timeout", peer=str(channel.addr),
                         seconds=self.read_timeout)


class WebhookServer:
    """``serve_forever`` / ``shutdown`` / ``server_close`` like the standard library's
    servers; ``server_port`` is the bound port (port 0 picks a free one)."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 8000,
                 limits: ServerLimits | None = None) -> None:
        self.limits = limits or ServerLimits()
        adj = Adjustments(
            host=host, port=port, threads=self.limits.threads,
            backlog=self.limits.backlog, connection_limit=self.limits.max_connections,
            channel_timeout=self.limits.idle_timeout,
            # Timeouts are checked this often; a second keeps them within a second.
            cleanup_interval=1, asyncore_loop_timeout=1,
            max_request_body_size=self.limits.drain_bytes,
            ident="nrr-webhooks", expose_tracebacks=False, log_socket_errors=False,
            clear_untrusted_proxy_headers=True,
        )
        self._map: dict[int, Any] = {}
        self._dispatcher = ThreadedTaskDispatcher()
        self._dispatcher.set_thread_count(self.limits.threads)
        # The first address the host name resolves to (waitress's own listen list).
        self._server = _Server(app, map=self._map, dispatcher=self._dispatcher, adj=adj,
                               sockinfo=adj.listen[0])
        self._server.read_timeout = self.limits.read_timeout
        self.server_port: int = int(self._server.effective_port)
        self._running = False
        self._stopped = threading.Event()
        self._stopped.set()
        # waitress logs a line per refused or timed-out connection at WARNING on its own
        # logger: quiet unless asked (its errors still come through).
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)

    def serve_forever(self) -> None:
        from waitress import wasyncore

        self._running = True
        self._stopped.clear()
        try:
            while self._running and self._map:
                wasyncore.loop(timeout=0.2, map=self._map, count=1)
        finally:
            self._running = False
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop ``serve_forever`` (called from another thread) and wait until it returned."""
        self._running = False
        self._stopped.wait(timeout=10)

    def server_close(self) -> None:
        self.shutdown()
        for channel in list(self._map.values()):
            with contextlib.suppress(OSError):
                channel.close()
        self._map.clear()
        self._dispatcher.shutdown(timeout=5)
