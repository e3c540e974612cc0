"""A self-contained HTML retention report: one file that opens from disk with no network.

Two steps, so each can be tested on its own:

* :func:`collect_report` asks the report service (``nrr.services.report``) for every number
  the page shows: the monthly and trailing-twelve-month reports, the segment breakdowns,
  the cohort table and the top movements with their ledger causes, plus the metric
  catalogue and the policies in force. It computes no metric itself, so the page always
  agrees with ``nrr report``.
* :func:`render_document` turns that plain document into HTML. Charts are inline SVG drawn
  here in Python; the page carries inline CSS and a few lines of inline JavaScript
  (tooltips, sortable tables, and a ``data-charts-drawn`` flag on ``<body>`` that tests
  read). Nothing is loaded from anywhere: no CDN, no fonts, no images.

Every string that comes from Stripe (customer names, plan names, metadata) is escaped.
Secrets never reach the page: only the policies, the reporting currency and the time
zone are taken from the settings.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.derived import CustomerMonthFact
from models.mirror import StripePrice
from nrr.domain.money import minor_exponent
from nrr.domain.months import current_month, month_range
from nrr.settings import Settings

MOVEMENTS = ("new", "reactivation", "expansion", "contraction", "churn")
SEGMENT_DIMENSIONS = ("plan", "product", "currency", "country")
BANDS = (
    (130.0, "exceptional"),
    (110.0, "strong"),
    (100.0, "good"),
    (90.0, "concerning"),
)
COLOURS = {
    "opening": "#546e7a",
    "closing": "#37474f",
    "new": "#2e7d32",
    "reactivation": "#00897b",
    "expansion": "#7cb342",
    "contraction": "#fb8c00",
    "churn": "#e53935",
    "nrr": "#1565c0",
    "grr": "#8e24aa",
    "t12m_nrr": "#64b5f6",
}
BAND_COLOURS = {
    "exceptional": "#1b5e20",
    "strong": "#2e7d32",
    "good": "#558b2f",
    "concerning": "#ef6c00",
    "critical": "#c62828",
}


# --------------------------------------------------------------------------- collecting


def report_months(session: Session, settings: Settings, *, now: datetime | None = None) -> list[str]:
    """Months with stored facts, from the first to the current month (in ``settings.tz``)."""
    first, last = session.execute(
        select(func.min(CustomerMonthFact.month), func.max(CustomerMonthFact.month))
    ).one()
    if first is None:
        return []
    last = min(last, current_month(settings.tz, now))
    return month_range(first, last) if first <= last else []


def _load_definitions(settings: Settings) -> list[dict[str, Any]]:
    """The metric catalogue in force, as plain entries (name, description, formula, ...)."""
    from nrr.catalogue import load_catalogue

    return [definition.as_dict() for definition in load_catalogue(settings).metrics.values()]


def collect_report(session: Session, settings: Settings, *, months: Sequence[str] | None = None,
                   now: datetime | None = None, top_limit: int = 12) -> dict[str, Any]:
    """Everything the HTML report shows, as a plain JSON-able document."""
    from nrr.services import report

    now = now or datetime.now(UTC)
    month_list = list(months) if months is not None else report_months(session, settings, now=now)
    this_month = current_month(settings.tz, now)
    monthly: list[dict[str, Any]] = []
    t12m: list[dict[str, Any]] = []
    if month_list:
        wanted = set(month_list)
        first, last = min(month_list), max(month_list)
        monthly = [r for r in report.report_series(session, settings, first, last,
                                                   period="monthly", now=now)["months"]
                   if r["month"] in wanted]
        t12m = [r for r in report.report_series(session, settings, first, last,
                                                period="t12m", now=now)["months"]
                if r["month"] in wanted]
    closed = [m for m in month_list if m < this_month]
    focus = closed[-1] if closed else (month_list[-1] if month_list else None)
    segments: dict[str, list[dict[str, Any]]] = {}
    top: list[dict[str, Any]] = []
    if focus is not None:
        for dimension in SEGMENT_DIMENSIONS:
            by_segment = report.monthly_report(session, settings, focus, period="monthly",
                                               by=dimension, now=now)
            segments[dimension] = list(by_segment.get("segments") or [])
        _label_plans(session, segments.get("plan", []))
        top = list(report.top_movements(session, settings, focus, kinds=MOVEMENTS,
                                        limit=top_limit))
    cohorts = report.cohort_table(session, settings, now=now) if month_list else {}
    from nrr.services.isolation import left_out_count, left_out_note

    left_out = left_out_count(session)
    livemode = settings.stripe_livemode
    dashboard = settings.alerts.stripe_dashboard_url.rstrip("/")
    return {
        "generated_at": now.astimezone(UTC).isoformat(timespec="seconds"),
        "currency": settings.reporting_currency,
        "timezone": settings.timezone,
        "months": month_list,
        "focus_month": focus,
        "monthly": monthly,
        "t12m": t12m,
        "segments": segments,
        "cohorts": _plain(cohorts),
        "top_movements": _plain(top),
        "policies": settings.policies.as_dict(),
        "definitions": _plain(_load_definitions(settings)),
        "customer_url": f"{dashboard}{'' if livemode else '/test'}/customers/",
        "left_out": {"count": left_out, "note": left_out_note(left_out)},
    }


def _label_plans(session: Session, rows: list[dict[str, Any]]) -> None:
    """Give plan segments (price ids) the price's nickname as a ``label`` for the page."""
    ids = [str(r.get("segment")) for r in rows if r.get("segment")]
    if not ids:
        return
    names = {price_id: nickname for price_id, nickname in session.execute(
        select(StripePrice.id, StripePrice.nickname).where(StripePrice.id.in_(ids)))}
    for row in rows:
        nickname = names.get(str(row.get("segment")))
        if nickname:
            row["label"] = nickname


