"""Imports point one way through the rooms (docs/architecture.md), and never in a circle.

Every module of the installed packages is parsed with ``ast`` (imports inside functions
and under ``TYPE_CHECKING`` count too: a lazy import is still a dependency) and placed in a
layer; a module may import only from its own layer or a lower one, and the graph of
module imports must have no cycle. The checker itself is tested on made-up graphs so it is
known to fail when it should.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("nrr", "models", "integrations", "worker")

# Lowest first. A module belongs to the layer of the longest prefix that names it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("nrr.settings", "nrr.logs", "nrr.catalogue"),  # foundations: configuration, logging
    ("nrr.domain",),  # plain data in, plain data out
    ("models", "nrr.db", "nrr.locks"),  # tables, sessions, statements, locks
    # The network edges: Stripe, Slack, webhooks, the emulator; where the worker's queue
    # lives and how deep it is (Redis or a folder; no Celery: `nrr status` reads it).
    ("integrations", "worker.broker"),
    ("nrr.services", "nrr.html_report"),  # database + domain
    ("worker",),  # Celery: thin tasks over the services
    # The CLI chooses how work is dispatched and wires everything; the demo drives the
    # whole product (emulator, worker tasks, report) the way a user would.
    ("nrr.commands", "nrr.cli", "nrr.demo", "nrr"),
)


def layer_of(module: str, layers: tuple[tuple[str, ...], ...] = LAYERS) -> int | None:
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for index, prefixes in enumerate(layers):
        for prefix in prefixes:
            matches = module == prefix or module.startswith(prefix + ".")
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    return None if best is None else best[1]


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool,
                     known: Iterable[str]) -> set[str]:
    """The project modules ``source`` imports (``from a import b`` names ``a.b`` when
    ``a.b`` is a module, else ``a``)."""
    known = set(known)
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                child = f"{target}.{alias.name}"
                found.add(child if child in known else target)
    return {name for name in found if name in known and name != module}


def project_graph(root: Path = ROOT) -> dict[str, set[str]]:
    files = [p for package in PACKAGES for p in (root / package).rglob("*.py")
             if "migrations" not in p.parts]
    names = {module_name(p, root): p for p in files}
    return {name: imported_modules(path.read_text(encoding="utf-8"), name,
                                   path.name == "__init__.py", names)
            for name, path in names.items()}


def upward_imports(graph: Mapping[str, set[str]],
                   layers: tuple[tuple[str, ...], ...] = LAYERS) -> list[str]:
    problems = []
    for module, targets in sorted(graph.items()):
        own = layer_of(module, layers)
        if own is None:
            problems.append(f"{module} is in no layer")
            continue
        for target in sorted(targets):
            theirs = layer_of(target, layers)
            if theirs is None:
                problems.append(f"{target} (imported by {module}) is in no layer")
            elif theirs > own:
                problems.append(f"{module} (layer {own}) imports {target} (layer {theirs})")
    return problems


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (or a self-import), by
    Tarjan's algorithm."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


# --------------------------------------------------------------------------- the checker


def test_checker_reads_every_import_form() -> None:
    source = (
        "import integrations.slack\n"
        "from nrr.services import recompute\n"
        "from nrr.db import session_scope\n"
        "from . import sibling\n"
        "def later():\n"
        "    from worker.tasks import process_event\n"
        "if TYPE_CHECKING:\n"
        "    from models.mirror import SyncState\n"
    )
    known = {"integrations.slack", "nrr.services", "nrr.services.recompute", "nrr.db",
             "nrr.domain.sibling", "worker.tasks", "models.mirror", "nrr.domain.here"}
    assert imported_modules(source, "nrr.domain.here", False, known) == {
        "integrations.slack", "nrr.services.recompute", "nrr.db", "nrr.domain.sibling",
        "worker.tasks", "models.mirror"}


def test_checker_finds_an_upward_import_and_a_cycle() -> None:
    bad = {
        "nrr.domain.history": {"nrr.services.report"},  # domain reaching up
        "integrations.webhook_app": {"nrr.services.recompute"},  # an edge reaching up
        "nrr.services.report": set(),
        "nrr.services.recompute": set(),
        "worker.dispatch": {"worker.tasks"},
        "worker.tasks": {"worker.dispatch"},
    }
    assert upward_imports(bad) == [
        "integrations.webhook_app (layer 3) imports nrr.services.recompute (layer 4)",
        "nrr.domain.history (layer 1) imports nrr.services.report (layer 4)",
    ]
    assert upward_imports({"nrr.services.status": {"worker.broker"}}) == []
    assert upward_imports({"nrr.services.status": {"worker.tasks"}}) == [
        "nrr.services.status (layer 4) imports worker.tasks (layer 5)"]
    assert upward_imports({"nrr.extra": {"nrr.services.x"}, "nrr.services.x": set()}) == []
    assert upward_imports({"elsewhere": set()}) == ["elsewhere is in no layer"]
    assert cycles(bad) == [["worker.dispatch", "worker.tasks"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"a"}}) == [["a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_checker_reads_the_real_tree() -> None:
    graph = project_graph()
    # A few edges known to exist, so an empty graph cannot pass the tests below.
    assert "nrr.db" in graph["worker.tasks"]
    assert "nrr.domain.money" in graph["nrr.domain.history"]
    assert len(graph) > 60


# --------------------------------------------------------------------------- the project


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return project_graph()


def test_imports_point_down_the_layers(graph: dict[str, set[str]]) -> None:
    assert upward_imports(graph) == []


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    assert cycles(graph) == []


def test_no_import_error_guards_on_the_project(graph: dict[str, set[str]]) -> None:
    """``except ImportError`` around an import of the project's own modules hides a broken
    install; the project's modules are always installed together."""
    guarded = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.Try):
                    continue
                catches = {ast.unparse(h.type) for h in node.handlers if h.type is not None}
                if not catches & {"ImportError", "ModuleNotFoundError"}:
                    continue
                for inner in node.body:
                    for sub in ast.walk(inner):
                        names = ([a.name for a in sub.names] if isinstance(sub, ast.Import)
                                 else [sub.module or ""] if isinstance(sub, ast.ImportFrom)
                                 else [])
                        if any(n.split(".")[0] in PACKAGES for n in names):
                            guarded.append(f"{module_name(path)}:{node.lineno}")
    assert guarded == []
