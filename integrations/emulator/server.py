"""A local HTTP server that serves an :class:`EmulatedAccount` with Stripe's semantics.

Read-only (GET). Lists are newest first by ``created`` (ties by id), ``limit`` 1..100,
``starting_after`` / ``ending_before`` by id, ``has_more``, ``status`` / ``created`` /
``customer`` / ``type`` / ``scheduled`` filters where Stripe has them, ``expand[]`` (``data.`` prefix on
lists, at most 4 levels), includable fields (a price's ``tiers`` and ``currency_options``)
only when expanded, 400 on unknown parameters, 401 without a valid key, 404 for unknown
ids, errors in Stripe's JSON shape. Latency, 429s and 5xx can be injected, and the
request rates seen (globally and per endpoint) are measured, optionally enforced.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import fnmatch
import hashlib
import hmac
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from integrations.emulator.generator import EVENT_WINDOW, EmulatedAccount
from integrations.emulator.shapes import API_VERSION, INCLUDABLE, public_view

MAX_EXPAND_DEPTH = 4
MAX_TYPES = 20

SUBSCRIPTION_STATUSES = frozenset({"active", "past_due", "unpaid", "canceled", "incomplete",
                                   "incomplete_expired", "trialing", "paused", "all",
                                   "ended"})
INVOICE_STATUSES = frozenset({"draft", "open", "paid", "uncollectible", "void"})

_PAGING = frozenset({"limit", "starting_after", "ending_before", "expand"})

# Parameters each list endpoint accepts (beyond paging and expand), as Stripe documents.
LIST_PARAMS: dict[str, frozenset[str]] = {
    "customers": frozenset({"created", "email", "test_clock"}),
    "products": frozenset({"active", "created", "ids", "shippable", "url"}),
    "prices": frozenset({"active", "created", "currency", "lookup_keys", "product",
                         "recurring", "type"}),
    "coupons": frozenset({"created"}),
    "subscriptions": frozenset({"automatic_tax", "collection_method", "created",
                                "current_period_end", "current_period_start", "customer",
                                "price", "status", "test_clock"}),
    "subscription_schedules": frozenset({"canceled_at", "completed_at", "created",
                                         "customer", "customer_account", "released_at",
                                         "scheduled"}),
    "invoices": frozenset({"collection_method", "created", "customer", "due_date",
                           "status", "subscription"}),
    "events": frozenset({"created", "delivery_success", "type", "types"}),
}
RESOURCES = frozenset(LIST_PARAMS)

# Kinds whose stored objects hold no includable field (their pages need no copy).
_NOTHING_TO_HIDE = frozenset({"customer", "product", "coupon", "invoice", "event",
                              "line item", "subscription_schedule"})

_ID_SEGMENT = re.compile(r"^/v1/([a-z_]+)/([^/]+)(/lines)?$")


class StripeError(Exception):
    """An error answered in Stripe's JSON shape."""

    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"error": {"type": type_, "message": message}}
        if code is not None:
            self.body["error"]["code"] = code
        if param is not None:
            self.body["error"]["param"] = param


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    query: dict[str, Any]
    status: int
    endpoint: str
    at: float


@dataclass
class _Rates:
    """Sliding one-second windows of request arrivals, globally and per endpoint."""

    window: float = 1.0
    arrivals: collections.deque[float] = field(default_factory=collections.deque)
    per_endpoint: dict[str, collections.deque[float]] = field(default_factory=dict)
    peak_global: int = 0
    peak_endpoint: dict[str, int] = field(default_factory=dict)

    def add(self, endpoint: str, now: float) -> tuple[int, int]:
        q = self.arrivals
        q.append(now)
        while q and q[0] <= now - self.window:
            q.popleft()
        eq = self.per_endpoint.setdefault(endpoint, collections.deque())
        eq.append(now)
        while eq and eq[0] <= now - self.window:
            eq.popleft()
        self.peak_global = max(self.peak_global, len(q))
        self.peak_endpoint[endpoint] = max(self.peak_endpoint.get(endpoint, 0), len(eq))
        return len(q), len(eq)

    def current(self, endpoint: str, now: float) -> tuple[int, int]:
        q = self.arrivals
        while q and q[0] <= now - self.window:
            q.popleft()
        eq = self.per_endpoint.get(endpoint, collections.deque())
        while eq and eq[0] <= now - self.window:
            eq.popleft()
        return len(q), len(eq)


