"""Lake identity (pure): which existing lake each of a scene's polygons continues.

:func:`match_polygons` matches a scene's polygons to existing lakes by overlap, every area
measured in one metric (UTM) CRS; :func:`match_outlines` gives the same plan from EPSG:4326
outlines, projecting and intersecting only the pairs whose overlap is not evident (identical or
covering outlines, or disjoint ones), and takes the polygons' metric outlines where the caller
has them (the scene's own UTM outlines), so that only the lakes are projected.
:func:`absent_lakes` finds the lakes a valid footprint saw dry.

Areas in m²; a polygon continues a lake when intersection / area of the smaller ≥ the overlap
threshold (:attr:`db.records.MergeConfig.match_overlap`). Imports :mod:`db.geometry` only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from db.geometry import project


@dataclass(frozen=True)
class MatchPlan:
    """How one scene's polygons relate to existing lakes (indices into the polygon list)."""

    continues: Mapping[int, int]
    """polygon index → lake id it continues."""
    new: tuple[int, ...]
    """polygon indices that become new lakes (including split children)."""
    merges: tuple[tuple[int, int], ...]
    """(absorbed lake id, continuing lake id)."""
    splits: tuple[tuple[int, int], ...]
    """(parent lake id, polygon index of the new child lake)."""

    @property
    def matched_lakes(self) -> set[int]:
        """Lakes that this scene saw (continued or absorbed)."""
        return set(self.continues.values()) | {absorbed for absorbed, _ in self.merges}


def match_polygons(
    polygons: Sequence[BaseGeometry], lakes: Mapping[int, BaseGeometry], min_overlap: float
) -> MatchPlan:
    """Decide identity by overlap: intersection / area of the smaller ≥ ``min_overlap``.

    Geometries must share one metric CRS. Each matched lake picks its heir, the largest polygon
    matching it (ties: larger intersection, lower index). A polygon heir of several lakes continues
    the largest of them and the others merge into it; a polygon matching lakes but heir of none is
    split off the lake it overlaps most and becomes a new lake.
    """
    lake_ids = list(lakes)
    lake_geoms = np.asarray([lakes[i] for i in lake_ids], dtype=object)
    poly_geoms = np.asarray(polygons, dtype=object)
    edges: dict[int, list[tuple[int, float]]] = {}  # polygon → [(lake position, intersection m²)]
    if len(lake_ids) and len(poly_geoms):
        pi, li = shapely.STRtree(lake_geoms).query(poly_geoms, predicate="intersects")
        inter, ok = _overlaps(poly_geoms[pi], lake_geoms[li], min_overlap)
        for p, lpos, a in zip(pi[ok], li[ok], inter[ok], strict=True):
            edges.setdefault(int(p), []).append((int(lpos), float(a)))
    poly_area = shapely.area(poly_geoms) if len(poly_geoms) else np.zeros(0)
    lake_area = shapely.area(lake_geoms) if len(lake_ids) else np.zeros(0)
    return _plan(len(poly_geoms), lake_ids, edges, poly_area, lake_area)


def _overlaps(polygons: np.ndarray, lakes: np.ndarray, min_overlap: float) -> tuple[np.ndarray, np.ndarray]:
    """Intersection areas of the pairs and whether each pair matches (metric CRS)."""
    inter = shapely.area(shapely.intersection(polygons, lakes))
    smaller = np.minimum(shapely.area(polygons), shapely.area(lakes))
    return inter, (smaller > 0) & (inter >= min_overlap * smaller)


def _plan(
    n_polygons: int,
    lake_ids: Sequence[int],
    edges: Mapping[int, list[tuple[int, float]]],
    poly_area: np.ndarray,
    lake_area: np.ndarray,
) -> MatchPlan:
    """The plan from the matching pairs (polygon → [(lake position, intersection m²)]) and areas (m²).

    A polygon and a lake matching only each other simply continue; areas and intersections rank
    the candidates around a polygon or lake with several matches, and are read only there.
    """
    lake_degree: dict[int, int] = {}
    for matches in edges.values():
        for lpos, _ in matches:
            lake_degree[lpos] = lake_degree.get(lpos, 0) + 1
    continues: dict[int, int] = {}
    crowded: dict[int, list[tuple[int, float]]] = {}
    for p, matches in edges.items():
        if len(matches) == 1 and lake_degree[matches[0][0]] == 1:
            continues[p] = lake_ids[matches[0][0]]
        else:
            crowded[p] = matches

    heir: dict[int, tuple[float, float, int]] = {}  # lake position → best (area, intersection, -index)
    for p, matches in crowded.items():
        for lpos, a in matches:
            rank = (float(poly_area[p]), a, -p)
            if lpos not in heir or rank > heir[lpos]:
                heir[lpos] = rank
    heirs_of: dict[int, list[int]] = {}
    for lpos, (_, _, neg_p) in heir.items():
        heirs_of.setdefault(-neg_p, []).append(lpos)

    merges: list[tuple[int, int]] = []
    splits: list[tuple[int, int]] = []
    for p in sorted(crowded):
        if p in heirs_of:
            ranked = sorted(heirs_of[p], key=lambda lpos: (-lake_area[lpos], lake_ids[lpos]))
            continues[p] = lake_ids[ranked[0]]
            merges.extend((lake_ids[other], lake_ids[ranked[0]]) for other in ranked[1:])
        else:
            parent = max(crowded[p], key=lambda e: (e[1], -lake_ids[e[0]]))[0]
            splits.append((lake_ids[parent], p))
    new = tuple(p for p in range(n_polygons) if p not in continues)
    return MatchPlan(dict(sorted(continues.items())), new, tuple(merges), tuple(splits))


