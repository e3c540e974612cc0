"""The outlook through the mirror and the recompute, on SQLite and PostgreSQL.

Now is 2 December 2025 12:00 UTC. Four customers (hand-computed below):

- cus_a pays 100 and asked to cancel on 20 December (``cancel_at``);
- cus_b is in a trial of 49 that converts on 25 December;
- cus_c pays 300 with nothing scheduled;
- cus_d pays 5 seats x 12 = 60 and its schedule drops it to 3 seats (36) on 1 January.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from integrations.stripe_mirror import store_objects
from nrr.services.outlook import outlook_report
from nrr.services.recompute import recompute
from nrr.services.report import customer_changes, known_in_advance, monthly_report
from tests.outlook.test_outlook_domain import phase, schedule
from tests.recompute.conftest import make_settings, store_world
from tests.stripe_world import World, ts

NOW = ts(2025, 12, 2, 12)


def _world() -> tuple[World, dict[str, Any]]:
    w = World()
    for cid in ("cus_a", "cus_b", "cus_c", "cus_d"):
        w.add_customer(cid)
    w.add_price("price_basic", unit_amount=10_000, product="prod_basic")
    w.add_price("price_trial", unit_amount=4_900, product="prod_trial")
    w.add_price("price_big", unit_amount=30_000, product="prod_big")
    w.add_price("price_seat", unit_amount=1_200, product="prod_seat")
    w.subscribe("cus_a", [("price_basic", 1)], at=ts(2025, 10, 1)).schedule_cancel(
        ts(2025, 12, 20), at=ts(2025, 12, 1, 9))
    w.subscribe("cus_b", [("price_trial", 1)], at=ts(2025, 11, 25), trial_end=ts(2025, 12, 25))
    w.subscribe("cus_c", [("price_big", 1)], at=ts(2025, 10, 1))
    seats = w.subscribe("cus_d", [("price_seat", 5)], at=ts(2025, 10, 1))
    plan = schedule("sub_sched_d", seats.id, [
        phase(ts(2025, 10, 1), ts(2026, 1, 1), "price_seat", 5),
        phase(ts(2026, 1, 1), ts(2026, 6, 1), "price_seat", 3)])
    plan["customer"] = "cus_d"
    w.advance(NOW)
    return w, plan


def _store(session: Session, w: World, plan: dict[str, Any]) -> None:
    store_world(session, w)
    result = store_objects(session, "subscription_schedule", [plan], state_at=NOW)
    assert (result.stored, result.skipped) == (1, 0)


def test_current_month_counts_what_happened_and_the_outlook_holds_the_rest(session: Session,
                                                                           db_url: str) -> None:
    w, plan = _world()
    _store(session, w, plan)
    cfg = make_settings(db_url)
    recompute(session, cfg, now=datetime.fromtimestamp(NOW, UTC))

    # December so far: nothing has happened (the cancellation is on the 20th, the trial ends
    # on the 25th): opening 100 + 300 + 60 = 460, closing = MRR now = 460.
    report = monthly_report(session, cfg, "2025-12", now=datetime.fromtimestamp(NOW, UTC))
    assert (report["opening_mrr"], report["churn"], report["new"], report["closing_mrr"]) \
        == (460.0, 0.0, 0.0, 460.0)
    assert report["partial"] is True

    outlook = outlook_report(session, cfg, months=2)
    december, january = outlook["months"]
    # December: 460 - 100 (cus_a, 20 Dec) = 360 committed; the trial adds 49 when it converts.
    assert (december["month"], december["partial"]) == ("2025-12", True)
    assert (december["opening"], december["churn"], december["closing"]) == (460.0, 100.0, 360.0)
    assert december["trial_conversions"] == {"committed": 0.0, "all_converting": 49.0}
    assert december["closing_all_converting"] == 409.0
    # NRR = 360 / 460 = 78.26 %; band critical.
    assert (december["nrr"], december["grr"], december["nrr_band"]) == (78.261, 78.261, "critical")
    # January: 360 - 24 (cus_d: 60 -> 36) = 336; NRR = 336 / 360 = 93.333 %.
    assert (january["opening"], january["contraction"], january["closing"]) == (360.0, 24.0, 336.0)
    assert (january["nrr"], january["grr"], january["nrr_band"]) == (93.333, 93.333, "concerning")
    # Upper bound: 409 at January's opening, 24 down: (409 - 24) / 409 = 94.132 %.
    assert january["nrr_all_converting"] == 94.132

    movements = [(m["customer_id"], m["effective_at"], m["amount"], m["cause"], m["bound"])
                 for m in outlook["movements"]]
    assert movements == [
        ("cus_a", "2025-12-20T00:00:00Z", -100.0, "scheduled_cancellation", "committed"),
        ("cus_b", "2025-12-25T00:00:00Z", 49.0, "trial_end", "upper"),
        ("cus_d", "2026-01-01T00:00:00Z", -24.0, "schedule_phase", "committed"),
    ]
    assert outlook["movements"][2]["stripe_ids"]["subscription_schedule"] == "sub_sched_d"
    assert [c["cause"] for c in customer_changes(session, cfg, "cus_a")] == ["scheduled_cancellation"]


def test_month_that_happens_as_scheduled_was_known_in_advance(session: Session, db_url: str) -> None:
    w, plan = _world()
    _store(session, w, plan)
    cfg = make_settings(db_url)
    # The outlook at December's opening (the first full recompute in December).
    recompute(session, cfg, now=datetime.fromtimestamp(NOW, UTC))
    projected = outlook_report(session, cfg, months=1)["months"][0]
    # December then happens as scheduled; January 2 the month is closed.
    later = ts(2026, 1, 2)
    w.advance(later)
    store_world(session, w, state_at=later)
    recompute(session, cfg, now=datetime.fromtimestamp(later, UTC))
    real = monthly_report(session, cfg, "2025-12", now=datetime.fromtimestamp(later, UTC))
    assert (real["opening_mrr"], real["churn"], real["contraction"], real["expansion"]) \
        == (projected["opening"], projected["churn"], projected["contraction"], projected["expansion"])
    # The trial converted: the upper bound's conversions happened as new MRR.
    assert real["new"] == projected["trial_conversions"]["all_converting"]
    shares = known_in_advance(session, cfg, "2025-12")
    assert (shares["churn"], shares["churn_known"]) == (100.0, 100.0)


def test_worker_processes_store_the_same_outlook(session: Session, db_url: str) -> None:
    w, plan = _world()
    _store(session, w, plan)
    session.commit()  # worker processes read the committed mirror
    serial = make_settings(db_url, NRR_RECOMPUTE_WORKERS="0")
    recompute(session, serial, now=datetime.fromtimestamp(NOW, UTC))
    expected = outlook_report(session, serial, months=3)
    parallel = make_settings(db_url, NRR_RECOMPUTE_WORKERS="2")
    recompute(session, parallel, now=datetime.fromtimestamp(NOW, UTC))
    assert outlook_report(session, parallel, months=3) == expected
    assert len(expected["movements"]) == 3


def test_an_incremental_refresh_stores_what_a_full_one_does(session: Session,
                                                            db_url: str) -> None:
    """An incremental recompute refreshes its customers' outlook from the same candidates
    a full one would take among them: customers with nothing scheduled have no rows, and
    a schedule released since drops out. Compared with full recomputes of the same data."""
    from sqlalchemy import func, select

    from nrr.services.outlook import T_MONTHS

    w, plan = _world()
    _store(session, w, plan)
    settings = make_settings(db_url)
    moment = datetime.fromtimestamp(NOW, UTC)
    recompute(session, settings, now=moment)
    full = outlook_report(session, settings, months=3)
    rows = session.scalar(select(func.count()).select_from(T_MONTHS))
    recompute(session, settings, customer_ids=["cus_a", "cus_b", "cus_c", "cus_d"], now=moment)
    assert outlook_report(session, settings, months=3) == full
    assert session.scalar(select(func.count()).select_from(T_MONTHS)) == rows
    assert not session.scalar(select(func.count()).select_from(T_MONTHS).where(
        T_MONTHS.c.customer_id == "cus_c"))  # nothing scheduled: no rows, as in a full run

    released = {**plan, "status": "released"}
    result = store_objects(session, "subscription_schedule", [released], state_at=NOW)
    assert (result.stored, result.skipped) == (1, 0)
    recompute(session, settings, customer_ids=["cus_d"], now=moment)
    incremental = outlook_report(session, settings, months=3)
    assert incremental != full  # cus_d's drop to 3 seats is no longer ahead
    recompute(session, settings, now=moment)
    assert outlook_report(session, settings, months=3) == incremental


def test_outlook_by_plan_adds_up_to_the_total(session: Session, db_url: str) -> None:
    """``--by plan``: each customer in its plan's segment (hand-computed per plan), and the
    segments add up to the month's totals."""
    w, plan = _world()
    _store(session, w, plan)
    cfg = make_settings(db_url)
    recompute(session, cfg, now=datetime.fromtimestamp(NOW, UTC))
    document = outlook_report(session, cfg, months=2, by="plan")
    shown = {(m["month"], s["segment"]): (s["opening"], s["churn"], s["contraction"], s["closing"],
                                          s["closing_all_converting"])
             for m in document["months"] for s in m["segments"]}
    # December: cus_a (basic) cancels 100 on the 20th; cus_b's trial (49) converts only in
    # the upper bound; cus_c (big, 300) and cus_d (seat, 60) stay.
    assert shown[("2025-12", "price_basic")] == (100.0, 100.0, 0.0, 0.0, 0.0)
    assert shown[("2025-12", "price_big")] == (300.0, 0.0, 0.0, 300.0, 300.0)
    assert shown[("2025-12", "price_seat")] == (60.0, 0.0, 0.0, 60.0, 60.0)
    assert shown[("2025-12", "price_trial")] == (0.0, 0.0, 0.0, 0.0, 49.0)
    # January: cus_d's schedule drops 5 seats to 3 (60 -> 36).
    assert shown[("2026-01", "price_seat")] == (60.0, 0.0, 24.0, 36.0, 36.0)
    assert shown[("2026-01", "price_big")] == (300.0, 0.0, 0.0, 300.0, 300.0)
    for month in document["months"]:
        for key in ("opening", "churn", "contraction", "expansion", "closing",
                    "closing_all_converting"):
            assert sum(s[key] for s in month["segments"]) == month[key], (month["month"], key)


