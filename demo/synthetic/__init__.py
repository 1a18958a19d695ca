"""Demo data generator: a seeded, local static STAC catalog of one Tien Shan valley, and its truth.

The catalog holds Sentinel-2 L2A, Sentinel-1 GRD and a GLO-30-like DEM of a valley with glacial
lakes; the truth is what the pipeline is scored against (``demo.score``).
"""

from __future__ import annotations

from demo.synthetic.catalog import DemoCatalog, generate_demo_catalog, refresh_demo_catalog
from demo.synthetic.truth import load_truth

__all__ = ["DemoCatalog", "generate_demo_catalog", "load_truth", "refresh_demo_catalog"]