def render_html_report(session: Session, settings: Settings, *, months: Sequence[str] | None = None,
                       now: datetime | None = None, title: str = "Net Revenue Retention") -> str:
    """The self-contained HTML report of the stored facts (see the module docstring)."""
    return render_document(collect_report(session, settings, months=months, now=now), title=title)


def _plain(value: Any) -> Any:
    """JSON round trip: dates, decimals and tuples become plain JSON values."""
    return json.loads(json.dumps(value, default=str))


# --------------------------------------------------------------------------- formatting


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _money(value: Any, currency: str) -> str:
    number = _num(value)
    if number is None:
        return "–"
    return f"{number:,.{minor_exponent(currency)}f}"


def _short_money(value: float) -> str:
    magnitude = abs(value)
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if magnitude >= limit:
            return f"{value / limit:,.1f}{suffix}"
    return f"{value:,.0f}"


def _pct(value: Any, digits: int = 2) -> str:
    number = _num(value)
    return "–" if number is None else f"{number:,.{digits}f} %"


def band_of(value: float | None) -> str | None:
    """The band of a percentage (for colouring only; the report service names bands)."""
    if value is None:
        return None
    for floor, name in BANDS:
        if value >= floor:
            return name
    return "critical"


def _band_badge(band: Any) -> str:
    if not band:
        return ""
    colour = BAND_COLOURS.get(str(band), "#607d8b")
    return f'<span class="band" style="background:{colour}">{_esc(band)}</span>'


def _row_value(row: Mapping[str, Any], key: str) -> float:
    return _num(row.get(key)) or 0.0


# --------------------------------------------------------------------------- SVG charts


def _svg_open(width: int, height: int, name: str, label: str) -> str:
    return (f'<svg class="chart" data-chart="{_esc(name)}" role="img" aria-label="{_esc(label)}" '
            f'xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
            f'width="100%" style="max-width:{width}px" preserveAspectRatio="xMinYMin meet">')


def _nice_step(span: float, ticks: int = 5) -> float:
    if span <= 0:
        return 1.0
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * power:
            return factor * power
    return 10 * power


def _tip(text: str) -> str:
    return f' data-tip="{_esc(text)}"'


def waterfall_svg(row: Mapping[str, Any], currency: str) -> str:
    """Opening, the five movements and closing of one month as a waterfall."""
    width, height, left, bottom, top = 760, 330, 70, 40, 20
    steps: list[tuple[str, float, float, str]] = []  # label, start, end, colour
    running = _row_value(row, "opening_mrr")
    steps.append(("opening", 0.0, running, COLOURS["opening"]))
    for kind in MOVEMENTS:
        amount = _row_value(row, kind)
        sign = -1.0 if kind in ("contraction", "churn") else 1.0
        end = running + sign * amount
        steps.append((kind, running, end, COLOURS[kind]))
        running = end
    closing = _num(row.get("closing_mrr"))
    steps.append(("closing", 0.0, closing if closing is not None else running, COLOURS["closing"]))
    high = max(max(s, e) for _, s, e, _ in steps) or 1.0
    # Movements are small next to the MRR: start the axis near the lowest level so they
    # stay visible (the axis labels and a note say where it starts).
    levels = [e for _, _, e, _ in steps] + [s for _, s, _, _ in steps[1:-1]]
    moved = sum(abs(e - s) for _, s, e, _ in steps[1:-1])
    low = max(0.0, min(levels) - max(moved * 1.5, high * 0.02))
    step = _nice_step(high - low)
    low = math.floor(low / step) * step
    high = math.ceil(high / step) * step
    plot_h = height - bottom - top
    slot = (width - left - 10) / len(steps)

    def y(value: float) -> float:
        return top + plot_h - (max(value, low) - low) / (high - low) * plot_h

    parts = [_svg_open(width, height, "waterfall", f"MRR waterfall {row.get('month')}")]
    if low > 0:
        parts.append(f'<text class="axis" x="{left}" y="{top - 6}">axis starts at '
                     f'{_short_money(low)}</text>')
    tick = low
    while tick <= high + 1e-9:
        parts.append(f'<line class="grid" x1="{left}" x2="{width - 10}" y1="{y(tick):.1f}" '
                     f'y2="{y(tick):.1f}"/><text class="axis" x="{left - 6}" y="{y(tick) + 4:.1f}" '
                     f'text-anchor="end">{_short_money(tick)}</text>')
        tick += step
    for index, (label, start, end, colour) in enumerate(steps):
        x = left + index * slot + slot * 0.15
        bar_w = slot * 0.7
        y_top, y_bottom = y(max(start, end)), y(min(start, end))
        amount = abs(end - start)
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{y_top:.1f}" width="{bar_w:.1f}" '
            f'height="{max(y_bottom - y_top, 0.5):.1f}" fill="{colour}"'
            f'{_tip(f"{label}: {_money(amount, currency)} {currency.upper()}")}/>'
            f'<text class="value" x="{x + bar_w / 2:.1f}" y="{y_top - 4:.1f}" '
            f'text-anchor="middle">{_short_money(amount)}</text>'
            f'<text class="axis" x="{x + bar_w / 2:.1f}" y="{height - bottom + 16}" '
            f'text-anchor="middle">{_esc(label)}</text>')
        if index < len(steps) - 1:
            parts.append(f'<line class="connector" x1="{x + bar_w:.1f}" x2="{x + slot:.1f}" '
                         f'y1="{y(end):.1f}" y2="{y(end):.1f}"/>')
    parts.append(f'<line class="axisline" x1="{left}" x2="{width - 10}" y1="{y(0):.1f}" y2="{y(0):.1f}"/>')
    parts.append("</svg>")
    return "".join(parts)


