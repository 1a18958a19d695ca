"""Truth lakes of the demo scene: layout, outlines per date, rasterisation, and the DEM depressions.

Outlines are perturbed ellipses in EPSG:32643 metres. A lake's outlines over the dates are scaled
copies of one shape about one anchor point, so a growing lake's outlines are nested. Rasterisation
follows the pixel-centre rule on the 10 m working grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from rasterio.features import rasterize
from scipy import ndimage
from shapely import affinity
from shapely.geometry import Polygon
from shapely.validation import make_valid

from demo.synthetic.terrain import GLACIER_TERMINUS_FY, RES_M, SceneGrid, rng_for, valley_centre

MIN_SEPARATION_M = 150.0
"""Lakes keep this distance from each other, from snow patches and from the glacier edge."""
MIN_MAPPABLE_M2 = 5000.0
"""Minimum mapped lake area (0.5 ha): smaller truth lakes must not be mapped."""


@dataclass(frozen=True)
class LakeSpec:
    """One truth lake: where it sits and its area on each S2 date (None: no water that date)."""

    name: str
    dx: float
    """Scene fraction east of the valley axis."""
    fy: float
    """Scene fraction south of the northern edge."""
    areas_ha: tuple[float | None, ...]
    aspect: float
    """Long / short axis ratio."""
    angle_deg: float
    """Long-axis orientation, degrees counter-clockwise from east."""
    turbidity: float
    """0 clear … 1 milky glacial flour."""
    required: bool
    """Required lakes must fit at every supported size; optional ones are dropped when they do not."""
    anchor_shift: float = 0.0
    """Growth anchor, as a fraction of the long semi-axis towards the down-valley (north) end."""
    glacier_contact: bool = False
    """The lake sits at the glacier's snout, in contact with the ice: it must overlap the glacier
    mask (instead of keeping 150 m from it), and the ice under it gives way to water (:func:`clear_ice`)."""
    glacier_gap_m: float | None = None
    """Metres from the up-valley (south) end of the lake's largest outline to the glacier terminus's
    latitude, the same at every scene size; ``fy`` is then ignored. Keeps a lake within GLOF-screening
    distance of the glacier (500 m) however large the scene, where a scene fraction would not."""


def lake_specs(n_dates: int) -> tuple[LakeSpec, ...]:
    """The demo lakes for ``n_dates`` (>= 5) acquisition dates."""
    if n_dates < 5:
        raise ValueError("the demo needs at least 5 dates")
    k = n_dates
    # 5.5 → 11.4 ha: past the GLOF screening's 0.1 km² floor (db.glof) by the last date, 200 m
    # down-valley of the glacier, so the default rules flag it (tests/db/test_cookbook.py).
    growing = tuple(round(5.5 * 1.2**i, 3) for i in range(k))
    appearing = (None, None) + (1.5,) * (k - 2)
    draining = (2.5, 2.2) + (None,) * (k - 2)
    return (
        # fy (0.56) is not used: glacier_gap_m places it.
        LakeSpec("growing", 0.0, 0.56, growing, 1.45, 95.0, 0.85, True, anchor_shift=0.6, glacier_gap_m=200.0),
        LakeSpec("appearing", -0.16, 0.40, appearing, 1.3, 20.0, 0.3, True),
        LakeSpec("draining", 0.12, 0.39, draining, 1.6, 70.0, 0.5, True),
        LakeSpec("clouded", -0.12, 0.24, (2.0,) * k, 1.35, 110.0, 0.2, True),
        LakeSpec("stable-1", 0.08, 0.13, (3.0,) * k, 1.5, 150.0, 0.15, True),
        LakeSpec("small-1", 0.18, 0.25, (0.25,) * k, 1.3, 40.0, 0.1, True),
        LakeSpec("stable-2", -0.23, 0.79, (1.8,) * k, 1.4, 80.0, 0.6, False),
        LakeSpec("small-2", 0.17, 0.55, (0.35,) * k, 1.25, 120.0, 0.2, False),
        LakeSpec("small-3", -0.18, 0.62, (0.15,) * k, 1.2, 10.0, 0.1, False),
        # Last, so it never changes which of the others are kept.
        LakeSpec("contact", 0.0, GLACIER_TERMINUS_FY + 0.01, (1.2,) * k, 1.3, 0.0, 0.7, False, glacier_contact=True),
    )


@dataclass(frozen=True)
class Lake:
    """A placed lake: its spec and its outline on each date (None where it holds no water)."""

    spec: LakeSpec
    outlines: tuple[Polygon | None, ...]
    """EPSG:32643."""

    @property
    def name(self) -> str:
        """The lake's name (its spec's)."""
        return self.spec.name

    @property
    def max_extent(self) -> Polygon:
        """Largest outline over all dates (outlines are nested, so this is their union)."""
        return max((p for p in self.outlines if p is not None), key=lambda p: p.area)


def _unit_shape(spec: LakeSpec, seed: int) -> Polygon:
    """A perturbed ellipse of area 1 m² centred on the origin, long axis along x."""
    rng = rng_for(seed, f"lake-shape:{spec.name}")
    theta = np.linspace(0, 2 * np.pi, 97)[:-1]
    r = np.ones_like(theta)
    for k in range(2, 7):
        r += rng.uniform(0.02, 0.10) / (k - 1) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    pts = np.column_stack([spec.aspect * r * np.cos(theta), r * np.sin(theta)])
    poly = Polygon(pts)
    return affinity.scale(poly, 1 / math.sqrt(poly.area), 1 / math.sqrt(poly.area), origin=(0, 0))


def place_lakes(grid: SceneGrid, specs: tuple[LakeSpec, ...], seed: int) -> tuple[Lake, ...]:
    """Outlines of every spec on every date, in EPSG:32643 (no separation checks here)."""
    lakes = []
    for spec in specs:
        unit = _unit_shape(spec, seed)
        ref_area = max(a for a in spec.areas_ha if a is not None) * 1e4
        half_long = spec.aspect * math.sqrt(ref_area / (math.pi * spec.aspect))
        fy = spec.fy
        if spec.glacier_gap_m is not None:
            # The largest outline is centred on the anchor; its north-south half-extent is about
            # the long semi-axis for a lake aligned with the valley (angle near 90°).
            fy = GLACIER_TERMINUS_FY - (spec.glacier_gap_m + half_long) / (grid.size_px * grid.res)
        cx, cy = grid.xy(float(valley_centre(fy)) + spec.dx, fy)
        outlines: list[Polygon | None] = []
        for area_ha in spec.areas_ha:
            if area_ha is None:
                outlines.append(None)
                continue
            f = math.sqrt(area_ha * 1e4)
            shape = affinity.scale(unit, f, f, origin=(0, 0))
            # Grow about an anchor on the down-valley side, so the lake spreads up-valley.
            shift = spec.anchor_shift * half_long * (1 - f / math.sqrt(ref_area))
            shape = affinity.translate(shape, -shift, 0)
            shape = affinity.rotate(shape, spec.angle_deg, origin=(0, 0))
            shape = affinity.translate(shape, cx, cy)
            outlines.append(make_valid(shape))
        lakes.append(Lake(spec, tuple(outlines)))
    return tuple(lakes)


def lake_mask(grid: SceneGrid, polygon: Polygon) -> NDArray[np.bool_]:
    """Working-grid pixels whose centre lies inside ``polygon``."""
    n = grid.work_size
    return np.asarray(
        rasterize(
            [(polygon, 1)], out_shape=(n, n), transform=grid.work_transform, all_touched=False, dtype="uint8"
        ).astype(bool),
        dtype=np.bool_,
    )


def distance_m(mask: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Distance (metres) of every working-grid pixel to the nearest pixel of ``mask``."""
    if not mask.any():
        return np.full(mask.shape, np.inf)
    return np.asarray(ndimage.distance_transform_edt(~mask) * RES_M, dtype=np.float64)


