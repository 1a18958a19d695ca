"""A self-contained interactive HTML map of lakes: one file, no network (no CDN, no tiles), any browser.

The page is static markup, a style sheet and a script (:mod:`flows.map_script`, vanilla JS, no
library) and the map's data as JSON in a ``<script type="application/json">`` element:

* geometries projected to a UTM CRS (metres; the caller's ``epsg``), simplified with a tolerance of
  half a screen pixel at the deepest zoom of a 1000 px wide view (:func:`tolerance_m`: between 0.5
  and 5 m, half the 10 m grid's pixel at most), rounded to whole metres east / north of an origin
  and delta-encoded (each ring: first point, then steps), which keeps the file small;
* per lake: its id, colour class (:class:`flows.map_style.Legend`), the values of every
  non-geometry column of its row (names once, in ``columns``: attributes added to the export later
  show without a change here; floats to 7 significant digits, times ISO 8601) and its area series
  (``[sensing time ISO 8601 UTC, water seen, area m² to 0.1 or null]``);
* the AOI outlines, the legend and the title.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from db.map_layers import SeriesPoint
from flows.map_script import SCRIPT, STYLE
from flows.map_style import Legend

__all__ = ["MAX_ZOOM", "VIEW_PX", "encode_rings", "map_data", "map_html", "tolerance_m"]

VIEW_PX = 1000
"""Nominal width of the map view in screen pixels (for the simplification tolerance)."""
MAX_ZOOM = 64
"""Deepest zoom of the view, × the whole-map view (the script's ``MAX_ZOOM``)."""


def tolerance_m(width_m: float) -> float:
    """Simplification tolerance (m) of a map ``width_m`` wide: half a pixel at :data:`MAX_ZOOM`, in [0.5, 5]."""
    return min(max(width_m / (VIEW_PX * MAX_ZOOM) / 2.0, 0.5), 5.0)


def encode_rings(geometry: BaseGeometry, origin: tuple[float, float]) -> list[list[int]]:
    """The rings (exteriors and holes) of a (multi)polygon in metres, rounded and delta-encoded.

    Each ring: ``[x0, y0, dx1, dy1, …]`` in whole metres, the first point relative to ``origin``
    (same CRS), without the closing point and without repeats left by the rounding. A ring that
    rounds to one point stays (as that point), so every lake keeps a drawable path.
    """
    polygons: Sequence[Polygon]
    if isinstance(geometry, MultiPolygon):
        polygons = list(geometry.geoms)
    elif isinstance(geometry, Polygon):
        polygons = [geometry]
    else:
        raise ValueError(f"not a polygon: {geometry.geom_type}")
    rings: list[list[int]] = []
    for polygon in polygons:
        for ring in (polygon.exterior, *polygon.interiors):
            xy = np.asarray(ring.coords)[:-1, :2] - np.asarray(origin)
            if not len(xy):
                continue
            coords = np.round(xy).astype(np.int64)
            keep = np.ones(len(coords), dtype=bool)
            keep[1:] = np.any(np.diff(coords, axis=0) != 0, axis=1)
            coords = coords[keep]
            steps = np.vstack([coords[:1], np.diff(coords, axis=0)])
            rings.append([int(v) for v in steps.ravel()])
    return rings


def _json_value(value: Any) -> Any:
    """A cell as JSON: times as ISO 8601, missing values as null, numpy scalars as Python's."""
    if value is None or (not isinstance(value, str | bytes | list | tuple | dict) and pd.isna(value)):
        return None
    if isinstance(value, datetime | date | pd.Timestamp):
        return value.isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        # 7 significant digits: more than the popup shows (6), a centroid to about a metre.
        return float(f"{value:.7g}") if math.isfinite(value) else None
    if isinstance(value, bool | int | str):
        return value
    return str(value)


def map_data(
    outlines: Sequence[tuple[str, BaseGeometry]],
    lakes: gpd.GeoDataFrame,
    legend: Legend,
    series: Mapping[int, Sequence[SeriesPoint]],
    epsg: int,
    title: str,
) -> dict[str, Any]:
    """The map's JSON document (see the module docstring).

    Args:
        outlines: (AOI name, outline EPSG:4326).
        lakes: one row per lake, column ``lake_id``, geometry in any CRS set on the frame.
        legend: the colouring of ``lakes`` (:func:`flows.map_style.classify`).
        series: lake id → area series (:func:`db.map_layers.area_series`).
        epsg: the UTM CRS to draw in (metres).
        title: shown on the map.
    """
    projected = lakes.to_crs(epsg) if len(lakes) else lakes
    aois = gpd.GeoSeries([g for _, g in outlines], crs=4326).to_crs(epsg)
    parts = [s for s in (projected.geometry, aois) if len(s)]
    if parts:
        bounds = np.array([s.total_bounds for s in parts])
        x0, y0, x1, y1 = bounds[:, 0].min(), bounds[:, 1].min(), bounds[:, 2].max(), bounds[:, 3].max()
    else:
        x0, y0, x1, y1 = 0.0, 0.0, 1000.0, 1000.0
    origin = (float(round((x0 + x1) / 2)), float(round((y0 + y1) / 2)))
    tolerance = tolerance_m(max(x1 - x0, y1 - y0))
    columns = [c for c in lakes.columns if c != lakes.geometry.name]
    records = []
    for i, (row, geometry) in enumerate(zip(lakes[columns].itertuples(index=False), projected.geometry, strict=True)):
        lake_id = int(row[columns.index("lake_id")])
        simple = geometry.simplify(tolerance, preserve_topology=True)
        records.append(
            {
                "id": lake_id,
                "cls": legend.classes[i],
                "rings": encode_rings(simple if not simple.is_empty else geometry, origin),
                "attrs": [_json_value(v) for v in row],
                "series": [
                    [p.sensing_time.isoformat(), p.present, None if p.area_m2 is None else round(p.area_m2, 1)]
                    for p in series.get(lake_id, ())
                ],
            }
        )
    return {
        "title": title,
        "epsg": epsg,
        "origin": list(origin),
        "extent": [round(v) for v in (x0 - origin[0], y0 - origin[1], x1 - origin[0], y1 - origin[1])],
        "tolerance_m": tolerance,
        "columns": columns,
        "legend": {
            "title": legend.title,
            "entries": [{"key": e.key, "label": e.label, "colour": e.colour, "count": e.count} for e in legend.entries],
        },
        "aois": [
            {"name": name, "rings": encode_rings(g.simplify(tolerance, preserve_topology=True), origin)}
            for (name, _), g in zip(outlines, aois, strict=True)
        ],
        "lakes": records,
    }


def map_html(
    outlines: Sequence[tuple[str, BaseGeometry]],
    lakes: gpd.GeoDataFrame,
    legend: Legend,
    series: Mapping[int, Sequence[SeriesPoint]],
    epsg: int,
    title: str,
) -> str:
    """The HTML document (UTF-8 text); arguments as :func:`map_data`."""
    document = json.dumps(map_data(outlines, lakes, legend, series, epsg, title), separators=(",", ":"))
    # Inside <script>, "</script" or "<!--" in a string would end or change the element: JSON
    # spells "<" as "\u003c" just as well, and "<" occurs nowhere else in JSON.
    document = document.replace("<", "\\u003c")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title><link rel='icon' href='data:,'>"
        f"<style>{STYLE}</style></head><body>"
        "<svg id='map' xmlns='http://www.w3.org/2000/svg'></svg>"
        "<div id='title' class='box'></div><div id='legend' class='box'></div>"
        "<div id='scale' class='box'><div class='bar'></div><div></div></div>"
        "<div id='zoom' class='box'><button id='zoom-in' title='zoom in'>+</button>"
        "<button id='zoom-out' title='zoom out'>−</button></div><div id='popup' class='box'></div>"
        f"<script type='application/json' id='map-data'>{document}</script>"
        f"<script>{SCRIPT}</script></body></html>\n"
    )
