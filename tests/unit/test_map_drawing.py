"""The map's pure parts: colour classes, growth figures, ring encoding, tolerances, scale bars, the PNG."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import geopandas as gpd
import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import MultiPolygon, Polygon, box

from db.map_layers import SeriesPoint
from flows.map_html import encode_rings, map_html, tolerance_m
from flows.map_png import map_png, scale_bar_length_m
from flows.map_style import CHANGE_COLOURS, GROWTH_COLUMN, classify, growth_from_series

T = datetime(2024, 7, 1, tzinfo=UTC)


def _decode(ring: list[int], origin: tuple[float, float]) -> np.ndarray:
    steps = np.asarray(ring).reshape(-1, 2)
    return np.cumsum(steps, axis=0) + np.asarray(origin)


def test_rings_round_trip_to_whole_metres_with_holes() -> None:
    shell = [(500_010.4, 3_000_000.6), (500_110.2, 3_000_000.1), (500_110.0, 3_000_090.0), (500_010.0, 3_000_090.0)]
    hole = [(500_040.0, 3_000_030.0), (500_060.0, 3_000_030.0), (500_060.0, 3_000_050.0)]
    rings = encode_rings(MultiPolygon([Polygon(shell, [hole])]), (500_000.0, 3_000_000.0))
    assert len(rings) == 2
    back = _decode(rings[0], (500_000.0, 3_000_000.0))
    assert np.abs(back - np.asarray(shell)).max() <= 0.5
    assert _decode(rings[1], (500_000.0, 3_000_000.0)).tolist() == [list(p) for p in hole]


def test_a_ring_that_rounds_to_one_point_is_kept() -> None:
    rings = encode_rings(box(0.1, 0.1, 0.3, 0.3), (0.0, 0.0))
    assert rings == [[0, 0]]


def test_tolerance_is_half_a_pixel_at_the_deepest_zoom_within_bounds() -> None:
    assert tolerance_m(10_000) == 0.5
    assert tolerance_m(500_000) == pytest.approx(500_000 / 64_000 / 2)
    assert tolerance_m(5_000_000) == 5.0


@pytest.mark.parametrize(("width", "bar"), [(10_000, 2_000), (9_000, 1_000), (400_000, 50_000), (7, 1)])
def test_scale_bar_is_a_round_length_near_a_fifth(width: float, bar: float) -> None:
    assert scale_bar_length_m(width) == bar


def test_status_classes_follow_status_then_change_kind() -> None:
    lakes = pd.DataFrame(
        {
            "lake_id": [1, 2, 3, 4],
            "status": ["active", "disappeared", "superseded", "active"],
            "change_kind": ["grown", "disappeared", None, None],
        }
    )
    legend = classify(lakes, "status")
    assert legend.classes == ("grown", "disappeared", "superseded", "unknown")
    assert [(e.key, e.count) for e in legend.entries] == [
        ("grown", 1),
        ("disappeared", 1),
        ("superseded", 1),
        ("unknown", 1),
    ]
    assert legend.colour_of("grown") == CHANGE_COLOURS["grown"]


def test_growth_from_the_series_counts_a_dry_end_as_zero() -> None:
    wet = [SeriesPoint(T, True, 100.0), SeriesPoint(T, True, 150.0)]
    dry = [SeriesPoint(T, False, None), SeriesPoint(T, True, 100.0), SeriesPoint(T, False, None)]
    assert growth_from_series(wet) == pytest.approx(50.0)
    assert growth_from_series(dry) == pytest.approx(-100.0)
    assert growth_from_series([SeriesPoint(T, False, None)]) is None


def test_growth_prefers_the_export_column_and_says_so() -> None:
    series = {1: [SeriesPoint(T, True, 100.0), SeriesPoint(T, True, 200.0)]}
    from_series = classify(pd.DataFrame({"lake_id": [1, 2], "change_kind": ["grown", "new"]}), "growth", series)
    assert from_series.classes == ("≥ +20 %", "unknown") and "lake_area_timeseries" in from_series.title
    kept = classify(pd.DataFrame({"lake_id": [1, 2], "change_kind": ["grown", "new"]}), "growth", series, {1: -30.0})
    assert kept.classes == ("≤ −20 %", "unknown") and "lake_growth" in kept.title
    with_column = pd.DataFrame({"lake_id": [1, 2], "change_kind": ["grown", "new"], GROWTH_COLUMN: [-10.0, None]})
    legend = classify(with_column, "growth", series)
    assert legend.classes == ("−20 … −5 %", "unknown") and "previous version" in legend.title


def test_html_carries_every_column_and_escapes_script_ends() -> None:
    lakes = gpd.GeoDataFrame(
        {"lake_id": [7], "status": ["active"], "change_kind": ["new"], "note": ["</script><b>x"], "when": [T]},
        geometry=[box(86.70, 27.93, 86.701, 27.931)],
        crs=4326,
    )
    page = map_html([("a</script>", box(86.69, 27.92, 86.71, 27.94))], lakes, classify(lakes, "status"), {}, 32645, "t")
    assert page.count("</script>") == 2  # the data element's and the code's own, nothing from the data
    data = json.loads(page.split("id='map-data'>")[1].split("</script>")[0])
    assert data["columns"] == ["lake_id", "status", "change_kind", "note", "when"]
    assert data["lakes"][0]["attrs"] == [7, "active", "new", "</script><b>x", T.isoformat()]
    assert data["aois"][0]["name"] == "a</script>"


def test_the_png_has_a_legend_colour_and_a_black_scale_bar() -> None:
    lakes = gpd.GeoDataFrame(
        {"lake_id": [1], "status": ["superseded"], "change_kind": [None]},
        geometry=[box(86.70, 27.93, 86.705, 27.935)],
        crs=4326,
    )
    legend = classify(lakes, "status")
    png = map_png([box(86.69, 27.92, 86.71, 27.94)], lakes, legend, 32645, "t")
    rgb = (matplotlib.image.imread(io.BytesIO(png), format="png")[..., :3] * 255).round()
    grey = np.array([0x7F, 0x7F, 0x7F])
    assert (np.abs(rgb - grey).sum(axis=2) < 6).sum() > 100
    # The bar: at least 4 rows running black over 20 px (outline and axes frame lines are thinner).
    long_rows = ((rgb.sum(axis=2) < 30).sum(axis=1) > 20).astype(int)
    assert np.convolve(long_rows, np.ones(4), mode="valid").max() == 4, "no scale bar"


def test_an_empty_map_is_still_a_page() -> None:
    lakes = gpd.GeoDataFrame({"lake_id": [], "status": [], "change_kind": []}, geometry=[], crs=4326)
    page = map_html([("a", box(86.69, 27.92, 86.71, 27.94))], lakes, classify(lakes, "status"), {}, 32645, "t")
    data = json.loads(page.split("id='map-data'>")[1].split("</script>")[0])
    assert data["lakes"] == [] and data["legend"]["entries"] == [] and len(data["aois"]) == 1
