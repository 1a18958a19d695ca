"""Multi-zone AOIs: an AOI crossing UTM zones is processed per zone part, each lake decided by one part.

Why parts. A scene grid is north-up in one UTM zone (:mod:`tasks.grid`). Far from its central
meridian a zone's projection stretches (scale 1.0010 at 3° off the meridian at the equator, and
more beyond the zone, where it keeps growing with the square of the distance), and the zone a
lake's areas are measured in should be the lake's own: so an AOI crossing a zone seam is cut
into one part per zone, and each part gets its own 10 m grid in its zone. Zones are the standard
6° bands of :func:`db.geometry.utm_epsg_for` (zone 1 starts at 180° W); the Norway and Svalbard
exceptions of MGRS are not applied, as there, so a part's zone is always the plain zone of its
longitudes. Each part takes the hemisphere of its own centroid (326xx north, 327xx south): an AOI
across the equator is not split there, a UTM south grid is the same projection with a false
northing.

One-zone AOIs are unchanged. An AOI within one zone is one part whose grid is exactly the grid of
the whole AOI in the zone of its centroid (:func:`tasks.grid.grid_for_geometry`), it keeps every
lake and its whole footprint, and its scene keys and parameters are those of a one-grid AOI: a
committed one-zone AOI is not reprocessed.

The margin. A lake crossing a seam would be cut in two by grids that end at the seam. Each part's
grid therefore covers the AOI within its zone plus :data:`ZONE_MARGIN_M` (a setting,
``GLACIAL_LAKES_ZONE_MARGIN_M``, bounded by :data:`ZONE_MARGIN_M_BOUND`) of the AOI beyond each
seam, measured in the part's own UTM metres. A lake reaching less than the margin across the seam
is seen whole by both parts; the outer edges of the AOI are not extended (as for a one-zone AOI).

Exactly one part per lake. The parts' grids overlap by the margins, so a lake near a seam is
mapped twice; it is kept only by the part that owns its representative point
(``point_on_surface`` of its outline in EPSG:4326): part *k* owns the longitudes
[seam before *k*, seam after *k*), half-open, so a point exactly on a seam belongs to the eastern
part, the westernmost part owns everything west of its first seam and the easternmost everything
east of its last (the partition of the ground is exact, whatever the AOI's outline). Each part's
valid footprint, where it may mark a known lake absent, is clipped to the ground it owns, so two
parts of one acquisition never both decide one place. The merge's identity is spatial (candidates
are every lake on the scene's ground), so should two parts' outlines of one lake still both be
kept (its representative point falls on different sides of the seam in the two grids, within a
pixel of it), the second merge continues the first one's lake: no duplicate id either way.

Lakes cut by a grid edge. A lake reaching further than the margin across a seam touches its grid's
edge beyond its zone: that outline is a cut piece, with a wrong area, and is dropped (counted in
the scene's inputs as ``zone_lakes_cut``, logged; raise the margin to map such lakes). A piece is
never recorded; the lake is, only where the other part sees it whole and owns its representative
point. A lake touching the grid's edge inside its own zone is cut by the AOI's outer edge, as in a
one-zone AOI, and kept.

Limit of the clipped footprint: a known lake straddling a seam is marked absent only when the
owned ground of one part covers ``MergeConfig.min_footprint_cover`` of its outline; a lake with
more than the complement on the other side is then "not observed" when dry, never "absent".

Scenes. One S2 acquisition is one scene per part it reaches: the part is in the scene key (the
ledger would otherwise take the second part for the first, already committed), while the AOI's
parameter set (threshold, minimum area and every part's grid) is one for all its scenes, as the
merge's parameter check requires. (So where an AOI across zones has scenes committed with a single
grid in its centroid's zone, its parameter set differs: new scenes are refused with
``ParameterMismatchError``, which names the grids that differ.)

Caps. :data:`tasks.grid.MAX_GRID_PIXELS` (the per-scene memory budget) applies to every part and
to the parts' total, so cutting an AOI into parts never admits more than one grid could hold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, box
from shapely.geometry.base import BaseGeometry

from core.errors import AoiError, SettingsError
from db.geometry import as_multipolygon, as_polygonal, lonlat_bounds, lonlat_transformer, to_lonlat, utm_epsg_for
from db.records import ObservedLake
from tasks.defaults import ZONE_MARGIN_M, ZONE_MARGIN_M_BOUND  # the one definition; re-exported
from tasks.grid import (
    MAX_GRID_PIXELS,
    MIN_GRID_SIDE_PX,
    GridSpec,
    grid_for_geometry,
    grid_for_projected,
    project_lonlat,
)

__all__ = [
    "ZONE_MARGIN_M",
    "ZONE_MARGIN_M_BOUND",
    "PartLakes",
    "ZonePart",
    "ZonePartition",
    "partition_aoi",
    "restrict_to_part",
    "zone_band",
    "zone_number",
]

ZONE_WIDTH_DEG = 6.0
"""Width of a standard UTM zone, degrees of longitude."""


def zone_number(lon: float) -> int:
    """Standard UTM zone (1–60) of a longitude (degrees, EPSG:4326); 180° falls in zone 60."""
    return utm_epsg_for(lon, 0.0) - 32600


def zone_band(zone: int) -> tuple[float, float]:
    """West and east longitude of a standard zone, degrees (the band is [west, east))."""
    west = -180.0 + ZONE_WIDTH_DEG * (zone - 1)
    return west, west + ZONE_WIDTH_DEG


@dataclass(frozen=True)
class ZonePart:
    """The AOI within one UTM zone, with its grid and the ground it owns.

    Attributes:
        epsg: UTM CRS of the part (326xx / 327xx): its grid's, its lakes' and its footprint's.
        outline: The AOI within the zone band, EPSG:4326.
        grid: The part's 10 m grid: its outline plus the margin beyond each seam.
        west: Longitude (degrees) from which the part owns the ground, inclusive; -inf for the
            westernmost part.
        east: Longitude up to which it owns the ground, exclusive; +inf for the easternmost.
    """

    epsg: int
    outline: BaseGeometry
    grid: GridSpec
    west: float = -math.inf
    east: float = math.inf

    @property
    def zone(self) -> int:
        """UTM zone number, 1–60."""
        return self.epsg % 100

    @property
    def label(self) -> str:
        """``EPSG:32642``: how reports and scene inputs name the part."""
        return f"EPSG:{self.epsg}"

    def owns(self, lon: float) -> bool:
        """Whether a longitude (degrees) lies in the part's ground, [west, east)."""
        return self.west <= lon < self.east

    def reached_by(self, footprint: BaseGeometry | None) -> bool:
        """Whether a product's footprint (EPSG:4326) reaches the part's outline; True when it has none.

        An S2 L2A product is one MGRS tile of one zone: across a seam, a tile may cover one part
        and not the other, and that scene has nothing to read (it is skipped, with the reason).
        """
        return footprint is None or footprint.intersects(self.outline)


