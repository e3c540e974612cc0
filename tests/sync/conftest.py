"""Fixtures for the sync tests: settings pointing at a fake Stripe, and a ``responses`` world.

:class:`ListWorld` serves Stripe list semantics over ``responses`` (newest first, ``limit``,
``starting_after``, ``has_more``, ``/v1/invoices/{id}/lines``, retrieve, ``/v1/events`` with
``created[gte|gt|lt|lte]`` on every list) from plain dicts, and records every request, so client behaviours can
be tested at the HTTP edge with the real SDK.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import responses
import stripe

from nrr.settings import Settings, load_settings

API = "http://127.0.0.1:9"  # never contacted: responses intercepts every call


@pytest.fixture(autouse=True)
def _fast_sdk_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's own retry sleeps (0.5 s and up) shortened so retry tests run quickly."""
    monkeypatch.setattr(stripe._http_client.HTTPClient, "INITIAL_DELAY", 0.001)
    monkeypatch.setattr(stripe._http_client.HTTPClient, "MAX_DELAY", 0.002)


def make_settings(database_url: str = "sqlite:///:memory:", /, **extra: str | None) -> Settings:
    """Settings for tests; an ``extra`` value of None removes that variable."""
    env = {
        "DATABASE_URL": database_url,
        "STRIPE_API_KEY": "rk_test_abc123",
        "STRIPE_API_BASE": API,
        "STRIPE_WEBHOOK_SECRET": "whsec_testsecret",
        "NRR_STRIPE_RATE_LIMIT": "1000",
        "NRR_STRIPE_ENDPOINT_RATE_LIMIT": "1000",
    }
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return load_settings(env)


def query_of(request: Any) -> dict[str, Any]:
    """The request's query as a dict; repeated / indexed keys become lists."""
    out: dict[str, Any] = {}
    for key, value in parse_qsl(urlsplit(request.url).query, keep_blank_values=True):
        base = re.sub(r"\[\d*\]$", "", key)
        if base != key and re.search(r"\[\d*\]$", key):
            out.setdefault(base, []).append(value)
        else:
            out[key] = value
    return out