# Shortcuts of match_outlines, decided in EPSG:4326: identical outlines, or one covering the other,
# overlap fully in UTM too, and outlines that do not touch do not overlap. Only the vertices are
# projected, so an edge bends between the two CRSs by at most L²/8R (0.2 mm for a 100 m edge, 2 cm
# for 1 km): the shortcuts can only differ from measuring in UTM for outlines within that distance
# of each other whose overlap ratio sits on the threshold. Thresholds near 0 or 1 and outlines
# under about a square metre are measured.
_SHORTCUT_OVERLAP = (1e-3, 0.999)
_SHORTCUT_MIN_AREA_DEG2 = 1e-10


def match_outlines(
    polygons: Sequence[BaseGeometry],
    lakes: Mapping[int, BaseGeometry],
    utm_epsg: int,
    min_overlap: float,
    polygons_m: Sequence[BaseGeometry | None] | None = None,
) -> MatchPlan:
    """:func:`match_polygons` for EPSG:4326 outlines, with overlaps measured in ``utm_epsg``.

    Gives the plan of ``match_polygons(project(polygons), project(lakes))`` but projects and
    intersects only where it can change the outcome: a pair of identical outlines, or of one
    covering the other, matches; a pair that does not touch does not; every other pair that the
    bounding boxes propose is measured in metres, and so is every pair around a polygon or lake
    with several matches (their areas rank the candidates).

    ``polygons_m``, index-aligned with ``polygons``, holds the polygons' outlines already in
    ``utm_epsg`` (the scene's own outlines, of which ``polygons`` is the projection); None, or a
    None entry, projects that polygon.
    """
    lake_ids = list(lakes)
    if not lake_ids or not len(polygons):
        return MatchPlan({}, tuple(range(len(polygons))), (), ())
    if not _SHORTCUT_OVERLAP[0] <= min_overlap <= _SHORTCUT_OVERLAP[1]:
        lakes_m = dict(zip(lake_ids, project([lakes[i] for i in lake_ids], utm_epsg), strict=True))
        metric = _Projected(np.asarray(polygons, dtype=object), np.zeros(0, dtype=object), utm_epsg, polygons_m)
        return match_polygons(list(metric.polygons(np.arange(len(polygons)))), lakes_m, min_overlap)
    lake_geoms = np.asarray([lakes[i] for i in lake_ids], dtype=object)
    poly_geoms = np.asarray(polygons, dtype=object)
    pi, li = shapely.STRtree(lake_geoms).query(poly_geoms)  # bounding boxes only
    matched = shapely.equals_exact(poly_geoms[pi], lake_geoms[li], 0.0)
    rest = np.flatnonzero(~matched)
    p_geoms, l_geoms = poly_geoms[pi[rest]], lake_geoms[li[rest]]
    tiny = np.minimum(shapely.area(p_geoms), shapely.area(l_geoms)) < _SHORTCUT_MIN_AREA_DEG2
    cover, touch = np.zeros(len(rest), dtype=bool), np.zeros(len(rest), dtype=bool)
    pb, lb = shapely.bounds(p_geoms), shapely.bounds(l_geoms)
    p_holds_l = (pb[:, :2] <= lb[:, :2]).all(axis=1) & (pb[:, 2:] >= lb[:, 2:]).all(axis=1)
    l_holds_p = (lb[:, :2] <= pb[:, :2]).all(axis=1) & (lb[:, 2:] >= pb[:, 2:]).all(axis=1)
    todo = ~tiny & p_holds_l  # only a box holding the other's box can cover it
    cover[todo] = shapely.covers(p_geoms[todo], l_geoms[todo])  # grown
    todo = ~tiny & ~cover & l_holds_p
    cover[todo] = shapely.covers(l_geoms[todo], p_geoms[todo])  # shrunk
    todo = ~tiny & ~cover
    touch[todo] = shapely.intersects(p_geoms[todo], l_geoms[todo])  # neither: measure
    matched[rest[cover]] = True
    measure = rest[tiny | touch]
    metric = _Projected(poly_geoms, lake_geoms, utm_epsg, polygons_m)
    if len(measure):
        _, matched[measure] = _overlaps(metric.polygons(pi[measure]), metric.lakes(li[measure]), min_overlap)
    pi, li = pi[matched], li[matched]

    # A polygon and a lake matching only each other continue; pairs around a polygon or lake with
    # several matches rank by areas, so those are measured exactly and planned one by one.
    crowded = _repeated(pi, len(poly_geoms))[pi] | _repeated(li, len(lake_ids))[li]
    lake_array = np.asarray(lake_ids, dtype=object)
    continues = dict(zip(pi[~crowded].tolist(), lake_array[li[~crowded]].tolist(), strict=True))
    if not crowded.any():
        new = tuple(np.setdiff1d(np.arange(len(poly_geoms)), pi).tolist())
        return MatchPlan(dict(sorted(continues.items())), new, (), ())
    cp, cl = pi[crowded], li[crowded]
    inter, _ = _overlaps(metric.polygons(cp), metric.lakes(cl), min_overlap)
    poly_area, lake_area = np.zeros(len(poly_geoms)), np.zeros(len(lake_ids))
    poly_area[np.unique(cp)] = shapely.area(metric.polygons(np.unique(cp)))
    lake_area[np.unique(cl)] = shapely.area(metric.lakes(np.unique(cl)))
    edges: dict[int, list[tuple[int, float]]] = {}
    for p, lpos, a in zip(cp.tolist(), cl.tolist(), inter.tolist(), strict=True):
        edges.setdefault(p, []).append((lpos, a))
    crowded_plan = _plan(len(poly_geoms), lake_ids, edges, poly_area, lake_area)
    continues.update(crowded_plan.continues)
    new = tuple(p for p in crowded_plan.new if p not in continues)
    return MatchPlan(dict(sorted(continues.items())), new, crowded_plan.merges, crowded_plan.splits)