@dataclass(frozen=True)
class ZonePartition:
    """An AOI's parts, west to east; one part for an AOI within one zone."""

    parts: tuple[ZonePart, ...]
    margin_m: float
    """The margin the grids were built with, metres."""

    @property
    def single(self) -> bool:
        """One part: the AOI lies in one zone and is processed as one grid."""
        return len(self.parts) == 1

    @property
    def total_pixels(self) -> int:
        """Pixels of all parts' grids together."""
        return sum(p.grid.width * p.grid.height for p in self.parts)

    def grid_param(self) -> list[object]:
        """The grid(s) as a processing parameter, one value for all the AOI's scenes.

        ``[epsg, a, b, c, d, e, f, width, height]`` for one part (the form of a one-grid AOI), else
        one such list per part, west to east.
        """
        grids: list[list[object]] = [[p.grid.epsg, *p.grid.transform, p.grid.width, p.grid.height] for p in self.parts]
        return grids[0] if self.single else list(grids)

    def key_params(self, params: Mapping[str, object], part: ZonePart) -> dict[str, object]:
        """``params`` plus the part, for the scene key of one acquisition in ``part``.

        Unchanged for a single part, so a one-zone AOI keeps its scene keys.
        """
        return dict(params) if self.single else {**params, "zone_part": part.epsg}


def partition_aoi(
    aoi: BaseGeometry,
    resolution: float = 10.0,
    margin_m: float = ZONE_MARGIN_M,
    max_pixels: int = MAX_GRID_PIXELS,
) -> ZonePartition:
    """Cut an AOI (EPSG:4326) into one part per UTM zone it covers with some area, each with its grid.

    Args:
        aoi: Polygon or MultiPolygon, EPSG:4326.
        resolution: Pixel size of the grids, metres.
        margin_m: How far each part's grid reaches beyond a seam (see the module docstring).
        max_pixels: Cap of one grid and of all grids together.

    Raises:
        SettingsError: ``margin_m`` outside :data:`ZONE_MARGIN_M_BOUND`.
        core.errors.AoiError: a part's grid or the total exceeds ``max_pixels``.
    """
    reason = ZONE_MARGIN_M_BOUND.reason(margin_m)
    if reason is not None:
        raise SettingsError(f"zone margin {margin_m!r} m: {reason}")
    if aoi.is_empty:
        raise ValueError("cannot partition an empty AOI")
    x0, _, x1, _ = aoi.bounds
    pieces = []
    for zone in range(zone_number(x0), zone_number(x1) + 1):
        west, east = zone_band(zone)
        piece = as_polygonal(aoi.intersection(box(west, -90.0, east, 90.0)))
        if piece is not None:  # a zone the AOI only touches along its seam is no part
            pieces.append((zone, piece))
    if len(pieces) <= 1:
        c = aoi.centroid
        epsg = utm_epsg_for(c.x, c.y)
        grid = grid_for_geometry(aoi, epsg, resolution, max_pixels, min_side_px=MIN_GRID_SIDE_PX)
        return ZonePartition((ZonePart(epsg, aoi, grid),), margin_m)

    # Seams between consecutive parts: the east edge of the western one's zone.
    seams = [-math.inf, *(zone_band(z)[1] for z, _ in pieces[:-1]), math.inf]
    parts = []
    for k, (zone, piece) in enumerate(pieces):
        c = piece.centroid
        epsg = (32600 if c.y >= 0 else 32700) + zone
        region = _extended_region(aoi, zone, epsg, margin_m)
        what = f"AOI part in UTM zone {zone} (EPSG:{epsg})"
        grid = grid_for_projected(region, epsg, resolution, max_pixels, what=what, min_side_px=MIN_GRID_SIDE_PX)
        parts.append(ZonePart(epsg, piece, grid, seams[k], seams[k + 1]))
    partition = ZonePartition(tuple(parts), margin_m)
    if partition.total_pixels > max_pixels:
        sizes = ", ".join(f"{p.label} {p.grid.width} x {p.grid.height}" for p in parts)
        raise AoiError(
            f"AOI across UTM zones needs {len(parts)} grids ({sizes} px) of {partition.total_pixels / 1e6:.0f} M px "
            f"in total, over the {max_pixels / 1e6:.0f} M px one AOI may have: split it into several AOIs"
        )
    return partition


