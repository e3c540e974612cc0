"""`nrr report` over facts inserted directly: the public JSON schema, segments, T12M, edges."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from nrr.domain.months import add_months, current_month
from tests.report.conftest import CliResult, fact

MONTHLY_KEYS = {"month", "currency", "opening_mrr", "new", "reactivation", "expansion",
                "contraction", "churn", "closing_mrr", "fx_impact", "nrr", "grr", "customers",
                "band", "policies"}
T12M_KEYS = {"month", "period", "cohort_opening_mrr", "cohort_closing_mrr", "nrr", "grr", "band",
             "policies"}
CUSTOMER_KEYS = {"opening", "new", "reactivated", "churned", "closing"}
POLICY_KEYS = {"churn_at", "discounts", "past_due_churn_after_days", "pause_collection",
               "metered", "exclude_customers", "reporting_currency", "timezone"}

WORKED_EXAMPLES = [
    (50_000, 8_000, 2_000, 3_000, 106.0, 90.0),
    (100_000, 15_000, 3_000, 5_000, 107.0, 92.0),
    (5_000, 400, 150, 300, 99.0, 91.0),
    (2_400, 150, 60, 57, 101.375, 95.125),
    (100, 20, 0, 10, 110.0, 90.0),
    (100, 15, 0, 20, 95.0, 80.0),
]
MONTH = "2026-03"


def example_facts(month: str, opening: int, expansion: int, contraction: int,
                  churn: int) -> list[dict[str, Any]]:
    """Cohort members whose movements are the example's, plus arrivals outside the cohort."""
    rows = [fact(add_months(month, -1), "cus_grow", expansion or 1, expansion or 1)]
    grow = expansion or 1
    shrink = 2 * contraction
    steady = opening - grow - shrink - churn
    rows = [fact(month, "cus_grow", grow, grow + expansion, first_paid_month="2025-01")]
    if shrink:
        rows.append(fact(month, "cus_shrink", shrink, shrink - contraction,
                         first_paid_month="2025-01"))
    if churn:
        rows.append(fact(month, "cus_leave", churn, 0, first_paid_month="2025-01"))
    rows.append(fact(month, "cus_steady", steady, steady, first_paid_month="2025-01"))
    # Outside the cohort: a new customer and a returning one.
    rows.append(fact(month, "cus_new", 0, 777, first_paid_month=month))
    rows.append(fact(month, "cus_back", 0, 333, movement="reactivation",
                     first_paid_month="2024-06"))
    return rows


@pytest.mark.parametrize(("opening", "expansion", "contraction", "churn", "nrr", "grr"),
                         WORKED_EXAMPLES)
def test_worked_examples_through_the_json(add_facts: Callable[..., None],
                                          run_cli: Callable[..., CliResult], opening: int,
                                          expansion: int, contraction: int, churn: int,
                                          nrr: float, grr: float) -> None:
    add_facts(example_facts(MONTH, opening, expansion, contraction, churn))
    result = run_cli("report", "--month", MONTH, "--format", "json")
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert report["opening_mrr"] == opening
    assert report["expansion"] == expansion
    assert report["contraction"] == contraction
    assert report["churn"] == churn
    assert report["new"] == 777 and report["reactivation"] == 333
    assert report["closing_mrr"] == opening + expansion - contraction - churn + 777 + 333
    assert report["nrr"] == nrr
    assert report["grr"] == grr
    assert report["customers"]["new"] == 1 and report["customers"]["reactivated"] == 1


def test_twelve_month_worked_example(add_facts: Callable[..., None],
                                     run_cli: Callable[..., CliResult]) -> None:
    """100,000 opening at M-11; +15,000, -5,000, -8,000 over twelve months: 102 % and 87 %."""
    first = add_months(MONTH, -11)
    rows = [
        fact(first, "cus_a", 40_000, 40_000), fact(first, "cus_b", 20_000, 20_000),
        fact(first, "cus_c", 8_000, 8_000), fact(first, "cus_d", 32_000, 32_000),
        # In between the monthly path does not matter; only M's closing does.
        fact(add_months(MONTH, -5), "cus_a", 40_000, 90_000),
        fact(MONTH, "cus_a", 55_000, 55_000), fact(MONTH, "cus_b", 16_000, 15_000),
        fact(add_months(MONTH, -3), "cus_c", 8_000, 0),
        fact(MONTH, "cus_d", 32_000, 32_000),
        # Joined after M-11: outside the cohort.
        fact(add_months(MONTH, -6), "cus_late", 0, 5_000),
        fact(MONTH, "cus_late", 5_000, 9_000),
    ]
    add_facts(rows)
    result = run_cli("report", "--month", MONTH, "--period", "t12m", "--format", "json")
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert report.keys() >= T12M_KEYS
    assert report["period"] == "t12m"
    assert report["cohort_opening_mrr"] == 100_000
    assert report["cohort_closing_mrr"] == 102_000
    assert (report["expansion"], report["contraction"], report["churn"]) == (15_000, 5_000, 8_000)
    assert report["nrr"] == 102.0
    assert report["grr"] == 87.0
    assert report["band"] == "good"
    assert report["customers"] == {"cohort": 4, "paying": 3, "churned": 1}


