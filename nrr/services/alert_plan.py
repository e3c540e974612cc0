"""A planned alert message and its de-duplication key: shared by the alert rules
(:mod:`nrr.services.alerts`) and the projected rules (:mod:`nrr.services.outlook_alerts`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["PlannedMessage", "_dedupe_key"]


@dataclass
class PlannedMessage:
    """One message the evaluation wants sent; ``status`` is the stored row's, or ``new``."""

    dedupe_key: str
    kind: str  # alert | recovery | digest | test
    rule: str
    month: str
    segment: str
    snapshot_version: int
    severity: str | None
    summary: str
    payload: dict[str, Any]
    status: str = "new"

    def as_dict(self, *, with_payload: bool = True) -> dict[str, Any]:
        document = {
            "dedupe_key": self.dedupe_key, "kind": self.kind, "rule": self.rule,
            "month": self.month, "segment": self.segment,
            "snapshot_version": self.snapshot_version, "severity": self.severity,
            "summary": self.summary, "status": self.status,
        }
        if with_payload:
            document["payload"] = self.payload
        return document


def _dedupe_key(kind: str, rule: str, segment: str, month: str, version: int) -> str:
    return f"{kind}|{rule}|{segment}|{month}|v{version}"[:512]
