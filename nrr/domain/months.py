"""Calendar months in the configured time zone; instants are UTC Unix seconds."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo


def month_start(month: str, tz: ZoneInfo) -> int:
    """First instant of ``YYYY-MM`` in ``tz`` as Unix seconds (UTC)."""
    year, mon = (int(part) for part in month.split("-"))
    return int(datetime(year, mon, 1, tzinfo=tz).timestamp())


def add_months(month: str, n: int) -> str:
    year, mon = (int(part) for part in month.split("-"))
    index = year * 12 + (mon - 1) + n
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def month_of(instant: int, tz: ZoneInfo) -> str:
    """The month holding ``instant``; 00:00 on the 1st belongs to the new month."""
    local = datetime.fromtimestamp(instant, tz=UTC).astimezone(tz)
    return f"{local.year:04d}-{local.month:02d}"


def month_range(first: str, last: str) -> list[str]:
    months = []
    current = first
    while current <= last:
        months.append(current)
        current = add_months(current, 1)
    return months


def current_month(tz: ZoneInfo, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    local = now.astimezone(tz)
    return f"{local.year:04d}-{local.month:02d}"
