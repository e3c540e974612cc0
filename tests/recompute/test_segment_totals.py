"""The segment totals kept beside the facts give the very documents the facts give: after a
full, an incremental and a sharded recompute of a generated account with several plans,
currencies, countries and metadata values (the facts' own aggregation is the reference)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.orm import Session

from benchmarks.generate_account import generate
from models.derived import CustomerMonthFact, SegmentMonthTotal
from models.mirror import (
    StripeCustomer,
    StripeInvoice,
    StripeInvoiceLine,
    StripeSubscription,
    StripeSubscriptionItem,
)
from nrr.db import session_scope
from nrr.domain.months import add_months
from nrr.html_report.collect import cohort_heat
from nrr.services import segment_totals
from nrr.services.recompute import recompute, shards
from nrr.services.report import month_totals, report_series
from nrr.settings import Settings
from tests.recompute.conftest import make_settings

NOW = 1_790_000_000  # 2026-09-21
MOMENT = datetime.fromtimestamp(NOW, tz=UTC)
DIMENSIONS = (None, "plan", "product", "currency", "country", "metadata:tier",
              "metadata:region")
# Countries and metadata with the values that share a label: None and "" both read "(none)".
COUNTRIES = ("US", "DE", None, "", "FR")
TIERS = ({"tier": "gold", "region": "emea"}, {"tier": "silver"}, {}, {"tier": ""},
         {"tier": "bronze", "region": "amer"})


def _account(session: Session, customers: int, *, seed: int, shift: int = 0) -> None:
    """A generated account whose customers have several countries and metadata values."""
    generate(session, customers, seed=seed, now=NOW)
    ids = sorted(session.scalars(select(StripeCustomer.id)))
    for index, customer_id in enumerate(ids):
        session.execute(update(StripeCustomer).where(StripeCustomer.id == customer_id).values(
            country=COUNTRIES[(index + shift) % len(COUNTRIES)],
            metadata_=TIERS[(index * 3 + shift) % len(TIERS)]))


def _documents(session: Session, settings: Settings) -> dict[str, Any]:
    first = session.scalar(select(func.min(CustomerMonthFact.month)))
    last = session.scalar(select(func.max(CustomerMonthFact.month)))
    assert first is not None and last is not None
    documents: dict[str, Any] = {}
    for by in DIMENSIONS:
        documents[f"monthly {by}"] = report_series(session, settings, first, last, by=by,
                                                   now=MOMENT)
        # The T12M series from the first month with a full window, and beyond the facts.
        documents[f"t12m {by}"] = report_series(session, settings, add_months(first, 11),
                                                add_months(last, 2), period="t12m", by=by,
                                                now=MOMENT)
        problems: list[str] = []
        documents[f"sums {by}"] = (month_totals(session, first, last, dimension=by,
                                                problems=problems), problems)
    documents["cohort heat"] = cohort_heat(session, settings, now=MOMENT)
    return documents


def _assert_totals_equal_facts(engine: Engine, settings: Settings) -> dict[str, Any]:
    with Session(engine) as session:
        for by in DIMENSIONS:  # the totals answer every dimension here
            assert segment_totals.readable_run(session, by) is not None, by
        assert session.scalar(select(func.count()).select_from(SegmentMonthTotal)) > 0
        from_totals = _documents(session, settings)
    with Session(engine) as session:
        session.info[segment_totals.READ_FACTS] = True
        assert segment_totals.readable_run(session, None) is None
        from_facts = _documents(session, settings)
    for name, document in from_facts.items():
        assert from_totals[name] == document, name
    # The account really has several segments on every dimension.
    series = from_facts["monthly country"]["months"]
    assert {s["segment"] for month in series for s in month["segments"]} >= {"US", "DE", "(none)"}
    tiers = from_facts["monthly metadata:tier"]["months"]
    assert {s["segment"] for month in tiers for s in month["segments"]} >= {
        "gold", "silver", "bronze", "(none)"}
    assert any(month["segments"] for month in from_facts["t12m plan"]["months"])
    return from_facts


def test_totals_give_the_documents_of_the_facts_after_every_recompute_kind(
        db_url: str, db_engine: Engine) -> None:
    settings = make_settings(db_url).model_copy(update={"recompute_workers": 0})
    with session_scope(db_engine) as session:
        _account(session, 40, seed=5)

    # Full.
    with session_scope(db_engine) as session:
        recompute(session, settings, now=MOMENT)
    full = _assert_totals_equal_facts(db_engine, settings)

    # Incremental: some customers lose their whole history (their facts go), others move
    # to other segments (every fact of theirs changes group).
    with Session(db_engine) as session:
        ids = sorted(session.scalars(select(StripeCustomer.id)))
    gone, moved = ids[1:4], ids[10:22]
    with session_scope(db_engine) as session:
        for model in (StripeInvoiceLine, StripeInvoice, StripeSubscriptionItem,
                      StripeSubscription):
            session.execute(delete(model).where(model.customer_id.in_(gone)))
        for index, customer_id in enumerate(moved):
            session.execute(update(StripeCustomer).where(StripeCustomer.id == customer_id)
                            .values(country=COUNTRIES[(index + 2) % len(COUNTRIES)],
                                    metadata_=TIERS[(index + 1) % len(TIERS)]))
    with session_scope(db_engine) as session:
        result = recompute(session, settings, customer_ids=gone + moved, now=MOMENT)
    assert result.kind == "incremental"
    incremental = _assert_totals_equal_facts(db_engine, settings)
    assert incremental["monthly None"] != full["monthly None"]  # the change reached the sums
    assert incremental["monthly metadata:tier"] != full["monthly metadata:tier"]

    # Sharded, with one shard run twice and one left to the final step.
    with session_scope(db_engine) as session:
        planned = shards.start(session, settings, now=MOMENT, shard_customers=9)
    assert planned is not None and len(planned.shards) == 5
    for shard in (3, 0, 4, 0, 1):
        with session_scope(db_engine) as session:
            shards.run_shard(session, settings, planned.run_id, shard, planned.now_ts)
    with Session(db_engine) as session:  # readers still see the incremental's totals
        assert _documents(session, settings) == incremental
    with session_scope(db_engine) as session:
        assert shards.finish(session, settings, planned.run_id, planned.now_ts) is not None
    sharded = _assert_totals_equal_facts(db_engine, settings)
    assert sharded == incremental  # the same mirror computed again
    with Session(db_engine) as session:  # the shards' partial rows were added up and gone
        assert not session.scalar(select(func.count()).select_from(SegmentMonthTotal).where(
            SegmentMonthTotal.shard.is_not(None)))


def test_a_run_without_totals_is_reported_from_its_facts(db_url: str,
                                                         db_engine: Engine) -> None:
    settings = make_settings(db_url).model_copy(update={"recompute_workers": 0})
    with session_scope(db_engine) as session:
        _account(session, 12, seed=3, shift=1)
    with session_scope(db_engine) as session:
        recompute(session, settings, now=MOMENT)
    with Session(db_engine) as session:
        expected = _documents(session, settings)
    # As a database upgraded before its first recompute: no totals for the live run.
    with session_scope(db_engine) as session:
        session.execute(delete(segment_totals.T_BUILT))
        session.execute(delete(segment_totals.T_TOTALS))
    with Session(db_engine) as session:
        assert segment_totals.readable_run(session, None) is None
        assert _documents(session, settings) == expected
    # The next incremental recompute builds them whole.
    with Session(db_engine) as session:
        one = sorted(session.scalars(select(StripeCustomer.id)))[:1]
    with session_scope(db_engine) as session:
        recompute(session, settings, customer_ids=one, now=MOMENT)
    _assert_totals_equal_facts(db_engine, settings)


def test_totals_folded_in_worker_processes_give_the_documents_of_the_facts(
        db_url: str, db_engine: Engine) -> None:
    """A full recompute whose chunks are computed in worker processes (each folds its own
    customers' facts; this process adds the parts up) stores the totals of all the facts."""
    settings = make_settings(db_url).model_copy(update={"recompute_workers": 2})
    with session_scope(db_engine) as session:
        _account(session, 30, seed=11, shift=2)
    with session_scope(db_engine) as session:
        result = recompute(session, settings, now=MOMENT)
    if db_url.startswith("sqlite") and ":memory:" not in db_url:
        assert result.timings.get("wait") is not None  # the chunks came from the workers
    _assert_totals_equal_facts(db_engine, settings)


def test_too_many_metadata_values_leave_the_metadata_totals_out(
        db_url: str, db_engine: Engine, monkeypatch: Any) -> None:
    """Above the cap of distinct metadata objects the totals keep every other dimension
    and ``--by metadata:KEY`` is answered from the facts, with the same document."""
    from nrr.services.recompute import totals

    monkeypatch.setattr(totals, "MAX_METADATA_SEGMENTS", 3)  # the account has 5
    settings = make_settings(db_url).model_copy(update={"recompute_workers": 0})
    with session_scope(db_engine) as session:
        _account(session, 20, seed=4)
    with session_scope(db_engine) as session:
        recompute(session, settings, now=MOMENT)
    with Session(db_engine) as session:
        assert segment_totals.readable_run(session, "metadata:tier") is None
        assert segment_totals.readable_run(session, "country") is not None
        assert not session.scalar(select(func.count()).select_from(SegmentMonthTotal).where(
            SegmentMonthTotal.dimension == segment_totals.METADATA))
        from_totals = _documents(session, settings)
    with Session(db_engine) as session:
        session.info[segment_totals.READ_FACTS] = True
        assert _documents(session, settings) == from_totals
