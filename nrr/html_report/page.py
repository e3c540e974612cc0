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
from nrr.html_report.format import causes_text, money, num, pct

WATERFALL_HEADERS = ["month", "opening", "new", "reactivation", "expansion", "contraction",
                     "churn", "closing", "fx impact", "NRR", "GRR", "band", "T12M NRR",
                     "T12M GRR"]
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


def _kpis(row: Mapping[str, Any] | None, t12: Mapping[str, Any] | None,
          currency: str) -> list[dict[str, Any]]:
    if not row:
        return []
    cells = [
        ("closing MRR", money(row.get("closing_mrr"), currency) + " " + currency.upper()),
        ("NRR (monthly)", pct(row.get("nrr"))),
        ("GRR (monthly)", pct(row.get("grr"))),
        ("NRR (T12M)", pct((t12 or {}).get("nrr"))),
        ("GRR (T12M)", pct((t12 or {}).get("grr"))),
        ("band", row.get("band") or "–"),
    ]
    customers = row.get("customers")
    if isinstance(customers, Mapping):
        cells.append(("paying customers", str(customers.get("closing"))))
    return [{"label": label, "value": value} for label, value in cells]


def _waterfall_rows(monthly: Sequence[Mapping[str, Any]], t12m: Sequence[Mapping[str, Any]],
                    currency: str) -> list[list[Any]]:
    rows = []
    t12m_by_month = {str(r.get("month")): r for r in t12m}
    for row in monthly:
        month = str(row.get("month"))
        partial = " (partial)" if row.get("partial") else ""
        t12 = t12m_by_month.get(month, {})
        rows.append([
            month + partial,
            *(money(row.get(key), currency) for key in
              ("opening_mrr", "new", "reactivation", "expansion", "contraction", "churn",
               "closing_mrr", "fx_impact")),
            pct(row.get("nrr")), pct(row.get("grr")), {"band": row.get("band")},
            pct(t12.get("nrr")), pct(t12.get("grr")),
        ])
    return rows


def _cohorts(cohorts: Any) -> tuple[list[dict[str, Any]], int]:
    rows = cohorts.get("cohorts") if isinstance(cohorts, Mapping) else None
    grid = []
    for row in rows or []:
        values = [num(cell.get("net_retention")) for cell in row.get("months") or []]
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
                "tip": None if value is None else f"{g['cohort']} month {k}: {value:.2f} %",
            })
    return grid, width


def _segments(segments: Mapping[str, Sequence[Mapping[str, Any]]],
              currency: str) -> list[dict[str, Any]]:
    shown = []
    for dimension, rows in segments.items():
        ordered = sorted(rows, key=lambda r: -(num(r.get("opening_mrr")) or 0.0))
        shown.append({
            "dimension": dimension,
            "chart": charts.segment_bars(dimension, rows, currency),
            "headers": [dimension, *SEGMENT_HEADERS],
            "rows": [[
                charts.segment_name(r),
                *(money(r.get(key), currency) for key in
                  ("opening_mrr", "new", "reactivation", "expansion", "contraction", "churn",
                   "closing_mrr")),
                pct(r.get("nrr")), pct(r.get("grr")), {"band": r.get("band")},
            ] for r in ordered],
        })
    return shown


def _top_rows(rows: Sequence[Mapping[str, Any]], currency: str,
              customer_url: str) -> list[list[Any]]:
    shown = []
    for row in rows:
        customer_id = str(row.get("customer_id") or row.get("customer") or row.get("id") or "")
        shown.append([
            {"link": customer_url + customer_id if customer_id else "", "text": customer_id},
            row.get("name") or row.get("email") or "",
            {"movement": str(row.get("movement") or "")},
            money(row.get("amount"), currency),
            causes_text(row.get("causes", row.get("cause"))),
        ])
    return shown


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


def page_context(doc: Mapping[str, Any], *, title: str) -> dict[str, Any]:
    """Everything the templates need, from a collected document (pure: no database)."""
    currency = str(doc.get("currency") or "usd")
    monthly = list(doc.get("monthly") or [])
    t12m = list(doc.get("t12m") or [])
    focus = doc.get("focus_month")
    focus_row = next((r for r in monthly if r.get("month") == focus), None)
    focus_t12 = next((r for r in t12m if r.get("month") == focus), None)
    months = list(doc.get("months") or [])
    cohorts, cohort_width = _cohorts(doc.get("cohorts"))
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
        "kpis": _kpis(focus_row, focus_t12, currency),
        "waterfall": charts.waterfall(focus_row, currency) if focus_row else None,
        "movement_kinds": MOVEMENTS,
        "movements": charts.movements(monthly, currency) if monthly else None,
        "mrr": charts.mrr(monthly, currency) if monthly else None,
        "retention": charts.retention(monthly, t12m) if monthly else None,
        "waterfall_headers": WATERFALL_HEADERS,
        "monthly_rows": _waterfall_rows(monthly, t12m, currency),
        "cohorts": cohorts,
        "cohort_width": cohort_width,
        "segments": _segments(doc.get("segments") or {}, currency),
        "top_headers": ["customer", "name", "movement", f"amount ({currency.upper()})",
                        "why (ledger)"],
        "top_rows": _top_rows(list(doc.get("top_movements") or []), currency,
                              str(doc.get("customer_url") or "")),
        "policy_rows": policy_rows,
        "definitions": _definitions(list(doc.get("definitions") or [])),
    }


def render_document(doc: Mapping[str, Any], *, title: str = "Net Revenue Retention") -> str:
    """The HTML page of a document made by :func:`collect_report` (pure: no database)."""
    return environment().get_template("report.html").render(page_context(doc, title=title))