def test_t12m_member_who_left_and_came_back_counts_at_its_closing(
        add_facts: Callable[..., None], run_cli: Callable[..., CliResult]) -> None:
    first = add_months(MONTH, -11)
    add_facts([
        fact(first, "cus_stay", 100, 100), fact(MONTH, "cus_stay", 100, 100),
        fact(first, "cus_return", 100, 100),
        fact(add_months(MONTH, -6), "cus_return", 100, 0),
        fact(add_months(MONTH, -2), "cus_return", 0, 150, movement="reactivation"),
        fact(MONTH, "cus_return", 150, 150),
    ])
    report = run_cli("report", "--month", MONTH, "--period", "t12m", "--format", "json").json()
    assert report["cohort_closing_mrr"] == 250
    assert report["nrr"] == 125.0
    assert report["grr"] == 100.0  # min(closing, opening) per member
    assert report["band"] == "strong"


def test_schema_keys_are_exactly_the_public_ones(add_facts: Callable[..., None],
                                                 run_cli: Callable[..., CliResult]) -> None:
    add_facts(example_facts(MONTH, 5_000, 400, 150, 300))
    result = run_cli("report", "--month", MONTH, "--format", "json")
    report = result.json()
    assert report.keys() >= MONTHLY_KEYS
    assert set(report["customers"]) == CUSTOMER_KEYS
    assert report["policies"].keys() >= POLICY_KEYS
    assert report["policies"]["reporting_currency"] == "usd"
    assert report["policies"]["timezone"] == "UTC"
    assert report["currency"] == "usd" and report["month"] == MONTH
    for key in ("opening_mrr", "new", "reactivation", "expansion", "contraction", "churn",
                "closing_mrr", "fx_impact", "nrr", "grr"):
        assert isinstance(report[key], (int, float)) and not isinstance(report[key], bool), key
    assert report["band"] == "concerning"
    assert report["customers"] == {"opening": 4, "new": 1, "reactivated": 1, "churned": 1,
                                   "closing": 5}
    assert report["partial"] is False
    assert report["definitions"]["nrr"]["formula"].startswith("(opening + expansion")
    # Extra metrics are there too.
    assert report["arr"] == pytest.approx(12 * report["closing_mrr"])
    assert report["logo_churn_rate"] == 25.0
    assert report["revenue_churn_rate"] == 9.0
    # stdout is exactly one JSON document; nothing else.
    assert result.stdout.strip().startswith("{") and result.stdout.strip().endswith("}")


def test_amounts_round_to_cents_and_percents_keep_three_decimals(
        add_facts: Callable[..., None], run_cli: Callable[..., CliResult]) -> None:
    # 1,000 a year is 83.333... a month: stored exactly in micro units, shown to the cent.
    add_facts([fact(MONTH, "cus_year", Decimal(1000) / 12, Decimal(1000) / 12),
               fact(MONTH, "cus_two", 300, 200)])
    report = run_cli("report", "--month", MONTH, "--format", "json").json()
    assert report["opening_mrr"] == 383.33
    assert report["nrr"] == 73.913  # 283.333.../383.333... = 73.9130...
    assert report["band"] == "critical"


def test_zero_opening_reports_null_with_reason(add_facts: Callable[..., None],
                                               run_cli: Callable[..., CliResult]) -> None:
    add_facts([fact(MONTH, "cus_first", 0, 50)])
    result = run_cli("report", "--month", MONTH, "--format", "json")
    assert result.exit_code == 0
    report = result.json()
    assert report["nrr"] is None and report["grr"] is None and report["band"] is None
    assert "no paying customers at the opening of 2026-03" in report["nrr_reason"]
    assert report["grr_reason"]
    assert report["new"] == 50


