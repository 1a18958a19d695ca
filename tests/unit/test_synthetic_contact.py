"""The demo world's glacier-contact lake: at the snout, touching ``glaciers.geojson``, flagged in the truth.

Every other lake keeps 150 m from the glacier outline; the contact lake replaced the ice under
it, so the outline wraps its shore instead of covering it.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pytest

from demo.synthetic import DemoCatalog, generate_demo_catalog, load_truth


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalog:
    return generate_demo_catalog(tmp_path_factory.mktemp("demo"), size_px=256, seed=0)


def test_one_lake_touches_the_glacier_outline_and_the_truth_says_so(demo: DemoCatalog) -> None:
    truth = load_truth(demo.truth_path).to_crs(32643)
    glaciers = gpd.read_file(demo.root / "glaciers.geojson").to_crs(32643)
    ice = glaciers.geometry.union_all()
    extents = truth.groupby("lake").geometry.agg(lambda g: g.union_all())
    flagged = truth.groupby("lake").glacier_contact.agg(lambda v: bool(v.all()) if v.nunique() == 1 else None)
    info = json.loads(Path(demo.truth_path).with_name("truth.json").read_text())

    assert {k for k, v in flagged.items() if v} == {"contact"} and None not in set(flagged)
    assert [lk["name"] for lk in info["lakes"] if lk["glacier_contact"]] == ["contact"]
    assert extents["contact"].distance(ice) <= 10.0  # one pixel: the lake's shore is the ice edge
    # The ice gave way to the lake: at most a sliver of it lies under the simplified outline.
    assert extents["contact"].intersection(ice).area < 0.1 * extents["contact"].area
    assert all(extents[name].distance(ice) >= 150.0 for name in extents.index if name != "contact")
    assert set(glaciers.columns) >= {"glac_id", "geometry"} and glaciers.crs.to_epsg() == 32643