def select_lakes(grid: SceneGrid, lakes: tuple[Lake, ...], glacier: NDArray[np.bool_]) -> tuple[Lake, ...]:
    """Keep the lakes that respect the separations, in spec order; raise if a required one cannot.

    Rules: >= 150 m between lakes' max extents and from the glacier (a ``glacier_contact`` lake
    instead overlaps it), and >= 200 m from the scene edge.
    """
    glacier_dist = distance_m(glacier)
    west, south, east, north = grid.bounds
    kept: list[Lake] = []
    for lake in lakes:
        ext = lake.max_extent
        minx, miny, maxx, maxy = ext.bounds
        problems = []
        if min(minx - west, east - maxx, miny - south, north - maxy) < 200.0:
            problems.append("too close to the scene edge")
        mask = lake_mask(grid, ext)
        if lake.spec.glacier_contact:
            if not (mask & glacier).any():
                problems.append("not in contact with the glacier")
        elif mask.any() and glacier_dist[mask].min() < MIN_SEPARATION_M:
            problems.append("too close to the glacier")
        for other in kept:
            if ext.distance(other.max_extent) < MIN_SEPARATION_M:
                problems.append(f"too close to {other.name}")
        if not problems:
            kept.append(lake)
        elif lake.spec.required:
            raise ValueError(f"lake {lake.name!r} does not fit a {grid.size_px} px scene: {', '.join(problems)}")
    return tuple(kept)