def endpoint_of(path: str) -> str:
    """``/v1/invoices/in_123/lines`` -> ``/v1/invoices/:id/lines`` (per-endpoint rates)."""
    match = _ID_SEGMENT.match(path)
    if match and match.group(1) in RESOURCES | {"subscription_items"}:
        return f"/v1/{match.group(1)}/:id{match.group(3) or ''}"
    return path


def parse_query(query: str) -> dict[str, Any]:
    """Stripe's form encoding: ``a[b]=1`` -> {"a": {"b": "1"}}, ``a[]=x`` / ``a[0]=x`` ->
    {"a": ["x"]}."""
    out: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        match = re.match(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$", key)
        if not match:
            raise StripeError(400, f"Invalid parameter name: {key}", code="parameter_invalid",
                              param=key)
        name, rest = match.group(1), match.group(2)
        subs = re.findall(r"\[([^\[\]]*)\]", rest)
        if not subs:
            out[name] = value
        elif len(subs) == 1 and (subs[0] == "" or subs[0].isdigit()):
            existing = out.setdefault(name, [])
            if not isinstance(existing, list):
                raise StripeError(400, f"Invalid array: {name}", code="parameter_invalid",
                                  param=name)
            existing.append(value)
        elif len(subs) == 1:
            existing = out.setdefault(name, {})
            if not isinstance(existing, dict):
                raise StripeError(400, f"Invalid hash: {name}", code="parameter_invalid",
                                  param=name)
            existing[subs[0]] = value
        else:
            raise StripeError(400, f"Received unknown parameter: {key}",
                              code="parameter_unknown", param=key)
    return out


def _as_int(value: Any, param: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise StripeError(400, f"Invalid integer: {value}", code="parameter_invalid_integer",
                          param=param) from None


def _as_bool(value: Any, param: str) -> bool:
    if value in ("true", "false"):
        return value == "true"
    raise StripeError(400, f"Invalid boolean: {value}", code="parameter_invalid_boolean",
                      param=param)


def _as_list(value: Any, param: str) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, dict):
        return [str(v) for _, v in sorted(value.items())]
    raise StripeError(400, f"Invalid array: {param}", code="parameter_invalid", param=param)


def _range_filter(value: Any, param: str) -> Callable[[int | None], bool]:
    if isinstance(value, str):
        exact = _as_int(value, param)
        return lambda v: v == exact
    if not isinstance(value, dict):
        raise StripeError(400, f"Invalid {param}", code="parameter_invalid", param=param)
    bounds = {}
    for op, raw in value.items():
        if op not in ("gt", "gte", "lt", "lte"):
            raise StripeError(400, f"Received unknown parameter: {param}[{op}]",
                              code="parameter_unknown", param=f"{param}[{op}]")
        bounds[op] = _as_int(raw, f"{param}[{op}]")

    def check(v: int | None) -> bool:
        if v is None:
            return False
        return (("gt" not in bounds or v > bounds["gt"])
                and ("gte" not in bounds or v >= bounds["gte"])
                and ("lt" not in bounds or v < bounds["lt"])
                and ("lte" not in bounds or v <= bounds["lte"]))

    return check


def signature_header(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A ``Stripe-Signature`` header for ``payload`` (webhook tests and the demo)."""
    t = int(time.time()) if timestamp is None else timestamp
    signed = f"{t}.".encode() + payload
    v1 = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={t},v1={v1}"


class _Api:
    """Stripe's read API over an account; raises :class:`StripeError`."""

    def __init__(self, account: EmulatedAccount) -> None:
        self.account = account
        self._sorted: dict[str, tuple[tuple[int, int], list[dict[str, Any]],
                                      dict[str, int]]] = {}

    # -- ordering ------------------------------------------------------------------------
    def ordered(self, kind: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
        store = self.account.store(kind)
        key = (self.account.version, len(store))
        cached = self._sorted.get(kind)
        if cached is None or cached[0] != key:
            items = sorted(store.values(), key=lambda o: (o["created"], o["id"]),
                           reverse=True)
            cached = (key, items, {o["id"]: i for i, o in enumerate(items)})
            self._sorted[kind] = cached
        return cached[1], cached[2]

    # -- dispatch ------------------------------------------------------------------------
    def get(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        if path.startswith("/v1/") and path[4:] in RESOURCES:
            return self.list(path[4:], params, path)
        if path == "/v1/subscription_items":
            return self.subscription_items(params, path)
        match = _ID_SEGMENT.match(path)
        if match and match.group(1) in RESOURCES:
            kind, object_id, lines = match.groups()
            if lines:
                if kind != "invoices":
                    raise self.unrecognized("GET", path)
                return self.invoice_lines(object_id, params, path)
            return self.retrieve(kind, object_id, params)
        raise self.unrecognized("GET", path)

    @staticmethod
    def unrecognized(method: str, path: str) -> StripeError:
        return StripeError(404, f"Unrecognized request URL ({method}: {path}). The local "
                                "Stripe emulator serves GET on customers, products, prices, "
                                "coupons, subscriptions, subscription schedules, invoices, "
                                "invoice lines and events.")

    # -- retrieve ------------------------------------------------------------------------
    def retrieve(self, kind: str, object_id: str, params: dict[str, Any]) -> dict[str, Any]:
        for name in params:
            if name != "expand":
                raise StripeError(400, f"Received unknown parameter: {name}",
                                  code="parameter_unknown", param=name)
        expand = _as_list(params.get("expand", []), "expand")
        self.check_expand(expand, listing=False)
        if kind == "customers" and object_id in self.account.deleted_customers:
            return {"id": object_id, "object": "customer", "deleted": True}
        obj = self.account.store(kind).get(object_id)
        if obj is None or (kind == "events" and not self.event_visible(obj)):
            singular = {"customers": "customer", "products": "product", "prices": "price",
                        "coupons": "coupon", "subscriptions": "subscription",
                        "subscription_schedules": "subscription_schedule",
                        "invoices": "invoice", "events": "event"}[kind]
            raise StripeError(404, f"No such {singular}: '{object_id}'",
                              code="resource_missing", param="id")
        out = public_view(obj)
        for path in expand:
            self.expand(out, path.split("."), path)
        return dict(out)

    def event_visible(self, event: dict[str, Any]) -> bool:
        return bool(event["created"] > self.account.now - EVENT_WINDOW)

    # -- expansion -----------------------------------------------------------------------
    def check_expand(self, paths: list[str], *, listing: bool) -> None:
        for path in paths:
            parts = path.split(".")
            if len(parts) > MAX_EXPAND_DEPTH:
                raise StripeError(400, "You cannot expand more than 4 levels of a property. "
                                       f"Property: {path}", code="parameter_invalid",
                                  param="expand")
            if listing and (parts[0] != "data" or len(parts) < 2):
                raise StripeError(400, f"This property cannot be expanded ({path}). You may "
                                       "want to try expanding 'data." + path + "' instead.",
                                  code="parameter_invalid", param="expand")

    def expand(self, obj: Any, parts: list[str], full: str) -> None:
        if isinstance(obj, list):
            for element in obj:
                self.expand(element, parts, full)
            return
        if not isinstance(obj, dict):
            raise self.not_expandable(full)
        key = parts[0]
        kind = obj.get("object")
        includable = isinstance(kind, str) and key in INCLUDABLE.get(kind, ())
        if key not in obj and not includable:
            raise self.not_expandable(full)
        if includable:
            self.include(obj, key)
        else:
            self.expand_field(obj, key, full)
        if len(parts) > 1:
            value = obj.get(key)
            if value is not None:
                self.expand(value, parts[1:], full)

    def expand_field(self, obj: dict[str, Any], key: str, full: str) -> None:
        """Replace the id (or ids) in ``obj[key]`` by the objects; as Stripe does, a path
        expands every id on its way."""
        value = obj[key]
        if value is None or isinstance(value, dict):
            return
        if isinstance(value, str):
            obj[key] = self.resolve(value, full)
        elif isinstance(value, list) and all(isinstance(v, str | dict) for v in value):
            obj[key] = [self.resolve(v, full) if isinstance(v, str) else v for v in value]
        else:
            raise self.not_expandable(full)

    def include(self, obj: dict[str, Any], key: str) -> None:
        source = self.account.lookup(str(obj.get("id")))
        if source is not None and key in source:
            obj[key] = public_view(source[key])

    def resolve(self, object_id: str, full: str) -> dict[str, Any]:
        found = self.account.lookup(object_id)
        if found is None:
            raise self.not_expandable(full)
        out: dict[str, Any] = public_view(found)
        return out

    @staticmethod
    def not_expandable(full: str) -> StripeError:
        return StripeError(400, f"This property cannot be expanded ({full}).",
                           code="parameter_invalid", param="expand")

    # -- lists ---------------------------------------------------------------------------
    def paging(self, params: dict[str, Any]) -> tuple[int, str | None, str | None, list[str]]:
        limit = _as_int(params.get("limit", "10"), "limit")
        if not 1 <= limit <= 100:
            raise StripeError(400, "Invalid limit: must be between 1 and 100",
                              code="parameter_invalid_integer", param="limit")
        after, before = params.get("starting_after"), params.get("ending_before")
        if after is not None and before is not None:
            raise StripeError(400, "You may only specify one of these parameters: "
                                   "ending_before, starting_after.",
                              code="parameter_invalid", param="starting_after")
        for name, value in (("starting_after", after), ("ending_before", before)):
            if value is not None and (not isinstance(value, str) or not value):
                raise StripeError(400, f"Invalid {name}", code="parameter_invalid",
                                  param=name)
        expand = _as_list(params.get("expand", []), "expand")
        return limit, after, before, expand

    def page(self, items: list[dict[str, Any]], index: dict[str, int],
             keep: Callable[[dict[str, Any]], bool], params: dict[str, Any], url: str,
             kind_name: str) -> dict[str, Any]:
        limit, after, before, expand = self.paging(params)
        self.check_expand(expand, listing=True)
        found: list[dict[str, Any]] = []
        if before is not None:
            if before not in index:
                raise StripeError(400, f"No such {kind_name}: '{before}'",
                                  code="resource_missing", param="ending_before")
            i = index[before] - 1
            while i >= 0 and len(found) <= limit:
                if keep(items[i]):
                    found.append(items[i])
                i -= 1
            has_more = len(found) > limit
            data = list(reversed(found[:limit]))
        else:
            start = 0
            if after is not None:
                if after not in index:
                    raise StripeError(400, f"No such {kind_name}: '{after}'",
                                      code="resource_missing", param="starting_after")
                start = index[after] + 1
            i = start
            while i < len(items) and len(found) <= limit:
                if keep(items[i]):
                    found.append(items[i])
                i += 1
            has_more = len(found) > limit
            data = found[:limit]
        if not expand and kind_name in _NOTHING_TO_HIDE:
            # Served as stored (serialised under the account lock): no copy needed.
            return {"object": "list", "data": data, "has_more": has_more, "url": url}
        out_data = [public_view(o) for o in data]
        for path in expand:
            self.expand(out_data, path.split(".")[1:], path)
        return {"object": "list", "data": out_data, "has_more": has_more, "url": url}

    def list(self, kind: str, params: dict[str, Any], url: str) -> dict[str, Any]:
        allowed = LIST_PARAMS[kind] | _PAGING
        for name in params:
            if name not in allowed:
                raise StripeError(400, f"Received unknown parameter: {name}",
                                  code="parameter_unknown", param=name)
        checks: list[Callable[[dict[str, Any]], bool]] = []
        for name, value in params.items():
            if name in _PAGING:
                continue
            checks.append(self.filter_for(kind, name, value))
        if kind == "subscriptions" and "status" not in params:
            checks.append(lambda o: o["status"] not in ("canceled", "incomplete_expired"))
        if kind == "events":
            checks.append(self.event_visible)
        if "type" in params and "types" in params:
            raise StripeError(400, "You may only specify one of these parameters: type, "
                                   "types.", code="parameter_invalid", param="types")

        def keep(obj: dict[str, Any]) -> bool:
            return all(check(obj) for check in checks)

        items, index = self.ordered(kind)
        return self.page(items, index, keep, params, url, kind.rstrip("s"))

    def filter_for(self, kind: str, name: str, value: Any
                   ) -> Callable[[dict[str, Any]], bool]:
        if name in ("created", "due_date", "canceled_at", "completed_at", "released_at"):
            check = _range_filter(value, name)
            return lambda o: check(o.get(name))
        if name in ("current_period_start", "current_period_end"):
            check = _range_filter(value, name)
            return lambda o: any(check(i.get(name)) for i in o["items"]["data"])
        if isinstance(value, (dict, list)) and name not in ("types", "lookup_keys", "ids",
                                                            "recurring", "automatic_tax"):
            raise StripeError(400, f"Invalid string: {name}", code="parameter_invalid",
                              param=name)
        if name == "status" and kind == "subscriptions":
            if value not in SUBSCRIPTION_STATUSES:
                raise StripeError(400, f"Invalid status: must be one of "
                                       f"{', '.join(sorted(SUBSCRIPTION_STATUSES))}",
                                  code="parameter_invalid", param="status")
            if value == "all":
                return lambda o: True
            if value == "ended":
                return lambda o: o["status"] in ("canceled", "incomplete_expired")
            return lambda o: o["status"] == value
        if name == "status" and kind == "invoices":
            if value not in INVOICE_STATUSES:
                raise StripeError(400, f"Invalid status: must be one of "
                                       f"{', '.join(sorted(INVOICE_STATUSES))}",
                                  code="parameter_invalid", param="status")
            return lambda o: o["status"] == value
        if name == "subscription" and kind == "invoices":
            def of_sub(o: dict[str, Any]) -> bool:
                parent = o.get("parent") or {}
                details = parent.get("subscription_details") or {}
                return bool(details.get("subscription") == value)
            return of_sub
        if name == "price" and kind == "subscriptions":
            return lambda o: any(i["price"]["id"] == value for i in o["items"]["data"])
        if name == "scheduled" and kind == "subscription_schedules":
            # Stripe: only the schedules that have not started (false: the others).
            flag = _as_bool(value, name)
            return lambda o: (o["status"] == "not_started") is flag
        if name in ("active", "shippable"):
            flag = _as_bool(value, name)
            return lambda o: o.get(name) is flag
        if name == "type" and kind == "events":
            pattern = str(value)
            return lambda o: fnmatch.fnmatchcase(o["type"], pattern)
        if name == "types":
            names = _as_list(value, name)
            if len(names) > MAX_TYPES:
                raise StripeError(400, "types: at most 20 event types",
                                  code="parameter_invalid", param="types")
            return lambda o: o["type"] in names
        if name == "delivery_success":
            flag = _as_bool(value, name)
            return lambda o: flag
        if name == "lookup_keys":
            keys = _as_list(value, name)
            return lambda o: o.get("lookup_key") in keys
        if name == "ids":
            ids = _as_list(value, name)
            return lambda o: o["id"] in ids
        if name == "recurring":
            if not isinstance(value, dict) or not set(value) <= {"interval", "usage_type",
                                                                  "meter"}:
                raise StripeError(400, "Invalid recurring", code="parameter_invalid",
                                  param="recurring")
            return lambda o: all((o.get("recurring") or {}).get(k) == v
                                 for k, v in value.items())
        if name == "automatic_tax":
            if not isinstance(value, dict) or set(value) != {"enabled"}:
                raise StripeError(400, "Invalid automatic_tax", code="parameter_invalid",
                                  param="automatic_tax")
            flag = _as_bool(value["enabled"], "automatic_tax[enabled]")
            return lambda o: o["automatic_tax"]["enabled"] is flag
        return lambda o: o.get(name) == value

    def invoice_lines(self, invoice_id: str, params: dict[str, Any], url: str
                      ) -> dict[str, Any]:
        for name in params:
            if name not in _PAGING:
                raise StripeError(400, f"Received unknown parameter: {name}",
                                  code="parameter_unknown", param=name)
        if invoice_id not in self.account.invoices:
            raise StripeError(404, f"No such invoice: '{invoice_id}'",
                              code="resource_missing", param="invoice")
        lines = self.account.lines_of(invoice_id)
        index = {line["id"]: i for i, line in enumerate(lines)}
        return self.page(lines, index, lambda o: True, params, url, "line item")

    def subscription_items(self, params: dict[str, Any], url: str) -> dict[str, Any]:
        for name in params:
            if name not in _PAGING | {"subscription"}:
                raise StripeError(400, f"Received unknown parameter: {name}",
                                  code="parameter_unknown", param=name)
        sub_id = params.get("subscription")
        if not isinstance(sub_id, str):
            raise StripeError(400, "Missing required param: subscription.",
                              code="parameter_missing", param="subscription")
        sub = self.account.subscriptions.get(sub_id)
        if sub is None:
            raise StripeError(404, f"No such subscription: '{sub_id}'",
                              code="resource_missing", param="subscription")
        items = sub["items"]["data"]
        index = {item["id"]: i for i, item in enumerate(items)}
        return self.page(items, index, lambda o: True, params, url, "subscription item")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        return

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self.server.owner._handle(self, "GET")

    def _refuse(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.owner._handle(self, self.command)

    do_POST = do_DELETE = do_PUT = do_PATCH = _refuse  # noqa: N815 - stdlib names


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: EmulatorServer

    def __init__(self, address: tuple[str, int], handler: type[_Handler]) -> None:
        super().__init__(address, handler)
        self.open_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.open_connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.open_connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Close kept-alive client connections too: a stopped server answers nothing."""
        with self.connections_lock:
            connections = list(self.open_connections)
            self.open_connections.clear()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()


class EmulatorServer:
    """Serve ``account`` on ``http://host:port`` (``port=0`` picks a free port).

    ``latency_ms``, ``fail_every`` (every n-th request fails with ``fail_status`` and
    ``error_code``), ``rate_limit`` / ``endpoint_rate_limit`` (requests per second over
    which a 429 ``rate_limit`` is answered) can be changed while it runs.
    """

    def __init__(self, account: EmulatedAccount, host: str = "127.0.0.1", port: int = 0, *,
                 api_key_prefix: str = "sk_test_", latency_ms: float = 0,
                 fail_every: int | None = None, fail_status: int = 429,
                 error_code: str = "rate_limit", rate_limit: int | None = None,
                 endpoint_rate_limit: int | None = None, api_key: str | None = None) -> None:
        self.account = account
        self.host = host
        self.port = port
        self.api_key_prefix = api_key_prefix
        self.api_key = api_key
        self.latency_ms = latency_ms
        self._fail_every = fail_every
        self.fail_status = fail_status
        self.error_code = error_code
        self.rate_limit = rate_limit
        self.endpoint_rate_limit = endpoint_rate_limit
        self._api = _Api(account)
        self._lock = threading.Lock()
        self._log: list[LoggedRequest] = []
        self._counter = 0
        self._one_shot: collections.deque[tuple[int, str]] = collections.deque()
        self._rates = _Rates()
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> EmulatorServer:
        if self._server is not None:
            return self
        server = _HTTPServer((self.host, self.port), _Handler)
        server.owner = self
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(target=server.serve_forever, kwargs={
            "poll_interval": 0.05}, name=f"stripe-emulator-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (``nrr emulator serve``)."""
        server = _HTTPServer((self.host, self.port), _Handler)
        server.owner = self
        self._server = server
        self.port = int(server.server_address[1])
        try:
            server.serve_forever(poll_interval=0.2)
        finally:
            server.server_close()
            self._server = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- observation and injection -------------------------------------------------------
    @property
    def fail_every(self) -> int | None:
        """Every n-th request (counted from when this is set, or from :meth:`reset_log`)
        fails with ``fail_status`` / ``error_code``; None turns it off."""
        return self._fail_every

    @fail_every.setter
    def fail_every(self, value: int | None) -> None:
        with self._lock:
            self._fail_every = value
            self._counter = 0

    @property
    def requests(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._log)

    def reset_log(self) -> None:
        with self._lock:
            self._log.clear()
            self._rates = _Rates()
            self._counter = 0

    def fail_next(self, n: int = 1, status: int = 429, error_code: str = "rate_limit") -> None:
        """Answer the next ``n`` requests with ``status`` (then behave normally)."""
        with self._lock:
            self._one_shot.extend([(status, error_code)] * n)

    def peak_rates(self) -> dict[str, Any]:
        """The highest number of requests seen within any one second, globally and per
        endpoint (``/v1/invoices/:id/lines`` style), since start or :meth:`reset_log`."""
        with self._lock:
            return {"global": self._rates.peak_global,
                    "per_endpoint": dict(self._rates.peak_endpoint)}

    def counts_by_endpoint(self) -> dict[str, int]:
        with self._lock:
            return dict(collections.Counter(r.endpoint for r in self._log))

    # -- handling ------------------------------------------------------------------------
    def _handle(self, handler: _Handler, method: str) -> None:
        parts = urlsplit(handler.path)
        path = parts.path.rstrip("/") or "/"
        endpoint = endpoint_of(path)
        query: dict[str, Any] = {}
        try:
            status, data, query = self._answer(handler, method, path, parts.query, endpoint)
        except Exception as exc:  # noqa: BLE001 - the emulator answers like Stripe would
            status, data = 500, json.dumps({"error": {
                "type": "api_error", "message": f"emulator error: {exc!r}"}}).encode()
        with self._lock:
            self._log.append(LoggedRequest(method, path, query, status, endpoint,
                                           time.monotonic()))
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.send_header("Request-Id", f"req_emu{id(handler):x}")
            handler.send_header("Stripe-Version",
                                handler.headers.get("Stripe-Version") or API_VERSION)
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _answer(self, handler: _Handler, method: str, path: str, raw_query: str,
                endpoint: str) -> tuple[int, bytes, dict[str, Any]]:
        status, body, query = self._respond(handler, method, path, raw_query, endpoint)
        if isinstance(body, bytes):
            return status, body, query
        return status, json.dumps(body).encode(), query

    def _respond(self, handler: _Handler, method: str, path: str, raw_query: str,
                 endpoint: str) -> tuple[int, dict[str, Any] | bytes, dict[str, Any]]:
        now = time.monotonic()
        with self._lock:
            self._counter += 1
            counter = self._counter
            total, per_endpoint = self._rates.add(endpoint, now)
            injected = self._one_shot.popleft() if self._one_shot else None
        if self.latency_ms:
            time.sleep(self.latency_ms / 1000.0)
        try:
            query = parse_query(raw_query)
        except StripeError as err:
            return err.status, err.body, {}
        every = self._fail_every
        if injected is None and every and counter % every == 0:
            injected = (self.fail_status, self.error_code)
        if injected is not None:
            return (*self._injected(*injected), query)
        if (self.rate_limit is not None and total > self.rate_limit) or (
                self.endpoint_rate_limit is not None
                and per_endpoint > self.endpoint_rate_limit):
            return (*self._injected(429, "rate_limit"), query)
        auth_error = self._check_auth(handler.headers.get("Authorization"))
        if auth_error is not None:
            return auth_error.status, auth_error.body, query
        if method != "GET":
            refusal = StripeError(405, f"The local Stripe emulator is read-only: {method} "
                                       f"{path} is not supported.", code="method_not_allowed")
            return refusal.status, refusal.body, query
        try:
            with self.account.lock:
                return 200, json.dumps(self._api.get(path, query)).encode(), query
        except StripeError as err:
            return err.status, err.body, query

    @staticmethod
    def _injected(status: int, code: str) -> tuple[int, dict[str, Any]]:
        if status == 429:
            message = ("Request rate limit exceeded. Learn more about rate limits here "
                       "https://stripe.com/docs/rate-limits." if code == "rate_limit" else
                       "This object cannot be accessed right now because another API "
                       "request or Stripe process is currently accessing it.")
            return status, {"error": {"type": "invalid_request_error", "code": code,
                                      "message": message}}
        return status, {"error": {"type": "api_error", "code": code,
                                  "message": f"An unexpected error occurred (injected "
                                             f"{status})."}}

    def _check_auth(self, header: str | None) -> StripeError | None:
        key = None
        if header and header.startswith("Bearer "):
            key = header[len("Bearer "):].strip()
        elif header and header.startswith("Basic "):
            try:
                key = base64.b64decode(header[len("Basic "):]).decode().split(":", 1)[0]
            except ValueError:
                key = None
        if not key:
            return StripeError(401, "You did not provide an API key. You need to provide "
                                    "your API key in the Authorization header, using Bearer "
                                    "auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').")
        valid = key == self.api_key if self.api_key is not None else \
            key.startswith(self.api_key_prefix)
        if not valid:
            shown = key[:8] + "*" * 4 + key[-4:] if len(key) > 12 else "****"
            return StripeError(401, f"Invalid API Key provided: {shown}",
                               code="api_key_invalid")
        return None