def _x_labels(months: Sequence[str], x_of: Any, y_pos: float) -> str:
    every = max(1, math.ceil(len(months) / 12))
    return "".join(
        f'<text class="axis" x="{x_of(i):.1f}" y="{y_pos:.1f}" text-anchor="middle">{_esc(m)}</text>'
        for i, m in enumerate(months) if i % every == 0 or i == len(months) - 1)


def movements_svg(rows: Sequence[Mapping[str, Any]], currency: str) -> str:
    """Per month: new, reactivation and expansion above the axis, contraction and churn below."""
    width, height, left, bottom, top = 1100, 320, 70, 40, 20
    months = [str(r.get("month")) for r in rows]
    ups = [sum(_row_value(r, k) for k in ("new", "reactivation", "expansion")) for r in rows]
    downs = [sum(_row_value(r, k) for k in ("contraction", "churn")) for r in rows]
    high = max(ups + [1.0])
    low = max(downs + [0.0])
    step = _nice_step(high + low)
    high = math.ceil(high / step) * step
    low = math.ceil(low / step) * step
    plot_h = height - bottom - top
    span = high + low or 1.0
    slot = (width - left - 10) / max(len(rows), 1)

    def y(value: float) -> float:
        return top + (high - value) / span * plot_h

    def x_of(i: int) -> float:
        return left + i * slot + slot / 2

    parts = [_svg_open(width, height, "movements", "MRR movements per month")]
    tick = -low
    while tick <= high + 1e-9:
        parts.append(f'<line class="grid" x1="{left}" x2="{width - 10}" y1="{y(tick):.1f}" '
                     f'y2="{y(tick):.1f}"/><text class="axis" x="{left - 6}" y="{y(tick) + 4:.1f}" '
                     f'text-anchor="end">{_short_money(tick)}</text>')
        tick += step
    bar_w = slot * 0.7
    for i, row in enumerate(rows):
        x = x_of(i) - bar_w / 2
        base = 0.0
        for kind in ("new", "reactivation", "expansion"):
            amount = _row_value(row, kind)
            if amount > 0:
                parts.append(f'<rect class="bar" x="{x:.1f}" y="{y(base + amount):.1f}" '
                             f'width="{bar_w:.1f}" height="{y(base) - y(base + amount):.1f}" '
                             f'fill="{COLOURS[kind]}"'
                             f'{_tip(f"{months[i]} {kind}: +{_money(amount, currency)}")}/>')
                base += amount
        base = 0.0
        for kind in ("contraction", "churn"):
            amount = _row_value(row, kind)
            if amount > 0:
                parts.append(f'<rect class="bar" x="{x:.1f}" y="{y(base):.1f}" '
                             f'width="{bar_w:.1f}" height="{y(base - amount) - y(base):.1f}" '
                             f'fill="{COLOURS[kind]}"'
                             f'{_tip(f"{months[i]} {kind}: -{_money(amount, currency)}")}/>')
                base -= amount
    parts.append(f'<line class="axisline" x1="{left}" x2="{width - 10}" y1="{y(0):.1f}" y2="{y(0):.1f}"/>')
    parts.append(_x_labels(months, x_of, height - bottom + 18))
    parts.append("</svg>")
    return "".join(parts)


def _polyline(points: Sequence[tuple[float, float] | None], colour: str, dashed: bool = False) -> str:
    """A line through the points; ``None`` breaks it (a month with no value)."""
    segments: list[str] = []
    pen_down = False
    for point in points:
        if point is None:
            pen_down = False
            continue
        segments.append(f"{'L' if pen_down else 'M'}{point[0]:.1f},{point[1]:.1f}")
        pen_down = True
    if not segments:
        return ""
    dash = ' stroke-dasharray="6 4"' if dashed else ""
    return f'<path class="line" d="{" ".join(segments)}" stroke="{colour}"{dash} fill="none"/>'


