"""The Stripe wrapper at the HTTP edge: pagination, expand, retries, 429s, error classes."""

from __future__ import annotations

import json
import re

import pytest
import requests
import responses

from integrations.ratelimit import LocalRateLimiter
from integrations.stripe_client import (
    StripeAccessDenied,
    StripeReader,
    StripeUnavailable,
    endpoint_of,
)
from tests import stripe_world as sw
from tests.sync.conftest import API, ListWorld, make_settings


def reader(**kwargs: object) -> StripeReader:
    return StripeReader(make_settings(), sleep=lambda _s: None, **kwargs)  # type: ignore[arg-type]


def _error(status: int, code: str | None = None, kind: str = "invalid_request_error") -> str:
    return json.dumps({"error": {"type": kind, "code": code, "message": f"error {status}"}})


def test_pages_follow_starting_after_until_has_more_is_false(world: ListWorld) -> None:
    for n in range(250):
        world.add("customers", {**sw.customer(f"cus_{n:04d}"), "created": 1_700_000_000 + n})
    client = reader()

    pages = list(client.iter_pages("customers"))

    assert [len(p.data) for p in pages] == [100, 100, 50]
    ids = [c["id"] for p in pages for c in p.data]
    assert ids == [f"cus_{n:04d}" for n in reversed(range(250))]
    queries = [q for _path, q in world.requests]
    assert [q.get("starting_after") for q in queries] == [None, "cus_0150", "cus_0050"]
    assert all(q["limit"] == "100" for q in queries)
    assert isinstance(pages[0].data[0], dict) and type(pages[0].data[0]) is dict


def test_resume_cursor_starts_after_the_given_id(world: ListWorld) -> None:
    for n in range(5):
        world.add("customers", {**sw.customer(f"cus_{n}"), "created": n})
    pages = list(reader().iter_pages("customers", starting_after="cus_3"))
    assert [c["id"] for c in pages[0].data] == ["cus_2", "cus_1", "cus_0"]
    assert world.requests[0][1]["starting_after"] == "cus_3"


def test_expand_and_status_parameters_reach_the_api(world: ListWorld) -> None:
    from integrations.stripe_sync import RESOURCES

    client = reader()
    for resource in RESOURCES:
        list(client.iter_pages(resource.name, resource.params))
    sent = {path: query for path, query in world.requests}
    assert sent["/v1/prices"]["expand"] == ["data.tiers", "data.currency_options"]
    assert sent["/v1/subscriptions"]["status"] == "all"
    assert sent["/v1/subscriptions"]["expand"] == ["data.discounts", "data.items.data.discounts"]
    assert sent["/v1/invoices"]["expand"] == ["data.discounts"]
    assert "expand" not in sent["/v1/customers"]


def test_server_errors_are_retried_by_the_sdk_and_counted(mocked: responses.RequestsMock) -> None:
    url = f"{API}/v1/coupons"
    mocked.add(responses.GET, url, body=_error(500, kind="api_error"), status=500)
    mocked.add(responses.GET, url, body=_error(503, kind="api_error"), status=503)
    mocked.add(responses.GET, url, json={"object": "list", "data": [sw.coupon("co_1", percent_off=10)],
                                         "has_more": False, "url": "/v1/coupons"})
    client = reader()
    page = client.list_page("coupons", {"limit": 100})
    assert [c["id"] for c in page.data] == ["co_1"]
    assert client.request_counts["/v1/coupons"] == 3


def test_server_errors_past_the_retry_budget_raise_unavailable(mocked: responses.RequestsMock) -> None:
    mocked.add(responses.GET, f"{API}/v1/coupons", body=_error(500, kind="api_error"), status=500)
    client = reader(max_network_retries=2)
    with pytest.raises(StripeUnavailable, match="HTTP 500"):
        client.list_page("coupons")
    assert client.request_counts["/v1/coupons"] == 3


def test_connection_errors_are_retried(mocked: responses.RequestsMock) -> None:
    url = f"{API}/v1/products"
    mocked.add(responses.GET, url, body=requests.ConnectionError("connection refused"))
    mocked.add(responses.GET, url, json={"object": "list", "data": [], "has_more": False,
                                         "url": "/v1/products"})
    client = reader()
    assert client.list_page("products").data == []
    assert client.request_counts["/v1/products"] == 2


@pytest.mark.parametrize("code", ["rate_limit", "lock_timeout"])
def test_429_backs_off_and_retries_through_the_limiter(mocked: responses.RequestsMock,
                                                       code: str) -> None:
    url = f"{API}/v1/customers"
    for _ in range(3):
        mocked.add(responses.GET, url, body=_error(429, code), status=429)
    mocked.add(responses.GET, url, json={"object": "list", "data": [sw.customer("cus_1")],
                                         "has_more": False, "url": "/v1/customers"})
    acquired: list[str] = []

    class CountingLimiter(LocalRateLimiter):
        def acquire(self, endpoint: str) -> float:
            acquired.append(endpoint)
            return super().acquire(endpoint)

    sleeps: list[float] = []
    client = StripeReader(make_settings(), limiter=CountingLimiter(1000, 1000),
                          sleep=sleeps.append)
    page = client.list_page("customers")
    assert page.data[0]["id"] == "cus_1"
    assert acquired == ["/v1/customers"] * 4  # every retry waited for the limiter again
    assert client.rate_limited == 3
    assert len(sleeps) == 3 and sleeps[0] < sleeps[2]  # exponential backoff


