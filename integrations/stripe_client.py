"""The one wrapper around the Stripe SDK: read-only, rate limited, counted, plain data out.

Everything the sync needs from Stripe goes through :class:`StripeReader`. It holds a
``stripe.StripeClient`` (SDK 16.1.0, which pins API version ``2026-10-28.endive``; we never
set another) whose HTTP client is wrapped so that every HTTP request, the SDK's own
retries included, first waits for the rate limiter and is counted per endpoint.

Errors are classified here, on purpose:

- 429 (``e.error.code`` ``rate_limit`` or ``lock_timeout``): back off and retry, each
  retry again through the limiter, up to ``rate_limit_retries`` times.
- 5xx, 409 and connection errors: the SDK retries them with backoff
  (``max_network_retries``); what still fails is raised.
- 401 / 403: :class:`StripeAccessDenied`, naming the permission the restricted key lacks.
- 404 on a retrieve: the object is gone (``None``), which the sync treats as deleted.

SDK objects never leave this module: pages and objects are plain dicts, the JSON bodies
the SDK received (``StripeClient.raw_request``: the SDK still makes every request, with
its authentication, pinned API version, retries and error classes).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import stripe

from integrations.ratelimit import RateLimiter, limiter_for
from nrr.logs import get_logger
from nrr.settings import Settings

log = get_logger(__name__)

PINNED_API_VERSION: str = stripe.api_version

# The SDK logs every request at INFO through ``logging``; our own log says what matters.
logging.getLogger("stripe").setLevel(logging.WARNING)

# What a restricted key needs (Developers > API keys > Create restricted key), all "Read".
READ_PERMISSIONS = {
    "customers": "Customers",
    "products": "Products",
    "prices": "Prices",
    "coupons": "Coupons",
    "subscriptions": "Subscriptions",
    "subscription_items": "Subscriptions",
    "subscription_schedules": "Subscriptions",
    "invoices": "Invoices",
    "invoice_lines": "Invoices",
    "events": "Events",
}
RESTRICTED_KEY_HELP = (
    "create a restricted key with Read access to: "
    + ", ".join(sorted(set(READ_PERMISSIONS.values())))
    + " (and nothing else), and set it as STRIPE_API_KEY"
)


# The read endpoints the sync uses (GET only).
LIST_PATHS = {
    "customers": "/v1/customers",
    "products": "/v1/products",
    "prices": "/v1/prices",
    "coupons": "/v1/coupons",
    "subscriptions": "/v1/subscriptions",
    "subscription_items": "/v1/subscription_items",
    "subscription_schedules": "/v1/subscription_schedules",
    "invoices": "/v1/invoices",
    "events": "/v1/events",
}
RETRIEVABLE = frozenset(LIST_PATHS) - {"subscription_items"}


class StripeAccessDenied(Exception):
    """401/403 from Stripe: the key is wrong or lacks a permission; the sync stops."""


class StripeUnavailable(Exception):
    """Stripe kept failing (5xx, connection errors, 429s) after every retry."""


@dataclass
class Page:
    """One list page as plain data."""

    data: list[dict[str, Any]]
    has_more: bool

    @property
    def last_id(self) -> str | None:
        return str(self.data[-1]["id"]) if self.data else None


def endpoint_of(url: str) -> str:
    """``https://api.stripe.com/v1/invoices/in_1/lines?x`` -> ``/v1/invoices/{id}/lines``."""
    path = urlsplit(url).path
    # /v1/<collection>/<id>/<collection>/<id>: ids sit at the odd positions from 3 on.
    parts = [("{id}" if index >= 3 and index % 2 == 1 else part)
             for index, part in enumerate(path.split("/"))]
    return "/".join(parts)


