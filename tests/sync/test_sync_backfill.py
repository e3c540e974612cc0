"""Backfill against Stripe list semantics (``responses``): completeness, resume, errors."""

from __future__ import annotations

import json
import math
import random

import pytest
import responses
from sqlalchemy import Engine, func, select

from integrations.stripe_client import StripeAccessDenied, StripeReader
from integrations.stripe_sync import (
    RESOURCE_NAMES,
    SyncInterrupted,
    backfill_windows,
    read_sync_state,
    run_sync,
)
from models.mirror import (
    QuarantinedObject,
    StripeCustomer,
    StripeInvoice,
    StripeInvoiceLine,
    StripeSubscription,
)
from models.outlook import StripeSubscriptionSchedule
from nrr.db import session_scope
from tests.sync.conftest import API, ListWorld, build_account, make_settings, mirror_snapshot

ONE_CHAIN = {"invoices": 1}


def _count(engine: Engine, model: type) -> int:
    with session_scope(engine) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_backfill_stores_every_object_with_minimum_pages(world: ListWorld, db_engine: Engine,
                                                         db_url: str) -> None:
    counts = build_account(world, customers=12)
    settings = make_settings(db_url)
    client = StripeReader(settings)

    result = run_sync(db_engine, settings, client=client)

    assert result.mode == "backfill"
    assert _count(db_engine, StripeCustomer) == counts["customers"]
    assert _count(db_engine, StripeSubscription) == counts["subscriptions"]
    assert _count(db_engine, StripeInvoice) == counts["invoices"]
    assert counts["subscription_schedules"] >= 2
    assert _count(db_engine, StripeSubscriptionSchedule) == counts["subscription_schedules"]
    assert _count(db_engine, StripeInvoiceLine) == counts["invoice_lines"]
    with session_scope(db_engine) as session:
        assert all(session.scalars(select(StripeInvoice.lines_complete)))
        stored = session.get(StripeInvoice, world.objects["invoices"][0]["id"])
        assert stored is not None and stored.raw["id"] == stored.id
    minimum_lists = sum(math.ceil(max(counts[r], 1) / 100) for r in RESOURCE_NAMES)
    partial = [i for i in world.objects["invoices"] if len(i["lines"]["data"]) > 10]
    assert partial, "the account must have invoices whose lines need paging"
    list_paths = [p for p in world.paths() if p.count("/") == 2 and p != "/v1/events"]
    # Invoices are listed in created windows: each may end with one partial page.
    extra = backfill_windows(False)["invoices"] - 1
    assert minimum_lists <= len(list_paths) <= minimum_lists + extra
    assert world.paths().count("/v1/events") == 3  # newest-event probe + two type groups
    line_paths = [p for p in world.paths() if p.endswith("/lines")]
    assert len(line_paths) == len(partial)
    assert result.requests == len(world.requests)
    states = {row["resource"]: row for row in read_sync_state(db_engine)}
    assert all(states[name]["phase"] == "done" for name in RESOURCE_NAMES)
    assert states["customers"]["objects_synced"] == counts["customers"]


def test_second_sync_reads_events_only(world: ListWorld, sqlite_url: str) -> None:
    from nrr.db import make_engine

    engine = make_engine(sqlite_url)
    build_account(world, customers=3)
    settings = make_settings(sqlite_url)
    run_sync(engine, settings, client=StripeReader(settings))
    world.requests.clear()

    result = run_sync(engine, settings, client=StripeReader(settings))

    assert result.mode == "events"
    assert world.paths() == ["/v1/events", "/v1/events"]


def _account_and_reference(world: ListWorld, sqlite_url: str) -> tuple[dict[str, int], Engine]:
    """A 30-customer account with lines paged 3 at a time (more places to crash), and a
    copy of the empty database beside ``sqlite_url`` synced once without interruption."""
    import shutil

    from nrr.db import make_engine

    counts = build_account(world, customers=30)
    world.embedded_lines = 3
    reference_url = sqlite_url.replace("nrr.db", "reference.db")
    shutil.copy(sqlite_url.removeprefix("sqlite:///"), reference_url.removeprefix("sqlite:///"))
    reference = make_engine(reference_url)
    settings = make_settings(reference_url)
    run_sync(reference, settings, client=StripeReader(settings), parallel=False)
    world.requests.clear()
    return counts, reference


@pytest.mark.parametrize("seed", range(20))
def test_crash_at_a_random_page_then_resume_gives_the_same_mirror(
        world: ListWorld, sqlite_url: str, tmp_path: object, seed: int) -> None:
    from nrr.db import make_engine

    counts, reference = _account_and_reference(world, sqlite_url)

    engine = make_engine(sqlite_url)
    settings = make_settings(sqlite_url)
    rng = random.Random(seed)
    boundaries = [(name, page) for name in RESOURCE_NAMES
                  for page in range(math.ceil(counts[name] / 7))]
    crash_resource, crash_page = rng.choice(boundaries)

    def crash(resource: str, pages_done: int) -> None:
        if resource == crash_resource and pages_done == crash_page:
            raise SyncInterrupted("injected crash")

    # The account has a handful of pages per resource; small pages make more of them.
    with pytest.raises(SyncInterrupted):
        run_sync(engine, settings, client=_small_pages(settings), page_hook=crash,
                 parallel=bool(seed % 2))
    states = {row["resource"]: row for row in read_sync_state(engine)}
    assert states[crash_resource]["phase"] == "running"
    cursor = states[crash_resource]["cursor"]
    world.requests.clear()

    result = run_sync(engine, settings, client=_small_pages(settings))

    assert result.mode == "backfill"
    first = [(p, q) for p, q in world.requests if p == f"/v1/{crash_resource}"]
    if cursor is not None:
        assert first[0][1]["starting_after"] == cursor  # resumed, not restarted
    assert mirror_snapshot(engine) == mirror_snapshot(reference)