def mrr_svg(rows: Sequence[Mapping[str, Any]], currency: str) -> str:
    """Closing MRR per month."""
    width, height, left, bottom, top = 1100, 260, 70, 40, 20
    months = [str(r.get("month")) for r in rows]
    values = [_num(r.get("closing_mrr")) for r in rows]
    high = max([v for v in values if v is not None] + [1.0])
    step = _nice_step(high)
    high = math.ceil(high / step) * step
    plot_h = height - bottom - top
    slot = (width - left - 10) / max(len(rows), 1)

    def y(value: float) -> float:
        return top + plot_h - value / high * plot_h

    def x_of(i: int) -> float:
        return left + i * slot + slot / 2

    parts = [_svg_open(width, height, "mrr", "Closing MRR per month")]
    tick = 0.0
    while tick <= high + 1e-9:
        parts.append(f'<line class="grid" x1="{left}" x2="{width - 10}" y1="{y(tick):.1f}" '
                     f'y2="{y(tick):.1f}"/><text class="axis" x="{left - 6}" y="{y(tick) + 4:.1f}" '
                     f'text-anchor="end">{_short_money(tick)}</text>')
        tick += step
    points = [None if v is None else (x_of(i), y(v)) for i, v in enumerate(values)]
    parts.append(_polyline(points, COLOURS["closing"]))
    for i, point in enumerate(points):
        if point is not None:
            parts.append(f'<circle class="dot" cx="{point[0]:.1f}" cy="{point[1]:.1f}" r="3.5" '
                         f'fill="{COLOURS["closing"]}"'
                         f'{_tip(f"{months[i]} closing MRR: {_money(values[i], currency)}")}/>')
    parts.append(_x_labels(months, x_of, height - bottom + 18))
    parts.append("</svg>")
    return "".join(parts)


def retention_svg(monthly: Sequence[Mapping[str, Any]], t12m: Sequence[Mapping[str, Any]]) -> str:
    """Monthly NRR and GRR (and T12M NRR) with the band lines at 130, 110, 100 and 90."""
    width, height, left, bottom, top, right = 1100, 340, 60, 40, 20, 110
    months = [str(r.get("month")) for r in monthly]
    series = [
        ("NRR (monthly)", [_num(r.get("nrr")) for r in monthly], COLOURS["nrr"], False),
        ("GRR (monthly)", [_num(r.get("grr")) for r in monthly], COLOURS["grr"], False),
        ("NRR (T12M)", [_num(r.get("nrr")) for r in t12m], COLOURS["t12m_nrr"], True),
    ]
    present = [v for _, values, _, _ in series for v in values if v is not None]
    # Small early cohorts can give extreme percentages: the axis stops at 0 and 200 and a
    # value beyond is drawn on the edge as a triangle (its tooltip has the real value).
    low = max(min(present + [85.0]), 0.0)
    high = min(max(present + [135.0]), 200.0)
    low = math.floor(low / 5) * 5
    high = math.ceil(high / 5) * 5
    plot_h = height - bottom - top
    slot = (width - left - right) / max(len(months), 1)

    def y(value: float) -> float:
        return top + (high - min(max(value, low), high)) / (high - low) * plot_h

    def x_of(i: int) -> float:
        return left + i * slot + slot / 2

    parts = [_svg_open(width, height, "retention", "NRR and GRR over time with band lines")]
    tick_step = _nice_step(high - low, 6)
    tick = math.ceil(low / tick_step) * tick_step
    while tick <= high + 1e-9:
        parts.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y(tick):.1f}" '
                     f'y2="{y(tick):.1f}"/><text class="axis" x="{left - 6}" y="{y(tick) + 4:.1f}" '
                     f'text-anchor="end">{tick:g}</text>')
        tick += tick_step
    for floor, name in BANDS:
        parts.append(f'<line class="bandline" data-band="{floor:g}" x1="{left}" x2="{width - right}" '
                     f'y1="{y(floor):.1f}" y2="{y(floor):.1f}" stroke="{BAND_COLOURS[name]}"/>'
                     f'<text class="bandlabel" x="{width - right + 4}" y="{y(floor) + 4:.1f}" '
                     f'fill="{BAND_COLOURS[name]}">{floor:g} {name}</text>')
    for label, values, colour, dashed in series:
        points = [None if v is None else (x_of(i), y(v)) for i, v in enumerate(values)]
        parts.append(_polyline(points, colour, dashed))
        for i, point in enumerate(points):
            value = values[i]
            if point is None or value is None:
                continue
            tip = _tip(f"{months[i]} {label}: {_pct(value, 3)}")
            if low <= value <= high:
                parts.append(f'<circle class="dot" cx="{point[0]:.1f}" cy="{point[1]:.1f}" r="3" '
                             f'fill="{colour}"{tip}/>')
            else:  # off the axis: a triangle on the edge, pointing out
                cx, cy = point
                tip_y = cy - 7 if value > high else cy + 7
                parts.append(f'<path class="dot" d="M{cx - 5:.1f},{cy:.1f} L{cx + 5:.1f},{cy:.1f} '
                             f'L{cx:.1f},{tip_y:.1f} Z" fill="{colour}"{tip}/>')
    parts.append(_x_labels(months, x_of, height - bottom + 18))
    legend_x = left
    for label, _, colour, dashed in series:
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        parts.append(f'<line x1="{legend_x}" x2="{legend_x + 24}" y1="{height - 6}" y2="{height - 6}" '
                     f'stroke="{colour}" stroke-width="3"{dash}/>'
                     f'<text class="axis" x="{legend_x + 30}" y="{height - 2}">{_esc(label)}</text>')
        legend_x += 160
    parts.append("</svg>")
    return "".join(parts)