class LimitedHTTPClient(stripe.RequestsClient):
    """The SDK's requests client, with a limiter wait and a count before every request."""

    def __init__(self, limiter: RateLimiter, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limiter = limiter
        self.request_counts: Counter[str] = Counter()
        self.status_counts: Counter[int] = Counter()
        self.waited_seconds = 0.0
        self._count_lock = threading.Lock()
        self.request_log: list[tuple[float, str]] | None = None

    def request(self, method: str, url: str, headers: Mapping[str, str] | None,  # type: ignore[override]
                post_data: Any = None) -> tuple[bytes, int, Mapping[str, str]]:
        endpoint = endpoint_of(url)
        waited = self.limiter.acquire(endpoint)
        with self._count_lock:
            self.request_counts[endpoint] += 1
            self.waited_seconds += waited
            if self.request_log is not None:
                self.request_log.append((time.monotonic(), endpoint))
        content, status, response_headers = super().request(method, url, headers, post_data)
        with self._count_lock:
            self.status_counts[status] += 1
        return content, status, response_headers


class StripeReader:
    """Read-only access to one Stripe account, for the sync and the event processor."""

    def __init__(self, settings: Settings, *, limiter: RateLimiter | None = None,
                 max_network_retries: int = 4, rate_limit_retries: int = 8,
                 backoff_base: float = 0.5, backoff_max: float = 8.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        settings.require("stripe_api_key")
        self.settings = settings
        self.limiter = limiter if limiter is not None else limiter_for(settings)
        self.http = LimitedHTTPClient(self.limiter, timeout=60)
        base_addresses: dict[str, str] = {}
        if settings.stripe_api_base:
            base_addresses["api"] = settings.stripe_api_base.rstrip("/")
        self.client = stripe.StripeClient(
            settings.secret("stripe_api_key"),
            max_network_retries=max_network_retries,
            base_addresses=base_addresses,  # type: ignore[arg-type]
            http_client=self.http,
        )
        self.rate_limit_retries = rate_limit_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._sleep = sleep
        self.rate_limited = 0

    # ------------------------------------------------------------------ counters

    @property
    def request_counts(self) -> Counter[str]:
        return self.http.request_counts

    @property
    def requests_made(self) -> int:
        return sum(self.http.request_counts.values())

    # ------------------------------------------------------------------ calls

    def _call(self, resource: str, call: Callable[[], Any]) -> Any:
        attempt = 0
        while True:
            try:
                return call()
            except stripe.RateLimitError as exc:
                code = getattr(exc.error, "code", None) if exc.error is not None else None
                attempt += 1
                self.rate_limited += 1
                if attempt > self.rate_limit_retries:
                    raise StripeUnavailable(
                        f"Stripe kept answering 429 ({code or 'rate_limit'}) on {resource} "
                        f"after {self.rate_limit_retries} retries") from exc
                delay = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
                delay *= 0.5 + random.random() / 2
                log.info("stripe.rate_limited", resource=resource, code=code or "rate_limit",
                         attempt=attempt, retry_in=round(delay, 3))
                self._sleep(delay)
            except (stripe.AuthenticationError, stripe.PermissionError) as exc:
                raise self._denied(resource, exc) from None
            except stripe.APIConnectionError as exc:
                raise StripeUnavailable(
                    f"cannot reach Stripe for {resource} after retries: {exc.user_message}"
                ) from exc
            except stripe.APIError as exc:
                raise StripeUnavailable(
                    f"Stripe failed on {resource} after retries "
                    f"(HTTP {exc.http_status}): {exc.user_message}") from exc

    def _denied(self, resource: str, exc: stripe.StripeError) -> StripeAccessDenied:
        permission = READ_PERMISSIONS.get(resource, resource)
        if isinstance(exc, stripe.AuthenticationError):
            return StripeAccessDenied(
                f"Stripe rejected the API key (HTTP {exc.http_status}) while reading "
                f"{resource}: check STRIPE_API_KEY; {RESTRICTED_KEY_HELP}")
        return StripeAccessDenied(
            f"the Stripe key lacks the '{permission}: Read' permission (HTTP "
            f"{exc.http_status} on {resource}); {RESTRICTED_KEY_HELP}")

    def _get(self, resource: str, path: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """GET ``path`` through the SDK (auth, pinned API version, retries, error classes)
        and return the JSON body as the SDK parsed it. Building SDK objects from it and
        turning them back into dicts would only cost time: the data out is plain anyway."""
        query = dict(params)
        response = self._call(resource, lambda: self.client.raw_request("get", path, **query))
        # ``response.data`` is built of OrderedDicts; plain dicts are cheaper downstream.
        body: dict[str, Any] = json.loads(response.body)
        return body

    def _page(self, resource: str, path: str, params: Mapping[str, Any]) -> Page:
        body = self._get(resource, path, params)
        return Page(data=list(body.get("data") or []), has_more=bool(body.get("has_more")))

    def list_page(self, resource: str, params: Mapping[str, Any] | None = None) -> Page:
        """One page of a list endpoint (``customers``, ``prices``, ... ``events``)."""
        if resource not in LIST_PATHS:
            raise KeyError(resource)
        return self._page(resource, LIST_PATHS[resource], params or {})

    def iter_pages(self, resource: str, params: Mapping[str, Any] | None = None, *,
                   starting_after: str | None = None, limit: int = 100) -> Iterator[Page]:
        """Every page, newest first, from ``starting_after`` (resume cursor) on."""
        query = dict(params or {})
        query["limit"] = limit
        cursor = starting_after
        while True:
            if cursor:
                query["starting_after"] = cursor
            page = self.list_page(resource, query)
            yield page
            if not page.has_more or not page.data:
                return
            cursor = page.last_id

    def invoice_lines_pages(self, invoice_id: str, *, starting_after: str | None = None,
                            limit: int = 100) -> Iterator[Page]:
        """Pages of ``/v1/invoices/{id}/lines`` (only needed when the embedded list is partial)."""
        path = f"/v1/invoices/{quote(invoice_id, safe='')}/lines"
        cursor = starting_after
        while True:
            query: dict[str, Any] = {"limit": limit}
            if cursor:
                query["starting_after"] = cursor
            page = self._page("invoice_lines", path, query)
            yield page
            if not page.has_more or not page.data:
                return
            cursor = page.last_id

    def retrieve(self, resource: str, object_id: str,
                 params: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """The object as plain data, or None when Stripe answers 404 (it was deleted)."""
        if resource not in RETRIEVABLE:
            raise KeyError(resource)
        path = f"{LIST_PATHS[resource]}/{quote(object_id, safe='')}"
        try:
            return self._get(resource, path, params or {})
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                return None
            raise

    def newest_event_created(self) -> int | None:
        """``created`` of the newest event in the account (None when there is none)."""
        page = self.list_page("events", {"limit": 1})
        return int(page.data[0]["created"]) if page.data else None

    def close(self) -> None:
        self.http.close()