def _small_pages(settings: object) -> StripeReader:
    """A reader listing 7 objects per page, so a small account has many page boundaries."""
    reader = StripeReader(settings)  # type: ignore[arg-type]
    original = reader.iter_pages

    def iter_pages(resource, params=None, *, starting_after=None, limit=100):  # type: ignore[no-untyped-def]
        return original(resource, params, starting_after=starting_after, limit=min(limit, 7))

    reader.iter_pages = iter_pages  # type: ignore[method-assign]
    return reader


def test_malformed_object_is_quarantined_and_the_sync_goes_on(world: ListWorld,
                                                              sqlite_url: str) -> None:
    from nrr.db import make_engine

    counts = build_account(world, customers=4)
    world.add("customers", {"id": "cus_bad", "object": "customer", "created": 5, "email": 42})
    engine = make_engine(sqlite_url)
    settings = make_settings(sqlite_url)

    result = run_sync(engine, settings, client=StripeReader(settings))

    assert result.skipped == 1
    assert _count(engine, StripeCustomer) == counts["customers"]
    with session_scope(engine) as session:
        bad = session.scalars(select(QuarantinedObject)).all()
        assert [(q.object_type, q.object_id) for q in bad] == [("customer", "cus_bad")]
        assert "email" in bad[0].reason
    assert _count(engine, StripeInvoice) == counts["invoices"]


def test_missing_permission_stops_and_is_recorded(mocked: responses.RequestsMock,
                                                  world: ListWorld, sqlite_url: str) -> None:
    from nrr.db import make_engine

    build_account(world, customers=2)
    # Registered first, so it wins over the world's invoices route.
    mocked.replace(responses.GET, next(m.url for m in mocked.registered()
                                       if getattr(m.url, "pattern", "").endswith("v1/invoices(\\?.*)?$")),
                   body=json.dumps({"error": {"type": "invalid_request_error",
                                              "message": "The provided key does not have "
                                                         "the required permissions"}}),
                   status=403)
    engine = make_engine(sqlite_url)
    settings = make_settings(sqlite_url)

    with pytest.raises(StripeAccessDenied, match="Invoices: Read"):
        run_sync(engine, settings, client=StripeReader(settings))

    states = {row["resource"]: row for row in read_sync_state(engine)}
    assert "Invoices: Read" in (states["invoices"]["last_error"] or "")
    assert states["invoices"]["phase"] == "running"
    assert API not in (states["invoices"]["last_error"] or "")


def test_crash_while_the_next_page_is_prefetched_resumes_exactly(
        world: ListWorld, sqlite_url: str) -> None:
    """Pages are listed ahead of the store: a crash with page N+1 (and its lines) already
    fetched but not stored resumes from page N's cursor, and no request outlives the run.
    (One chain of invoice pages: windows are covered by tests/sync/test_sync_windows.py.)"""
    import threading
    import time

    from nrr.db import make_engine

    counts, reference = _account_and_reference(world, sqlite_url)

    engine = make_engine(sqlite_url)
    settings = make_settings(sqlite_url)
    crash_page = 2
    lister_ran_ahead = threading.Event()

    def invoice_pages() -> list[dict[str, object]]:
        return [q for p, q in list(world.requests) if p == "/v1/invoices"]

    def crash(resource: str, pages_done: int) -> None:
        if resource != "invoices" or pages_done != crash_page:
            return
        deadline = time.monotonic() + 10
        while len(invoice_pages()) < crash_page + 2 and time.monotonic() < deadline:
            time.sleep(0.005)  # wait until page crash_page + 1 has been requested
        if len(invoice_pages()) >= crash_page + 2:
            lister_ran_ahead.set()
        raise SyncInterrupted("injected crash")

    with pytest.raises(SyncInterrupted):
        run_sync(engine, settings, client=_small_pages(settings), page_hook=crash,
                 parallel=False, windows=ONE_CHAIN)
    assert lister_ran_ahead.is_set(), "the next page was not requested ahead of the store"
    made = len(world.requests)
    time.sleep(0.2)
    assert len(world.requests) == made, "a request outlived the interrupted backfill"

    listed = invoice_pages()
    states = {row["resource"]: row for row in read_sync_state(engine)}
    assert states["invoices"]["phase"] == "running"
    # The cursor is the last id of the last stored page (page crash_page - 1), not of a
    # prefetched one.
    newest_first = sorted(world.objects["invoices"], key=lambda o: (o["created"], o["id"]),
                          reverse=True)
    assert states["invoices"]["cursor"] == newest_first[7 * crash_page - 1]["id"]
    assert listed[crash_page]["starting_after"] == states["invoices"]["cursor"]
    assert _count(engine, StripeInvoice) == 7 * crash_page
    world.requests.clear()

    run_sync(engine, settings, client=_small_pages(settings), windows=ONE_CHAIN)

    resumed = invoice_pages()
    assert resumed[0]["starting_after"] == states["invoices"]["cursor"]
    assert len(resumed) == math.ceil(counts["invoices"] / 7) - crash_page  # nothing twice
    assert mirror_snapshot(engine) == mirror_snapshot(reference)