def test_endless_429s_give_up_with_a_clear_error(mocked: responses.RequestsMock) -> None:
    mocked.add(responses.GET, f"{API}/v1/customers", body=_error(429, "rate_limit"), status=429)
    client = reader(rate_limit_retries=2)
    with pytest.raises(StripeUnavailable, match="429"):
        client.list_page("customers")
    assert client.request_counts["/v1/customers"] == 3


def test_401_stops_with_a_message_about_the_key(mocked: responses.RequestsMock) -> None:
    mocked.add(responses.GET, f"{API}/v1/customers",
               body=json.dumps({"error": {"type": "invalid_request_error",
                                          "message": "Invalid API Key provided: rk_test_***123"}}),
               status=401)
    client = reader()
    with pytest.raises(StripeAccessDenied) as caught:
        client.list_page("customers")
    message = str(caught.value)
    assert "STRIPE_API_KEY" in message and "restricted key" in message
    assert "rk_test_abc123" not in message
    assert client.request_counts["/v1/customers"] == 1  # no retries on 401


def test_403_names_the_missing_permission(mocked: responses.RequestsMock) -> None:
    mocked.add(responses.GET, f"{API}/v1/invoices",
               body=_error(403, "secret_key_required", kind="invalid_request_error"), status=403)
    with pytest.raises(StripeAccessDenied, match=r"'Invoices: Read'"):
        reader().list_page("invoices")


def test_404_on_retrieve_means_deleted(world: ListWorld) -> None:
    world.add("customers", sw.customer("cus_1"))
    client = reader()
    assert client.retrieve("customers", "cus_1")["id"] == "cus_1"  # type: ignore[index]
    assert client.retrieve("customers", "cus_gone") is None


def test_400_is_not_swallowed(mocked: responses.RequestsMock) -> None:
    import stripe

    mocked.add(responses.GET, re.compile(rf"{re.escape(API)}/v1/prices.*"),
               body=_error(400, "parameter_unknown"), status=400)
    with pytest.raises(stripe.InvalidRequestError):
        reader().list_page("prices", {"bogus": "1"})


def test_invoice_lines_pages_page_the_rest(world: ListWorld) -> None:
    lines = [sw.invoice_line(f"il_{n:03d}", invoice="in_1", subscription=None,
                             subscription_item=None, price_id="price_1", quantity=1,
                             amount=100, period_start=0, period_end=10)
             for n in range(230)]
    world.add("invoices", sw.invoice("in_1", "cus_1", lines=lines, subscription=None, created=5))
    pages = list(reader().invoice_lines_pages("in_1", starting_after="il_009"))
    assert [len(p.data) for p in pages] == [100, 100, 20]
    assert pages[-1].data[-1]["id"] == "il_229"
    assert all(path == "/v1/invoices/in_1/lines" for path in world.paths())


def test_endpoint_names_hide_object_ids() -> None:
    assert endpoint_of("http://x/v1/invoices/in_123/lines?limit=1") == "/v1/invoices/{id}/lines"
    assert endpoint_of("http://x/v1/customers?limit=1") == "/v1/customers"
    assert endpoint_of("http://x/v1/subscriptions/sub_1") == "/v1/subscriptions/{id}"
    assert endpoint_of("http://x/v1/subscription_items?x=1") == "/v1/subscription_items"


def test_the_key_is_never_in_a_request_url(world: ListWorld) -> None:
    list(reader().iter_pages("customers"))
    assert world.requests and not any("rk_test" in json.dumps(q) for _p, q in world.requests)


def test_pages_are_the_plain_data_the_sdk_objects_would_give() -> None:
    """The reader hands out the JSON the SDK received (no SDK objects built and turned back
    into dicts); that is exactly what the SDK's own objects convert to, over real HTTP."""
    import stripe

    from integrations.emulator import EmulatorServer, generate_account
    from integrations.stripe_mirror import to_plain
    from integrations.stripe_sync import RESOURCES

    account = generate_account(seed=3, customers=15, months=6, now=1_795_000_000)
    with EmulatorServer(account) as server:
        settings = make_settings(STRIPE_API_BASE=server.url,
                                 STRIPE_API_KEY="sk_test_equivalence1")
        plain = StripeReader(settings)
        sdk = stripe.StripeClient("sk_test_equivalence1", base_addresses={"api": server.url})
        listers = {"customers": sdk.v1.customers, "products": sdk.v1.products,
                   "prices": sdk.v1.prices, "coupons": sdk.v1.coupons,
                   "subscriptions": sdk.v1.subscriptions, "invoices": sdk.v1.invoices,
                   "subscription_schedules": sdk.v1.subscription_schedules}
        for resource in RESOURCES:
            params = {**resource.params, "limit": 100}
            page = plain.list_page(resource.name, params)
            expected = listers[resource.name].list(params=params)  # type: ignore[attr-defined]
            assert page.data, resource.name
            assert [type(o) for o in page.data] == [dict] * len(page.data)
            assert page.data == [to_plain(o.to_dict(for_json=True)) for o in expected.data]
            assert page.has_more == expected.has_more
        invoice_id = next(iter(account.invoices))
        fetched = plain.retrieve("invoices", invoice_id, {"expand": ["discounts"]})
        assert fetched == to_plain(sdk.v1.invoices.retrieve(
            invoice_id, params={"expand": ["discounts"]}).to_dict(for_json=True))
        assert plain.retrieve("customers", "cus_missing") is None
        assert plain.request_counts["/v1/invoices/{id}"] == 1  # the SDK, through our client
        plain.close()
