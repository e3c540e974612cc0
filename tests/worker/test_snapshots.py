"""Retention snapshots: stored once, versioned when history changes, diffs explain why."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from models.derived import CustomerMonthFact, RetentionSnapshot
from nrr.cli import app
from nrr.db import session_scope
from nrr.services.snapshots import (
    SnapshotError,
    diff_snapshots,
    last_closed_month,
    list_snapshots,
    take_snapshots,
)
from nrr.settings import Settings, load_settings

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
MONTH = "2026-10"
USD = 100_000_000  # one dollar in micro-minor units


def _fact(month: str, customer: str, opening: int, closing: int, movement: str | None,
          plan: str = "pro") -> CustomerMonthFact:
    return CustomerMonthFact(month=month, customer_id=customer, opening_mrr_micro=opening * USD,
                             closing_mrr_micro=closing * USD, movement=movement,
                             movement_micro=(closing - opening) * USD, first_paid_month="2026-01",
                             currency="usd", plan=plan, product="prod_a", country="DE")


@pytest.fixture
def settings(db_url: str) -> Settings:
    return load_settings({"DATABASE_URL": db_url})


@pytest.fixture
def history(db_engine: Engine) -> Engine:
    with session_scope(db_engine) as session:
        for month in ("2026-09", MONTH):
            session.add(_fact(month, "cus_a", 100, 100, None))
            session.add(_fact(month, "cus_b", 50, 50, None, plan="basic"))
            session.add(_fact(month, "cus_c", 20, 30 if month == MONTH else 20,
                              "expansion" if month == MONTH else None))
    return db_engine


def _take(engine: Engine, settings: Settings, **kwargs: object) -> dict:
    with session_scope(engine) as session:
        return take_snapshots(session, settings, MONTH, now=NOW, **kwargs).as_dict()  # type: ignore[arg-type]


def _rows(engine: Engine) -> list[tuple[str, str, str, int]]:
    with session_scope(engine) as session:
        return sorted(session.execute(select(
            RetentionSnapshot.period, RetentionSnapshot.dimension, RetentionSnapshot.segment,
            RetentionSnapshot.version)).all())


def test_a_snapshot_holds_the_reports_numbers_policies_and_definitions(
        history: Engine, settings: Settings) -> None:
    result = _take(history, settings)
    assert result["created_count"] > 0
    with session_scope(history) as session:
        total = session.scalars(select(RetentionSnapshot).where(
            RetentionSnapshot.month == MONTH, RetentionSnapshot.period == "monthly",
            RetentionSnapshot.dimension == "")).one()
        plans = session.scalars(select(RetentionSnapshot).where(
            RetentionSnapshot.month == MONTH, RetentionSnapshot.period == "monthly",
            RetentionSnapshot.dimension == "plan")).all()
    # opening 170, expansion 10: NRR 180/170.
    assert total.metrics["opening_mrr"] == 170.0
    assert total.metrics["closing_mrr"] == 180.0
    assert total.metrics["nrr"] == pytest.approx(105.882, abs=0.001)
    assert total.policies["churn_at"] == settings.policies.churn_at
    assert "nrr" in total.definitions
    assert len(total.content_hash) == 64
    assert {p.segment for p in plans} == {"pro", "basic"}
    assert {p.metrics["closing_mrr"] for p in plans} == {130.0, 50.0}
    periods = {row[0] for row in _rows(history)}
    assert periods == {"monthly", "t12m"}


def test_taking_the_same_snapshot_twice_stores_it_once(history: Engine,
                                                        settings: Settings) -> None:
    first = _take(history, settings)
    stored = _rows(history)
    second = _take(history, settings)
    assert second["created_count"] == 0
    assert second["unchanged"] == first["created_count"]
    assert _rows(history) == stored


def test_concurrent_writers_store_one_snapshot(history: Engine, settings: Settings) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def take() -> None:
        try:
            barrier.wait()
            _take(history, settings)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=take) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    rows = _rows(history)
    assert len(rows) == len(set((p, d, s) for p, d, s, _ in rows))
    assert {v for *_, v in rows} == {1}


def _live_fact(session: Session, customer_id: str) -> CustomerMonthFact | None:
    """The live run's fact of ``customer_id`` in ``MONTH``."""
    return session.scalars(select(CustomerMonthFact).where(
        CustomerMonthFact.month == MONTH, CustomerMonthFact.customer_id == customer_id)).first()


