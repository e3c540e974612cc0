"""Exchange rates: CSV import through the CLI, listing, and month lookups."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from models.derived import ExchangeRate
from nrr.db import make_engine
from nrr.services.fx import MissingRate, RateBook, RateFileError, parse_rates_csv
from tests.recompute.conftest import cli


def flat(text: str) -> str:
    """Rich wraps long messages; compare them as one line."""
    return " ".join(text.split())


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "rates.csv"
    path.write_text(body, encoding="utf-8")
    return path


def test_fx_import_upserts_and_lists(db_url: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": db_url, "NRR_REPORTING_CURRENCY": "usd"}
    first = write(tmp_path, "date,currency,rate\n2026-01-01,EUR,1.08\n2026-02-01,eur,1.10\n"
                            "2026-01-01,jpy,0.0067\n")
    result = cli(["fx", "import", str(first), "--format", "json"], env=env)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["imported"] == 3 and document["currencies"] == ["eur", "jpy"]
    again = write(tmp_path, "date,currency,rate\n2026-02-01,eur,1.12\n")
    assert cli(["fx", "import", str(again)], env=env).exit_code == 0
    engine = make_engine(db_url)
    with Session(engine) as session:
        rates = {(r.date, r.currency): r.rate for r in session.scalars(select(ExchangeRate))}
    engine.dispose()
    assert rates == {(date(2026, 1, 1), "eur"): "1.08", (date(2026, 2, 1), "eur"): "1.12",
                     (date(2026, 1, 1), "jpy"): "0.0067"}
    listed = cli(["fx", "list", "--currency", "eur", "--format", "json"], env=env)
    assert listed.exit_code == 0, listed.output
    assert [r["rate"] for r in json.loads(listed.stdout)] == ["1.08", "1.12"]


def test_fx_import_names_the_bad_row_and_imports_nothing(db_url: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": db_url}
    path = write(tmp_path, "date,currency,rate\n2026-01-01,eur,1.08\n2026-01-01,gbp,-1\n")
    result = cli(["fx", "import", str(path)], env=env)
    assert result.exit_code == 2
    assert "row 3: rate '-1' must be a positive number" in flat(result.stderr)
    listed = cli(["fx", "list", "--format", "json"], env=env)
    assert json.loads(listed.stdout) == []


def test_fx_import_of_a_missing_file_is_a_usage_error(sqlite_url: str, tmp_path: Path) -> None:
    result = cli(["fx", "import", str(tmp_path / "nope.csv")],
                           env={"DATABASE_URL": sqlite_url})
    assert result.exit_code == 2 and "nope.csv: no such file" in flat(result.stderr)


@pytest.mark.parametrize("body, message", [
    ("", "empty"),
    ("day,currency,rate\n", "lacks column(s) date"),
    ("date,currency,rate\n2026-1-1,eur,1\n", "row 2: date"),
    ("date,currency,rate\n2026-01-01,euro,1\n", "row 2: currency"),
    ("date,currency,rate\n2026-01-01,eur,abc\n", "row 2: rate"),
    ("date,currency,rate\n2026-01-01,eur\n", "row 2: expected 3 columns"),
    ("date,currency,rate\n2026-01-01,eur,1\n2026-01-01,EUR,2\n", "row 3: EUR on 2026-01-01 repeats row 2"),
])
def test_parse_errors_name_the_row(body: str, message: str) -> None:
    with pytest.raises(RateFileError, match=None) as caught:
        parse_rates_csv(body, source="rates.csv")
    assert message in str(caught.value)


def test_rate_book_takes_the_latest_rate_on_or_before_the_day() -> None:
    book = RateBook.from_rows("usd", [(date(2026, 1, 1), "eur", "1.08"),
                                      (date(2026, 3, 1), "eur", "1.11")])
    assert book.rate("eur", date(2026, 1, 1)) == Decimal("1.08")
    assert book.rate("EUR", date(2026, 2, 28)) == Decimal("1.08")
    assert book.rate("eur", date(2026, 3, 1)) == Decimal("1.11")
    assert book.rate("usd", date(2000, 1, 1)) == Decimal(1)
    with pytest.raises(MissingRate, match="EUR -> USD on or before 2025-12-31"):
        book.rate("eur", date(2025, 12, 31))
    with pytest.raises(MissingRate, match="GBP"):
        book.rate("gbp", date(2026, 6, 1))


def test_db_upgrade_and_check(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.db'}"}
    before = cli(["db", "check", "--format", "json"], env=env)
    assert before.exit_code == 1
    assert json.loads(before.stdout)["at_head"] is False
    upgraded = cli(["db", "upgrade", "--format", "json"], env=env)
    assert upgraded.exit_code == 0, upgraded.output
    assert json.loads(upgraded.stdout)["after"] == json.loads(upgraded.stdout)["head"]
    after = cli(["db", "check", "--format", "json"], env=env)
    assert after.exit_code == 0, after.output
    assert json.loads(after.stdout) | {"current": None, "head": None} == {
        "current": None, "head": None, "at_head": True, "differences": []}