def _segment_name(row: Mapping[str, Any]) -> str:
    segment = str(row.get("segment") if row.get("segment") not in (None, "") else "(none)")
    label = row.get("label")
    return f"{label} · {segment}" if label and label != segment else segment


def segment_bars_svg(dimension: str, rows: Sequence[Mapping[str, Any]], currency: str) -> str:
    """Closing MRR per segment as horizontal bars (largest first, at most 12)."""
    shown = sorted(rows, key=lambda r: -_row_value(r, "closing_mrr"))[:12]
    width, left, bar_h = 600, 190, 22
    height = max(len(shown), 1) * (bar_h + 6) + 10
    high = max([_row_value(r, "closing_mrr") for r in shown] + [1.0])
    parts = [_svg_open(width, height, f"segments-{dimension}", f"Closing MRR by {dimension}")]
    for i, row in enumerate(shown):
        value = _row_value(row, "closing_mrr")
        y = 5 + i * (bar_h + 6)
        bar_w = value / high * (width - left - 80)
        name = _segment_name(row)
        short = str(row.get("label") or name)
        parts.append(f'<text class="axis" x="{left - 6}" y="{y + bar_h * 0.7:.1f}" '
                     f'text-anchor="end">{_esc(short[:24])}</text>'
                     f'<rect class="bar" x="{left}" y="{y}" width="{max(bar_w, 0.5):.1f}" '
                     f'height="{bar_h}" fill="{COLOURS["nrr"]}"'
                     f'{_tip(f"{name}: {_money(value, currency)} closing MRR")}/>'
                     f'<text class="value" x="{left + bar_w + 4:.1f}" y="{y + bar_h * 0.7:.1f}">'
                     f'{_short_money(value)}</text>')
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------- tables


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], css: str = "") -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="data sortable {css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _waterfall_rows(monthly: Sequence[Mapping[str, Any]],
                    t12m: Sequence[Mapping[str, Any]], currency: str) -> list[list[str]]:
    rows = []
    t12m_by_month = {str(r.get("month")): r for r in t12m}
    for row in monthly:
        month = str(row.get("month"))
        partial = " (partial)" if row.get("partial") else ""
        t12 = t12m_by_month.get(month, {})
        rows.append([
            _esc(month + partial),
            _money(row.get("opening_mrr"), currency),
            _money(row.get("new"), currency),
            _money(row.get("reactivation"), currency),
            _money(row.get("expansion"), currency),
            _money(row.get("contraction"), currency),
            _money(row.get("churn"), currency),
            _money(row.get("closing_mrr"), currency),
            _money(row.get("fx_impact"), currency),
            _pct(row.get("nrr")),
            _pct(row.get("grr")),
            _band_badge(row.get("band")),
            _pct(t12.get("nrr")),
            _pct(t12.get("grr")),
        ])
    return rows


def _cohort_grid(cohorts: Any) -> list[dict[str, Any]]:
    """Rows of {cohort, customers, starting_mrr, values} from ``cohort_table``'s document."""
    rows = cohorts.get("cohorts") if isinstance(cohorts, Mapping) else None
    grid: list[dict[str, Any]] = []
    for row in rows or []:
        grid.append({
            "cohort": str(row.get("cohort")),
            "customers": row.get("customers"),
            "starting_mrr": row.get("starting_mrr"),
            "values": [_num(cell.get("net_retention")) for cell in row.get("months") or []],
        })
    return grid


def _heat_colour(value: float | None) -> str:
    if value is None:
        return "transparent"
    clipped = max(0.0, min(value, 150.0))
    hue = 0.0 if clipped <= 50 else (clipped - 50) / 100 * 130
    lightness = 88 - min(abs(clipped - 100), 60) / 60 * 30
    return f"hsl({hue:.0f},65%,{lightness:.0f}%)"