def test_month_outside_the_data_reports_zeros_and_nulls_with_a_note(
        add_facts: Callable[..., None], run_cli: Callable[..., CliResult]) -> None:
    add_facts([fact(MONTH, "cus_1", 100, 100)])
    result = run_cli("report", "--month", "2019-01", "--format", "json")
    assert result.exit_code == 0
    report = result.json()
    assert report["opening_mrr"] == 0 and report["closing_mrr"] == 0
    assert report["nrr"] is None and "no facts stored for 2019-01" in report["nrr_reason"]
    assert any("outside the stored facts" in note for note in report["notes"])


def test_current_month_is_marked_partial(add_facts: Callable[..., None],
                                         run_cli: Callable[..., CliResult]) -> None:
    now = current_month(datetime.now(UTC).tzinfo, datetime.now(UTC))  # type: ignore[arg-type]
    add_facts([fact(add_months(now, -1), "cus_1", 0, 100), fact(now, "cus_1", 100, 120)])
    report = run_cli("report", "--month", now, "--format", "json").json()
    assert report["partial"] is True
    assert any("not finished" in note for note in report["notes"])
    assert report["nrr"] == 120.0
    previous = run_cli("report", "--month", add_months(now, -1), "--format", "json").json()
    assert previous["partial"] is False


def segment_rows() -> list[dict[str, Any]]:
    return [
        fact(MONTH, "cus_1", 100, 150, plan="pro", country="DE", metadata={"tier": "gold"}),
        fact(MONTH, "cus_2", 200, 0, plan="pro", country="US", metadata={"tier": "silver"}),
        fact(MONTH, "cus_3", 50, 30, plan="basic", country="US", metadata={}),
        fact(MONTH, "cus_4", 0, 80, plan="basic", country=None, metadata={"tier": "gold"}),
        fact(MONTH, "cus_5", 10.01, 10.01, plan=None, country="FR",
             metadata={"tier": "silver"}),
        fact(MONTH, "cus_6", 0, 19.99, movement="reactivation", plan="team", country="DE",
             metadata={"tier": "gold"}),
    ]


AMOUNT_KEYS = ("opening_mrr", "new", "reactivation", "expansion", "contraction", "churn",
               "closing_mrr", "fx_impact")


@pytest.mark.parametrize("dimension", ["plan", "country", "metadata:tier", "currency",
                                       "product"])
def test_segment_partitions_add_up_to_the_total(add_facts: Callable[..., None],
                                                run_cli: Callable[..., CliResult],
                                                dimension: str) -> None:
    add_facts(segment_rows())
    total = run_cli("report", "--month", MONTH, "--format", "json").json()
    result = run_cli("report", "--month", MONTH, "--by", dimension, "--format", "json")
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert report["dimension"] == dimension
    segments = report["segments"]
    for segment in segments:
        assert MONTHLY_KEYS | {"segment"} <= segment.keys()
        assert set(segment["customers"]) == CUSTOMER_KEYS
    for key in AMOUNT_KEYS:
        assert sum(Decimal(str(s[key])) for s in segments) == Decimal(str(total[key])), key
    for key in CUSTOMER_KEYS:
        assert sum(s["customers"][key] for s in segments) == total["customers"][key]
    assert report["total"]["nrr"] == total["nrr"]


def test_segments_by_metadata_key(add_facts: Callable[..., None],
                                  run_cli: Callable[..., CliResult]) -> None:
    add_facts(segment_rows())
    report = run_cli("report", "--month", MONTH, "--by", "metadata:tier", "--format",
                     "json").json()
    by_label = {s["segment"]: s for s in report["segments"]}
    assert set(by_label) == {"gold", "silver", "(none)"}
    assert by_label["gold"]["opening_mrr"] == 100
    assert by_label["gold"]["nrr"] == 150.0
    assert by_label["silver"]["opening_mrr"] == 210.01
    assert by_label["(none)"]["nrr"] == 60.0


def test_t12m_by_segment_uses_the_segment_at_the_cohort_opening(
        add_facts: Callable[..., None], run_cli: Callable[..., CliResult]) -> None:
    first = add_months(MONTH, -11)
    add_facts([
        fact(first, "cus_1", 100, 100, plan="basic"), fact(MONTH, "cus_1", 300, 300, plan="pro"),
        fact(first, "cus_2", 100, 100, plan="pro"), fact(MONTH, "cus_2", 50, 50, plan="pro"),
    ])
    report = run_cli("report", "--month", MONTH, "--period", "t12m", "--by", "plan",
                     "--format", "json").json()
    by_label = {s["segment"]: s for s in report["segments"]}
    assert by_label["basic"]["nrr"] == 300.0 and by_label["basic"]["grr"] == 100.0
    assert by_label["pro"]["nrr"] == 50.0
    assert T12M_KEYS | {"segment"} <= by_label["pro"].keys()
    assert report["total"]["nrr"] == 175.0


