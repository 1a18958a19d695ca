"""Demo data generator: a seeded, local static STAC catalog (S2 L2A, S1 GRD, GLO-30 DEM) of one
Tien Shan valley with glacial lakes, and the truth the pipeline is scored against."""

from __future__ import annotations

from tasks.synthetic.catalog import DemoCatalog, generate_demo_catalog, generate_demo_catalog_task
from tasks.synthetic.truth import load_truth

__all__ = ["DemoCatalog", "generate_demo_catalog", "generate_demo_catalog_task", "load_truth"]
