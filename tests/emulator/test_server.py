"""The emulator through the REAL stripe SDK (16.1.0) over HTTP on 127.0.0.1.

The client is typed ``Any``: these tests send parameters the SDK's typed params refuse
(unknown names, bad limits) on purpose, to see the server answer like Stripe.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
import stripe

from integrations.emulator import EmulatedAccount, EmulatorServer, endpoint_of
from tests.emulator.conftest import TEST_KEY, make_client


def newest_first(objs: Any) -> list[str]:
    return [o["id"] for o in sorted(objs, key=lambda o: (o["created"], o["id"]), reverse=True)]


def plain(obj: stripe.StripeObject) -> Any:
    """An SDK object as the JSON it came from (the SDK turns decimal strings into Decimal)."""
    return json.loads(json.dumps(obj.to_dict(), default=str))


def raw_get(url: str, headers: dict[str, str] | None = None, method: str = "GET"
            ) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, headers=headers or {}, method=method,
                                     data=b"a=1" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


# -- pagination --------------------------------------------------------------------------

def test_list_pages_forward_newest_first_without_gaps(client: Any,
                                                      server: EmulatorServer,
                                                      account: EmulatedAccount) -> None:
    ids = [c.id for c in client.v1.customers.list({"limit": 7}).auto_paging_iter()]
    assert ids == newest_first(account.customers.values())
    assert len(ids) == len(set(ids)) == len(account.customers)
    pages = [r for r in server.requests if r.path == "/v1/customers"]
    assert len(pages) == -(-len(ids) // 7)
    assert all(r.status == 200 for r in pages)


def test_list_pages_backward_with_ending_before(client: Any,
                                                account: EmulatedAccount) -> None:
    expected = newest_first(account.invoices.values())
    oldest = expected[-1]
    walked = [i.id for i in client.v1.invoices.list(
        {"limit": 100, "ending_before": oldest}).auto_paging_iter()]
    assert walked == list(reversed(expected[:-1]))
    page = client.v1.invoices.list({"limit": 5, "ending_before": expected[20]})
    assert [i.id for i in page.data] == expected[15:20]
    assert page.has_more is True
    first = client.v1.invoices.list({"limit": 5, "ending_before": expected[3]})
    assert [i.id for i in first.data] == expected[:3]
    assert first.has_more is False


def test_resume_with_starting_after(client: Any,
                                    account: EmulatedAccount) -> None:
    expected = newest_first(account.prices.values())
    page = client.v1.prices.list({"limit": 10, "starting_after": expected[9]})
    assert [p.id for p in page.data] == expected[10:20]
    assert page.has_more is (len(expected) > 20)
    assert page.url == "/v1/prices"
    assert page.object == "list"


@pytest.mark.parametrize("limit", [0, 101, -1, "ten"])
def test_limit_out_of_bounds_is_400(client: Any, limit: Any) -> None:
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.customers.list({"limit": limit})
    assert info.value.http_status == 400
    assert info.value.param == "limit"


@pytest.mark.parametrize("limit", [1, 100])
def test_limit_bounds_are_accepted(client: Any, limit: int,
                                   account: EmulatedAccount) -> None:
    page = client.v1.invoices.list({"limit": limit})
    assert len(page.data) == limit
    assert page.has_more is (len(account.invoices) > limit)


def test_unknown_cursor_is_400(client: Any) -> None:
    for param in ("starting_after", "ending_before"):
        with pytest.raises(stripe.InvalidRequestError) as info:
            client.v1.subscriptions.list({param: "sub_doesnotexist"})
        assert info.value.http_status == 400
        assert info.value.param == param
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.list({"starting_after": "a", "ending_before": "b"})


# -- filters ---------------------------------------------------------------------------

def test_subscription_status_filters(client: Any,
                                     account: EmulatedAccount) -> None:
    subs = account.subscriptions.values()
    default = {s.id for s in client.v1.subscriptions.list({"limit": 100}).auto_paging_iter()}
    assert default == {s["id"] for s in subs
                       if s["status"] not in ("canceled", "incomplete_expired")}
    every = [s.id for s in client.v1.subscriptions.list(
        {"limit": 100, "status": "all"}).auto_paging_iter()]
    assert every == newest_first(subs)
    ended = {s.id for s in client.v1.subscriptions.list(
        {"limit": 100, "status": "ended"}).auto_paging_iter()}
    assert ended == {s["id"] for s in subs if s["status"] in ("canceled", "incomplete_expired")}
    assert ended and default and not ended & default
    for status in ("canceled", "past_due", "unpaid", "paused", "active", "trialing"):
        got = {s.id for s in client.v1.subscriptions.list(
            {"limit": 100, "status": status}).auto_paging_iter()}
        assert got == {s["id"] for s in subs if s["status"] == status}, status
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.list({"status": "finished"})


def test_invoice_status_customer_and_subscription_filters(
        client: Any, account: EmulatedAccount) -> None:
    invoices = list(account.invoices.values())
    for status in ("paid", "open", "void", "draft", "uncollectible"):
        got = {i.id for i in client.v1.invoices.list(
            {"limit": 100, "status": status}).auto_paging_iter()}
        assert got == {i["id"] for i in invoices if i["status"] == status}, status
    customer = invoices[len(invoices) // 2]["customer"]
    got_ids = [i.id for i in client.v1.invoices.list({"customer": customer}).auto_paging_iter()]
    assert got_ids == newest_first(i for i in invoices if i["customer"] == customer)
    sub = invoices[0]["parent"]["subscription_details"]["subscription"]
    got_ids = [i.id for i in client.v1.invoices.list({"subscription": sub}).auto_paging_iter()]
    assert got_ids == newest_first(
        i for i in invoices if i["parent"]["subscription_details"]["subscription"] == sub)
    subs = [s.id for s in client.v1.subscriptions.list(
        {"customer": customer, "status": "all"}).auto_paging_iter()]
    assert subs == newest_first(s for s in account.subscriptions.values()
                                if s["customer"] == customer)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.list({"status": "settled"})


def test_created_filters(client: Any, account: EmulatedAccount) -> None:
    created = sorted(i["created"] for i in account.invoices.values())
    lo, hi = created[len(created) // 4], created[3 * len(created) // 4]
    cases = [({"gte": lo, "lt": hi}, lambda c: lo <= c < hi),
             ({"gt": lo, "lte": hi}, lambda c: lo < c <= hi),
             ({"gt": hi}, lambda c: c > hi)]
    for params, keep in cases:
        got = [i.id for i in client.v1.invoices.list(
            {"limit": 100, "created": params}).auto_paging_iter()]
        assert got == newest_first(i for i in account.invoices.values() if keep(i["created"]))
    exact = client.v1.invoices.list({"created": lo})
    assert exact.data and all(i.created == lo for i in exact.data)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.list({"created": {"after": lo}})


def test_unknown_parameter_is_400(client: Any) -> None:
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.customers.list({"colour": "blue"})
    assert info.value.http_status == 400
    assert info.value.code == "parameter_unknown"
    assert info.value.param == "colour"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.coupons.list({"status": "all"})
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.retrieve(next(iter(client.v1.customers.list().data)).id,
                                     {"limit": 3})


# -- expand ----------------------------------------------------------------------------

def test_price_tiers_only_when_expanded(client: Any,
                                        account: EmulatedAccount) -> None:
    tiered = {p["id"] for p in account.prices.values() if p["billing_scheme"] == "tiered"}
    default = list(client.v1.prices.list({"limit": 100}).auto_paging_iter())
    assert tiered and all("tiers" not in p.to_dict() for p in default)
    assert all("currency_options" not in p.to_dict() for p in default)
    expanded = list(client.v1.prices.list(
        {"limit": 100, "expand": ["data.tiers", "data.currency_options"]}).auto_paging_iter())
    for price in expanded:
        data = plain(price)
        if price.id in tiered:
            assert data["tiers"] == account.prices[price.id]["tiers"]
        assert "currency_options" in data
    one = client.v1.prices.retrieve(sorted(tiered)[0], {"expand": ["tiers"]})
    assert one.tiers[0].up_to is not None


def test_expand_discounts_on_lists_and_retrieve(client: Any,
                                                account: EmulatedAccount) -> None:
    with_discounts = [s for s in account.subscriptions.values() if s["discounts"]]
    assert with_discounts
    target = with_discounts[0]
    unexpanded = client.v1.subscriptions.retrieve(target["id"])
    assert unexpanded.discounts == target["discounts"]
    listed = client.v1.subscriptions.list(
        {"customer": target["customer"], "status": "all",
         "expand": ["data.discounts.source.coupon", "data.items.data.discounts"]})
    match = next(s for s in listed.data if s.id == target["id"])
    discount = match.discounts[0]
    assert discount.object == "discount"
    assert discount.source.coupon.object == "coupon"
    assert discount.source.coupon.id == account.discounts[target["discounts"][0]][
        "source"]["coupon"]
    got = client.v1.subscriptions.retrieve(target["id"], {"expand": ["discounts", "customer"]})
    assert got.customer.id == target["customer"]
    assert got.discounts[0].id == target["discounts"][0]
    invoice = next(i for i in account.invoices.values() if i["discounts"])
    inv = client.v1.invoices.list({"customer": invoice["customer"], "limit": 100,
                                   "expand": ["data.discounts"]})
    found = next(i for i in inv.data if i.id == invoice["id"])
    assert [d.id for d in found.discounts] == invoice["discounts"]


def test_expand_item_discounts(client: Any, account: EmulatedAccount) -> None:
    sub = next(s for s in account.subscriptions.values()
               if any(i["discounts"] for i in s["items"]["data"]))
    page = client.v1.subscriptions.list({"customer": sub["customer"], "status": "all",
                                         "expand": ["data.items.data.discounts"]})
    got = next(s for s in page.data if s.id == sub["id"])
    expanded = [d for item in got["items"].data for d in item.discounts]
    assert expanded and all(d.object == "discount" for d in expanded)
    assert {d.subscription_item for d in expanded} <= {i["id"] for i in sub["items"]["data"]}
    plain_page = client.v1.subscriptions.list({"customer": sub["customer"], "status": "all"})
    plain_sub = next(s for s in plain_page.data if s.id == sub["id"])
    assert all(isinstance(d, str) for item in plain_sub["items"].data for d in item.discounts)


def test_expand_limits(client: Any) -> None:
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.subscriptions.list({"expand": ["data.items.data.price.tiers"]})
    assert "4 levels" in str(info.value.user_message)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.list({"expand": ["discounts"]})  # lists need data.
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.list({"expand": ["data.currency"]})  # not an object
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.list({"expand": ["data.nonexistent"]})
    page = client.v1.subscriptions.list({"expand": ["data.items.data.price"]})
    assert page.data  # a price already embedded stays as it is


# -- retrieve, deleted, missing -----------------------------------------------------------

def test_retrieve_each_resource(client: Any, account: EmulatedAccount) -> None:
    services = {"customers": client.v1.customers, "products": client.v1.products,
                "prices": client.v1.prices, "coupons": client.v1.coupons,
                "subscriptions": client.v1.subscriptions, "invoices": client.v1.invoices,
                "events": client.v1.events,
                "subscription_schedules": client.v1.subscription_schedules}
    for kind, service in services.items():
        obj = next(iter(account.store(kind).values()))
        got = service.retrieve(obj["id"])  # type: ignore[attr-defined]
        assert got.id == obj["id"]
        assert got.object == obj["object"]
        with pytest.raises(stripe.InvalidRequestError) as info:
            service.retrieve(obj["id"] + "nope")  # type: ignore[attr-defined]
        assert info.value.http_status == 404
        assert info.value.code == "resource_missing"


def test_deleted_customer(client: Any, account: EmulatedAccount) -> None:
    assert account.deleted_customers
    gone = next(iter(account.deleted_customers))
    got = client.v1.customers.retrieve(gone)
    assert got.to_dict() == {"id": gone, "object": "customer", "deleted": True}
    listed = {c.id for c in client.v1.customers.list({"limit": 100}).auto_paging_iter()}
    assert gone not in listed


# -- invoice lines ---------------------------------------------------------------------

def test_invoice_lines_embedded_then_paged(client: Any,
                                           account: EmulatedAccount) -> None:
    long_one = next(i for i in account.invoices.values() if i["lines"]["has_more"])
    full = account.invoice_lines[long_one["id"]]
    assert len(full) > 10
    got = client.v1.invoices.retrieve(long_one["id"])
    assert len(got.lines.data) == 10
    assert got.lines.has_more is True
    assert got.lines.url == f"/v1/invoices/{long_one['id']}/lines"
    paged = [line.id for line in client.v1.invoices.line_items.list(
        long_one["id"], {"limit": 4}).auto_paging_iter()]
    assert paged == [line["id"] for line in full]
    page = client.v1.invoices.line_items.list(long_one["id"], {"limit": 3,
                                                               "starting_after": full[2]["id"]})
    assert [line.id for line in page.data] == [line["id"] for line in full[3:6]]
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.invoices.line_items.list("in_missing")
    assert info.value.http_status == 404


# -- events ----------------------------------------------------------------------------

def test_events_type_filters(client: Any, account: EmulatedAccount) -> None:
    events = list(account.events.values())
    wild = [e.id for e in client.v1.events.list(
        {"type": "customer.subscription.*", "limit": 100}).auto_paging_iter()]
    assert wild == newest_first(e for e in events
                                if e["type"].startswith("customer.subscription."))
    exact = [e.id for e in client.v1.events.list({"type": "invoice.paid"}).auto_paging_iter()]
    assert exact == newest_first(e for e in events if e["type"] == "invoice.paid")
    types = ["invoice.created", "customer.subscription.deleted"]
    several = [e.id for e in client.v1.events.list(
        {"types": types, "limit": 100}).auto_paging_iter()]
    assert several == newest_first(e for e in events if e["type"] in types)
    assert wild and exact and several
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.events.list({"types": [f"t{i}" for i in range(21)]})
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.events.list({"types": ["a"], "type": "b"})


def test_events_created_filter_and_oldest_first_walk(client: Any,
                                                     account: EmulatedAccount) -> None:
    ordered = sorted(account.events.values(), key=lambda e: (e["created"], e["id"]))
    cursor = ordered[len(ordered) // 2]
    since = [e.id for e in client.v1.events.list(
        {"created": {"gt": cursor["created"]}, "limit": 100}).auto_paging_iter()]
    assert since == newest_first(e for e in ordered if e["created"] > cursor["created"])
    # The incremental sync's walk: oldest to newest after a stored event id.
    forward = [e.id for e in client.v1.events.list(
        {"ending_before": cursor["id"], "limit": 50}).auto_paging_iter()]
    assert forward == [e["id"] for e in ordered[ordered.index(cursor) + 1:]]


def test_events_older_than_30_days_are_gone() -> None:
    from integrations.emulator import generate_account
    from tests.emulator.conftest import NOW

    account = generate_account(seed=3, customers=30, months=6, now=NOW)
    first = min(account.events.values(), key=lambda e: e["created"])
    with EmulatorServer(account) as server:
        client = make_client(server.url)
        assert client.v1.events.retrieve(first["id"]).id == first["id"]
        account.advance(NOW + 31 * 86_400)
        with pytest.raises(stripe.InvalidRequestError):
            client.v1.events.retrieve(first["id"])
        listed = {e.id for e in client.v1.events.list({"limit": 100}).auto_paging_iter()}
        assert first["id"] not in listed
        assert all(e["created"] > NOW + 86_400 for e in account.events.values()
                   if e["id"] in listed)


# -- auth, methods, faults ---------------------------------------------------------------

def test_auth(server: EmulatorServer) -> None:
    status, body = raw_get(f"{server.url}/v1/customers")
    assert status == 401
    assert body["error"]["type"] == "invalid_request_error"
    with pytest.raises(stripe.AuthenticationError) as info:
        make_client(server.url, key="sk_live_wrongmode123").v1.customers.list()
    assert info.value.http_status == 401
    assert "sk_live_wrongmode123" not in str(info.value)
    status, _ = raw_get(f"{server.url}/v1/customers",
                        {"Authorization": f"Bearer {TEST_KEY}"})
    assert status == 200


def test_only_get(server: EmulatorServer) -> None:
    status, body = raw_get(f"{server.url}/v1/customers",
                           {"Authorization": f"Bearer {TEST_KEY}"}, method="POST")
    assert status == 405
    assert "read-only" in body["error"]["message"]
    status, body = raw_get(f"{server.url}/v1/charges", {"Authorization": f"Bearer {TEST_KEY}"})
    assert status == 404
    assert "Unrecognized request URL" in body["error"]["message"]


@pytest.mark.parametrize("code", ["rate_limit", "lock_timeout"])
def test_injected_429(client: Any, server: EmulatorServer, code: str) -> None:
    server.fail_every = 3
    server.error_code = code
    outcomes = []
    for _ in range(6):
        try:
            client.v1.coupons.list()
            outcomes.append("ok")
        except stripe.RateLimitError as err:
            assert err.http_status == 429
            assert err.error is not None and err.error.code == code
            outcomes.append("429")
    assert outcomes == ["ok", "ok", "429", "ok", "ok", "429"]
    assert [r.status for r in server.requests] == [200, 200, 429, 200, 200, 429]


def test_injected_5xx_and_sdk_retries(server: EmulatorServer) -> None:
    server.fail_every = 2
    server.fail_status = 503
    server.error_code = "api_error"
    no_retry = make_client(server.url)
    no_retry.v1.products.list()
    with pytest.raises(stripe.APIError) as info:
        no_retry.v1.products.list()
    assert info.value.http_status == 503
    server.reset_log()
    server.fail_every = None
    server.fail_next(1, status=500, error_code="api_error")
    retried = make_client(server.url, retries=2)
    assert retried.v1.products.list().data
    assert [r.status for r in server.requests] == [500, 200]


def test_latency_and_request_log(client: Any, server: EmulatorServer) -> None:
    server.latency_ms = 60
    started = time.monotonic()
    client.v1.coupons.list({"limit": 2})
    assert time.monotonic() - started >= 0.06
    (logged,) = server.requests
    assert (logged.method, logged.path, logged.status) == ("GET", "/v1/coupons", 200)
    assert logged.query == {"limit": "2"}
    server.reset_log()
    assert server.requests == []


def test_rates_measured_and_enforced(client: Any,
                                     server: EmulatorServer) -> None:
    for _ in range(5):
        client.v1.coupons.list()
    client.v1.products.list()
    peaks = server.peak_rates()
    assert peaks["global"] == 6
    assert peaks["per_endpoint"] == {"/v1/coupons": 5, "/v1/products": 1}
    server.reset_log()
    server.endpoint_rate_limit = 3
    statuses = []
    for _ in range(5):
        try:
            client.v1.coupons.list()
            statuses.append(200)
        except stripe.RateLimitError:
            statuses.append(429)
    assert statuses == [200, 200, 200, 429, 429]


def test_endpoint_names() -> None:
    assert endpoint_of("/v1/invoices/in_123/lines") == "/v1/invoices/:id/lines"
    assert endpoint_of("/v1/customers/cus_1") == "/v1/customers/:id"
    assert endpoint_of("/v1/customers") == "/v1/customers"


def test_everything_lists_through_the_sdk(client: Any,
                                          account: EmulatedAccount) -> None:
    """Every object of every kind parses in the SDK classes and comes back unchanged."""
    calls: dict[str, Any] = {
        "customers": client.v1.customers.list({"limit": 100}),
        "products": client.v1.products.list({"limit": 100}),
        "prices": client.v1.prices.list({"limit": 100, "expand": ["data.tiers",
                                                                   "data.currency_options"]}),
        "coupons": client.v1.coupons.list({"limit": 100}),
        "subscriptions": client.v1.subscriptions.list({"limit": 100, "status": "all"}),
        "invoices": client.v1.invoices.list({"limit": 100}),
        "events": client.v1.events.list({"limit": 100}),
        "subscription_schedules": client.v1.subscription_schedules.list({"limit": 100}),
    }
    for kind, first_page in calls.items():
        got = {o.id: plain(o) for o in first_page.auto_paging_iter()}
        assert set(got) == set(account.store(kind)), kind
        if kind in ("customers", "coupons", "products", "prices", "subscription_schedules"):
            assert got == account.store(kind), kind


def test_stop_closes_kept_alive_connections(fresh_account: EmulatedAccount) -> None:
    server = EmulatorServer(fresh_account).start()
    client = make_client(server.url)
    assert client.v1.coupons.list().data
    server.stop()
    with pytest.raises(stripe.APIConnectionError):
        client.v1.coupons.list()
    server.start()  # a stopped server starts again, on the same port
    assert make_client(server.url).v1.coupons.list().data
    server.stop()


def test_subscription_schedules_list_pages_and_filters(client: Any,
                                                       account: EmulatedAccount) -> None:
    """``GET /v1/subscription_schedules``: newest first, pages of ``limit`` with
    ``has_more``, ``starting_after``, and the ``customer`` / ``scheduled`` filters."""
    schedules = account.subscription_schedules
    assert len(schedules) >= 3
    newest_first = sorted(schedules.values(), key=lambda o: (o["created"], o["id"]),
                          reverse=True)
    first = client.v1.subscription_schedules.list({"limit": 2})
    assert first.object == "list" and first.url == "/v1/subscription_schedules"
    assert [o.id for o in first.data] == [o["id"] for o in newest_first[:2]]
    assert first.has_more is True
    rest = client.v1.subscription_schedules.list({"limit": 100,
                                                   "starting_after": first.data[-1].id})
    assert [o.id for o in rest.data] == [o["id"] for o in newest_first[2:]]
    assert rest.has_more is False
    one = newest_first[0]
    by_customer = client.v1.subscription_schedules.list({"customer": one["customer"]})
    assert {o.id for o in by_customer.data} == {
        o["id"] for o in schedules.values() if o["customer"] == one["customer"]}
    # Every generated schedule has started (it manages a live subscription).
    assert client.v1.subscription_schedules.list({"scheduled": True}).data == []
    assert len(client.v1.subscription_schedules.list(
        {"scheduled": False, "limit": 100}).data) == len(schedules)
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.subscription_schedules.list({"status": "active"})
    assert (info.value.http_status, info.value.code) == (400, "parameter_unknown")
    phase = client.v1.subscription_schedules.retrieve(one["id"]).phases[-1]
    assert isinstance(phase, stripe.SubscriptionSchedule.Phase)
    assert isinstance(phase.items[0], stripe.SubscriptionSchedule.Phase.Item)
