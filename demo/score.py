"""Agreement of mapped lakes with a reference (the demo generator's truth), per date (pure).

Definitions (lakes ≥ the minimum mappable area only, visible truth only):
- a truth lake is *found* when a mapped polygon of the same date overlaps it;
- a mapped polygon is *correct* when it overlaps a truth lake of that date;
- recall = found / truth lakes, precision = correct / mapped polygons (pooled over dates);
- area error of a found lake = |mapped area − true area| / true area, where the mapped area
  sums the polygons overlapping it; the median is over all found (lake, date) pairs.
Areas are compared in a metric CRS (the caller passes UTM areas or geometries in UTM).
"""

from __future__ import annotations

import statistics
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date

import geopandas as gpd
from shapely.geometry.base import BaseGeometry
from shapely.strtree import STRtree


@dataclass(frozen=True)
class Outline:
    """One lake outline on one date, in a metric CRS (m)."""

    day: date
    geometry: BaseGeometry
    name: str = ""


@dataclass(frozen=True)
class Agreement:
    """Agreement of mapped lakes with the truth, pooled over dates (see the module docstring)."""

    truth_lakes: int
    mapped_lakes: int
    found: int
    correct: int
    median_area_error: float
    """Relative (0.05 = 5 %); NaN when nothing was found."""

    @property
    def recall(self) -> float:
        """Recall: found / truth lakes, 0–1 (NaN without truth lakes)."""
        return self.found / self.truth_lakes if self.truth_lakes else float("nan")

    @property
    def precision(self) -> float:
        """Precision: correct / mapped lakes, 0–1 (NaN without mapped lakes)."""
        return self.correct / self.mapped_lakes if self.mapped_lakes else float("nan")


def score(truth: Sequence[Outline], mapped: Sequence[Outline]) -> Agreement:
    """Pooled recall, precision and median relative area error over all dates."""
    days = sorted({o.day for o in truth} | {o.day for o in mapped})
    found = correct = 0
    errors: list[float] = []
    for day in days:
        t = [o.geometry for o in truth if o.day == day]
        m = [o.geometry for o in mapped if o.day == day]
        hit_mapped: set[int] = set()
        tree = STRtree(m) if m else None
        for geom in t:
            idx = [] if tree is None else [int(i) for i in tree.query(geom, predicate="intersects")]
            overlapping = [i for i in idx if m[i].intersection(geom).area > 0]
            if overlapping:
                found += 1
                hit_mapped.update(overlapping)
                mapped_area = sum(m[i].area for i in overlapping)
                errors.append(abs(mapped_area - geom.area) / geom.area)
        correct += len(hit_mapped)
    return Agreement(
        truth_lakes=len(truth),
        mapped_lakes=len(mapped),
        found=found,
        correct=correct,
        median_area_error=statistics.median(errors) if errors else float("nan"),
    )


def score_frames(
    truth: gpd.GeoDataFrame,
    mapped: gpd.GeoDataFrame,
    days: Collection[date],
    epsg: int,
    min_area_m2: float,
) -> Agreement:
    """Score GeoDataFrames: truth (``date``, ``visible``, geometry) vs mapped (``sensing_time``, geometry).

    Only ``days`` (the dates of processed scenes) count; truth lakes hidden by cloud or under ``min_area_m2``
    are left out. Both are projected to ``epsg`` (metres) first.
    """
    t = truth.to_crs(epsg)
    t = t[t["visible"] & (t.geometry.area >= min_area_m2)]
    m = mapped.to_crs(epsg)
    return score(
        [Outline(d, g) for d, g in zip(t["date"], t.geometry, strict=True) if d in days],
        [Outline(s.date(), g) for s, g in zip(m["sensing_time"], m.geometry, strict=True)],
    )
