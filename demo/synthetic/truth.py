"""Truth of the demo scene: lake outlines per date, glacier outlines, and reading them back."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from numpy.typing import NDArray
from pyproj import Transformer
from rasterio.features import shapes
from shapely.geometry import mapping, shape
from shapely.validation import make_valid

from demo.synthetic.lakes import MIN_MAPPABLE_M2, Lake
from demo.synthetic.terrain import UTM_EPSG, SceneGrid

TRUTH_COLUMNS = ["lake", "date", "area_m2", "visible", "min_mappable", "level_m", "glacier_contact"]


def to_wgs84(geom: Any) -> Any:
    """Reproject a shapely geometry from EPSG:32643 to EPSG:4326 (lon, lat), made valid."""
    tr = Transformer.from_crs(UTM_EPSG, 4326, always_xy=True)
    return make_valid(shapely.transform(geom, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1]))))


def lake_features(
    lakes: tuple[Lake, ...],
    index: int,
    day: date,
    masked: NDArray[np.bool_],
    water: dict[str, NDArray[np.bool_]],
    levels: dict[str, float],
) -> list[dict[str, Any]]:
    """GeoJSON features (EPSG:4326) of the lakes holding water on date ``index``.

    Args:
        lakes: The valley's lakes.
        index: Position of the date in the schedule (selects each lake's outline).
        day: The date (UTC), recorded in each feature.
        masked: Cloud / cloud-shadow / cirrus pixels of the date (working grid, 10 m).
        water: Each lake's water pixels on the date (working grid).
        levels: Lake surface elevation, metres.
    """
    features = []
    for lake in lakes:
        outline = lake.outlines[index]
        if outline is None:
            continue
        area = round(float(outline.area), 2)
        features.append(
            {
                "type": "Feature",
                "properties": {
                    "lake": lake.name,
                    "date": day.isoformat(),
                    "area_m2": area,
                    "visible": not bool(masked[water[lake.name]].any()),
                    "min_mappable": area >= MIN_MAPPABLE_M2,
                    "level_m": levels[lake.name],
                    "glacier_contact": lake.spec.glacier_contact,
                },
                "geometry": mapping(to_wgs84(outline)),
            }
        )
    return features


def glacier_features(grid: SceneGrid, glacier: NDArray[np.bool_]) -> list[dict[str, Any]]:
    """RGI-like glacier outlines (EPSG:4326) of the glacier mask, clipped to the scene."""
    m, n = grid.margin_px, grid.size_px
    cut = glacier[m : m + n, m : m + n].astype(np.uint8)
    parts = [shape(g) for g, v in shapes(cut, mask=cut.astype(bool), transform=grid.transform(grid.res)) if v == 1]
    features = []
    for k, part in enumerate(sorted(parts, key=lambda p: -p.area)):
        if part.area < 1e5:  # RGI's 0.01 km² floor would keep more; the demo needs only the tongue
            continue
        outline = make_valid(part.buffer(10.0).buffer(-10.0).simplify(8.0))
        features.append(
            {
                "type": "Feature",
                "properties": {"glac_id": f"DEMO-{k + 1:03d}", "area_m2": round(float(outline.area), 2)},
                "geometry": mapping(to_wgs84(outline)),
            }
        )
    return features


def write_geojson(path: Path, features: list[dict[str, Any]]) -> None:
    """A FeatureCollection (EPSG:4326), deterministic text."""
    write_json(path, {"type": "FeatureCollection", "features": features})


def write_json(path: Path, obj: Any) -> None:
    """Pretty JSON with a trailing newline (deterministic for the same object)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1) + "\n")


def load_truth(truth_path: Path) -> gpd.GeoDataFrame:
    """Truth lakes as a GeoDataFrame in EPSG:4326, one row per lake per S2 date with water.

    Columns: lake (name), date (``datetime.date``), area_m2 (m², UTM), visible (False under cloud),
    min_mappable (area_m2 >= 5000), level_m (lake surface elevation, m), glacier_contact (True for the
    lake in contact with the glacier outline of ``glaciers.geojson``), geometry (Polygon).
    """
    raw = json.loads(Path(truth_path).read_text())
    rows = [dict(f["properties"]) for f in raw["features"]]
    geoms = [shape(f["geometry"]) for f in raw["features"]]
    frame = gpd.GeoDataFrame(pd.DataFrame(rows, columns=TRUTH_COLUMNS), geometry=geoms, crs="EPSG:4326")
    frame["date"] = [date.fromisoformat(v) for v in frame["date"]]
    frame["visible"] = frame["visible"].astype(bool)
    frame["min_mappable"] = frame["min_mappable"].astype(bool)
    frame["glacier_contact"] = frame["glacier_contact"].fillna(False).astype(bool)  # older truth files: none
    return frame