def cohort_heatmap(cohorts: Any) -> str:
    grid = _cohort_grid(cohorts)
    if not grid:
        return '<p class="note">No cohorts yet.</p>'
    width = max(len(g["values"]) for g in grid)
    head = ("<tr><th>cohort</th><th>customers</th>"
            + "".join(f"<th>{k}</th>" for k in range(width)) + "</tr>")
    body = []
    for g in grid:
        cells = []
        for k in range(width):
            value = g["values"][k] if k < len(g["values"]) else None
            label = "" if value is None else f"{value:.0f}"
            tip = "" if value is None else _tip(f"{g['cohort']} month {k}: {value:.2f} %")
            cells.append(f'<td class="heat" style="background:{_heat_colour(value)}"{tip}>{label}</td>')
        body.append(f"<tr><th>{_esc(g['cohort'])}</th><td>{_esc(g['customers'])}</td>"
                    + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table class="heatmap" data-chart="cohorts"><thead>{head}</thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _change_text(key: str, before: Any, after: Any) -> str | None:
    if before == after or (before in (None, [], {}) and after in (None, [], {})):
        return None
    if before in (None, [], {}):
        return f"{key} {_short_value(after)}"
    if after in (None, [], {}):
        return f"{key} {_short_value(before)} removed"
    return f"{key} {_short_value(before)} → {_short_value(after)}"


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _short_value(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def _causes_text(value: Any) -> str:
    """Ledger causes as one line each: cause, MRR change, what changed, the Stripe ids."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        cause = str(value.get("cause") or value.get("kind") or "")
        change = _num(value.get("change"))
        head = f"{cause} {change:+,.2f}" if change is not None else cause
        before = _mapping(value.get("before"))
        after = _mapping(value.get("after"))
        changed = [text for key in ("price", "quantity", "discount", "status")
                   if (text := _change_text(key, before.get(key), after.get(key)))]
        ids = _mapping(value.get("stripe_ids"))
        shown_ids = [str(v) for k, v in ids.items() if v and k != "price"]
        if not shown_ids and value.get("subscription_id"):
            shown_ids = [str(value["subscription_id"])]
        text = head + (f": {', '.join(changed)}" if changed else "")
        return text + (f" [{', '.join(dict.fromkeys(shown_ids))}]" if shown_ids else "")
    if isinstance(value, Iterable):
        return "; ".join(t for t in (_causes_text(v) for v in value) if t)
    return str(value)


def top_movements_table(rows: Sequence[Mapping[str, Any]], currency: str, customer_url: str) -> str:
    if not rows:
        return '<p class="note">No movements this month.</p>'
    body = []
    for row in rows:
        customer_id = str(row.get("customer_id") or row.get("customer") or row.get("id") or "")
        name = row.get("name") or row.get("email") or ""
        link = (f'<a href="{_esc(customer_url + customer_id)}" rel="noreferrer">{_esc(customer_id)}</a>'
                if customer_id else "")
        movement = str(row.get("movement") or "")
        colour = COLOURS.get(movement, "#607d8b")
        body.append([
            link, _esc(name),
            f'<span class="kind" style="color:{colour}">{_esc(movement)}</span>',
            _money(row.get("amount"), currency),
            _esc(_causes_text(row.get("causes", row.get("cause")))),
        ])
    return _table(["customer", "name", "movement", f"amount ({currency.upper()})", "why (ledger)"],
                  body, "top")


def segments_section(segments: Mapping[str, Sequence[Mapping[str, Any]]], currency: str) -> str:
    parts = []
    for dimension, rows in segments.items():
        ordered = sorted(rows, key=lambda r: -_row_value(r, "opening_mrr"))
        table_rows = [[
            _esc(_segment_name(r)),
            _money(r.get("opening_mrr"), currency),
            _money(r.get("new"), currency),
            _money(r.get("reactivation"), currency),
            _money(r.get("expansion"), currency),
            _money(r.get("contraction"), currency),
            _money(r.get("churn"), currency),
            _money(r.get("closing_mrr"), currency),
            _pct(r.get("nrr")),
            _pct(r.get("grr")),
            _band_badge(r.get("band")),
        ] for r in ordered]
        parts.append(
            f'<div class="segment"><h3>By {_esc(dimension)}</h3><div class="pair">'
            f'<div>{segment_bars_svg(dimension, rows, currency)}</div>'
            f'<div class="scroll">{_table([dimension, "opening", "new", "reactivation", "expansion", "contraction", "churn", "closing", "NRR", "GRR", "band"], table_rows)}</div>'
            f"</div></div>")
    return "".join(parts) or '<p class="note">No segments.</p>'


def definitions_section(definitions: Sequence[Mapping[str, Any]], policies: Mapping[str, Any],
                        currency: str, timezone: str) -> str:
    entries = []
    for entry in definitions:
        name = entry.get("name") or entry.get("id") or ""
        facts = []
        for key in ("formula", "cohort", "cohort_rule", "period", "dimensions", "owner"):
            if entry.get(key) not in (None, "", []):
                value = entry[key]
                text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
                facts.append(f"<dt>{_esc(key.replace('_', ' '))}</dt><dd>{_esc(text)}</dd>")
        entries.append(f'<div class="definition"><h4>{_esc(name)}</h4>'
                       f'<p>{_esc(entry.get("description", ""))}</p><dl>{"".join(facts)}</dl></div>')
    policy_rows = [[_esc(k), _esc(json.dumps(v) if isinstance(v, (list, dict)) else v)]
                   for k, v in policies.items()]
    policy_rows.append(["reporting currency", _esc(currency.upper())])
    policy_rows.append(["time zone (calendar months)", _esc(timezone)])
    bands = ("130 % and above exceptional; 110 to below 130 strong; 100 to below 110 good; "
             "90 to below 100 concerning; below 90 critical (bands apply to unrounded values).")
    return (f"<h3>Policies in force</h3>{_table(['policy', 'value'], policy_rows, 'narrow')}"
            f'<h3>Bands</h3><p>{_esc(bands)}</p>'
            f'<h3>Metric definitions</h3><div class="definitions">{"".join(entries) or "<p>No catalogue.</p>"}</div>')


_CSS = """
:root{--ink:#263238;--muted:#607d8b;--line:#cfd8dc;--bg:#fafbfc}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 -apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:var(--ink);background:var(--bg)}
header{background:#263238;color:#fff;padding:18px 28px}
header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#b0bec5}
main{padding:10px 28px 40px;max-width:1400px}
section{background:#fff;border:1px solid var(--line);border-radius:6px;padding:14px 18px;margin:16px 0}
h2{margin:0 0 10px;font-size:18px}
h3{font-size:15px;margin:16px 0 6px}
.kpis{display:flex;flex-wrap:wrap;gap:12px}
.kpi{border:1px solid var(--line);border-radius:6px;padding:10px 14px;min-width:150px}
.kpi b{display:block;font-size:20px}
.kpi span{color:var(--muted);font-size:12px}
svg.chart{display:block;max-width:1100px;height:auto}
svg .grid{stroke:#eceff1;stroke-width:1}
svg .axisline{stroke:#90a4ae;stroke-width:1}
svg .connector{stroke:#90a4ae;stroke-dasharray:2 2}
svg .bandline{stroke-width:1.2;stroke-dasharray:5 4}
svg text{font-size:11px;fill:#455a64}
svg .bandlabel{font-size:11px}
svg .value{font-size:10px}
svg .line{stroke-width:2.2}
svg .bar:hover,svg .dot:hover{opacity:.75}
table.data{border-collapse:collapse;font-size:12.5px;margin:6px 0}
table.data th,table.data td{border-bottom:1px solid #eceff1;padding:4px 8px;text-align:right;white-space:nowrap}
table.data th{background:#f5f7f8;cursor:pointer;user-select:none}
table.data td:first-child,table.data th:first-child{text-align:left}
table.narrow td{text-align:left}
table.top td:last-child{white-space:normal;text-align:left;min-width:420px;font-size:12px}
table.heatmap{border-collapse:collapse;font-size:11px}
table.heatmap th,table.heatmap td{padding:3px 5px;text-align:center;border:1px solid #fff}
.scroll{overflow-x:auto}
.band{color:#fff;border-radius:3px;padding:1px 6px;font-size:11px}
.pair{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
.pair>div{flex:1 1 480px}
.note{color:var(--muted)}
.left-out{border-left:4px solid #c0392b;padding:.4em .8em;background:#fdecea}
.legend span{display:inline-block;margin-right:14px}
.legend i{display:inline-block;width:11px;height:11px;margin-right:5px;vertical-align:-1px}
.definitions{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:10px}
.definition{border:1px solid var(--line);border-radius:6px;padding:8px 12px}
.definition h4{margin:0 0 4px}
.definition dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 10px;margin:6px 0 0;font-size:12px}
.definition dt{color:var(--muted)}
.definition dd{margin:0}
#tip{position:fixed;pointer-events:none;background:#263238;color:#fff;padding:4px 8px;border-radius:4px;font-size:12px;display:none;z-index:10}
"""

# Tooltips from data-tip, click-to-sort tables, and the flag tests read.
_JS = """
(function () {
  "use strict";
  var tip = document.getElementById("tip");
  document.addEventListener("mousemove", function (event) {
    var target = event.target;
    var text = target && target.getAttribute ? target.getAttribute("data-tip") : null;
    if (text) {
      tip.textContent = text;
      tip.style.display = "block";
      tip.style.left = (event.clientX + 12) + "px";
      tip.style.top = (event.clientY + 12) + "px";
    } else {
      tip.style.display = "none";
    }
  });
  function cellValue(row, index) {
    var text = row.cells[index] ? row.cells[index].textContent : "";
    var plain = text.replace(/[\\s,%]/g, "");
    return /^-?[0-9]+(\\.[0-9]+)?$/.test(plain) ? parseFloat(plain) : text;
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header, index) {
      header.addEventListener("click", function () {
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        var descending = header.getAttribute("data-sort") !== "desc";
        rows.sort(function (a, b) {
          var x = cellValue(a, index), y = cellValue(b, index);
          var order = (typeof x === "number" && typeof y === "number") ? x - y
            : String(x).localeCompare(String(y));
          return descending ? -order : order;
        });
        rows.forEach(function (row) { body.appendChild(row); });
        header.setAttribute("data-sort", descending ? "desc" : "asc");
      });
    });
  });
  var drawn = 0;
  Array.prototype.forEach.call(document.querySelectorAll("svg.chart"), function (svg) {
    if (svg.querySelectorAll("rect, path, circle").length > 0) { drawn += 1; }
  });
  document.body.setAttribute("data-charts-drawn", String(drawn));
})();
"""


def _kpis(row: Mapping[str, Any] | None, t12: Mapping[str, Any] | None, currency: str) -> str:
    if not row:
        return ""
    cells = [
        ("closing MRR", _money(row.get("closing_mrr"), currency) + " " + currency.upper()),
        ("NRR (monthly)", _pct(row.get("nrr"))),
        ("GRR (monthly)", _pct(row.get("grr"))),
        ("NRR (T12M)", _pct((t12 or {}).get("nrr"))),
        ("GRR (T12M)", _pct((t12 or {}).get("grr"))),
        ("band", _esc(row.get("band") or "–")),
    ]
    customers = row.get("customers")
    if isinstance(customers, Mapping):
        cells.append(("paying customers", _esc(customers.get("closing"))))
    return '<div class="kpis">' + "".join(
        f'<div class="kpi"><b>{value}</b><span>{_esc(label)}</span></div>' for label, value in cells
    ) + "</div>"


def _legend(kinds: Sequence[str]) -> str:
    return '<p class="legend">' + "".join(
        f'<span><i style="background:{COLOURS[k]}"></i>{_esc(k)}</span>' for k in kinds) + "</p>"


def render_document(doc: Mapping[str, Any], *, title: str = "Net Revenue Retention") -> str:
    """The HTML page of a document made by :func:`collect_report` (pure: no database)."""
    currency = str(doc.get("currency") or "usd")
    monthly = list(doc.get("monthly") or [])
    t12m = list(doc.get("t12m") or [])
    focus = doc.get("focus_month")
    focus_row = next((r for r in monthly if r.get("month") == focus), None)
    focus_t12 = next((r for r in t12m if r.get("month") == focus), None)
    months = list(doc.get("months") or [])
    span = f"{months[0]} to {months[-1]}" if months else "no data yet"
    left_out = doc.get("left_out") or {}
    warning = (f'<p class="left-out" role="alert"><strong>{_esc(left_out.get("note"))}</strong></p>'
               if left_out.get("count") else "")
    sections = [
        f'<section id="summary"><h2>{_esc(focus or "No month yet")}: last closed month</h2>'
        f'{warning}{_kpis(focus_row, focus_t12, currency)}</section>',
    ]
    if focus_row:
        sections.append(
            f'<section id="waterfall"><h2>MRR waterfall, {_esc(focus)}</h2>'
            f'{waterfall_svg(focus_row, currency)}</section>')
    if monthly:
        sections.append(
            '<section id="movements"><h2>MRR movements per month</h2>'
            f'{_legend(MOVEMENTS)}{movements_svg(monthly, currency)}'
            f'<h3>Closing MRR</h3>{mrr_svg(monthly, currency)}'
            f'<h3>Waterfall per month ({_esc(currency.upper())})</h3><div class="scroll">'
            + _table(["month", "opening", "new", "reactivation", "expansion", "contraction",
                      "churn", "closing", "fx impact", "NRR", "GRR", "band", "T12M NRR",
                      "T12M GRR"], _waterfall_rows(monthly, t12m, currency), "waterfall")
            + "</div></section>")
        sections.append(
            '<section id="retention"><h2>NRR and GRR over time</h2>'
            f'{retention_svg(monthly, t12m)}'
            '<p class="note">Monthly NRR = cohort closing / cohort opening; GRR caps each '
            "customer at its opening. T12M: cohort fixed at the opening of M-11. Dashed lines "
            "mark the bands.</p></section>")
    sections.append(
        '<section id="cohorts"><h2>Cohort retention</h2>'
        '<p class="note">Rows: customers grouped by their first paying month. Columns: months '
        "since. Cells: net MRR retention in % of the cohort's first-month MRR.</p>"
        f'{cohort_heatmap(doc.get("cohorts"))}</section>')
    sections.append(
        f'<section id="segments"><h2>Segments, {_esc(focus or "")}</h2>'
        '<p class="note">A customer\'s segment is fixed at the month\'s opening; the segments '
        "of a month add up to the total.</p>"
        f'{segments_section(doc.get("segments") or {}, currency)}</section>')
    sections.append(
        f'<section id="top-movements"><h2>Top movements, {_esc(focus or "")}</h2>'
        + top_movements_table(list(doc.get("top_movements") or []), currency,
                              str(doc.get("customer_url") or ""))
        + "</section>")
    sections.append(
        '<section id="definitions"><h2>Definitions and policies</h2>'
        + definitions_section(list(doc.get("definitions") or []), doc.get("policies") or {},
                              currency, str(doc.get("timezone") or "UTC"))
        + "</section>")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head>"
        f'<body><header><h1>{_esc(title)}</h1><p>{_esc(span)} · amounts in '
        f'{_esc(currency.upper())} · months in {_esc(doc.get("timezone"))} · generated '
        f'{_esc(doc.get("generated_at"))} by nrr-worker</p></header>'
        f'<main>{"".join(sections)}</main><div id="tip"></div>'
        f"<script>{_JS}</script></body></html>\n"
    )
