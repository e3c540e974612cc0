"""A T12M alert tells the T12M story: the cohort's own waterfall and its churned and
contracted customers over the twelve months, not the monthly ones; messages link to the
HTML report when a base URL is configured.

The scenario (USD), for 2026-10 (T12M cohort: paying at the opening of 2025-11):

- cus_x 10,000 flat all year; cus_y 5,000 cancels in 2026-03; cus_z 2,000 contracts to
  1,000 in 2026-06 (seat change); cus_n arrives in 2026-09 with 4,000 (not in the cohort).
- Cohort opening 17,000, closing 11,000: T12M NRR = GRR = 11,000 / 17,000 = 64.706 %.
- 2026-10 itself is flat: monthly NRR 100 %, no monthly churn or contraction.
"""

from __future__ import annotations

from sqlalchemy import Engine

from nrr.db import session_scope
from nrr.domain.months import add_months, month_range
from nrr.services.alerts import plan_messages
from tests.alerts.conftest import NOW, add_customer, add_facts, add_ledger, fact, make_settings
from tests.alerts.test_alert_delivery import all_text

MONTH = "2026-10"


def seed_year(engine: Engine) -> None:
    path = {"cus_x": {}, "cus_y": {"2026-03": 0}, "cus_z": {"2026-06": 1_000}}
    start = {"cus_x": 10_000, "cus_y": 5_000, "cus_z": 2_000}
    rows = []
    with session_scope(engine) as session:
        add_customer(session, "cus_x", "Xenon")
        add_customer(session, "cus_y", "Yak & <Yodel>")
        add_customer(session, "cus_z", "Zulu")
        add_customer(session, "cus_n", "Newcomer")
        for customer, changes in path.items():
            level = start[customer]
            for month in month_range("2025-10", MONTH):
                closing = changes.get(month, level)
                if level == 0 and closing == 0:
                    continue
                rows.append(fact(month, customer, level, closing))
                level = closing
        for month in month_range("2026-09", MONTH):
            rows.append(fact(month, "cus_n", 0 if month == "2026-09" else 4_000, 4_000,
                             movement="new" if month == "2026-09" else None))
        add_facts(session, rows)
        add_ledger(session, "2026-03", "cus_y", "cancellation", 5_000, 0)
        add_ledger(session, "2026-06", "cus_z", "seat_change", 2_000, 1_000)
        add_ledger(session, "2026-09", "cus_n", "new_subscription", 0, 4_000)


def test_t12m_alert_carries_the_cohort_waterfall_and_customers(engine: Engine,
                                                              db_url: str) -> None:
    seed_year(engine)
    settings = make_settings(db_url)
    with session_scope(engine) as session:
        result = plan_messages(session, settings, MONTH, now=NOW)
    states = {f.rule.name: f.state for f in result.findings}
    assert states["nrr_t12m_below"] == "firing"
    assert states["nrr_monthly_below"] == "clear"  # the month itself is flat
    t12m = [m for m in result.messages if m.rule == "nrr_t12m_below"]
    assert len(t12m) == 1
    text = all_text(t12m[0].payload)
    assert "64.706%" in text
    assert "T12M cohort waterfall, opening of November 2025 to closing of October 2026" in text
    for figure in ("*Cohort opening MRR*\n17,000.00 USD", "*Expansion*\n+0.00 USD",
                   "*Contraction*\n-1,000.00 USD", "*Churn*\n-5,000.00 USD",
                   "*Cohort closing MRR*\n11,000.00 USD"):
        assert figure in text
    assert "*New*" not in text  # a T12M cohort has no new customers
    churned = text[text.index("*Churned customers of the T12M cohort since 2025-11*"):
                   text.index("*Contracted customers of the T12M cohort")]
    assert "(largest 1 of 1)" in churned
    assert "cus_y|Yak &amp; &lt;Yodel&gt;> — 5,000.00 USD — cancellation" in churned
    contracted = text[text.index("*Contracted customers of the T12M cohort"):]
    assert "cus_z|Zulu> — 1,000.00 USD — seat change" in contracted
    assert "cus_n" not in text and "Newcomer" not in text
    assert "Open the full retention report" not in text  # no base URL configured


def test_messages_link_to_the_report_when_a_base_url_is_set(engine: Engine, db_url: str,
                                                            tmp_path: object) -> None:
    seed_year(engine)
    settings = make_settings(db_url)
    settings.report_dir = str(tmp_path)
    settings.report_base_url = "https://reports.example.com/nrr/"
    with session_scope(engine) as session:
        result = plan_messages(session, settings, MONTH, now=NOW)
    assert result.messages
    for message in result.messages:
        assert ("<https://reports.example.com/nrr/nrr-report-2026-10.html|Open the full "
                "retention report>") in all_text(message.payload)


def test_a_monthly_alert_keeps_the_monthly_story(engine: Engine, db_url: str) -> None:
    seed_year(engine)
    settings = make_settings(db_url)
    with session_scope(engine) as session:  # 2026-03: cus_y cancels in the month itself
        result = plan_messages(session, settings, "2026-03", now=NOW)
    monthly = [m for m in result.messages if m.rule == "nrr_monthly_below"]
    assert len(monthly) == 1
    text = all_text(monthly[0].payload)
    assert "*MRR waterfall, March 2026*" in text and "*Churn*\n-5,000.00 USD" in text
    assert add_months("2026-03", -11) not in text


def test_a_t12m_alert_says_how_many_customers_were_left_out(engine: Engine,
                                                            db_url: str) -> None:
    """Customers the last recompute could not compute are in no T12M number either."""
    from nrr.services.isolation import LeftOut, record_left_out

    seed_year(engine)
    with session_scope(engine) as session:
        record_left_out(session, [LeftOut("cus_bad", "compute", "UnusableCustomerData: bad"),
                                  LeftOut("cus_worse", "load", "JSONDecodeError: bad"),
                                  LeftOut("cus_worst", "load", "KeyError: 'id'")],
                        customer_ids=None, run_id=None)
    with session_scope(engine) as session:
        result = plan_messages(session, make_settings(db_url), MONTH, now=NOW)
    t12m = [m for m in result.messages if m.rule == "nrr_t12m_below"]
    assert len(t12m) == 1
    assert "3 customers left out of these numbers" in all_text(t12m[0].payload)
    assert "(3 customer(s) left out: see `nrr status`)" in t12m[0].payload["text"]
