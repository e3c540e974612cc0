"""Backfill in ``created`` windows: coverage at the boundaries, per-window resume, kept plans."""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from integrations import stripe_sync
from integrations.stripe_client import Page, StripeReader
from integrations.stripe_sync import (
    SyncInterrupted,
    Window,
    plan_boundaries,
    read_sync_state,
    run_sync,
    windows_from_boundaries,
)
from integrations.stripe_sync import windows as sync_windows
from models.mirror import StripeInvoice
from nrr.db import make_engine, session_scope
from nrr.services.status import worker_status
from tests.sync.conftest import ListWorld, build_account, make_settings, mirror_snapshot

FOUR = {"invoices": 4}


def _invoice_createds(world: ListWorld) -> list[int]:
    return sorted({int(i["created"]) for i in world.objects["invoices"]})


def _boundaries_at_invoices(world: ListWorld, parts: int = 4) -> list[int]:
    """Boundaries equal to some invoices' ``created``: those invoices sit on a boundary."""
    createds = _invoice_createds(world)
    return [createds[len(createds) * k // parts] for k in range(1, parts)]


def _recording_reader(settings: Any, listed: list[tuple[dict[str, Any], list[str]]],
                      page_size: int = 7,
                      before_page: Any = None) -> StripeReader:
    """A reader listing ``page_size`` per page that records each invoice page's params and
    ids (``before_page(params)`` runs before each invoice page is requested)."""
    reader = StripeReader(settings)
    original_iter = reader.iter_pages
    original_page = reader.list_page
    lock = threading.Lock()

    def iter_pages(resource, params=None, *, starting_after=None, limit=100):  # type: ignore[no-untyped-def]
        return original_iter(resource, params, starting_after=starting_after,
                             limit=min(limit, page_size))

    def list_page(resource, params=None):  # type: ignore[no-untyped-def]
        if resource == "invoices" and before_page is not None:
            before_page(dict(params or {}))
        page: Page = original_page(resource, params)
        if resource == "invoices":
            with lock:
                listed.append((dict(params or {}), [str(o["id"]) for o in page.data]))
        return page

    reader.iter_pages = iter_pages  # type: ignore[method-assign]
    reader.list_page = list_page  # type: ignore[method-assign]
    return reader


def _reference(world: ListWorld, sqlite_url: str) -> Engine:
    reference_url = sqlite_url.replace("nrr.db", "reference.db")
    shutil.copy(sqlite_url.removeprefix("sqlite:///"), reference_url.removeprefix("sqlite:///"))
    reference = make_engine(reference_url)
    settings = make_settings(reference_url)
    run_sync(reference, settings, client=StripeReader(settings), parallel=False,
             windows={"invoices": 1})
    world.requests.clear()
    return reference


def _window_states(engine: Engine) -> dict[str, dict[str, Any]]:
    return {row["resource"]: row for row in read_sync_state(engine)
            if Window.parse(row["resource"]) is not None}


def test_windows_are_disjoint_and_cover_every_created() -> None:
    windows = windows_from_boundaries("invoices", [30, 10, 20])
    assert [w.name for w in windows] == ["invoices@..10", "invoices@10..20", "invoices@20..30",
                                         "invoices@30.."]
    assert [Window.parse(w.name) for w in windows] == windows
    for created in range(0, 40):
        inside = [w for w in windows
                  if (w.gte is None or created >= w.gte) and (w.lt is None or created < w.lt)]
        assert len(inside) == 1
    assert windows[1].created == {"gte": 10, "lt": 20}
    assert Window.parse("invoices") is None


def test_plan_balances_customer_months() -> None:
    # Customers created evenly over 100 s, listed until 200: later windows are shorter.
    boundaries = plan_boundaries(list(range(0, 100)), 4, until=200)
    assert len(boundaries) == 3 and boundaries == sorted(boundaries)
    assert 0 < boundaries[0] < boundaries[1] < boundaries[2] < 200
    assert boundaries[2] - boundaries[1] < boundaries[0]
    assert plan_boundaries([], 4, until=200) == []
    assert plan_boundaries([5, 6], 1, until=200) == []
    assert plan_boundaries([300], 4, until=200) == []


def test_windows_list_every_invoice_exactly_once_even_at_a_boundary_second(
        world: ListWorld, db_engine: Engine, db_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    counts = build_account(world, customers=30)
    world.embedded_lines = 3
    boundaries = _boundaries_at_invoices(world)
    on_boundary = {str(i["id"]) for i in world.objects["invoices"] if i["created"] in boundaries}
    assert on_boundary, "some invoices must be created exactly at a boundary second"
    monkeypatch.setattr(sync_windows, "plan_boundaries", lambda *_a, **_k: boundaries)
    settings = make_settings(db_url)
    listed: list[tuple[dict[str, Any], list[str]]] = []

    run_sync(db_engine, settings, client=_recording_reader(settings, listed), windows=FOUR)

    seen = Counter(object_id for _params, ids in listed for object_id in ids)
    assert set(seen) == {str(i["id"]) for i in world.objects["invoices"]}
    assert all(n == 1 for n in seen.values()), [k for k, n in seen.items() if n > 1]
    created_of = {str(i["id"]): int(i["created"]) for i in world.objects["invoices"]}
    windows = windows_from_boundaries("invoices", boundaries)
    by_window = {w.name: {oid for params, ids in listed if params.get("created") == w.created
                          for oid in ids} for w in windows}
    for boundary, window in zip(boundaries, windows[1:], strict=True):
        at = {oid for oid in on_boundary if created_of[oid] == boundary}
        assert at <= by_window[window.name]  # gte: a boundary second opens its window
    # Four chains, each ending with at most one partial page.
    assert len(listed) <= sum(-(-len(ids) // 7) for ids in by_window.values()) + len(windows)
    with session_scope(db_engine) as session:
        assert session.scalar(select(func.count()).select_from(StripeInvoice)) \
            == counts["invoices"]
    states = {row["resource"]: row for row in read_sync_state(db_engine)}
    assert states["invoices"]["phase"] == "done"
    assert states["invoices"]["objects_synced"] == counts["invoices"]
    assert all(states[w.name]["phase"] == "done" for w in windows)


def test_crash_in_one_window_after_the_others_finished_resumes_that_window_only(
        world: ListWorld, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    build_account(world, customers=30)
    world.embedded_lines = 3
    reference = _reference(world, sqlite_url)
    createds = _invoice_createds(world)
    # The oldest window holds most invoices; the three newer ones are short.
    boundaries = [createds[len(createds) * k // 10] for k in (7, 8, 9)]
    monkeypatch.setattr(sync_windows, "plan_boundaries", lambda *_a, **_k: boundaries)
    oldest = windows_from_boundaries("invoices", boundaries)[0]
    engine = make_engine(sqlite_url)
    settings = make_settings(sqlite_url)

    def others_done() -> bool:
        states = _window_states(engine)
        return len(states) == 4 and all(row["phase"] == "done" for name, row in states.items()
                                        if name != oldest.name)

    def crash(params: dict[str, Any]) -> None:
        # The oldest window's third page: wait until the other windows finished, then crash.
        if params.get("created") == oldest.created and params.get("starting_after"):
            pages = [p for p, _ids in listed if p.get("created") == oldest.created]
            if len(pages) >= 2:
                deadline = time.monotonic() + 20
                while not others_done() and time.monotonic() < deadline:
                    time.sleep(0.01)
                raise SyncInterrupted("injected crash in the oldest window")

    listed: list[tuple[dict[str, Any], list[str]]] = []
    with pytest.raises(SyncInterrupted):
        run_sync(engine, settings, client=_recording_reader(settings, listed, before_page=crash),
                 windows=FOUR)
    states = _window_states(engine)
    assert others_done(), states
    assert states[oldest.name]["phase"] == "running"
    cursor = states[oldest.name]["cursor"]
    assert cursor is not None
    assert {row["resource"]: row for row in read_sync_state(engine)}["invoices"]["phase"] \
        == "running"
    with session_scope(engine) as session:
        status = {r["resource"]: r for r in worker_status(session, settings,
                                                          with_queue=False)["sync"]}
    assert not any("@" in name for name in status)
    assert status["invoices"]["windows"] == "3/4"
    assert status["invoices"]["objects_synced"] == sum(r["objects_synced"]
                                                       for r in states.values())
    listed.clear()

    run_sync(engine, settings, client=_recording_reader(settings, listed), windows=FOUR)

    # Only the unfinished window is listed again, from its stored cursor.
    assert {str(p.get("created")) for p, _ids in listed} == {str(oldest.created)}
    assert listed[0][0]["starting_after"] == cursor
    assert mirror_snapshot(engine) == mirror_snapshot(reference)
    with session_scope(engine) as session:
        status = {r["resource"]: r for r in worker_status(session, settings,
                                                          with_queue=False)["sync"]}
    assert status["invoices"]["phase"] == "done" and status["invoices"]["windows"] == "4/4"


def test_a_resumed_backfill_reuses_the_stored_boundaries(
        world: ListWorld, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    build_account(world, customers=30)
    reference = _reference(world, sqlite_url)
    first = _boundaries_at_invoices(world)
    monkeypatch.setattr(sync_windows, "plan_boundaries", lambda *_a, **_k: first)
    engine = make_engine(sqlite_url)
    settings = make_settings(sqlite_url)

    def crash(resource: str, pages_done: int) -> None:
        if resource == "invoices" and pages_done == 3:
            raise SyncInterrupted("injected crash")

    listed: list[tuple[dict[str, Any], list[str]]] = []
    with pytest.raises(SyncInterrupted):
        run_sync(engine, settings, client=_recording_reader(settings, listed), page_hook=crash,
                 windows=FOUR)
    planned = sorted(_window_states(engine))
    assert planned == sorted(w.name for w in windows_from_boundaries("invoices", first))

    def must_not_plan(*_a: object, **_k: object) -> list[int]:
        raise AssertionError("a resumed backfill chose new boundaries")

    monkeypatch.setattr(sync_windows, "plan_boundaries", must_not_plan)
    listed.clear()
    # Even asked for another number of windows, the resumed backfill keeps its plan.
    run_sync(engine, settings, client=_recording_reader(settings, listed),
             windows={"invoices": 3})

    assert sorted(_window_states(engine)) == planned
    expected = {str(w.created) for w in windows_from_boundaries("invoices", first)}
    assert {str(p.get("created")) for p, _ids in listed} <= expected
    assert mirror_snapshot(engine) == mirror_snapshot(reference)


def test_a_full_restart_drops_the_old_windows(world: ListWorld, sqlite_url: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    build_account(world, customers=12)
    engine = make_engine(sqlite_url)
    settings = make_settings(sqlite_url)
    monkeypatch.setattr(sync_windows, "plan_boundaries",
                        lambda *_a, **_k: _boundaries_at_invoices(world))
    run_sync(engine, settings, client=StripeReader(settings), windows=FOUR)
    assert len(_window_states(engine)) == 4

    run_sync(engine, settings, client=StripeReader(settings), full=True, windows={"invoices": 1})

    assert _window_states(engine) == {}
    states = {row["resource"]: row for row in read_sync_state(engine)}
    assert states["invoices"]["phase"] == "done"


def test_the_setting_sets_the_number_of_windows(world: ListWorld, sqlite_url: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    assert stripe_sync.backfill_windows(True) == {"invoices": 4}
    assert stripe_sync.backfill_windows(False, 3) == {"invoices": 3}
    build_account(world, customers=12)
    engine = make_engine(sqlite_url)
    settings = make_settings(sqlite_url).model_copy(update={"stripe_backfill_windows": 3})
    monkeypatch.setattr(sync_windows, "plan_boundaries",
                        lambda _created, windows, _until: _boundaries_at_invoices(world, windows))
    run_sync(engine, settings, client=StripeReader(settings))
    assert len(_window_states(engine)) == 3
