"""Every table command at 60, 80 and 120 columns: no number is ever cut or wrapped.

Each number cell in the printed tables must be one of the numbers of the command's JSON
output written whole (money with two decimals and thousands separators, percentages with
three); the key figures of every row must be there; no line is wider than the terminal and
no cell ends in an ellipsis.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from nrr.settings import load_settings
from tests.demo.facts import insert_world, sample_paths
from tests.report.conftest import CliResult

WIDTHS = (60, 80, 120)
NUMBER = re.compile(r"[+-]?\d{1,3}(?:,\d{3})*(?:\.\d+)?")


@pytest.fixture
def world(db_url: str, db_engine: Engine) -> None:
    settings = load_settings({"DATABASE_URL": db_url})
    with Session(db_engine) as session:
        insert_world(session, settings, "2024-01", sample_paths(16))
        session.commit()


def numbers_in(value: Any) -> Iterable[float]:
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, (int, float)):
        yield float(value)
    elif isinstance(value, dict):
        for item in value.values():
            yield from numbers_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from numbers_in(item)


def written(values: Iterable[float]) -> set[str]:
    """Every way the tables may write a JSON number: money, percent, ratio, count, signed."""
    found = set()
    for value in values:
        for text in (f"{value:,.2f}", f"{value:,.3f}", f"{abs(value):,.2f}"):
            found |= {text, f"+{text}", f"-{text}" if not text.startswith("-") else text}
        if value == int(value):
            found.add(f"{int(value):,}")
    return found


def number_cells(out: str) -> list[str]:
    cells = []
    for line in out.splitlines():
        if "│" not in line:
            continue
        for cell in line.split("│")[1:-1]:
            cell = cell.strip()
            if NUMBER.fullmatch(cell):
                cells.append(cell)
    return cells


def check(out: str, width: int, document: Any, must_show: Iterable[str] = ()) -> None:
    assert "…" not in out
    for line in out.splitlines():
        if "│" in line or "┃" in line or "━" in line:
            assert len(line.rstrip()) <= width, line
    allowed = written(numbers_in(document))
    cells = number_cells(out)
    assert cells, out
    for cell in cells:
        assert cell in allowed, f"{cell!r} is not a number of the JSON output (cut?)\n{out}"
    for text in must_show:
        assert text in cells, f"{text} missing\n{out}"
    for bad in ("None", "False", "True", "{", "["):
        assert not any(bad in line for line in out.splitlines() if "│" in line), out


@pytest.mark.usefixtures("world")
@pytest.mark.parametrize("width", WIDTHS)
def test_report_tables_at_every_width(run_cli: Callable[..., CliResult], width: int) -> None:
    env = {"COLUMNS": str(width)}
    cases = [
        ["report", "--from", "2024-01", "--to", "2025-04"],
        ["report", "--from", "2024-06", "--to", "2025-04", "--period", "t12m"],
        ["report", "--month", "2024-06"],
        ["report", "--month", "2024-06", "--by", "plan"],
        ["report", "--from", "2024-05", "--to", "2024-07", "--by", "country"],
    ]
    for args in cases:
        table = run_cli(*args, env=env)
        assert table.exit_code == 0, table.stderr
        document = run_cli(*args, "--format", "json").json()
        rows = document.get("months") or [document]
        if "--by" in args:  # a row per segment (and the total of one month)
            rows = [s for r in rows for s in r["segments"]] + (
                [document["total"]] if "--month" in args else [])
        key = "cohort_closing_mrr" if "--period" in args else "closing_mrr"
        must = [f"{row.get('total', row)[key]:,.2f}" for row in rows]
        check(table.stdout, width, document, must)
        if width < 120 and "--month" not in args and "--period" not in args:
            assert "left out to fit" in table.stdout


@pytest.mark.usefixtures("world")
@pytest.mark.parametrize("width", WIDTHS)
def test_cohorts_movements_customer_at_every_width(run_cli: Callable[..., CliResult],
                                                   width: int) -> None:
    env = {"COLUMNS": str(width)}
    cohorts = run_cli("cohorts", env=env)
    assert cohorts.exit_code == 0, cohorts.stderr
    document = run_cli("cohorts", "--format", "json").json()
    check(cohorts.stdout, width, document,
          [f"{c['starting_mrr']:,.2f}" for c in document["cohorts"]])
    net = run_cli("cohorts", "--retention", "net", "--months", "3", env={"COLUMNS": "120"})
    assert re.search(r"\bM2\b", net.stdout) and not re.search(r"\bM3\b", net.stdout)
    assert "112.500" in net.stdout  # the 2024-01 cohort in month 2

    movements = run_cli("movements", "--month", "2024-06", env=env)
    assert movements.exit_code == 0, movements.stderr
    document = run_cli("movements", "--month", "2024-06", "--format", "json").json()
    check(movements.stdout, width, document, ["-30.00", "+150.00"])  # beta churns, delta grows

    customer = run_cli("customer", "cus_eps", env=env)
    assert customer.exit_code == 0, customer.stderr
    document = run_cli("customer", "cus_eps", "--format", "json").json()
    check(customer.stdout, width, document, ["120.00", "60.00", "-60.00"])
    assert "GBP" in customer.stdout  # the ledger's amounts carry their currency code


def test_a_table_too_narrow_for_two_columns_is_turned(monkeypatch: pytest.MonkeyPatch) -> None:
    from io import StringIO

    from rich.console import Console

    from nrr.commands.tables import Column, print_table

    monkeypatch.delenv("COLUMNS", raising=False)
    out = StringIO()
    console = Console(file=out, width=30)
    print_table("wide", [Column("customer", "customer", "text", 0),
                         Column("change", "change", "money", 0)],
                [{"customer": "cus_" + "x" * 30, "change": 1234567.891}], console=console)
    text = out.getvalue()
    assert "turned" in text and "1,234,567.89" in text and "…" not in text
