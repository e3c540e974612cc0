"""Slack Block Kit messages for alerts, digests and tests: findings in, payloads out.

What a rule found is the domain's (:mod:`nrr.domain.alerts`); how Slack shows it (blocks,
mrkdwn escaping, links to the Stripe dashboard, Slack's limits) is Slack's, so it lives
beside the Slack client.

Messages respect Slack's limits whatever the data: at most 50 blocks, section text at
most 3,000 characters, at most 10 fields of 2,000, header text at most 150, context at
most 10 elements, and always a fallback ``text``; long lists are summarised
("and 2,345 more").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from nrr.domain.alerts import (
    METRIC_LABEL,
    PERIOD_LABEL,
    T12M_WATERFALL,
    WATERFALL,
    CustomerMovement,
    Finding,
    MessageContext,
    band_of_percent,
    fmt_pct,
    fmt_points,
)
from nrr.domain.money import minor_exponent
from nrr.settings import AlertRule

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_FIELD_TEXT = 2000
MAX_FIELDS = 10
MAX_HEADER_TEXT = 150
MAX_CONTEXT_ELEMENTS = 10
MAX_FALLBACK_TEXT = 3000
TOP_CUSTOMERS = 5


@dataclass(frozen=True)
class SlackMessage:
    text: str
    blocks: list[dict[str, Any]]

    def as_payload(self) -> dict[str, Any]:
        return {"text": self.text, "blocks": self.blocks}


# --------------------------------------------------------------------------- formatting


def fmt_money(amount: float | None, currency: str, sign: str = "") -> str:
    if amount is None:
        return "n/a"
    places = minor_exponent(currency)
    return f"{sign}{abs(amount) if sign else amount:,.{places}f} {currency.upper()}"


def month_title(month: str) -> str:
    names = ("January", "February", "March", "April", "May", "June", "July", "August",
             "September", "October", "November", "December")
    year, mon = month.split("-")
    return f"{names[int(mon) - 1]} {year}"


def escape_mrkdwn(text: str) -> str:
    """Slack's three control characters; link labels must not hold '|' either."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def customer_url(ctx: MessageContext, customer: CustomerMovement) -> str:
    base = ctx.dashboard_url.rstrip("/")
    test = (customer.livemode is False) if customer.livemode is not None else ctx.test_mode
    return f"{base}{'/test' if test else ''}/customers/{customer.customer_id}"


def _customer_line(ctx: MessageContext, customer: CustomerMovement) -> str:
    label = truncate(" ".join((customer.label or "").split()) or customer.customer_id, 80)
    label = escape_mrkdwn(label).replace("|", "¦")
    causes = ", ".join(" ".join(c.replace("_", " ").split()) for c in customer.causes)
    causes = causes or "no ledger cause"
    return (f"• <{customer_url(ctx, customer)}|{label}> — "
            f"{fmt_money(customer.amount, ctx.currency)} — {escape_mrkdwn(truncate(causes, 200))}")


def _customers_section(ctx: MessageContext, title: str, customers: list[CustomerMovement],
                       total: int) -> dict[str, Any]:
    shown = customers[:TOP_CUSTOMERS]
    total = max(total, len(shown))
    if not shown:
        return _section(f"*{title}*: none "
                        + ("in the T12M cohort." if ctx.period == "t12m" else "this month."))
    lines = [f"*{title}* (largest {len(shown)} of {total:,})"]
    lines += [_customer_line(ctx, c) for c in shown]
    if total > len(shown):
        lines.append(f"_and {total - len(shown):,} more_")
    return _section("\n".join(lines))


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": text, "emoji": True}}


def _waterfall_block(ctx: MessageContext) -> dict[str, Any]:
    fields = []
    t12m = ctx.period == "t12m"
    for key, label, sign in (T12M_WATERFALL if t12m else WATERFALL):
        amount = ctx.waterfall.get(key)
        fields.append({"type": "mrkdwn",
                       "text": f"*{label}*\n{fmt_money(amount, ctx.currency, sign)}"})
    title = (f"*T12M cohort waterfall, opening of {month_title(ctx.first_month or ctx.month)} "
             f"to closing of {month_title(ctx.month)}*" if t12m
             else f"*MRR waterfall, {month_title(ctx.month)}*")
    return {"type": "section", "text": {"type": "mrkdwn", "text": title}, "fields": fields}


def _policies_block(ctx: MessageContext, extra: list[str]) -> dict[str, Any]:
    policies = ", ".join(f"{key}={_policy_value(value)}" for key, value in ctx.policies.items())
    elements = [{"type": "mrkdwn", "text": f"Policies in force: {escape_mrkdwn(policies) or 'defaults'}"}]
    if ctx.left_out:
        who = "1 customer" if ctx.left_out == 1 else f"{ctx.left_out} customers"
        elements.append({"type": "mrkdwn", "text": (
            f":warning: {who} left out of these numbers (history could not be computed): "
            "`nrr status` lists them, `nrr customer ID` shows why")})
    elements += [{"type": "mrkdwn", "text": escape_mrkdwn(item)} for item in extra]
    return {"type": "context", "elements": elements}