class ListWorld:
    """Stripe list semantics over ``responses`` for a handful of plain objects."""

    def __init__(self, mock: responses.RequestsMock) -> None:
        self.mock = mock
        self.objects: dict[str, list[dict[str, Any]]] = {
            name: [] for name in ("customers", "products", "prices", "coupons",
                                  "subscriptions", "subscription_schedules", "invoices",
                                  "events")
        }
        self.lines: dict[str, list[dict[str, Any]]] = {}
        self.embedded_lines = 10
        self.requests: list[tuple[str, dict[str, Any]]] = []
        for name in self.objects:
            mock.add_callback(responses.GET, re.compile(rf"{re.escape(API)}/v1/{name}(\?.*)?$"),
                              callback=self._list(name))
            mock.add_callback(responses.GET,
                              re.compile(rf"{re.escape(API)}/v1/{name}/[A-Za-z0-9_]+(\?.*)?$"),
                              callback=self._retrieve(name))
        mock.add_callback(responses.GET,
                          re.compile(rf"{re.escape(API)}/v1/invoices/[A-Za-z0-9_]+/lines(\?.*)?$"),
                          callback=self._lines)

    def add(self, resource: str, obj: dict[str, Any]) -> None:
        if resource == "invoices":
            lines = obj["lines"]["data"]
            self.lines[obj["id"]] = lines
        self.objects[resource].append(obj)

    def _render(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        if resource != "invoices":
            return obj
        lines = self.lines.get(obj["id"], [])
        rendered = dict(obj)
        rendered["lines"] = {"object": "list", "data": lines[: self.embedded_lines],
                             "has_more": len(lines) > self.embedded_lines,
                             "url": f"/v1/invoices/{obj['id']}/lines"}
        return rendered

    @staticmethod
    def _page(items: list[dict[str, Any]], query: dict[str, Any], url: str) -> dict[str, Any]:
        limit = int(query.get("limit", 10))
        start = 0
        if "starting_after" in query:
            ids = [o["id"] for o in items]
            start = ids.index(query["starting_after"]) + 1
        page = items[start:start + limit]
        return {"object": "list", "data": page, "has_more": start + limit < len(items), "url": url}

    def _list(self, resource: str) -> Any:
        def callback(request: Any) -> tuple[int, dict[str, str], str]:
            query = query_of(request)
            self.requests.append((urlsplit(request.url).path, query))
            items = sorted(self.objects[resource], key=lambda o: (o.get("created", 0), o["id"]),
                           reverse=True)
            for op, keep in (("gte", int.__ge__), ("gt", int.__gt__), ("lt", int.__lt__),
                             ("lte", int.__le__)):
                if f"created[{op}]" in query:
                    bound = int(query[f"created[{op}]"])
                    items = [o for o in items if keep(int(o.get("created", 0)), bound)]
            if resource == "events" and "types" in query:
                items = [e for e in items if e["type"] in query["types"]]
            items = [self._render(resource, o) for o in items]
            return 200, {}, json.dumps(self._page(items, query, f"/v1/{resource}"))
        return callback

    def _retrieve(self, resource: str) -> Any:
        def callback(request: Any) -> tuple[int, dict[str, str], str]:
            path = urlsplit(request.url).path
            self.requests.append((path, query_of(request)))
            object_id = path.rsplit("/", 1)[1]
            for obj in self.objects[resource]:
                if obj["id"] == object_id:
                    return 200, {}, json.dumps(self._render(resource, obj))
            return 404, {}, json.dumps({"error": {"type": "invalid_request_error",
                                                  "code": "resource_missing",
                                                  "message": f"No such object: '{object_id}'"}})
        return callback

    def _lines(self, request: Any) -> tuple[int, dict[str, str], str]:
        path = urlsplit(request.url).path
        query = query_of(request)
        self.requests.append((path, query))
        invoice_id = path.split("/")[3]
        return 200, {}, json.dumps(self._page(self.lines[invoice_id], query, path))

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def world(mocked: responses.RequestsMock) -> ListWorld:
    return ListWorld(mocked)


def build_account(list_world: ListWorld, *, customers: int = 12, seed: int = 7) -> dict[str, int]:
    """Fill ``list_world`` with a simulated account (tests/stripe_world.py); returns counts."""
    import random

    from integrations.emulator import shapes
    from tests import stripe_world as sw

    rng = random.Random(seed)
    account = sw.World()
    account.add_price("price_basic", unit_amount=1_000)
    account.add_price("price_pro", unit_amount=5_000, product="prod_2")
    account.add_price("price_seat", unit_amount=700, product="prod_3")
    account.add_coupon("co_10", percent_off=10)
    start = sw.ts(2025, 1, 1)
    lives = []
    for n in range(customers):
        cid = f"cus_{n:04d}"
        account.add_customer(cid, created=start + n)
        at = start + n * 86_400
        # Every fourth customer has many items, so its invoices' lines need paging.
        items = ([(f"price_{k}", 1) for k in range(12)] if n % 4 == 0
                 else [(rng.choice(["price_basic", "price_pro"]), rng.randint(1, 5))])
        for price_id, _q in items:
            if price_id not in account.prices:
                account.add_price(price_id, unit_amount=100 + len(account.prices))
        lives.append(account.subscribe(cid, items, at=at,
                                       coupons=["co_10"] if n % 3 == 0 else ()))
    for n, life in enumerate(lives):
        if n % 5 == 1:
            life.change_quantity(life.item_ids[0], 9, at=sw.ts(2025, 3, 10) + n)
        if n % 7 == 2:
            life.cancel_at_period_end(at=sw.ts(2025, 4, 2) + n)
    account.advance(sw.ts(2025, 7, 1))
    objects = account.objects()
    # Every third subscription gets a schedule: one seat less from its next period on.
    objects["subscription_schedules"] = []
    for n, sub in enumerate(objects["subscriptions"]):
        if n % 3 or sub["status"] != "active":
            continue
        start = sub["items"]["data"][0]["current_period_start"]
        end = sub["items"]["data"][0]["current_period_end"]
        now_items = [(i["price"]["id"], i["quantity"]) for i in sub["items"]["data"]]
        fewer = [(price, max(1, (quantity or 1) - 1)) for price, quantity in now_items]
        objects["subscription_schedules"].append(shapes.subscription_schedule(
            id=f"sub_sched_{n:04d}", customer=sub["customer"], subscription=sub["id"],
            created=sw.ts(2025, 6, 20) + n, livemode=False, phases=[
                shapes.schedule_phase(start_date=start, end_date=end, currency="usd",
                                      items=now_items),
                shapes.schedule_phase(start_date=end, end_date=end + 31 * 86_400,
                                      currency="usd", items=fewer)]))
    counts = {}
    for resource in ("customers", "products", "prices", "coupons", "subscriptions",
                     "subscription_schedules", "invoices"):
        for obj in objects[resource]:
            list_world.add(resource, obj)
        counts[resource] = len(objects[resource])
    counts["invoice_lines"] = sum(len(i["lines"]["data"]) for i in objects["invoices"])
    return counts


MIRROR_TABLES = ("stripe_customers", "stripe_products", "stripe_prices", "stripe_coupons",
                 "stripe_subscriptions", "stripe_subscription_items",
                 "stripe_subscription_schedules", "stripe_discounts",
                 "stripe_invoices", "stripe_invoice_lines", "quarantine")
_VOLATILE = {"synced_at", "state_at", "created_at", "received_at", "processed_at"}


def mirror_snapshot(engine: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every mirror row, sorted, without bookkeeping instants (they differ between runs)."""
    from sqlalchemy import MetaData, select

    meta = MetaData()
    meta.reflect(bind=engine, only=list(MIRROR_TABLES))
    out: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for name in MIRROR_TABLES:
            table = meta.tables[name]
            columns = [c for c in table.c if c.name not in _VOLATILE and c.name != "id"
                       or (name != "quarantine" and c.name == "id")]
            rows = conn.execute(select(*columns)).all()
            out[name] = sorted((tuple(json.dumps(v, sort_keys=True, default=str)
                                      if isinstance(v, (dict, list)) else v for v in row)
                                for row in rows), key=repr)
    return out