def test_a_changed_history_adds_version_two_and_the_diff_explains_it(
        history: Engine, settings: Settings) -> None:
    _take(history, settings)
    with session_scope(history) as session:
        late = _live_fact(session, "cus_b")
        assert late is not None
        late.closing_mrr_micro = 0
        late.movement = "churn"
        late.movement_micro = -50 * USD
    result = _take(history, settings, reason="late cancellation")
    assert {"period": "monthly", "dimension": "", "segment": "", "version": 2} in result["created"]
    with session_scope(history) as session:
        versions = session.scalars(select(RetentionSnapshot.version).where(
            RetentionSnapshot.month == MONTH, RetentionSnapshot.period == "monthly",
            RetentionSnapshot.dimension == "").order_by(RetentionSnapshot.version)).all()
        assert versions == [1, 2]  # the old version is kept beside the new one
        diffs = diff_snapshots(session, MONTH, period="monthly")
    assert len(diffs) == 1
    diff = diffs[0]
    assert (diff["old_version"], diff["new_version"]) == (1, 2)
    assert diff["reason"] == "late cancellation"
    assert diff["why"].startswith("data changed")
    numbers = {n["metric"]: n for n in diff["numbers"]}
    assert numbers["churn"]["old"] == 0.0 and numbers["churn"]["new"] == 50.0
    assert numbers["closing_mrr"]["change"] == -50.0
    assert "opening_mrr" not in numbers


def test_a_policy_change_is_named_in_the_diff(history: Engine, db_url: str) -> None:
    _take(history, load_settings({"DATABASE_URL": db_url}))
    changed = load_settings({"DATABASE_URL": db_url, "NRR_POLICY_DISCOUNTS": "all"})
    result = _take(history, changed, reason="discount policy changed")
    assert result["created_count"] > 0
    with session_scope(history) as session:
        diff = diff_snapshots(session, MONTH, period="monthly")[0]
    assert "policies changed: discounts" in diff["why"]
    assert diff["policies"] == [{"name": "discounts", "old": "recurring", "new": "all"}]


def test_only_closed_months_are_snapshotted(history: Engine, settings: Settings) -> None:
    with session_scope(history) as session, pytest.raises(SnapshotError, match="not closed"):
        take_snapshots(session, settings, "2026-11", now=NOW)
    assert last_closed_month(settings, NOW) == MONTH


def test_snapshots_commands_take_list_and_diff(history: Engine, db_url: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", db_url)
    runner = CliRunner()
    first = runner.invoke(app, ["snapshots", "take", "--month", MONTH, "--format", "json"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["created_count"] > 0
    again = runner.invoke(app, ["snapshots", "take", "--month", MONTH, "--format", "json"])
    assert json.loads(again.stdout)["created_count"] == 0
    nothing = runner.invoke(app, ["snapshots", "diff", "--month", MONTH])
    assert nothing.exit_code == 0 and "nothing changed" in nothing.stdout

    with session_scope(history) as session:
        fact = _live_fact(session, "cus_a")
        assert fact is not None
        fact.closing_mrr_micro = 80 * USD
        fact.movement = "contraction"
    runner.invoke(app, ["snapshots", "take", "--month", MONTH, "--reason", "refund"])
    listed = runner.invoke(app, ["snapshots", "list", "--month", MONTH, "--format", "json"])
    assert listed.exit_code == 0
    versions = [(r["period"], r["version"]) for r in json.loads(listed.stdout)]
    assert ("monthly", 1) in versions and ("monthly", 2) in versions
    diff = runner.invoke(app, ["snapshots", "diff", "--month", MONTH, "--period", "monthly",
                               "--format", "json"])
    assert diff.exit_code == 0
    document = json.loads(diff.stdout)
    assert document["diffs"][0]["why"].startswith("data changed")
    table = runner.invoke(app, ["snapshots", "diff", "--month", MONTH])
    assert "v1 -> v2" in table.stdout and "contraction" in table.stdout
    bad = runner.invoke(app, ["snapshots", "take", "--month", "2026-13"])
    assert bad.exit_code == 2
    with session_scope(history) as session:
        assert session.scalar(select(func.count()).select_from(RetentionSnapshot)) == len(
            list_snapshots(session, month=MONTH, all_segments=True))


def test_a_month_before_any_facts_is_not_snapshotted(db_engine: Engine,
                                                     settings: Settings) -> None:
    with session_scope(db_engine) as session, pytest.raises(SnapshotError, match="no monthly"):
        take_snapshots(session, settings, MONTH, now=NOW)
    assert _rows(db_engine) == []