def _policy_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return "none" if value is None else str(value)


def _movers_title(ctx: MessageContext, kind: str) -> str:
    if ctx.period == "t12m":
        return f"{kind} customers of the T12M cohort since {ctx.first_month}"
    return f"{kind} customers"


def _body(ctx: MessageContext, extra_context: list[str]) -> list[dict[str, Any]]:
    blocks = [
        _waterfall_block(ctx),
        {"type": "divider"},
        _customers_section(ctx, _movers_title(ctx, "Churned"), ctx.churned, ctx.churned_total),
        _customers_section(ctx, _movers_title(ctx, "Contracted"), ctx.contracted,
                           ctx.contracted_total),
    ]
    if ctx.report_url:
        blocks.append(_section(f"<{ctx.report_url}|Open the full retention report>"))
    blocks.append(_policies_block(ctx, extra_context))
    return blocks


# --------------------------------------------------------------------------- messages

SEVERITY_ICON = {"critical": ":red_circle:", "warning": ":warning:", "info": ":information_source:"}


def _rule_title(rule: AlertRule) -> str:
    metric = f"{PERIOD_LABEL[rule.period].replace('Trailing-twelve-month', 'T12M')} " \
             f"{METRIC_LABEL[rule.metric]}"
    if rule.kind == "drop":
        return f"{metric} dropped {fmt_points(rule.threshold).replace(' points', '')}+ points"
    return f"{metric} below {fmt_pct(rule.threshold)}"


def _metric_lines(finding: Finding) -> list[str]:
    obs = finding.observation
    rule = finding.rule
    label = f"{PERIOD_LABEL[obs.period]} {METRIC_LABEL[obs.metric]}"
    scope = f"segment *{escape_mrkdwn(obs.segment_label)}*" if obs.dimension else "all customers"
    threshold = (f"alert when below {fmt_pct(rule.threshold)}" if rule.kind == "below"
                 else f"alert on a drop of {fmt_points(rule.threshold)} or more")
    previous_band = band_of_percent(obs.previous_value)
    return [
        f"*{label}* for *{month_title(obs.month)}* ({scope}): *{fmt_pct(obs.value)}*, "
        f"band *{finding.band or 'n/a'}*.",
        f"Previous month ({obs.previous_month}): {fmt_pct(obs.previous_value)}"
        + (f" ({previous_band})" if previous_band else "") + ".",
        f"Threshold: {threshold} (rule `{escape_mrkdwn(rule.name)}`).",
    ]


def build_alert_message(finding: Finding, ctx: MessageContext) -> SlackMessage:
    obs = finding.observation
    severity = finding.severity or "warning"
    scope = f" ({obs.segment_label})" if obs.dimension else ""
    header = f"{_rule_title(finding.rule)} — {obs.month}{scope}"
    lines = [f"{SEVERITY_ICON.get(severity, '')} *{severity.upper()}*: {escape_mrkdwn(finding.summary)}"]
    lines += _metric_lines(finding)
    blocks = [_header(header), _section("\n".join(lines)), *_body(ctx, _extra(finding, ctx))]
    text = f"[{severity}] {finding.summary} — {obs.month}{scope}"
    if ctx.left_out:
        text += f" ({ctx.left_out} customer(s) left out: see `nrr status`)"
    return fit_to_limits(SlackMessage(text, blocks))


def build_recovery_message(finding: Finding, ctx: MessageContext, alerted_month: str) -> SlackMessage:
    obs = finding.observation
    scope = f" ({obs.segment_label})" if obs.dimension else ""
    metric = f"{PERIOD_LABEL[obs.period]} {METRIC_LABEL[obs.metric]}"
    if finding.rule.kind == "drop":
        header = f"Recovered: {metric} no longer dropping — {obs.month}{scope}"
    else:
        header = f"Recovered: {metric} back at or above {fmt_pct(finding.rule.threshold)} — {obs.month}{scope}"
    lines = [f":white_check_mark: *RECOVERED*: {escape_mrkdwn(finding.summary)} "
             f"(alerted for {alerted_month})."]
    lines += _metric_lines(finding)
    blocks = [_header(header), _section("\n".join(lines)), *_body(ctx, _extra(finding, ctx))]
    return fit_to_limits(SlackMessage(f"[recovered] {finding.summary} — {obs.month}{scope}", blocks))