def test_the_quick_reader_gives_the_same_document(session: Session, db_url: str) -> None:
    """``nrr outlook``'s plain-SQL reader and ``outlook_report`` read the same stored rows
    into the same document; without the live run's stored totals it steps aside."""
    from sqlalchemy import text

    from nrr.services.outlook_read import quick_outlook_report

    w, plan = _world()
    _store(session, w, plan)
    cfg = make_settings(db_url)
    recompute(session, cfg, now=datetime.fromtimestamp(NOW, UTC))
    for months in (1, 3, 12):
        quick = quick_outlook_report(session, cfg, months=months)
        assert quick is not None
        assert quick == outlook_report(session, cfg, months=months)
    assert quick["months"][0]["closing"] == 360.0  # the hand-computed December above
    session.execute(text("DELETE FROM segment_totals_built"))
    assert quick_outlook_report(session, cfg) is None


def test_nrr_outlook_command_whole_account_and_by_plan(session: Session, db_url: str) -> None:
    """``nrr outlook`` (the plain-SQL reader) prints ``outlook_report``'s document; ``--by``
    goes through the full reader; a bad ``--months`` is a usage error (exit 2)."""
    import json

    from tests.recompute.conftest import cli

    w, plan = _world()
    _store(session, w, plan)
    cfg = make_settings(db_url)
    recompute(session, cfg, now=datetime.fromtimestamp(NOW, UTC))
    session.commit()
    env = {"DATABASE_URL": db_url}
    result = cli(["outlook", "--format", "json"], env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads(json.dumps(outlook_report(session, cfg)))
    by_plan = cli(["outlook", "--format", "json", "--by", "plan", "--months", "2"], env)
    assert by_plan.exit_code == 0, by_plan.output
    segments = {s["segment"]: s["closing"] for s in json.loads(by_plan.stdout)["months"][1]["segments"]}
    # January: cus_a (basic) has churned in December, so its plan has no row any more.
    assert segments == {"price_big": 300.0, "price_seat": 36.0, "price_trial": 0.0}
    assert cli(["outlook", "--months", "13"], env).exit_code == 2
    assert cli(["outlook", "--by", "colour"], env).exit_code == 2
