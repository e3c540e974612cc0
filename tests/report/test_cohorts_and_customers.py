"""`nrr cohorts`, `nrr customer` and top_movements (used by the alerts)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, insert
from sqlalchemy.orm import Session

from models.derived import LedgerEntry
from models.mirror import StripeCustomer
from nrr.services.report import InvalidDimension, top_movements
from nrr.settings import Settings
from tests.report.conftest import CliResult, fact, micro


def cohort_facts() -> list[dict[str, Any]]:
    return [
        # Cohort 2026-01: two customers, base 100 + 50 = 150.
        fact("2026-01", "cus_a", 0, 100, first_paid_month="2026-01"),
        fact("2026-01", "cus_b", 0, 50, first_paid_month="2026-01"),
        fact("2026-02", "cus_a", 100, 130, first_paid_month="2026-01"),
        fact("2026-02", "cus_b", 50, 20, first_paid_month="2026-01"),
        fact("2026-03", "cus_a", 130, 130, first_paid_month="2026-01"),
        fact("2026-03", "cus_b", 20, 0, first_paid_month="2026-01"),
        # Cohort 2026-02: one customer.
        fact("2026-02", "cus_c", 0, 40, first_paid_month="2026-02"),
        fact("2026-03", "cus_c", 40, 40, first_paid_month="2026-02"),
    ]


def test_cohort_table_json(add_facts: Callable[..., None],
                           run_cli: Callable[..., CliResult]) -> None:
    add_facts(cohort_facts())
    result = run_cli("cohorts", "--format", "json")
    assert result.exit_code == 0, result.stderr
    document = result.json()
    january, february = document["cohorts"]
    assert (january["cohort"], january["customers"], january["starting_mrr"]) == ("2026-01", 2, 150)
    cells = {c["months_since"]: c for c in january["months"]}
    assert cells[0]["net_retention"] == 100.0 and cells[0]["gross_retention"] == 100.0
    # Month 1: 130 + 20 = 150 net; gross min(130,100) + min(20,50) = 120.
    assert cells[1]["net_retention"] == 100.0 and cells[1]["gross_retention"] == 80.0
    assert cells[1]["customers_paying"] == 2
    # Month 2: 130 net of 150; gross 100 of 150.
    assert cells[2]["net_retention"] == 86.667 and cells[2]["gross_retention"] == 66.667
    assert cells[2]["customers_paying"] == 1 and cells[2]["mrr"] == 130
    assert [c["month"] for c in february["months"]] == ["2026-02", "2026-03"]
    assert february["months"][1]["net_retention"] == 100.0
    assert "cohort_net_retention" in document["definitions"]


@pytest.mark.parametrize("fmt", ["csv", "table"])
def test_cohort_table_csv_and_table(add_facts: Callable[..., None],
                                    run_cli: Callable[..., CliResult], fmt: str) -> None:
    add_facts(cohort_facts())
    result = run_cli("cohorts", "--format", fmt, env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.stderr
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(result.stdout)))
        assert len(rows) == 3 + 2
        assert rows[2]["cohort"] == "2026-01" and rows[2]["net_retention"] == "86.667"
    else:
        # percentages with three decimals, as everywhere
        assert "2026-01" in result.stdout and "86.667 / 66.667" in result.stdout


def test_cohorts_with_no_data(run_cli: Callable[..., CliResult]) -> None:
    result = run_cli("cohorts", "--format", "json")
    assert result.exit_code == 0
    assert result.json()["cohorts"] == []
    assert result.json()["notes"]


def add_ledger_and_customers(engine: Engine) -> None:
    with Session(engine) as session:
        session.execute(insert(StripeCustomer), [
            {"id": "cus_a", "email": "a@example.com", "name": "Acme", "country": "DE",
             "currency": "usd", "raw": {}, "metadata_": {}},
            {"id": "cus_b", "email": "b@example.com", "name": "Bolt", "country": "US",
             "currency": "usd", "raw": {}, "metadata_": {}},
        ])
        session.execute(insert(LedgerEntry), [
            {"month": "2026-01", "effective_at": 1767600000, "customer_id": "cus_a",
             "subscription_id": "sub_a", "subscription_item_id": "si_a",
             "cause": "new_subscription", "currency": "usd", "mrr_before_micro": 0,
             "mrr_after_micro": micro(100), "before": None, "after": {"quantity": 1},
             "stripe_ids": {"subscription": "sub_a", "invoice": "in_1"}},
            {"month": "2026-02", "effective_at": 1770600000, "customer_id": "cus_b",
             "subscription_id": "sub_b", "subscription_item_id": "si_b", "cause": "seat_change",
             "currency": "usd", "mrr_before_micro": micro(50), "mrr_after_micro": micro(20),
             "before": {"quantity": 5}, "after": {"quantity": 2},
             "stripe_ids": {"subscription": "sub_b", "invoice": "in_2"}},
            {"month": "2026-03", "effective_at": 1773000000, "customer_id": "cus_b",
             "subscription_id": "sub_b", "subscription_item_id": "si_b", "cause": "cancellation",
             "currency": "usd", "mrr_before_micro": micro(20), "mrr_after_micro": 0,
             "before": {"status": "active"}, "after": {"status": "canceled"},
             "stripe_ids": {"subscription": "sub_b"}},
        ])
        session.commit()


def test_customer_detail(add_facts: Callable[..., None], db_engine: Engine,
                         run_cli: Callable[..., CliResult]) -> None:
    add_facts(cohort_facts())
    add_ledger_and_customers(db_engine)
    result = run_cli("customer", "cus_b", "--format", "json")
    assert result.exit_code == 0, result.stderr
    document = result.json()
    assert (document["name"], document["email"], document["first_paid_month"]) == (
        "Bolt", "b@example.com", "2026-01")
    assert [h["movement"] for h in document["history"]] == ["new", "contraction", "churn"]
    assert document["movements"][1] == {"month": "2026-02", "movement": "contraction",
                                        "amount": 30, "causes": ["seat_change"]}
    assert document["ledger"][1]["cause"] == "cancellation"
    assert document["ledger"][0]["change"] == -30 and document["ledger"][0]["before"] == {
        "quantity": 5}
    assert document["current_mrr"] == 0
    table = run_cli("customer", "cus_b")
    assert table.exit_code == 0 and "seat change" in table.stdout and "Bolt" in table.stdout


def test_unknown_customer_fails(run_cli: Callable[..., CliResult]) -> None:
    result = run_cli("customer", "cus_nobody", "--format", "json")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "cus_nobody" in result.stderr


def test_top_movements_with_causes(add_facts: Callable[..., None], db_engine: Engine,
                                   session: Session,
                                   settings_for: Callable[..., Settings]) -> None:
    add_facts([*cohort_facts(),
               fact("2026-03", "cus_d", 500, 100, plan="pro", first_paid_month="2025-01"),
               fact("2026-03", "cus_e", 10, 0, plan="pro", first_paid_month="2025-01")])
    add_ledger_and_customers(db_engine)
    settings = settings_for()
    found = top_movements(session, settings, "2026-03")
    assert [(m["customer_id"], m["movement"], m["amount"]) for m in found] == [
        ("cus_d", "contraction", 400), ("cus_b", "churn", 20), ("cus_e", "churn", 10)]
    bolt = found[1]
    assert (bolt["name"], bolt["email"]) == ("Bolt", "b@example.com")
    assert [c["cause"] for c in bolt["causes"]] == ["cancellation"]
    assert bolt["causes"][0]["stripe_ids"] == {"subscription": "sub_b"}
    limited = top_movements(session, settings, "2026-03", kinds=("churn",), limit=1)
    assert [m["customer_id"] for m in limited] == ["cus_b"]
    pro = top_movements(session, settings, "2026-03", dimension="plan", segment="pro")
    assert [m["customer_id"] for m in pro] == ["cus_d", "cus_e"]
    assert pro[0]["segment"] == "pro"
    growth = top_movements(session, settings, "2026-02", kinds=("new", "expansion"))
    assert [(m["customer_id"], m["movement"]) for m in growth] == [
        ("cus_c", "new"), ("cus_a", "expansion")]
    with pytest.raises(ValueError):
        top_movements(session, settings, "2026-03", kinds=("refund",))
    with pytest.raises(InvalidDimension):
        top_movements(session, settings, "2026-03", dimension="colour", segment="x")
