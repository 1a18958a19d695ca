"""The paired scenes of a demo catalog on its AOI's grid, for preparing its stacks one by one.

Benchmarks and tests that measure a stage on demo scenes (not a whole run) start from here: every
acquisition of the catalog, paired as the pipeline pairs them (:func:`tasks.pairing.pair_scenes`)
over the catalog's AOI, and that AOI's 10 m grid in the UTM zone of its centroid
(:func:`tasks.grid.grid_for_geometry`, EPSG:326xx/327xx).
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from shapely.geometry import shape

from tasks.grid import GridSpec, grid_for_geometry, utm_epsg_for
from tasks.pairing import ScenePlan, pair_scenes
from tasks.sources import LocalStacSource

__all__ = ["KINDS", "demo_scene_plans"]

KINDS = ("S2L2A", "S1GRD", "S1RTC", "DEM")
"""Every kind a demo catalog holds (S1RTC: none, so GRD is paired)."""


def demo_scene_plans(root: Path, kinds: tuple[str, ...] = KINDS) -> tuple[list[ScenePlan], GridSpec]:
    """(the paired scene plans, the AOI's grid) of the demo catalog written under ``root``.

    The search window is one day wider than the catalog's acquisitions on each side.
    """
    features = json.loads((root / "aoi.geojson").read_text(encoding="utf-8"))["features"]
    aoi = shape(features[0]["geometry"])
    grid = grid_for_geometry(aoi, utm_epsg_for(aoi.centroid.x, aoi.centroid.y))
    source = LocalStacSource(root)
    found = source.acquisitions(kinds)
    start = min(a.sensing_time for a in found).date() - timedelta(days=1)
    end = max(a.sensing_time for a in found).date() + timedelta(days=1)
    plans, _ = pair_scenes(source.search(aoi, start, end, kinds), aoi)
    return plans, grid
