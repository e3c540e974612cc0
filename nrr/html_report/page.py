"""The page: a document from :mod:`nrr.html_report.collect` rendered by Jinja2 templates.

Templates, CSS and JavaScript are package data (``templates/``, ``static/``); the page
inlines them, so the file opens from disk with no network: no CDN, no fonts, no images.
Jinja2 runs with auto-escaping on, so every string from Stripe (customer, plan and product
names, metadata) is escaped by the engine; the only unescaped text is the package's own
CSS and JavaScript. This module only shapes the document into rows and charts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import cache
from importlib.resources import files
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from nrr.html_report import charts
from nrr.html_report.charts import BAND_COLOURS, COLOURS, MOVEMENTS
from nrr.html_report.format import money, num, pct, readable_causes

WATERFALL_HEADERS = ["month", "opening", "new", "reactivation", "expansion", "contraction",
                     "churn", "closing", "fx impact", "NRR", "GRR", "band", "T12M NRR",
                     "T12M GRR"]
OUTLOOK_HEADERS = ["month", "opening", "scheduled churn", "scheduled contraction",
                   "scheduled expansion", "trial conversions (none / all)",
                   "closing (none / all converting)", "projected NRR", "projected GRR",
                   "projected band"]
OUTLOOK_MOVEMENT_HEADERS = ["customer", "date", "amount", "cause", "bound", "Stripe ids"]
# The page lists this many scheduled movements (the soonest); `nrr outlook` has them all.
OUTLOOK_MOVEMENT_ROWS = 100
OUTLOOK_CAUSES = {
    "scheduled_cancellation": "scheduled cancellation", "schedule_phase": "schedule phase",
    "discount_end": "discount ends", "trial_end": "trial ends", "pause": "collection pause",
    "past_due_policy": "past-due policy", "pending_update": "pending update",
}
# Stripe dashboard paths of the ids a scheduled movement names.
STRIPE_PATHS = {"subscription": "subscriptions/", "subscription_schedule":
                "subscription_schedules/", "customer": "customers/", "price": "prices/",
                "coupon": "coupons/", "invoice": "invoices/"}
SEGMENT_HEADERS = ["opening", "new", "reactivation", "expansion", "contraction", "churn",
                   "closing", "NRR", "GRR", "band"]


@cache
def environment() -> Environment:
    env = Environment(loader=PackageLoader("nrr.html_report", "templates"),
                      autoescape=True, undefined=StrictUndefined, keep_trailing_newline=True)
    env.globals["colour"] = lambda kind: COLOURS.get(str(kind), "#607d8b")
    env.globals["band_colour"] = lambda band: BAND_COLOURS.get(str(band), "#607d8b")
    return env


@cache
def static_text(name: str) -> Markup:
    """A file of ``static/`` (the package's own CSS or JavaScript), trusted as it is."""
    return Markup(files("nrr.html_report").joinpath("static", name).read_text(encoding="utf-8"))


# The headline numbers: (key, label, source period, JSON key, kind). Percentages carry
# three decimals, money the currency's decimals, as in every table of the project.
HEADLINES = (
    ("mrr", "MRR", "monthly", "closing_mrr", "money"),
    ("arr", "ARR", "monthly", "arr", "money"),
    ("nrr", "NRR (monthly)", "monthly", "nrr", "percent"),
    ("grr", "GRR (monthly)", "monthly", "grr", "percent"),
    ("t12m_nrr", "NRR (T12M)", "t12m", "nrr", "percent"),
    ("t12m_grr", "GRR (T12M)", "t12m", "grr", "percent"),
    ("logo_churn_rate", "logo churn", "monthly", "logo_churn_rate", "percent"),
    ("revenue_churn_rate", "revenue churn", "monthly", "revenue_churn_rate", "percent"),
    ("arpa", "ARPA", "monthly", "arpa", "money"),
    ("quick_ratio", "quick ratio", "monthly", "quick_ratio", "ratio"),
)
# A rising churn rate is bad news: its change is coloured as a fall.
LOWER_IS_BETTER = {"logo_churn_rate", "revenue_churn_rate"}


def _shown(value: Any, kind: str, currency: str) -> str:
    if num(value) is None:
        return "–"
    if kind == "money":
        return money(value, currency)
    if kind == "percent":
        return pct(value, 3)
    return f"{num(value):,.3f}"


def _change(value: Any, before: Any, kind: str, currency: str) -> str:
    now, then = num(value), num(before)
    if now is None or then is None:
        return ""
    delta = now - then
    if kind == "money":
        text = money(abs(delta), currency)
    elif kind == "percent":
        text = f"{abs(delta):,.3f} pts"
    else:
        text = f"{abs(delta):,.3f}"
    return ("+" if delta > 0 else "−" if delta < 0 else "±") + text


def headlines(row: Mapping[str, Any] | None, t12: Mapping[str, Any] | None,
              previous: Mapping[str, Any], currency: str) -> list[dict[str, Any]]:
    """The headline numbers of the focus month with their change from the month before."""
    if not row:
        return []
    now = {"monthly": row, "t12m": t12 or {}}
    before = {"monthly": previous.get("monthly") or {}, "t12m": previous.get("t12m") or {}}
    shown = []
    for key, label, period, source, kind in HEADLINES:
        value = now[period].get(source)
        delta = _change(value, before[period].get(source), kind, currency)
        better = delta.startswith("+") != (key in LOWER_IS_BETTER)
        shown.append({
            "key": key, "label": label, "value": _shown(value, kind, currency),
            "raw": "" if value is None else str(value),
            "unit": currency.upper() if kind == "money" else "",
            "change": delta, "trend": "" if not delta or delta[0] == "±"
            else ("up" if better else "down"),
            "previous_month": previous.get("month") or "",
        })
    return shown


def _customers_headline(row: Mapping[str, Any] | None) -> str:
    customers = (row or {}).get("customers")
    return str(customers.get("closing")) if isinstance(customers, Mapping) else "–"


class Links:
    """Where numbers lead when the page is served (``nrr dashboard``); the file has none."""

    def movement(self, month: str, movement: str | None, dimension: str | None = None,
                 segment: str | None = None) -> str | None:
        return None

    def cohort(self, cohort: str, months_since: int) -> str | None:
        return None

    def customer(self, customer_id: str) -> str | None:
        return None


NO_LINKS = Links()


def _linked(text: str, url: str | None) -> Any:
    return {"link": url, "text": text} if url else text


def _waterfall_rows(monthly: Sequence[Mapping[str, Any]], t12m: Sequence[Mapping[str, Any]],
                    currency: str, links: Links = NO_LINKS) -> list[list[Any]]:
    rows = []
    t12m_by_month = {str(r.get("month")): r for r in t12m}
    for row in monthly:
        month = str(row.get("month"))
        partial = " (partial)" if row.get("partial") else ""
        t12 = t12m_by_month.get(month, {})
        rows.append([
            month + partial,
            money(row.get("opening_mrr"), currency),
            *(_linked(money(row.get(key), currency),
                      links.movement(month, key) if num(row.get(key)) else None)
              for key in MOVEMENTS),
            money(row.get("closing_mrr"), currency), money(row.get("fx_impact"), currency),
            pct(row.get("nrr"), 3), pct(row.get("grr"), 3),
            {"band": None if row.get("partial") else row.get("band")},
            pct(t12.get("nrr"), 3), pct(t12.get("grr"), 3),
        ])
    return rows


def _cohorts(cohorts: Any, links: Links = NO_LINKS,
             key: str = "net_retention") -> tuple[list[dict[str, Any]], int]:
    rows = cohorts.get("cohorts") if isinstance(cohorts, Mapping) else None
    grid = []
    for row in rows or []:
        values = [num(cell.get(key)) for cell in row.get("months") or []]
        grid.append({"cohort": str(row.get("cohort")), "customers": row.get("customers"),
                     "values": values})
    width = max((len(g["values"]) for g in grid), default=0)
    for g in grid:
        g["cells"] = []
        for k in range(width):
            value = g["values"][k] if k < len(g["values"]) else None
            g["cells"].append({
                "colour": charts.heat_colour(value),
                "label": "" if value is None else f"{value:.0f}",
                "tip": None if value is None else f"{g['cohort']} month {k}: {value:.3f} %",
                "link": None if value is None else links.cohort(g["cohort"], k),
            })
    return grid, width


def _segments(segments: Mapping[str, Sequence[Mapping[str, Any]]], currency: str,
              focus: str | None = None, links: Links = NO_LINKS) -> list[dict[str, Any]]:
    shown = []
    for dimension, rows in segments.items():
        ordered = sorted(rows, key=lambda r: -(num(r.get("opening_mrr")) or 0.0))
        shown.append({
            "dimension": dimension,
            "chart": charts.segment_bars(dimension, rows, currency),
            "headers": [dimension, *SEGMENT_HEADERS],
            "rows": [[
                _linked(charts.segment_name(r), links.movement(
                    focus, None, dimension, str(r.get("segment"))) if focus else None),
                *(money(r.get(key), currency) for key in
                  ("opening_mrr", "new", "reactivation", "expansion", "contraction", "churn",
                   "closing_mrr")),
                pct(r.get("nrr"), 3), pct(r.get("grr"), 3), {"band": r.get("band")},
            ] for r in ordered],
        })
    return shown


def _top_rows(rows: Sequence[Mapping[str, Any]], currency: str, customer_url: str,
              stripe_url: str, price_names: Mapping[str, str],
              links: Links = NO_LINKS) -> list[list[Any]]:
    shown = []
    for row in rows:
        customer_id = str(row.get("customer_id") or row.get("customer") or row.get("id") or "")
        shown.append([
            {"link": (links.customer(customer_id) or customer_url + customer_id)
             if customer_id else "", "text": customer_id},
            row.get("name") or row.get("email") or "",
            {"movement": str(row.get("movement") or "")},
            money(row.get("amount"), currency),
            {"causes": readable_causes(row.get("causes", row.get("cause")), stripe_url,
                                       price_names)},
        ])
    return shown


def _range(low: Any, high: Any, shown: Any) -> str:
    """``low`` alone when both bounds agree, else ``low / high``."""
    return shown(low) if num(low) == num(high) else f"{shown(low)} / {shown(high)}"


def _outlook(outlook: Mapping[str, Any] | None, currency: str, stripe_url: str,
             links: Links = NO_LINKS) -> dict[str, Any] | None:
    """The outlook section: one row per month ahead (committed bound first, the bound with
    every trial converting after it) and the scheduled movements behind them. Its band is
    drawn as projected (outlined), never like a closed month's."""
    if not outlook:
        return None
    money_of = lambda value: money(value, currency)  # noqa: E731 - a one-line formatter
    percent_of = lambda value: pct(value, 3)  # noqa: E731
    rows = []
    for m in outlook.get("months") or []:
        trials = m.get("trial_conversions") or {}
        rows.append([
            f"{m.get('month')} ({'current, partial' if m.get('partial') else 'projected'})",
            money_of(m.get("opening")), money_of(m.get("churn")),
            money_of(m.get("contraction")), money_of(m.get("expansion")),
            f"{money_of(trials.get('committed'))} / {money_of(trials.get('all_converting'))}",
            f"{money_of(m.get('closing'))} / {money_of(m.get('closing_all_converting'))}",
            _range(m.get("nrr"), m.get("nrr_all_converting"), percent_of),
            _range(m.get("grr"), m.get("grr_all_converting"), percent_of),
            {"projected_band": m.get("nrr_band")},
        ])
    movements = list(outlook.get("movements") or [])
    shown = []
    for item in movements[:OUTLOOK_MOVEMENT_ROWS]:
        customer_id = str(item.get("customer_id") or "")
        ids = []
        for kind, value in sorted((item.get("stripe_ids") or {}).items()):
            for object_id in value if isinstance(value, list) else [value]:
                path = STRIPE_PATHS.get(kind)
                ids.append({"text": f"{kind} {object_id}",
                            "link": f"{stripe_url}{path}{object_id}" if path else None})
        shown.append([
            {"link": links.customer(customer_id) or f"{stripe_url}customers/{customer_id}",
             "text": customer_id},
            str(item.get("effective_at") or "")[:10],
            money_of(item.get("amount")),
            OUTLOOK_CAUSES.get(str(item.get("cause")), str(item.get("cause") or "")),
            "if trials convert" if item.get("bound") == "upper" else "committed",
            {"ids": ids},
        ])
    return {
        "taken_at": outlook.get("taken_at"), "headers": OUTLOOK_HEADERS, "rows": rows,
        "movement_headers": [*OUTLOOK_MOVEMENT_HEADERS[:2],
                             f"amount ({currency.upper()})", *OUTLOOK_MOVEMENT_HEADERS[3:]],
        "movement_rows": shown, "movements_left_out": max(0, len(movements) - len(shown)),
    }


def _definitions(definitions: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    shown = []
    for entry in definitions:
        facts = []
        for key in ("formula", "cohort", "cohort_rule", "period", "dimensions", "owner"):
            if entry.get(key) not in (None, "", []):
                value = entry[key]
                text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
                facts.append((key.replace("_", " "), text))
        shown.append({"name": entry.get("name") or entry.get("id") or "",
                      "description": entry.get("description", ""), "facts": facts})
    return shown


def page_context(doc: Mapping[str, Any], *, title: str,
                 links: Links = NO_LINKS) -> dict[str, Any]:
    """Everything the templates need, from a collected document (pure: no database)."""
    currency = str(doc.get("currency") or "usd")
    monthly = list(doc.get("monthly") or [])
    t12m = list(doc.get("t12m") or [])
    focus = doc.get("focus_month")
    focus_row = next((r for r in monthly if r.get("month") == focus), None)
    focus_t12 = next((r for r in t12m if r.get("month") == focus), None)
    months = list(doc.get("months") or [])
    cohorts, cohort_width = _cohorts(doc.get("cohorts"), links)
    logo_cohorts, _width = _cohorts(doc.get("cohorts"), links, "logo_retention")
    policies = doc.get("policies") or {}
    policy_rows: list[list[Any]] = [
        [key, json.dumps(value) if isinstance(value, (list, dict)) else str(value)]
        for key, value in policies.items()]
    policy_rows.append(["reporting currency", currency.upper()])
    policy_rows.append(["time zone (calendar months)", str(doc.get("timezone") or "UTC")])
    return {
        "title": title,
        "css": static_text("report.css"),
        "js": static_text("report.js"),
        "span": f"{months[0]} to {months[-1]}" if months else "no data yet",
        "currency_code": currency.upper(),
        "timezone": doc.get("timezone"),
        "generated_at": doc.get("generated_at"),
        "focus": focus,
        "left_out": doc.get("left_out") or {},
        "kpis": headlines(focus_row, focus_t12, doc.get("previous") or {}, currency),
        "focus_band": (focus_row or {}).get("band"),
        "paying_customers": _customers_headline(focus_row),
        "waterfall": charts.waterfall(focus_row, currency, links.movement)
        if focus_row else None,
        "movement_kinds": MOVEMENTS,
        "movements": charts.movements(monthly, currency, links.movement) if monthly else None,
        "mrr": charts.mrr(monthly, currency) if monthly else None,
        "retention": charts.retention(monthly, t12m) if monthly else None,
        "waterfall_headers": WATERFALL_HEADERS,
        "monthly_rows": _waterfall_rows(monthly, t12m, currency, links),
        "cohorts": cohorts,
        "logo_cohorts": logo_cohorts,
        "cohort_width": cohort_width,
        "segments": _segments(doc.get("segments") or {}, currency, focus, links),
        "top_headers": ["customer", "name", "movement", f"amount ({currency.upper()})",
                        "why (ledger)"],
        "top_rows": _top_rows(list(doc.get("top_movements") or []), currency,
                              str(doc.get("customer_url") or ""),
                              str(doc.get("stripe_url") or ""), doc.get("price_names") or {},
                              links),
        "outlook": _outlook(doc.get("outlook"), currency, str(doc.get("stripe_url") or ""),
                            links),
        "segment_filtered": bool(doc.get("segment")),
        "policy_rows": policy_rows,
        "definitions": _definitions(list(doc.get("definitions") or [])),
    }


def render_document(doc: Mapping[str, Any], *, title: str = "Net Revenue Retention",
                    links: Links = NO_LINKS, template: str = "report.html",
                    **extra: Any) -> str:
    """The HTML page of a document made by :func:`collect_report` (pure: no database)."""
    return environment().get_template(template).render(
        {**page_context(doc, title=title, links=links), **extra})