def build_digest_message(ctx: MessageContext, metrics: dict[str, float | None],
                         findings: list[Finding]) -> SlackMessage:
    """The monthly digest: the month's numbers whatever the thresholds, and the rules' states."""
    lines = [f"*Retention for {month_title(ctx.month)}* (all customers)"]
    for key, label in (("nrr", "Monthly NRR"), ("grr", "Monthly GRR"),
                       ("t12m_nrr", "T12M NRR"), ("t12m_grr", "T12M GRR")):
        value = metrics.get(key)
        band = band_of_percent(value)
        lines.append(f"• {label}: *{fmt_pct(value)}*" + (f" ({band})" if band else ""))
    firing = [f for f in findings if f.firing]
    if firing:
        lines.append(f"*{len(firing)} rule(s) firing:*")
        lines += [f"• {escape_mrkdwn(truncate(f.summary, 120))}"
                  + (f" ({escape_mrkdwn(truncate(f.observation.segment_label, 60))})"
                     if f.observation.dimension else "")
                  for f in firing[:15]]
        if len(firing) > 15:
            lines.append(f"_and {len(firing) - 15:,} more_")
    else:
        lines.append("No alert rule is firing.")
    blocks = [_header(f"Retention digest — {month_title(ctx.month)}"), _section("\n".join(lines)),
              *_body(ctx, [f"Snapshot version {ctx.snapshot_version}" if ctx.snapshot_version
                           else "Computed from stored facts (no snapshot)"])]
    text = (f"Retention digest {ctx.month}: NRR {fmt_pct(metrics.get('nrr'))}, "
            f"GRR {fmt_pct(metrics.get('grr'))}")
    return fit_to_limits(SlackMessage(text, blocks))


def build_test_message(ctx: MessageContext) -> SlackMessage:
    blocks = [_header("nrr-worker test message"),
              _section("This is a test from *nrr-worker*: alerts on Net Revenue Retention will "
                       "arrive here. Sample numbers below."),
              *_body(ctx, ["Sample data, not your account's numbers"])]
    return fit_to_limits(SlackMessage("nrr-worker test message: alerts will arrive here", blocks))


def _extra(finding: Finding, ctx: MessageContext) -> list[str]:
    version = (f"snapshot version {ctx.snapshot_version}" if ctx.snapshot_version
               else "computed from stored facts (no snapshot)")
    return [f"Currency {ctx.currency.upper()} · {version} · rule {finding.rule.name}"]


# --------------------------------------------------------------------------- limits


def fit_to_limits(message: SlackMessage) -> SlackMessage:
    """Truncate texts and cap counts so Slack accepts the message, whatever the data."""
    blocks = [_fit_block(block) for block in message.blocks]
    if len(blocks) > MAX_BLOCKS:
        omitted = len(blocks) - (MAX_BLOCKS - 1)
        blocks = blocks[: MAX_BLOCKS - 1]
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": f"_and {omitted:,} more sections not shown_"}]})
    text = truncate(message.text or "nrr-worker alert", MAX_FALLBACK_TEXT)
    return SlackMessage(text, blocks)


def _fit_block(block: dict[str, Any]) -> dict[str, Any]:
    block = dict(block)
    kind = block.get("type")
    if kind == "header":
        block["text"] = {**block["text"], "text": truncate(block["text"]["text"], MAX_HEADER_TEXT)}
    elif kind == "section":
        if "text" in block:
            block["text"] = {**block["text"],
                             "text": _truncate_lines(block["text"]["text"], MAX_SECTION_TEXT)}
        if "fields" in block:
            block["fields"] = [{**f, "text": truncate(f["text"], MAX_FIELD_TEXT)}
                               for f in block["fields"][:MAX_FIELDS]]
    elif kind == "context":
        block["elements"] = [{**e, "text": truncate(e["text"], MAX_FIELD_TEXT)}
                             for e in block["elements"][:MAX_CONTEXT_ELEMENTS]]
    return block


def _truncate_lines(text: str, limit: int) -> str:
    """Cut at a line boundary when possible, so a link is never cut in half."""
    if len(text) <= limit:
        return text
    suffix = "\n_(truncated)_"
    kept = text[: limit - len(suffix)]
    if "\n" in kept:
        kept = kept[: kept.rindex("\n")]
    return kept + suffix


def render_text(payload: dict[str, Any]) -> str:
    """A plain-text rendering of a Block Kit payload, for printing when Slack is not configured."""
    out: list[str] = []
    for block in payload.get("blocks") or []:
        kind = block.get("type")
        if kind == "header":
            title = block["text"]["text"]
            out += [title, "=" * min(len(title), 72)]
        elif kind == "section":
            if "text" in block:
                out.append(_plain(block["text"]["text"]))
            for item in block.get("fields", []):
                out.append("  " + _plain(item["text"]).replace("\n", ": "))
        elif kind == "context":
            out += [_plain(e.get("text", "")) for e in block.get("elements", [])]
        elif kind == "divider":
            out.append("-" * 40)
    if not out:
        out.append(str(payload.get("text", "")))
    return "\n".join(out)


def _plain(text: str) -> str:
    """Slack mrkdwn as plain text: links as ``label (url)``, no bold, italics or emoji codes."""
    text = re.sub(r"<([^|>]+)\|([^>]+)>", r"\2 (\1)", text)
    text = re.sub(r":[a-z][a-z0-9_+-]*: ?", "", text)
    text = re.sub(r"(?<![\w])_([^_\n]+)_(?![\w])", r"\1", text)
    text = text.replace("*", "").replace("`", "")
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
