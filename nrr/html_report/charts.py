"""Charts: the geometry of each chart as plain shapes, drawn as inline SVG by the templates.

Each function returns a :class:`Chart`: its size, name and label and a list of shapes
(``rect``, ``line``, ``path``, ``circle``, ``text``) with their attributes. No markup is
built here: the template (``templates/charts.html``) writes every attribute and text
through Jinja2's auto-escaping, so a customer's or plan's name cannot become markup.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nrr.html_report.format import money, num, pct, short_money

MOVEMENTS = ("new", "reactivation", "expansion", "contraction", "churn")
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
    "fx_impact": "#9e9d24",
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


@dataclass
class Shape:
    kind: str
    attrs: dict[str, str]
    text: str | None = None
    href: str | None = None  # a drill-down link (the served dashboard)


@dataclass
class Chart:
    name: str
    label: str
    width: int
    height: int
    shapes: list[Shape] = field(default_factory=list)

    def add(self, kind: str, text: str | None = None, **attrs: Any) -> None:
        """A shape; ``class_`` becomes ``class``, ``text_anchor`` ``text-anchor``."""
        href = attrs.pop("href", None)
        self.shapes.append(Shape(kind, {("class" if k == "class_" else k.replace("_", "-")): str(v)
                                        for k, v in attrs.items() if v is not None}, text,
                                 href))

    def grid(self, x1: float, x2: float, y: float, label: str) -> None:
        self.add("line", class_="grid", x1=x1, x2=x2, y1=f"{y:.1f}", y2=f"{y:.1f}")
        self.add("text", label, class_="axis", x=x1 - 6, y=f"{y + 4:.1f}", text_anchor="end")


def band_of(value: float | None) -> str | None:
    """The band of a percentage (for colouring only; the report service names bands)."""
    if value is None:
        return None
    for floor, name in BANDS:
        if value >= floor:
            return name
    return "critical"


def nice_step(span: float, ticks: int = 5) -> float:
    if span <= 0:
        return 1.0
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * power:
            return factor * power
    return 10 * power


def _value(row: Mapping[str, Any], key: str) -> float:
    return num(row.get(key)) or 0.0


def waterfall(row: Mapping[str, Any], currency: str, link: Any = None) -> Chart:
    """Opening, the five movements, the FX impact and closing of one month as a waterfall.

    ``fx_impact`` is the change of the opening MRR from re-converting at this month's rate
    (docs/revenue-definitions.md): without its bar last month's closing and this month's
    opening would differ with nothing to say why.
    """
    width, height, left, bottom, top = 840, 330, 70, 40, 20
    steps: list[tuple[str, float, float, str]] = []  # label, start, end, colour
    running = _value(row, "opening_mrr")
    steps.append(("opening", 0.0, running, COLOURS["opening"]))
    for kind in MOVEMENTS:
        amount = _value(row, kind)
        sign = -1.0 if kind in ("contraction", "churn") else 1.0
        end = running + sign * amount
        steps.append((kind, running, end, COLOURS[kind]))
        running = end
    closing = num(row.get("closing_mrr"))
    closing_value = closing if closing is not None else running
    if abs(closing_value - running) > 0.005 or _value(row, "fx_impact"):
        steps.append(("fx impact", running, closing_value, COLOURS["fx_impact"]))
    steps.append(("closing", 0.0, closing_value, COLOURS["closing"]))
    high = max(max(s, e) for _, s, e, _ in steps) or 1.0
    # Movements are small next to the MRR: start the axis near the lowest level so they
    # stay visible (the axis labels and a note say where it starts).
    levels = [e for _, _, e, _ in steps] + [s for _, s, _, _ in steps[1:-1]]
    moved = sum(abs(e - s) for _, s, e, _ in steps[1:-1])
    low = max(0.0, min(levels) - max(moved * 1.5, high * 0.02))
    step = nice_step(high - low)
    low = math.floor(low / step) * step
    high = math.ceil(high / step) * step
    plot_h = height - bottom - top
    slot = (width - left - 10) / len(steps)

    def y(value: float) -> float:
        return top + plot_h - (max(value, low) - low) / (high - low) * plot_h

    chart = Chart("waterfall", f"MRR waterfall {row.get('month')}", width, height)
    if low > 0:
        chart.add("text", f"axis starts at {short_money(low)}", class_="axis", x=width - 10,
                  y=top - 6, text_anchor="end")
    tick = low
    while tick <= high + 1e-9:
        chart.grid(left, width - 10, y(tick), short_money(tick))
        tick += step
    for index, (label, start, end, colour) in enumerate(steps):
        x = left + index * slot + slot * 0.15
        bar_w = slot * 0.7
        y_top, y_bottom = y(max(start, end)), y(min(start, end))
        amount = abs(end - start)
        minus = "-" if label != "closing" and label != "opening" and end < start else ""
        chart.add("rect", class_="bar", x=f"{x:.1f}", y=f"{y_top:.1f}", width=f"{bar_w:.1f}",
                  height=f"{max(y_bottom - y_top, 0.5):.1f}", fill=colour,
                  data_tip=f"{label}: {minus}{money(amount, currency)} {currency.upper()}",
                  data_step=label.replace(" ", "_"),
                  href=link(str(row.get("month")), label)
                  if link and label in MOVEMENTS and amount else None)
        chart.add("text", short_money(amount), class_="value", x=f"{x + bar_w / 2:.1f}",
                  y=f"{y_top - 4:.1f}", text_anchor="middle")
        chart.add("text", label, class_="axis", x=f"{x + bar_w / 2:.1f}", y=height - bottom + 16,
                  text_anchor="middle")
        if index < len(steps) - 1:
            chart.add("line", class_="connector", x1=f"{x + bar_w:.1f}", x2=f"{x + slot:.1f}",
                      y1=f"{y(end):.1f}", y2=f"{y(end):.1f}")
    chart.add("line", class_="axisline", x1=left, x2=width - 10, y1=f"{y(0):.1f}",
              y2=f"{y(0):.1f}")
    return chart


def _x_labels(chart: Chart, months: Sequence[str], x_of: Any, y_pos: float) -> None:
    every = max(1, math.ceil(len(months) / 12))
    for i, month in enumerate(months):
        if i % every == 0 or i == len(months) - 1:
            chart.add("text", month, class_="axis", x=f"{x_of(i):.1f}", y=f"{y_pos:.1f}",
                      text_anchor="middle")


def movements(rows: Sequence[Mapping[str, Any]], currency: str, link: Any = None) -> Chart:
    """Per month: new, reactivation and expansion above the axis, contraction and churn below."""
    width, height, left, bottom, top = 1100, 320, 70, 40, 20
    months = [str(r.get("month")) for r in rows]
    ups = [sum(_value(r, k) for k in ("new", "reactivation", "expansion")) for r in rows]
    downs = [sum(_value(r, k) for k in ("contraction", "churn")) for r in rows]
    high = max(ups + [1.0])
    low = max(downs + [0.0])
    step = nice_step(high + low)
    high = math.ceil(high / step) * step
    low = math.ceil(low / step) * step
    plot_h = height - bottom - top
    span = high + low or 1.0
    slot = (width - left - 10) / max(len(rows), 1)

    def y(value: float) -> float:
        return top + (high - value) / span * plot_h

    def x_of(i: int) -> float:
        return left + i * slot + slot / 2

    chart = Chart("movements", "MRR movements per month", width, height)
    tick = -low
    while tick <= high + 1e-9:
        chart.grid(left, width - 10, y(tick), short_money(tick))
        tick += step
    bar_w = slot * 0.7
    for i, row in enumerate(rows):
        x = x_of(i) - bar_w / 2
        partial = " (partial)" if row.get("partial") else ""
        base = 0.0
        for kind in ("new", "reactivation", "expansion"):
            amount = _value(row, kind)
            if amount > 0:
                chart.add("rect", class_="bar", x=f"{x:.1f}", y=f"{y(base + amount):.1f}",
                          width=f"{bar_w:.1f}", height=f"{y(base) - y(base + amount):.1f}",
                          fill=COLOURS[kind], data_month=months[i], data_movement=kind,
                          data_tip=f"{months[i]}{partial} {kind}: +{money(amount, currency)}",
                          href=link(months[i], kind) if link else None)
                base += amount
        base = 0.0
        for kind in ("contraction", "churn"):
            amount = _value(row, kind)
            if amount > 0:
                chart.add("rect", class_="bar", x=f"{x:.1f}", y=f"{y(base):.1f}",
                          width=f"{bar_w:.1f}", height=f"{y(base - amount) - y(base):.1f}",
                          fill=COLOURS[kind], data_month=months[i], data_movement=kind,
                          data_tip=f"{months[i]}{partial} {kind}: -{money(amount, currency)}",
                          href=link(months[i], kind) if link else None)
                base -= amount
    chart.add("line", class_="axisline", x1=left, x2=width - 10, y1=f"{y(0):.1f}",
              y2=f"{y(0):.1f}")
    _x_labels(chart, months, x_of, height - bottom + 18)
    return chart


def _path(chart: Chart, points: Sequence[tuple[float, float] | None], colour: str,
          dashed: bool = False) -> None:
    """A line through the points; ``None`` breaks it (a month with no value)."""
    segments: list[str] = []
    pen_down = False
    for point in points:
        if point is None:
            pen_down = False
            continue
        segments.append(f"{'L' if pen_down else 'M'}{point[0]:.1f},{point[1]:.1f}")
        pen_down = True
    if segments:
        chart.add("path", class_="line", d=" ".join(segments), stroke=colour,
                  stroke_dasharray="6 4" if dashed else None, fill="none")


def mrr(rows: Sequence[Mapping[str, Any]], currency: str) -> Chart:
    """Closing MRR per month."""
    width, height, left, bottom, top = 1100, 260, 70, 40, 20
    months = [str(r.get("month")) for r in rows]
    values = [num(r.get("closing_mrr")) for r in rows]
    high = max([v for v in values if v is not None] + [1.0])
    step = nice_step(high)
    high = math.ceil(high / step) * step
    plot_h = height - bottom - top
    slot = (width - left - 10) / max(len(rows), 1)

    def y(value: float) -> float:
        return top + plot_h - value / high * plot_h

    def x_of(i: int) -> float:
        return left + i * slot + slot / 2

    chart = Chart("mrr", "Closing MRR per month", width, height)
    tick = 0.0
    while tick <= high + 1e-9:
        chart.grid(left, width - 10, y(tick), short_money(tick))
        tick += step
    points = [None if v is None else (x_of(i), y(v)) for i, v in enumerate(values)]
    _path(chart, points, COLOURS["closing"])
    for i, point in enumerate(points):
        if point is not None:
            partial = " (partial)" if rows[i].get("partial") else ""
            chart.add("circle", class_="dot", cx=f"{point[0]:.1f}", cy=f"{point[1]:.1f}", r="3.5",
                      fill=COLOURS["closing"],
                      data_tip=f"{months[i]}{partial} closing MRR: {money(values[i], currency)}")
    _x_labels(chart, months, x_of, height - bottom + 18)
    return chart


def retention(monthly: Sequence[Mapping[str, Any]], t12m: Sequence[Mapping[str, Any]]) -> Chart:
    """Monthly NRR and GRR (and T12M NRR) with the band lines at 130, 110, 100 and 90.

    A partial (current) month is left out: its NRR would compare a month that is not over
    with closed ones, and the report service gives it no band.
    """
    width, height, left, bottom, top, right = 1100, 340, 60, 40, 20, 110
    closed = [i for i, r in enumerate(monthly) if not r.get("partial")]
    monthly = [monthly[i] for i in closed]
    t12m_by_month = {str(r.get("month")): r for r in t12m}
    months = [str(r.get("month")) for r in monthly]
    t12m_rows = [t12m_by_month.get(m, {}) for m in months]
    series = [
        ("NRR (monthly)", [num(r.get("nrr")) for r in monthly], COLOURS["nrr"], False),
        ("GRR (monthly)", [num(r.get("grr")) for r in monthly], COLOURS["grr"], False),
        ("NRR (T12M)", [num(r.get("nrr")) for r in t12m_rows], COLOURS["t12m_nrr"], True),
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

    chart = Chart("retention", "NRR and GRR over time with band lines", width, height)
    tick_step = nice_step(high - low, 6)
    tick = math.ceil(low / tick_step) * tick_step
    while tick <= high + 1e-9:
        chart.add("line", class_="grid", x1=left, x2=width - right, y1=f"{y(tick):.1f}",
                  y2=f"{y(tick):.1f}")
        chart.add("text", f"{tick:g}", class_="axis", x=left - 6, y=f"{y(tick) + 4:.1f}",
                  text_anchor="end")
        tick += tick_step
    for floor, name in BANDS:
        chart.add("line", class_="bandline", data_band=f"{floor:g}", x1=left, x2=width - right,
                  y1=f"{y(floor):.1f}", y2=f"{y(floor):.1f}", stroke=BAND_COLOURS[name])
        chart.add("text", f"{floor:g} {name}", class_="bandlabel", x=width - right + 4,
                  y=f"{y(floor) + 4:.1f}", fill=BAND_COLOURS[name])
    for label, values, colour, dashed in series:
        points = [None if v is None else (x_of(i), y(v)) for i, v in enumerate(values)]
        _path(chart, points, colour, dashed)
        for i, point in enumerate(points):
            value = values[i]
            if point is None or value is None:
                continue
            tip = f"{months[i]} {label}: {pct(value, 3)}"
            if low <= value <= high:
                chart.add("circle", class_="dot", cx=f"{point[0]:.1f}", cy=f"{point[1]:.1f}",
                          r="3", fill=colour, data_tip=tip)
            else:  # off the axis: a triangle on the edge, pointing out
                cx, cy = point
                tip_y = cy - 7 if value > high else cy + 7
                chart.add("path", class_="dot", d=f"M{cx - 5:.1f},{cy:.1f} L{cx + 5:.1f},{cy:.1f} "
                          f"L{cx:.1f},{tip_y:.1f} Z", fill=colour, data_tip=tip)
    _x_labels(chart, months, x_of, height - bottom + 18)
    legend_x = left
    for label, _, colour, dashed in series:
        chart.add("line", x1=legend_x, x2=legend_x + 24, y1=height - 6, y2=height - 6,
                  stroke=colour, stroke_width="3", stroke_dasharray="6 4" if dashed else None)
        chart.add("text", label, class_="axis", x=legend_x + 30, y=height - 2)
        legend_x += 160
    return chart


def segment_name(row: Mapping[str, Any]) -> str:
    segment = str(row.get("segment") if row.get("segment") not in (None, "") else "(none)")
    label = row.get("label")
    return f"{label} · {segment}" if label and label != segment else segment


def segment_bars(dimension: str, rows: Sequence[Mapping[str, Any]], currency: str) -> Chart:
    """Closing MRR per segment as horizontal bars (largest first, at most 12)."""
    shown = sorted(rows, key=lambda r: -_value(r, "closing_mrr"))[:12]
    width, left, bar_h = 600, 190, 22
    height = max(len(shown), 1) * (bar_h + 6) + 10
    high = max([_value(r, "closing_mrr") for r in shown] + [1.0])
    chart = Chart(f"segments-{dimension}", f"Closing MRR by {dimension}", width, height)
    for i, row in enumerate(shown):
        value = _value(row, "closing_mrr")
        y = 5 + i * (bar_h + 6)
        bar_w = value / high * (width - left - 80)
        name = segment_name(row)
        short = str(row.get("label") or name)
        if len(short) > 24:  # the full name is in the tooltip and the table beside
            short = short[:23] + "…"
        chart.add("text", short, class_="axis", x=left - 6, y=f"{y + bar_h * 0.7:.1f}",
                  text_anchor="end")
        chart.add("rect", class_="bar", x=left, y=y, width=f"{max(bar_w, 0.5):.1f}",
                  height=bar_h, fill=COLOURS["nrr"],
                  data_tip=f"{name}: {money(value, currency)} closing MRR")
        chart.add("text", short_money(value), class_="value", x=f"{left + bar_w + 4:.1f}",
                  y=f"{y + bar_h * 0.7:.1f}")
    return chart


def heat_colour(value: float | None) -> str:
    if value is None:
        return "transparent"
    clipped = max(0.0, min(value, 150.0))
    hue = 0.0 if clipped <= 50 else (clipped - 50) / 100 * 130
    lightness = 88 - min(abs(clipped - 100), 60) / 60 * 30
    return f"hsl({hue:.0f},65%,{lightness:.0f}%)"
