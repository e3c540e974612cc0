"""Block Kit payloads stay within Slack's limits, whatever the month holds."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from integrations.slack_messages import (
    SlackMessage,
    build_alert_message,
    build_digest_message,
    fit_to_limits,
)
from models.derived import AlertDelivery
from nrr.db import session_scope
from nrr.domain.alerts import CustomerMovement, Finding, MessageContext, Observation
from nrr.services.alerts import evaluate_alerts
from nrr.settings import AlertRule
from tests.alerts.conftest import (
    NOW,
    Printed,
    add_facts,
    add_ledger,
    fact,
    make_settings,
    take_snapshot,
)


def assert_within_slack_limits(payload: dict[str, Any]) -> None:
    assert isinstance(payload.get("text"), str) and payload["text"].strip()
    assert len(payload["text"]) <= 3000
    blocks = payload["blocks"]
    assert 0 < len(blocks) <= 50
    for block in blocks:
        if block["type"] == "header":
            assert block["text"]["type"] == "plain_text"
            assert len(block["text"]["text"]) <= 150
        elif block["type"] == "section":
            assert "text" in block or "fields" in block
            if "text" in block:
                assert 0 < len(block["text"]["text"]) <= 3000
            assert len(block.get("fields", [])) <= 10
            assert all(len(f["text"]) <= 2000 for f in block.get("fields", []))
        elif block["type"] == "context":
            assert 0 < len(block["elements"]) <= 10
            assert all(len(e["text"]) <= 2000 for e in block["elements"])
        else:
            assert block["type"] == "divider"


def test_thousands_of_churned_customers_fit_in_one_message(engine: Engine, db_url: str,
                                                           printed: Printed) -> None:
    cfg = make_settings(db_url)
    cfg.alerts.rules = [AlertRule(name="nrr_monthly_below", threshold=100)]
    long_name = "Customer with a very long legal name & <brackets> | pipes " * 8
    churned = 2_350
    with session_scope(engine) as session:
        rows = [fact("2026-10", f"cus_{i:05d}", 100 + i, 0) for i in range(churned)]
        rows += [fact("2026-10", f"cus_c{i:05d}", 500, 400) for i in range(1_200)]
        rows += [fact("2026-10", "cus_big", 1_000_000, 1_000_000)]
        add_facts(session, rows)
        from tests.alerts.conftest import add_customer

        for i in range(churned - 5, churned):  # the five largest have very long names
            add_customer(session, f"cus_{i:05d}", f"{long_name} {i}")
            add_ledger(session, "2026-10", f"cus_{i:05d}", "cancellation", 100 + i, 0)
    with session_scope(engine) as session:
        take_snapshot(session, cfg, "2026-10")

    result = evaluate_alerts(engine, cfg, "2026-10", now=NOW, printer=printed)

    assert [m.kind for m in result.messages] == ["alert"]
    with session_scope(engine) as session:
        payload = session.execute(select(AlertDelivery.payload)).scalar_one()
    assert_within_slack_limits(payload)
    sections = "\n".join(b["text"]["text"] for b in payload["blocks"]
                         if b["type"] == "section" and "text" in b)
    assert "(largest 5 of 2,350)" in sections and "_and 2,345 more_" in sections
    assert "(largest 5 of 1,200)" in sections and "_and 1,195 more_" in sections
    assert "/customers/cus_02349|" in sections  # the largest churned customer comes first
    assert "&lt;brackets&gt; ¦ pipes" in sections  # escaped, and no '|' inside a link label
    assert len(printed.messages) == 1


def _finding(value: float, segment: str = "") -> Finding:
    rule = AlertRule(name="r" * 120, threshold=100, segment="metadata:tier" if segment else None)
    observation = Observation("nrr", "monthly", "2026-10", "metadata:tier" if segment else "",
                              segment, value, "2026-09", 101.0, 3)
    return Finding(rule, observation, "firing", "warning", "concerning", "x" * 5000)


def test_oversized_texts_and_block_counts_are_cut_to_the_limits() -> None:
    customers = [CustomerMovement(f"cus_{i}", "n" * 5000, 12.5, "churn", ("cancellation",) * 300)
                 for i in range(50)]
    ctx = MessageContext(month="2026-10", currency="jpy",
                         waterfall={"opening_mrr": 1e12}, churned=customers, churned_total=10**6,
                         contracted=customers, contracted_total=10**6,
                         policies={f"policy_{i}": "v" * 3000 for i in range(40)})
    message = build_alert_message(_finding(95.0, segment="s" * 250), ctx)
    assert_within_slack_limits(message.as_payload())
    assert "1,000,000,000,000 JPY" in str(message.blocks)  # zero-decimal currency

    many = SlackMessage("", [{"type": "section", "text": {"type": "mrkdwn", "text": "l\n" * 4000}}
                             for _ in range(80)]
                        + [{"type": "header", "text": {"type": "plain_text", "text": "h" * 400}}])
    fitted = fit_to_limits(many)
    assert_within_slack_limits(fitted.as_payload())
    assert len(fitted.blocks) == 50
    assert fitted.blocks[-1]["elements"][0]["text"] == "_and 32 more sections not shown_"
    assert fitted.blocks[0]["text"]["text"].endswith("_(truncated)_")


def test_digest_with_many_firing_rules_stays_within_limits() -> None:
    ctx = MessageContext(month="2026-10", currency="usd", waterfall={})
    findings = [_finding(80.0 + i / 100, segment=f"tier-{i}") for i in range(500)]
    message = build_digest_message(ctx, {"nrr": 95.0, "grr": None}, findings)
    assert_within_slack_limits(message.as_payload())
    assert "_and 485 more_" in str(message.blocks)


@settings(max_examples=60, deadline=None)
@given(
    names=st.lists(st.text(min_size=0, max_size=400), min_size=0, max_size=12),
    causes=st.lists(st.text(min_size=1, max_size=60), max_size=40),
    total=st.integers(min_value=0, max_value=10**7),
    segment=st.text(min_size=0, max_size=300),
    policies=st.dictionaries(st.text(min_size=1, max_size=40), st.text(max_size=500), max_size=30),
)
def test_any_alert_message_stays_within_limits(names: list[str], causes: list[str], total: int,
                                               segment: str, policies: dict[str, str]) -> None:
    customers = [CustomerMovement(f"cus_{i}", name or None, 1234.5, "churn", tuple(causes))
                 for i, name in enumerate(names)]
    ctx = MessageContext(month="2026-10", currency="kwd", waterfall={"opening_mrr": 1.5},
                         churned=customers, churned_total=total, contracted=customers[::-1],
                         contracted_total=total, policies=policies)
    message = build_alert_message(_finding(91.0, segment=segment), ctx)
    assert_within_slack_limits(message.as_payload())