def _extended_region(aoi: BaseGeometry, zone: int, epsg: int, margin_m: float) -> BaseGeometry:
    """The AOI within the zone band grown by ``margin_m`` (metres in ``epsg``), in ``epsg``."""
    west, east = zone_band(zone)
    _, y0, _, y1 = aoi.bounds
    # A generous pre-clip in degrees (3× the margin at the AOI's most poleward latitude), so the
    # projection only sees ground near the zone: far outside it transverse Mercator degrades.
    cos_lat = max(math.cos(math.radians(max(abs(y0), abs(y1)))), 0.01)
    pad = 3.0 * margin_m / (111_320.0 * cos_lat) + 0.01
    near = aoi.intersection(box(west - pad, -90.0, east + pad, 90.0))
    band = project_lonlat(box(west, max(y0 - 0.01, -90.0), east, min(y1 + 0.01, 90.0)), epsg)
    return project_lonlat(near, epsg).intersection(band.buffer(margin_m))


@dataclass(frozen=True)
class PartLakes:
    """What one part keeps of a scene mapped on its grid."""

    lakes: tuple[ObservedLake, ...]
    """Lakes whose representative point the part owns, cut pieces dropped (UTM, ``part.epsg``)."""
    footprint: MultiPolygon | None
    """The dry-capable footprint clipped to the part's own ground (``part.epsg``); None when
    nothing is left or there was none."""
    others: int = 0
    """Lakes left to another part (their representative point lies outside this part's ground)."""
    cut: int = 0
    """Lakes dropped as cut by the grid edge beyond this part's zone."""


def restrict_to_part(
    lakes: Sequence[ObservedLake], footprint: MultiPolygon | None, part: ZonePart, partition: ZonePartition
) -> PartLakes:
    """The lakes and footprint one part of ``partition`` decides (all of them for a single part).

    ``lakes`` and ``footprint`` are in ``part.epsg`` (UTM metres), mapped on ``part.grid``.
    """
    if partition.single:
        return PartLakes(tuple(lakes), footprint)
    kept: list[ObservedLake] = []
    others = cut = 0
    to_lonlat_xy = lonlat_transformer(part.epsg)
    edge = box(*part.grid.bounds).exterior.buffer(part.grid.resolution / 2)
    for lake, outline in zip(lakes, to_lonlat([o.geometry for o in lakes], part.epsg), strict=True):
        point = (outline if outline is not None else lake.geometry).point_on_surface()
        if outline is None:  # nothing left in lon/lat: the merge drops it; own it by its UTM point
            point = shapely.Point(to_lonlat_xy.transform(point.x, point.y))
        if not part.owns(point.x):
            others += 1
            continue
        if lake.geometry.intersects(edge):
            xy = shapely.get_coordinates(lake.geometry.intersection(edge))
            lon, _ = to_lonlat_xy.transform(xy[:, 0], xy[:, 1])
            if not all(part.owns(float(x)) for x in np.atleast_1d(lon)):
                cut += 1
                continue
        kept.append(lake)
    clipped = None
    if footprint is not None:
        clipped = as_multipolygon(footprint.intersection(_own_ground(part)))
    return PartLakes(tuple(kept), clipped, others, cut)


def _own_ground(part: ZonePart) -> BaseGeometry:
    """The ground the part owns around its grid, in ``part.epsg`` (edges densified: meridians)."""
    bounds = lonlat_bounds([box(*part.grid.bounds)], part.epsg)
    assert bounds is not None  # a grid is never empty
    lon0, lat0, lon1, lat1 = bounds
    west, east = max(part.west, lon0 - 0.1), min(part.east, lon1 + 0.1)
    if west >= east:
        return shapely.Polygon()
    return project_lonlat(box(west, max(lat0 - 0.1, -90.0), east, min(lat1 + 0.1, 90.0)), part.epsg)
