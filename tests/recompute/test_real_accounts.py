"""Issue 11 end to end, on SQLite and PostgreSQL: Stripe-shaped objects -> mirror ->
recompute -> facts and reports. Expected values are the hand computations documented in
:mod:`tests.real_accounts`."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from integrations.stripe_mirror import store_objects
from models.derived import CustomerMonthFact, ExchangeRate
from nrr.db import session_scope
from nrr.domain.money import micro_to_major
from nrr.domain.months import month_of
from nrr.services.fx import RateRow, store_rates
from nrr.services.recompute import recompute
from nrr.services.report import monthly_report
from tests.real_accounts import (
    Account,
    dunning_account,
    far_trial_account,
    free_upgrade_account,
    inclusive_tax_account,
    two_currency_account,
)
from tests.recompute.conftest import KIND_OF, cli, make_settings
from tests.stripe_world import ts

UTC_ZONE = ZoneInfo("UTC")


def store(engine: Engine, account: Account, *, state_at: int) -> None:
    with session_scope(engine) as session:
        objects = account.objects()
        for key, kind in KIND_OF.items():
            result = store_objects(session, kind, objects.get(key, []), state_at=state_at)
            assert result.skipped == 0, f"{kind}: quarantined"


def run(engine: Engine, db_url: str, now: int, **env: str) -> None:
    with session_scope(engine) as session:
        recompute(session, make_settings(db_url, **env), now=datetime.fromtimestamp(now, tz=UTC))


def facts(engine: Engine, customer: str) -> dict[str, tuple[Decimal, Decimal, str | None]]:
    with Session(engine) as session:
        return {f.month: (micro_to_major(f.opening_mrr_micro, "usd"),
                          micro_to_major(f.closing_mrr_micro, "usd"), f.movement)
                for f in session.scalars(select(CustomerMonthFact)
                                         .where(CustomerMonthFact.customer_id == customer))}


@pytest.mark.parametrize(("trial_start", "trial_end", "now"), [
    (ts(2026, 1, 10), ts(2026, 3, 10), ts(2026, 1, 20)),
    (ts(2025, 1, 31), ts(2025, 3, 2), ts(2025, 1, 31, 12)),
])
def test_trial_two_months_ahead_recomputes_the_account(db_engine: Engine, db_url: str,
                                                       trial_start: int, trial_end: int,
                                                       now: int) -> None:
    account = far_trial_account(trial_start, trial_end, paying_since=now - 200 * 86_400)
    store(db_engine, account, state_at=now)
    run(db_engine, db_url, now)
    assert facts(db_engine, "cus_trial") == {}
    # The rest of the account: 100.00 a month from about seven months before now.
    paying = facts(db_engine, "cus_paying")
    first, today = month_of(now - 200 * 86_400, UTC_ZONE), month_of(now, UTC_ZONE)
    assert paying[first] == (Decimal(0), Decimal(100), "new")
    assert paying[today] == (Decimal(100), Decimal(100), None)


def test_inclusive_tax_with_a_discount_from_the_mirror(db_engine: Engine, db_url: str) -> None:
    store(db_engine, inclusive_tax_account(repeating_months=1), state_at=ts(2025, 4, 2))
    run(db_engine, db_url, ts(2025, 4, 2))
    found = facts(db_engine, "cus_vat")
    assert found["2025-01"] == (Decimal(0), Decimal(50), "new")
    assert found["2025-02"] == (Decimal(50), Decimal(100), "expansion")


@pytest.mark.parametrize("rates_on", ["item", "subscription"])
def test_inclusive_tax_from_the_rates_from_the_mirror(db_engine: Engine, db_url: str,
                                                       rates_on: str) -> None:
    # No line carries its tax: 60 paid / 1.2 = 50.00, then 120 / 1.2 = 100.00.
    store(db_engine, inclusive_tax_account(repeating_months=1, rates_on=rates_on),
          state_at=ts(2025, 4, 2))
    run(db_engine, db_url, ts(2025, 4, 2))
    found = facts(db_engine, "cus_vat")
    assert found["2025-01"] == (Decimal(0), Decimal(50), "new")
    assert found["2025-02"] == (Decimal(50), Decimal(100), "expansion")


@pytest.mark.parametrize(("credit_first", "credit_smaller_id", "reset", "credited_items"), [
    (True, False, False, True), (False, False, False, True), (True, False, True, True),
    (False, False, False, False), (True, False, True, False),
])
def test_free_plan_upgrade_from_the_mirror(db_engine: Engine, db_url: str, credit_first: bool,
                                           credit_smaller_id: bool, reset: bool,
                                           credited_items: bool) -> None:
    account = free_upgrade_account(credit_first=credit_first, credit_smaller_id=credit_smaller_id,
                                   reset=reset, credited_items=credited_items)
    store(db_engine, account, state_at=ts(2025, 6, 20))
    run(db_engine, db_url, ts(2025, 6, 20))
    found = facts(db_engine, "cus_up")
    assert found["2025-03"] == (Decimal(0), Decimal(50), "new")
    assert found["2025-04"] == (Decimal(50), Decimal(50), None)


def test_t12m_is_in_constant_currency(db_engine: Engine, db_url: str) -> None:
    store(db_engine, two_currency_account(), state_at=ts(2026, 1, 2))
    with session_scope(db_engine) as session:
        store_rates(session, [RateRow(date(2024, 12, 1), "eur", "1.00"),
                              RateRow(date(2025, 12, 1), "eur", "1.20")], reporting_currency="usd")
    run(db_engine, db_url, ts(2026, 1, 2))
    settings = make_settings(db_url)
    now = datetime(2026, 1, 2, tzinfo=UTC)
    with Session(db_engine) as session:
        t12m = monthly_report(session, settings, "2025-12", period="t12m", now=now)
        monthly = monthly_report(session, settings, "2025-12", now=now)
    # Hand computation (tests.real_accounts.two_currency_account): 220 at both ends.
    assert t12m["cohort_opening_mrr"] == 220.0 and t12m["cohort_closing_mrr"] == 220.0
    assert t12m["nrr"] == 100.0 and t12m["grr"] == 100.0 and t12m["band"] == "good"
    assert t12m["expansion"] == 0.0 and t12m["contraction"] == 0.0
    assert t12m["fx_impact"] == 20.0
    # The month itself: opening at December's rate 220, the rate step apart as fx_impact.
    assert monthly["nrr"] == 100.0 and monthly["fx_impact"] == 20.0


@pytest.mark.parametrize("canceled", [False, True])
def test_past_due_stop_stays_after_dunning(db_engine: Engine, db_url: str, canceled: bool) -> None:
    store(db_engine, dunning_account(canceled=canceled), state_at=ts(2025, 5, 2))
    run(db_engine, db_url, ts(2025, 5, 2), NRR_POLICY_PAST_DUE_CHURN_AFTER_DAYS="14")
    found = facts(db_engine, "cus_due")
    assert found["2025-03"] == (Decimal(100), Decimal(0), "churn")
    assert "2025-04" not in found


def test_past_due_stop_of_an_invoice_paid_late(db_engine: Engine, db_url: str) -> None:
    store(db_engine, dunning_account(canceled=False, paid_at=ts(2025, 3, 25)),
          state_at=ts(2025, 6, 2))
    run(db_engine, db_url, ts(2025, 6, 2), NRR_POLICY_PAST_DUE_CHURN_AFTER_DAYS="14")
    with Session(db_engine) as session:
        from models.derived import MrrTimelinePoint

        points = [(p.effective_at, p.mrr_micro // 100_000_000) for p in session.scalars(
            select(MrrTimelinePoint).where(MrrTimelinePoint.customer_id == "cus_due")
            .order_by(MrrTimelinePoint.effective_at))]
    assert points == [(ts(2025, 1, 1), 100), (ts(2025, 3, 15), 0), (ts(2025, 3, 25), 100)]


# --------------------------------------------------------------------------- 6. rate bounds


@pytest.mark.parametrize("rate", ["1e999999999", "1e15", "1e-30", "1000000001", "0.0000000009",
                                  "0", "-1.2", "NaN", "inf", "-inf", "abc", ""])
def test_fx_import_refuses_a_rate_out_of_bounds(db_url: str, tmp_path: Path, rate: str) -> None:
    env = {"DATABASE_URL": db_url, "NRR_REPORTING_CURRENCY": "usd"}
    path = tmp_path / "rates.csv"
    path.write_text(f"date,currency,rate\n2025-01-01,eur,1.08\n2025-02-01,eur,{rate}\n",
                    encoding="utf-8")
    result = cli(["fx", "import", str(path)], env=env)
    assert result.exit_code == 2, result.output
    assert "row 3" in " ".join(result.stderr.split())
    listed = cli(["fx", "list", "--format", "json"], env=env)
    assert json.loads(listed.stdout) == []  # nothing imported, not even the good row


@pytest.mark.parametrize("rate", ["1e9", "0.000000001", "1.08"])
def test_fx_import_takes_the_bounds_themselves(sqlite_url: str, tmp_path: Path, rate: str) -> None:
    env = {"DATABASE_URL": sqlite_url, "NRR_REPORTING_CURRENCY": "usd"}
    path = tmp_path / "rates.csv"
    path.write_text(f"date,currency,rate\n2025-01-01,eur,{rate}\n", encoding="utf-8")
    assert cli(["fx", "import", str(path)], env=env).exit_code == 0


def test_recompute_never_converts_with_a_stored_rate_out_of_bounds(db_engine: Engine,
                                                                  db_url: str) -> None:
    """A rate written to the table by other means (before the bounds existed) is as good
    as missing: the recompute ends promptly instead of spinning on an exact fraction of
    1e999999999."""
    store(db_engine, two_currency_account(), state_at=ts(2026, 1, 2))
    with session_scope(db_engine) as session:
        session.add(ExchangeRate(date=date(2024, 12, 1), currency="eur", reporting_currency="usd",
                                 rate="1e999999999"))
    run(db_engine, db_url, ts(2026, 1, 2))
    assert facts(db_engine, "cus_eur") == {}
    assert facts(db_engine, "cus_usd")["2025-06"] == (Decimal(100), Decimal(100), None)




# --------------------------------------------------------------------------- 8. isolation


def broken_account() -> Account:
    """cus_ok pays 100.00 USD a month from 2025-01-01; cus_eur 100.00 EUR (no EUR rate is
    stored: the conversion it needs is missing); cus_odd has a subscription in a status
    nobody knows ("hibernating"); cus_ahead is on a trial ending three months after now
    (normal data: computed, nothing to report yet)."""
    account = Account()
    account.price("price_usd", unit_amount=10_000)
    account.price("price_eur", unit_amount=10_000, currency="eur")
    account.monthly_subscription("cus_ok", "sub_ok", "si_ok", "price_usd", start=ts(2025, 1, 1),
                                 months=6)
    account.monthly_subscription("cus_eur", "sub_eur", "si_eur", "price_eur",
                                 start=ts(2025, 1, 1), months=6, currency="eur")
    account.monthly_subscription("cus_odd", "sub_odd", "si_odd", "price_usd", start=ts(2025, 2, 1),
                                 months=5, status="hibernating")
    trial = far_trial_account(ts(2025, 6, 20), ts(2025, 9, 20))
    for kind in ("customers", "invoices", "subscriptions"):
        for obj in trial.lists[kind]:
            if obj["id"].endswith("trial"):
                account.add(kind, obj)
    account.lists["customers"][-1]["id"] = "cus_ahead"
    for obj in account.lists["invoices"] + account.lists["subscriptions"]:
        if obj.get("customer") == "cus_trial":
            obj["customer"] = "cus_ahead"
    return account


def test_one_customer_never_blanks_an_account(db_engine: Engine, db_url: str, tmp_path: Path) -> None:
    now = ts(2025, 6, 25)
    store(db_engine, broken_account(), state_at=now)
    with session_scope(db_engine) as session:
        result = recompute(session, make_settings(db_url), now=datetime.fromtimestamp(now, tz=UTC))
    assert sorted(left.customer_id for left in result.left_out) == ["cus_eur", "cus_odd"]
    # Everyone else is computed: cus_ok from its invoices (100 a month since January).
    assert facts(db_engine, "cus_ok")["2025-01"] == (Decimal(0), Decimal(100), "new")
    assert facts(db_engine, "cus_ok")["2025-06"] == (Decimal(100), Decimal(100), None)
    assert facts(db_engine, "cus_eur") == {} and facts(db_engine, "cus_odd") == {}
    assert facts(db_engine, "cus_ahead") == {}
    env = {"DATABASE_URL": db_url}
    # nrr status lists them with their reasons.
    status = cli(["status", "--format", "json"], env={**env, "REDIS_URL": ""})
    # Exit 1: this account was never synced, which the health check reports; the document
    # is printed all the same.
    document = json.loads(status.stdout)
    assert status.exit_code == 1 and document["problems"] == [
        "no sync has finished yet (run `nrr sync` or start the worker)"], status.output
    left = document["left_out_customers"]
    assert left["count"] == 2
    reasons = {e["customer_id"]: e["reason"] for e in left["first"]}
    assert "EUR -> USD on or before 2025-01-01" in reasons["cus_eur"]
    assert "sub_odd has unknown status 'hibernating'" in reasons["cus_odd"]
    # nrr customer ID shows the reason and the Stripe ids behind it.
    shown = cli(["customer", "cus_odd", "--format", "json"], env=env)
    assert shown.exit_code == 0, shown.output
    detail = json.loads(shown.stdout)["left_out"]
    assert "hibernating" in detail["reason"]
    assert detail["stripe_ids"]["subscriptions"] == ["sub_odd"]
    assert "in_sub_odd_000" in detail["stripe_ids"]["invoices"]
    table = cli(["customer", "cus_eur"], env=env)
    assert table.exit_code == 0 and "LEFT OUT" in table.stdout and "EUR" in table.stdout
    # nrr report says how many and where to look.
    report = cli(["report", "--month", "2025-05", "--format", "json"], env=env)
    assert report.exit_code == 0, report.output
    document = json.loads(report.stdout)
    assert document["left_out_customers"] == 2
    assert any("2 customers were left out" in note and "nrr status" in note
               for note in document["notes"])
    assert document["opening_mrr"] == 100.0  # cus_ok alone
    # The HTML report too.
    from nrr.html_report import render_html_report

    with Session(db_engine) as session:
        page = render_html_report(session, make_settings(db_url),
                                  now=datetime.fromtimestamp(now, tz=UTC))
    assert "2 customers were left out" in page and "nrr status" in page
    # A recompute after the data is fixed clears them (the rate arrives).
    with session_scope(db_engine) as session:
        store_rates(session, [RateRow(date(2024, 12, 1), "eur", "1.10")], reporting_currency="usd")
    with session_scope(db_engine) as session:
        recompute(session, make_settings(db_url), customer_ids=["cus_eur"],
                  now=datetime.fromtimestamp(now, tz=UTC))
    assert facts(db_engine, "cus_eur")["2025-02"] == (Decimal(110), Decimal(110), None)
    with Session(db_engine) as session:
        from nrr.services.isolation import left_out_list

        assert [e["customer_id"] for e in left_out_list(session)] == ["cus_odd"]


def test_a_customer_whose_rows_cannot_be_read_is_left_out(sqlite_url: str, tmp_path: Path) -> None:
    """SQLite only: a JSON column of the mirror holding text that is not JSON (PostgreSQL's
    jsonb cannot hold it)."""
    from sqlalchemy import text

    from nrr.db import make_engine, upgrade

    engine = make_engine(sqlite_url)
    upgrade(engine)
    now = ts(2025, 6, 25)
    store(engine, broken_account(), state_at=now)
    with session_scope(engine) as session:
        session.execute(text("UPDATE stripe_subscription_items SET discount_ids = '[not json' "
                             "WHERE id = 'si_ok'"))
    with session_scope(engine) as session:
        result = recompute(session, make_settings(sqlite_url), now=datetime.fromtimestamp(now, tz=UTC))
    left = {e.customer_id: e for e in result.left_out}
    assert sorted(left) == ["cus_eur", "cus_odd", "cus_ok"]
    assert left["cus_ok"].stage == "load" and "JSONDecodeError" in left["cus_ok"].reason


def test_a_resume_never_moves_a_pause_from_the_mirror(db_engine: Engine, db_url: str) -> None:
    from tests.real_accounts import paused_world
    from tests.recompute.conftest import store_world

    with session_scope(db_engine) as session:
        store_world(session, paused_world(seen=True))
    run(db_engine, db_url, ts(2025, 7, 1))
    found = facts(db_engine, "cus_1")
    assert found["2025-03"] == (Decimal(100), Decimal(0), "churn")
    assert "2025-04" not in found
    assert found["2025-05"] == (Decimal(0), Decimal(100), "reactivation")