def clear_ice(grid: SceneGrid, glacier: NDArray[np.bool_], lakes: tuple[Lake, ...]) -> NDArray[np.bool_]:
    """The glacier mask with the ice under each ``glacier_contact`` lake's max extent removed.

    The lake takes the place of the snout (a calving front): water and ice share a shore, so the
    glacier outline drawn from this mask touches the lake. Unchanged without such lakes.
    """
    contact = [lake for lake in lakes if lake.spec.glacier_contact]
    if not contact:
        return glacier
    cleared = glacier.copy()
    for lake in contact:
        cleared &= ~lake_mask(grid, lake.max_extent)
    return cleared


def carve_lakes(
    grid: SceneGrid, z: NDArray[np.float64], lakes: tuple[Lake, ...]
) -> tuple[NDArray[np.float64], dict[str, float]]:
    """Cut each lake's basin into the DEM: flat at lake level over its max extent, dammed all round.

    The flat area reaches 15 m beyond the max extent so that bilinear resampling of the DEM is exactly
    flat inside the lake. Around it the terrain is clamped between a moraine rampart (4 m above the
    level for 40 m, then falling off at 25 %) and a bank rising at 35 % (about 19 degrees) near the
    shore, so every lake sits in a closed depression and no cliff rings its up-slope shore.

    Returns:
        The new elevation (metres) and each lake's level (metres).
    """
    z = z.copy()
    levels: dict[str, float] = {}
    zones = []
    for lake in lakes:
        zone = lake_mask(grid, lake.max_extent.buffer(15.0))
        levels[lake.name] = float(np.floor(z[zone].min()))
        zones.append(zone)
    # Applied over the whole grid (no cut-off radius), so the result stays continuous: rims first,
    # then banks, then the flat surfaces.
    dists = [distance_m(zone) for zone in zones]
    for lake, dist in zip(lakes, dists, strict=True):
        z = np.maximum(z, levels[lake.name] + 4.0 - 0.25 * np.maximum(dist - 40.0, 0.0))
    for lake, dist in zip(lakes, dists, strict=True):
        # The quadratic term lifts the bank above any real terrain within ~150 m, so it only trims
        # the shore and never the valley walls.
        z = np.minimum(z, levels[lake.name] + 4.0 + 0.35 * dist + 0.004 * dist**2)
    # Flatten last, so no neighbour's rim lands on a lake surface.
    for lake, zone in zip(lakes, zones, strict=True):
        z[zone] = levels[lake.name]
    return z, levels