def test_series(add_facts: Callable[..., None], run_cli: Callable[..., CliResult]) -> None:
    add_facts([fact("2026-01", "cus_1", 0, 100), fact("2026-02", "cus_1", 100, 110),
               fact("2026-03", "cus_1", 110, 99)])
    report = run_cli("report", "--from", "2026-01", "--to", "2026-03", "--format",
                     "json").json()
    assert [m["month"] for m in report["months"]] == ["2026-01", "2026-02", "2026-03"]
    assert [m["nrr"] for m in report["months"]] == [None, 110.0, 90.0]
    assert MONTHLY_KEYS - {"policies"} <= report["months"][1].keys()
    assert report["policies"].keys() >= POLICY_KEYS


@pytest.mark.parametrize("args", [
    ["report", "--month", "2026-13"],
    ["report", "--month", "March"],
    ["report"],
    ["report", "--month", "2026-03", "--from", "2026-01", "--to", "2026-02"],
    ["report", "--from", "2026-01"],
    ["report", "--from", "2026-05", "--to", "2026-01"],
    ["report", "--month", "2026-03", "--by", "colour"],
    ["report", "--month", "2026-03", "--period", "weekly"],
])
def test_usage_errors_exit_2(run_cli: Callable[..., CliResult], args: list[str]) -> None:
    result = run_cli(*args, "--format", "json")
    assert result.exit_code == 2
    assert result.stdout == ""


@pytest.mark.parametrize("fmt", ["table", "csv"])
def test_table_and_csv_formats(add_facts: Callable[..., None], run_cli: Callable[..., CliResult],
                               fmt: str) -> None:
    add_facts(segment_rows())
    result = run_cli("report", "--month", MONTH, "--format", fmt)
    assert result.exit_code == 0, result.stderr
    # csv keeps the JSON's keys; the table has people's labels
    assert ("opening_mrr" if fmt == "csv" else "opening MRR") in result.stdout
    by_plan = run_cli("report", "--month", MONTH, "--by", "plan", "--format", fmt)
    assert by_plan.exit_code == 0
    assert "pro" in by_plan.stdout and "total" in by_plan.stdout
    if fmt == "csv":
        header = by_plan.stdout.splitlines()[0]
        assert header.startswith("segment,opening_mrr,new,reactivation")
        assert len(by_plan.stdout.splitlines()) == 1 + 4 + 1  # header, 4 plans, total
        assert "policies:" in by_plan.stderr
    else:
        assert "policies:" in result.stdout


def test_facts_contradicting_their_label_are_noted(add_facts: Callable[..., None],
                                                   run_cli: Callable[..., CliResult]) -> None:
    add_facts([fact(MONTH, "cus_1", 100, 100),
               fact(MONTH, "cus_2", 100, 80, movement="expansion")])
    result = run_cli("report", "--month", MONTH, "--format", "json")
    assert result.exit_code == 0
    report = result.json()
    assert any("labelled expansion do not match" in note for note in report["notes"])
    # The identity still holds: the amounts come from opening and closing.
    assert report["opening_mrr"] + report["expansion"] - report["contraction"] == \
        report["closing_mrr"]


def test_series_t12m_and_by_segment(add_facts: Callable[..., None],
                                    run_cli: Callable[..., CliResult]) -> None:
    first = add_months(MONTH, -12)
    add_facts([fact(first, "cus_1", 100, 100, plan="pro"),
               fact(add_months(MONTH, -11), "cus_1", 100, 100, plan="pro"),
               fact(add_months(MONTH, -1), "cus_1", 100, 120, plan="pro"),
               fact(MONTH, "cus_1", 120, 130, plan="pro"),
               fact(MONTH, "cus_2", 0, 50, plan="basic")])
    t12m = run_cli("report", "--from", add_months(MONTH, -1), "--to", MONTH, "--period", "t12m",
                   "--format", "json").json()
    assert [m["nrr"] for m in t12m["months"]] == [120.0, 130.0]
    assert all(m["period"] == "t12m" for m in t12m["months"])
    by_plan = run_cli("report", "--from", add_months(MONTH, -1), "--to", MONTH, "--by", "plan",
                      "--format", "json").json()
    assert by_plan["dimension"] == "plan"
    last = by_plan["months"][1]
    assert {s["segment"]: s["closing_mrr"] for s in last["segments"]} == {"pro": 130,
                                                                          "basic": 50}
    table = run_cli("report", "--from", add_months(MONTH, -1), "--to", MONTH, "--by", "plan")
    assert table.exit_code == 0 and "basic" in table.stdout
