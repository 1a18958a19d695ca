"""The Prefect task page (``flows/tasks.py``), checked on the source (no imports executed).

Every ``@task`` wrapper is on that one page, each decorator carrying its retry/caching policy
with the reason beside it; ``@task`` and ``@flow`` appear nowhere outside ``flows/``. (The layer
rules, Prefect-free ``tasks``/``demo`` included, are ``test_architecture.py``'s.)
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("core", "db", "models", "tasks", "demo", "flows", "deploy", "benchmarks")


def _modules(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if ".venv" not in p.parts)


def _decorators(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    """Names of ``fn``'s decorators: ``task`` for ``@task``, ``@task(...)`` and ``@prefect.task``."""
    names: set[str] = set()
    for dec in fn.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        if isinstance(target, ast.Name):
            names.add(target.id)
        elif isinstance(target, ast.Attribute):
            names.add(target.attr)
    return names


def _decorator_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names |= _decorators(node)
    return names


def test_prefect_tasks_and_flows_live_under_flows() -> None:
    """@task only on flows/tasks.py (the one page of wrappers and policies); @task/@flow only under flows/."""
    for package in PRODUCT:
        for path in _modules(package):
            decorators = _decorator_names(path) & {"task", "flow"}
            rel = path.relative_to(ROOT).as_posix()
            if "task" in decorators:
                assert rel == "flows/tasks.py", f"{rel}: @task wrappers belong on flows/tasks.py"
            if "flow" in decorators:
                assert rel.startswith("flows/"), f"{rel}: @flow belongs under flows/"
    assert "task" in _decorator_names(ROOT / "flows" / "tasks.py")


def test_every_task_states_its_caching_and_retry_policy() -> None:
    """Each @task on the page carries a cache policy or a comment beside its decorator saying why not."""
    source = (ROOT / "flows" / "tasks.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    lines = source.splitlines()
    tasks = [n for n in tree.body if isinstance(n, ast.FunctionDef) and "task" in _decorators(n)]
    assert len(tasks) >= 6
    for fn in tasks:
        dec = next(d for d in fn.decorator_list if isinstance(d, ast.Call) and getattr(d.func, "id", "") == "task")
        text = "\n".join(lines[dec.lineno - 1 : dec.end_lineno])
        assert "name=" in text, fn.name
        assert "#" in text, f"{fn.name}: the decorator states its policy's reason in a comment"
