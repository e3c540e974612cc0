"""Slack incoming webhooks: one message out, with bounded retries, and the URL kept secret.

``SlackWebhook.send`` posts one Block Kit payload with ``slack_sdk.webhook.WebhookClient``.
The SDK's own retry handlers are switched off so this module owns the policy:

- 429: wait ``Retry-After`` seconds (when it is no longer than ``max_wait_seconds``; a
  longer wait gives up for this run, the caller keeps the message pending) and try again;
- 5xx and connection errors: exponential backoff ``backoff_seconds * 2**(n-1)``, capped at
  ``max_wait_seconds``;
- other 4xx: no retry (the same request would fail the same way);
- at most ``max_attempts`` requests in all.

The webhook URL is a secret (anyone holding it can post to the channel): it never appears
in an exception message, a log event or a returned error. The SDK's logger, which writes
the URL in its debug and error lines, is silenced.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from slack_sdk.webhook import WebhookClient

from nrr.logs import get_logger, redact
from nrr.settings import Settings

log = get_logger(__name__)

# The SDK logs "Sending a request - url: <secret>" and "Failed to send ... <error with url>".
_sdk_logger = logging.getLogger("nrr.integrations.slack.sdk")
_sdk_logger.setLevel(logging.CRITICAL + 10)
_sdk_logger.propagate = False
_sdk_logger.disabled = True


class SlackConfigError(Exception):
    """SLACK_WEBHOOK_URL is set but unusable; the message never contains the URL."""


@dataclass(frozen=True)
class SendOutcome:
    """What happened to one message: ``delivered`` or the ``error`` after ``attempts`` requests."""

    delivered: bool
    attempts: int
    status_code: int | None = None
    error: str | None = None
    retryable: bool = True


def validate_webhook_url(url: str) -> str:
    """The URL stripped, or :class:`SlackConfigError` saying what is wrong (never the URL)."""
    value = url.strip()
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError as exc:
        raise SlackConfigError(
            f"SLACK_WEBHOOK_URL is not a valid URL ({type(exc).__name__}); expected "
            "https://hooks.slack.com/services/..."
        ) from None
    if parts.scheme not in ("https", "http"):
        raise SlackConfigError(
            "SLACK_WEBHOOK_URL is not a valid webhook URL: it must start with https:// "
            "(for example https://hooks.slack.com/services/T.../B.../...)"
        )
    if not parts.hostname:
        raise SlackConfigError("SLACK_WEBHOOK_URL is not a valid webhook URL: it has no host name")
    if any(ch.isspace() for ch in value):
        raise SlackConfigError("SLACK_WEBHOOK_URL is not a valid webhook URL: it contains spaces")
    return value


class SlackWebhook:
    """Posts Block Kit messages to one incoming webhook."""

    def __init__(self, url: str, *, max_attempts: int = 3, backoff_seconds: float = 1.0,
                 max_wait_seconds: float = 30.0, timeout_seconds: float = 10.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._url = validate_webhook_url(url)
        self.max_attempts = max(1, max_attempts)
        self.backoff_seconds = backoff_seconds
        self.max_wait_seconds = max_wait_seconds
        self._sleep = sleep
        self._client = WebhookClient(self._url, timeout=max(1, int(round(timeout_seconds))),
                                     logger=_sdk_logger, retry_handlers=[])

    def __repr__(self) -> str:  # the URL is a secret
        return "SlackWebhook(url=<redacted>)"

    def _clean(self, text: str) -> str:
        return redact(text.replace(self._url, "<webhook url>"))

    def send(self, payload: dict[str, Any]) -> SendOutcome:
        """Post ``payload`` (``text`` + ``blocks``); retry 429/5xx/connection errors as documented."""
        body: dict[str, Any] = {key: payload[key] for key in ("text", "blocks", "attachments")
                                if key in payload}
        last_error = "not sent"
        status: int | None = None
        for attempt in range(1, self.max_attempts + 1):
            wait: float | None
            try:
                response = self._client.send_dict(body)
            except Exception as exc:  # noqa: BLE001 - urllib raises many types; all are transport errors
                status = None
                last_error = f"could not reach Slack: {type(exc).__name__}: {self._clean(str(exc))}"
                wait = self._backoff(attempt)
            else:
                status = response.status_code
                if status == 200:
                    return SendOutcome(True, attempt, status)
                last_error = f"Slack answered {status}: {self._clean(str(response.body))[:300]}"
                if status == 429:
                    wait = self._retry_after(response.headers)
                    if wait is None:
                        log.warning("slack.rate_limited_long", attempts=attempt,
                                    max_wait_seconds=self.max_wait_seconds)
                        return SendOutcome(False, attempt, status,
                                           last_error + " (Retry-After longer than the longest "
                                           "wait; kept for the next run)")
                elif status >= 500:
                    wait = self._backoff(attempt)
                else:
                    return SendOutcome(False, attempt, status, last_error, retryable=False)
            if attempt < self.max_attempts:
                log.info("slack.retry", attempt=attempt, status=status, wait_seconds=wait)
                self._sleep(wait)
        return SendOutcome(False, self.max_attempts, status,
                           f"{last_error} (after {self.max_attempts} attempts)")

    def _backoff(self, attempt: int) -> float:
        return float(min(self.backoff_seconds * 2 ** (attempt - 1), self.max_wait_seconds))

    def _retry_after(self, headers: Any) -> float | None:
        """Seconds to wait from Retry-After (default 1), or None when longer than allowed."""
        raw = None
        for key, value in dict(headers or {}).items():
            if key.lower() == "retry-after":
                raw = value[0] if isinstance(value, list) else value
        try:
            seconds = max(0.0, float(raw)) if raw is not None else 1.0
        except (TypeError, ValueError):
            seconds = 1.0
        return None if seconds > self.max_wait_seconds else seconds


def webhook_from_settings(settings: Settings,
                          sleep: Callable[[float], None] = time.sleep) -> SlackWebhook | None:
    """The configured webhook, None when SLACK_WEBHOOK_URL is unset, SlackConfigError if invalid."""
    if settings.slack_webhook_url is None:
        return None
    alerts = settings.alerts
    return SlackWebhook(settings.slack_webhook_url.get_secret_value(),
                        max_attempts=alerts.slack_max_attempts,
                        backoff_seconds=alerts.slack_backoff_seconds,
                        max_wait_seconds=alerts.slack_max_wait_seconds,
                        timeout_seconds=alerts.slack_timeout_seconds, sleep=sleep)
