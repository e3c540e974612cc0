"""The metric catalogue: metric definitions as data (YAML shipped with the package).

The shipped ``metrics.yaml`` can be replaced by a file of the same shape named by the
``metric_catalogue`` setting (``NRR_METRIC_CATALOGUE`` or ``metric_catalogue`` in the
``NRR_CONFIG`` file). A catalogue that cannot be read is a :class:`ConfigError` naming the
file and the problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from nrr.settings import ConfigError, Settings

REQUIRED_FIELDS = ("name", "description", "formula", "cohort", "period", "dimensions", "owner")
PERIODS = ("monthly", "t12m", "cohort")


@dataclass(frozen=True)
class MetricDefinition:
    name: str
    description: str
    formula: str
    cohort: str
    period: str
    dimensions: tuple[str, ...]
    owner: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "formula": self.formula,
            "cohort": self.cohort, "period": self.period, "dimensions": list(self.dimensions),
            "owner": self.owner,
        }


@dataclass(frozen=True)
class Catalogue:
    source: str
    metrics: dict[str, MetricDefinition]

    def get(self, name: str) -> MetricDefinition | None:
        return self.metrics.get(name)

    def definitions(self, names: list[str] | tuple[str, ...]) -> dict[str, dict[str, Any]]:
        """The definitions of ``names`` that the catalogue holds, as plain dicts."""
        return {name: self.metrics[name].as_dict() for name in names if name in self.metrics}


def shipped_path() -> str:
    return str(resources.files("nrr.catalogue").joinpath("metrics.yaml"))


def parse_catalogue(text: str, source: str) -> Catalogue:
    """Validate a catalogue document; every problem names ``source`` and the metric."""
    import yaml

    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        document = yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise ConfigError(f"metric catalogue {source} is not valid YAML: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("metrics"), list):
        raise ConfigError(f"metric catalogue {source} needs a top-level 'metrics' list")
    metrics: dict[str, MetricDefinition] = {}
    for index, entry in enumerate(document["metrics"], start=1):
        if not isinstance(entry, dict):
            raise ConfigError(f"metric catalogue {source}: entry {index} is not a mapping")
        label = entry.get("name") or f"entry {index}"
        missing = [key for key in REQUIRED_FIELDS if entry.get(key) in (None, "")
                   and not (key == "dimensions" and entry.get(key) == [])]
        if missing:
            raise ConfigError(f"metric catalogue {source}: metric {label} lacks "
                              f"{', '.join(missing)}")
        if entry["period"] not in PERIODS:
            raise ConfigError(f"metric catalogue {source}: metric {label} has period "
                              f"{entry['period']!r}; expected one of {', '.join(PERIODS)}")
        dimensions = entry["dimensions"]
        if not isinstance(dimensions, list) or not all(isinstance(d, str) for d in dimensions):
            raise ConfigError(f"metric catalogue {source}: metric {label} needs 'dimensions' "
                              f"as a list of names")
        name = str(entry["name"])
        if name in metrics:
            raise ConfigError(f"metric catalogue {source}: metric {name} is defined twice")
        metrics[name] = MetricDefinition(
            name=name, description=str(entry["description"]).strip(),
            formula=str(entry["formula"]).strip(), cohort=str(entry["cohort"]).strip(),
            period=str(entry["period"]), dimensions=tuple(dimensions),
            owner=str(entry["owner"]).strip())
    return Catalogue(source=source, metrics=metrics)


@lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int) -> Catalogue:
    return parse_catalogue(Path(path).read_text(encoding="utf-8"), path)


def load_catalogue(settings: Settings | None = None) -> Catalogue:
    """The catalogue in force: the override file of ``settings`` if set, else the shipped one."""
    override = settings.metric_catalogue if settings is not None else None
    path = Path(override).expanduser() if override else Path(shipped_path())
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as exc:
        raise ConfigError(f"NRR_METRIC_CATALOGUE points to {path}, which cannot be read: "
                          f"{exc.strerror}") from exc
    return _load(str(path), mtime)
