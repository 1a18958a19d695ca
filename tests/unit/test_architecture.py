"""The tree's structural rules, checked on the source (no product code is imported or run).

Layers (each package's ``__init__`` docstring says the same): ``flows`` → ``tasks`` → ``models`` /
``db`` → ``core``; ``demo`` sits beside ``flows`` and may use everything below it. An import,
top-level or inside a function, never runs back up a layer and never closes a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("core", "db", "demo", "flows", "models", "tasks")
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "db": {"core"},
    "models": {"core"},
    "tasks": {"core", "db", "models"},
    "demo": {"core", "db", "models", "tasks"},
    "flows": {"core", "db", "models", "tasks", "demo"},
}
"""Which of our packages each package may import (besides itself)."""
MAX_LINES = 500


def _modules() -> Iterator[tuple[str, Path]]:
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            yield name, path


MODULES = dict(_modules())


def _imports(name: str, path: Path) -> set[str]:
    """Our modules that ``name`` imports anywhere in its body (lazy imports included)."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            # The longest prefix that is one of our modules ("from db.merge import x" → db.merge).
            parts = target.split(".")
            for i in range(len(parts), 0, -1):
                candidate = ".".join(parts[:i])
                if candidate in MODULES and candidate != name:
                    found.add(candidate)
                    break
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_imports_follow_the_layers() -> None:
    """No package imports one it may not (e.g. models → tasks, tasks → flows, db → models)."""
    wrong = [
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        for target in targets
        if (a := name.split(".")[0]) != (b := target.split(".")[0]) and b not in ALLOWED[a]
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle() -> None:
    """No cycle among product modules, lazy imports inside functions included.

    A package importing its own submodules (re-exports in ``__init__``) is not a cycle unless a
    submodule imports the package back.
    """
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" → ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)
    assert not cycles, "\n".join(cycles)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_size_and_no_formatter_exceptions(name: str) -> None:
    """Every product module stays readable: at most 500 lines, no per-statement ``fmt: skip`` exceptions.

    ``fmt: off`` / ``fmt: on`` blocks remain allowed around column-aligned data tables (spectra).
    """
    text = MODULES[name].read_text()
    assert text.count("\n") <= MAX_LINES, f"{name}: {text.count(chr(10))} lines"
    assert "# fmt: " + "skip" not in text, name


def test_prefect_decorators_only_under_flows() -> None:
    """``@task`` / ``@flow`` (and any import of prefect) live under flows/ only: stages stay Prefect-free."""
    offenders = []
    for name, path in MODULES.items():
        if name.startswith("flows"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(m == "prefect" or m.startswith("prefect.") for m in mods):
                    offenders.append(f"{name}:{node.lineno}")
    assert not offenders, offenders


def test_demo_world_is_not_under_tasks() -> None:
    """The demo generator and its scoring live in demo/, not among the pipeline stages."""
    assert not (ROOT / "tasks" / "synthetic").exists()
    assert not (ROOT / "tasks" / "score.py").exists()
    assert not any(target.startswith("demo") for name, ts in GRAPH.items() if name.startswith("tasks") for target in ts)


@pytest.mark.parametrize("package", PRODUCT)
def test_each_package_says_what_lives_there_and_what_it_may_import(package: str) -> None:
    """The package docstring names what it may import (kept in step with ``ALLOWED`` by reading it)."""
    doc = ast.get_docstring(ast.parse((ROOT / package / "__init__.py").read_text()))
    assert doc and "import" in doc, f"{package}/__init__.py needs a docstring saying what it may import"
