"""Figures measured by fault and scale tests, written to ``tests/_reports/<module>.json``."""

from __future__ import annotations

import json
from pathlib import Path

REPORTS = Path(__file__).resolve().parents[1] / "_reports"


def write_report(name: str, figures: dict[str, object]) -> Path:
    """Merge ``figures`` into ``tests/_reports/<name>.json`` (one file per test module)."""
    REPORTS.mkdir(parents=True, exist_ok=True)
    path = REPORTS / f"{name}.json"
    try:
        current = json.loads(path.read_text())
    except (OSError, ValueError):
        current = {}
    current.update(figures)
    path.write_text(json.dumps(current, indent=2, sort_keys=True, default=str) + "\n")
    return path
