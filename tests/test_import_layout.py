"""The package's import graph keeps the shape issue 15 asked for: no import circles anywhere
under ``src/offpay`` (imports under ``TYPE_CHECKING`` and inside functions included), and no
module imports another module's private (underscore) names."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "offpay"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def resolve(importer: str, node: ast.ImportFrom) -> str:
    """The absolute module an ``from … import …`` statement names."""
    if node.level == 0:
        return node.module or ""
    is_package = MODULES[importer].name == "__init__.py"
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


@cache
def imports_of(name: str) -> tuple[tuple[str, str], ...]:
    """(module imported, name imported or "") for every import statement of module ``name``
    that reaches into this package."""
    found: list[tuple[str, str]] = []
    for node in ast.walk(ast.parse(MODULES[name].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, "") for a in node.names if a.name.startswith("offpay")]
        elif isinstance(node, ast.ImportFrom):
            target = resolve(name, node)
            if not target.startswith("offpay"):
                continue
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                found.append((submodule, "") if submodule in MODULES else (target, alias.name))
    return tuple(found)


@cache
def graph() -> dict[str, set[str]]:
    return {
        name: {target for target, _ in imports_of(name) if target in MODULES and target != name}
        for name in MODULES
    }


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_detector_finds_a_circle() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles() -> None:
    assert circles(graph()) == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_private_names_imported(name: str) -> None:
    private = [
        f"{target}.{imported}"
        for target, imported in imports_of(name)
        if imported.startswith("_") and not imported.startswith("__")
    ]
    assert private == []


def test_the_bank_desks_do_not_import_the_engine() -> None:
    """The desks name the intermediary by ``offpay.bank.desks.Bank``; only the modules above
    the engine (its callers) import it."""
    below = [
        name
        for name in MODULES
        if name.startswith("offpay.bank.")
        and name not in ("offpay.bank.engine", "offpay.bank.books")
        and "offpay.bank.engine" in graph()[name]
    ]
    assert below == []
