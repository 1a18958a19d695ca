"""Keyword arguments of an ``update_inventory`` run over a generated demo catalog."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from demo.synthetic import DemoCatalog
from flows.aoi import load_aoi


def demo_window(catalog: DemoCatalog, source: str | None = None, model: str = "baseline") -> dict[str, Any]:
    """The catalog's AOI, a window one day wider than its dates, its folder as ``local:`` source (or ``source``)."""
    return {
        "aoi": load_aoi(catalog.aoi_path),
        "start": min(catalog.dates) - timedelta(days=1),
        "end": max(catalog.dates) + timedelta(days=1),
        "source": source or f"local:{catalog.root}",
        "model": model,
    }
