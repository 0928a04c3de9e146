"""The package's layering (docs/design.md): imports run one way and no module grows too large.

The imports are read from the source (every ``from .x import`` / ``from . import x`` line, lazy
ones inside functions included), so the test needs no JAX and fails on a new upward import.
"""

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bayesgmm"
CORE = {
    "_compile",
    "numerics",
    "params",
    "priors",
    "stats",
    "mstep",
    "init",
    "em",
    "_validation",
    "_transform",
    "potential",
}
DRIVERS = {
    "driver",
    "scoring",
    "stream",
    "passes",
    "distributed",
    "sources",
    "nuts",
    "_nuts_compiled",
    "modes",
    "relabel",
    "smc",
    "basins",
    "mixed",
}
SURFACE = {"api", "select", "sampler", "posterior", "plotting", "cli"}
MAX_LINES = 600
# No exceptions left: nuts.py receives arrays from the sampler's front end (sampler.py).
TOO_LONG_FOR_NOW: set[str] = set()
KNOWN_EDGES: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        out[".".join(parts) or "__init__"] = path
    return out


def _imports(name: str, path: Path) -> set[str]:
    """The first-level package modules (``api``, ``cli``, ...) that module ``name`` imports.

    Relative imports are resolved against the module's own package (``from ..api import`` in
    ``cli/fit.py`` is ``api``; ``from .read import`` there is ``cli``).
    """
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    package = [p for p in package if p != "__init__"]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            base = package[: len(package) - (node.level - 1)]
            if node.module:
                target = base + node.module.split(".")
                found.add(target[0])
            elif base:
                found.add(base[0])
            else:
                found.update(alias.name for alias in node.names)
    return found


def _top(name: str) -> str:
    return name.split(".")[0]


def test_every_module_imports():
    for name in _modules():
        if name != "__main__":
            importlib.import_module("bayesgmm" if name == "__init__" else f"bayesgmm.{name}")


def test_core_and_drivers_never_import_the_surface():
    for name, path in _modules().items():
        if _top(name) in CORE | DRIVERS | {"model"}:
            upward = _imports(name, path) & (SURFACE | {"__init__"})
            assert not upward, f"bayesgmm/{name}.py imports the surface: {sorted(upward)}"
        if _top(name) in CORE:
            assert not _imports(name, path) & DRIVERS, f"bayesgmm/{name}.py imports a driver"


def test_no_import_cycle():
    graph: dict[str, set[str]] = {}
    for name, path in _modules().items():
        graph.setdefault(_top(name), set()).update(_imports(name, path) - {_top(name)})
    for a, b in KNOWN_EDGES:
        graph.get(a, set()).discard(b)
    state: dict[str, int] = {}

    def visit(node, trail):
        if state.get(node) == 1:
            pytest.fail(f"import cycle: {' -> '.join(trail + [node])}")
        if state.get(node) == 2:
            return
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, trail + [node])
        state[node] = 2

    for node in sorted(graph):
        visit(node, [])


def test_no_module_over_600_lines():
    for name, path in _modules().items():
        if name in TOO_LONG_FOR_NOW:
            continue
        n = len(path.read_text().splitlines())
        assert n <= MAX_LINES, f"bayesgmm/{name}.py has {n} lines (at most {MAX_LINES})"


# (importer, module) pairs still to be given public names.
KNOWN_PRIVATE_IMPORTS = {("predictive", "priors")}


def test_no_module_imports_another_modules_private_names():
    """Code shared between modules has a public name (``from .init import _x`` hides a shared
    helper as if it were private to ``init``)."""
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if (name, node.__dict__.get("module")) in KNOWN_PRIVATE_IMPORTS:
                continue
            if isinstance(node, ast.ImportFrom) and node.level >= 1 and node.module:
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"bayesgmm/{name}.py imports {private} from .{node.module}"
