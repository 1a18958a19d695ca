"""Scenes for inventory tests: lakes drawn in UTM 45N metres around a point in the Khumbu (EPSG:32645).

They are handed to the merge in that CRS, with its EPSG in the record, like the pipeline does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import shapely
from pyproj import Transformer
from shapely import affinity
from shapely.geometry import MultiPolygon, Point, box
from shapely.geometry.base import BaseGeometry

from db.records import ObservedLake, SceneResult

UTM = 32645
X0, Y0 = 470_000.0, 3_090_000.0
T0 = datetime(2023, 7, 1, 4, 55, tzinfo=UTC)
_to_lonlat = Transformer.from_crs(UTM, 4326, always_xy=True)
_to_utm = Transformer.from_crs(4326, UTM, always_xy=True)


def lonlat(geom: BaseGeometry) -> BaseGeometry:
    """UTM 45N metres → EPSG:4326 lon/lat."""
    return shapely.transform(geom, lambda c: np.column_stack(_to_lonlat.transform(c[:, 0], c[:, 1])))


def utm(geom: BaseGeometry) -> BaseGeometry:
    """EPSG:4326 lon/lat → UTM 45N metres."""
    return shapely.transform(geom, lambda c: np.column_stack(_to_utm.transform(c[:, 0], c[:, 1])))


def observed(outline_utm: BaseGeometry) -> ObservedLake:
    """An observed lake from an outline in UTM metres (area and perimeter measured there)."""
    c = lonlat(outline_utm).centroid
    outline = MultiPolygon([outline_utm])
    return ObservedLake(outline, outline_utm.area, outline_utm.length, c.x, c.y, 5000.0, 0.9, utm_epsg=UTM)


def ellipse(dx: float, dy: float, a: float, b: float, angle: float = 0.0) -> BaseGeometry:
    """Ellipse outline (UTM metres) centred (dx, dy) from the scenario origin, semi-axes a, b."""
    circle = Point(X0 + dx, Y0 + dy).buffer(1.0, quad_segs=16)
    return affinity.rotate(affinity.scale(circle, a, b), angle)


def disc(dx: float, dy: float, r: float) -> ObservedLake:
    return observed(ellipse(dx, dy, r, r))


def footprint(x0: float = -5_000, y0: float = -5_000, x1: float = 5_000, y1: float = 5_000) -> MultiPolygon:
    """A valid footprint: box in metres around the scenario origin, EPSG:4326."""
    return MultiPolygon([lonlat(box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1))])


def scene(
    key: str,
    days: float,
    lakes: Sequence[ObservedLake],
    *,
    aoi: str,
    valid: MultiPolygon | None = None,
) -> SceneResult:
    """A scene at T0 + ``days`` seeing ``valid`` (EPSG:4326; handed over in UTM, as the pipeline
    does); its product id depends on the date only (not on key or AOI).
    """
    return SceneResult(
        scene_key=key,
        aoi_name=aoi,
        sensing_time=T0 + timedelta(days=days),
        s2_product_id=f"S2A_MSIL2A_{days:g}",
        s1_product_id=None,
        dem_id="COP-DEM",
        model_version="test-model",
        params_hash="p0",
        valid_footprint=utm(footprint() if valid is None else valid),
        cloud_fraction=0.1,
        valid_fraction=0.9,
        lakes=tuple(lakes),
        inputs={"s2": f"local:{days:g}"},
        utm_epsg=UTM,
    )


def scenario(aoi: str, prefix: str = "s") -> list[SceneResult]:
    """Seven scenes on distinct dates, in sensing order: growth, a drain and refill, a lake born
    later, one lake hidden by cloud once, boundary noise. Keys ``{prefix}0`` … ``{prefix}6``.
    """
    scene_box = box(X0 - 5_000, Y0 - 5_000, X0 + 5_000, Y0 + 5_000)
    cloud_over_e = MultiPolygon([lonlat(scene_box.difference(box(X0 - 2_600, Y0 - 2_600, X0 - 1_400, Y0 - 1_400)))])
    a = (200, 230, 260, 290, 320, 350, 380)  # grows every time
    b = (150, 151, None, None, 140, 141, 142)  # drains (None = seen dry), refills
    d = (None, None, 100, 101, 102, 160, 161)  # born in scene 2, grows in scene 5
    days = (0, 15, 30, 45, 60, 80, 100)
    scenes = []
    for i, t in enumerate(days):
        # Site C moves by a few metres (boundary noise): observations, but never a new version.
        lakes = [disc(0, 0, a[i]), disc(-2_000 + (i % 2) * 3, 1_000 - (i % 3) * 2, 180)]
        if b[i] is not None:
            lakes.append(disc(2_000, 0, b[i]))
        if d[i] is not None:
            lakes.append(disc(0, 2_500, d[i]))
        if i != 3:  # hidden by cloud in scene 3 (no row there), otherwise seen
            lakes.append(disc(-2_000, -2_000, 120))
        scenes.append(scene(f"{prefix}{i}", t, lakes, aoi=aoi, valid=cloud_over_e if i == 3 else None))
    return scenes


EAST_EDGE = -1_000.0
"""West edge of :func:`overlapping`'s AOI, metres east of the scenario origin."""


def east_footprint() -> MultiPolygon:
    """Outline (EPSG:4326) of the AOI of :func:`overlapping`: the east part of the scenario's ground."""
    return footprint(x0=EAST_EDGE)


def overlapping(aoi: str, prefix: str = "e") -> list[SceneResult]:
    """The :func:`scenario`'s acquisitions processed for a second AOI that overlaps it (the east part).

    Same dates and products, keys ``{prefix}0`` …; each scene sees only the east part (its valid
    footprint clipped to :func:`east_footprint`) and the lakes inside it. Three of the scenario's
    five sites lie there, so both AOIs find and update those lakes.
    """
    east = utm(east_footprint())
    out = []
    for s in scenario(aoi, prefix):
        valid = s.valid_footprint.intersection(east) if s.valid_footprint is not None else None
        lakes = tuple(o for o in s.lakes if east.contains(o.geometry))
        clipped = MultiPolygon([valid]) if valid is not None and valid.geom_type == "Polygon" else valid
        out.append(replace(s, lakes=lakes, valid_footprint=clipped))
    return out