def _repeated(index: np.ndarray, size: int) -> np.ndarray:
    """Lookup table over ``range(size)``: which values occur more than once in ``index``."""
    return np.bincount(index, minlength=size) > 1


class _Projected:
    """Lazily projected polygons and lakes (each projected once, on first use).

    Polygons whose metric outline the caller handed over are taken as they are.
    """

    def __init__(
        self,
        polygons: np.ndarray,
        lakes: np.ndarray,
        utm_epsg: int,
        polygons_m: Sequence[BaseGeometry | None] | None = None,
    ) -> None:
        self._src = (polygons, lakes)
        self._out: tuple[dict[int, BaseGeometry], dict[int, BaseGeometry]] = ({}, {})
        if polygons_m is not None:
            self._out[0].update((i, g) for i, g in enumerate(polygons_m) if g is not None)
        self._epsg = utm_epsg

    def _get(self, which: int, index: np.ndarray) -> np.ndarray:
        cache = self._out[which]
        missing = [i for i in np.unique(index).tolist() if i not in cache]
        if missing:
            cache.update(zip(missing, project(list(self._src[which][missing]), self._epsg), strict=True))
        return np.asarray([cache[i] for i in index.tolist()], dtype=object)

    def polygons(self, index: np.ndarray) -> np.ndarray:
        return self._get(0, index)

    def lakes(self, index: np.ndarray) -> np.ndarray:
        return self._get(1, index)


def absent_lakes(lakes: Mapping[int, BaseGeometry], footprint: BaseGeometry, min_cover: float) -> list[int]:
    """Lakes the valid footprint saw dry; every geometry in one metric CRS.

    A lake is seen dry when the footprint covers its outline, or covers at least ``min_cover`` of
    its area *and* none of the footprint's holes reaches into it. ``min_cover`` forgives the edge
    of a scene (pixel boundaries, simplification); a hole is what the scene could not see inside
    its extent (cloud, snow or ice, water below the mapping unit with its one-pixel ring: see
    ``tasks.validity``), and a lake any part of which was hidden that way was not seen dry: water
    may remain there (a hidden lake is never retired).
    """
    if not lakes:
        return []
    ids = np.asarray(list(lakes))
    geoms = np.asarray(list(lakes.values()), dtype=object)
    shapely.prepare(footprint)
    cover = np.where(shapely.covers(footprint, geoms), 1.0, 0.0)
    partial = (cover == 0.0) & shapely.intersects(footprint, geoms)
    if partial.any():
        areas = shapely.area(geoms[partial])
        inside = shapely.area(shapely.intersection(geoms[partial], footprint))
        cover[partial] = np.divide(inside, areas, out=np.zeros_like(inside), where=areas > 0)
        holes = _holes(footprint)
        if holes is not None:
            hidden = np.zeros(len(ids), dtype=bool)
            hidden[partial] = shapely.intersects(holes, geoms[partial]) & ~shapely.touches(holes, geoms[partial])
            cover[hidden] = 0.0
    return [int(i) for i in ids[cover >= min_cover]]


def _holes(footprint: BaseGeometry) -> BaseGeometry | None:
    """The footprint's interior rings as polygons (one geometry, prepared); None without any."""
    parts = shapely.get_parts(footprint)
    rings = [
        r
        for p in parts
        if p.geom_type == "Polygon"
        for r in shapely.get_interior_ring(p, range(shapely.get_num_interior_rings(p)))
    ]
    if not rings:
        return None
    holes = shapely.union_all(shapely.polygons(rings))
    shapely.prepare(holes)
    return holes
