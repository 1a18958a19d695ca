"""Preparing one scene's stack by strips of rows: peak memory set by the strip, not by the scene.

:func:`prepare_stack` reads S2, S1 and the DEM onto the scene grid, co-registers S1 and the DEM
with S2, derives the masks and writes the stack file (:mod:`tasks.stack`) one strip of
:func:`strip_rows` rows at a time. Each strip is read onto its own sub-grid of the scene grid
(same pixels, same lattice), so the GDAL warper computes the same pixels as for the whole grid;
the S1 strip carries a halo of ``speckle_size // 2`` rows above and below, so the Lee filter sees
every neighbour it sees on the whole grid. What needs the whole scene is an accumulator over the
strips or a bounded sample of it:

* cloud fraction, valid fraction, "no common pixel": counts over the strips (exact);
* the S2 offset detector (only for an item without a processing baseline): the same even sample
  of at most a million pixels per band as :func:`tasks.preprocess.decide_s2_offset` takes of the
  whole grid, gathered in a first pass over the strips (exact);
* the S1 scale decision (:func:`tasks.s1_read.open_s1_acquisition`): on the scene grid when it
  has at most :data:`SAMPLE_PIXELS` pixels, else on a grid over the same bounds decimated to that
  many (a bounded sample: the test reads medians and shares of negative values);
* the co-registration measurement (:mod:`tasks.coregister`): the nine candidate windows of
  :func:`tasks.coregister.candidate_windows` are kept while the strips pass (at most 3 × 1024 rows
  × 3 × 1024 columns of S2 B08, clear mask, S1 VV and DEM at the stack's precision, 66 MB at
  any scene size), the best window is chosen and measured as on the whole grid. A confident correction re-reads the
  modality onto the shifted grid: the scene is then written a second time, strip by strip.

Strips are computed by :data:`PREPARE_THREADS` threads (GDAL releases the GIL while it reads and
warps; one by default, see there) and written in order by one writer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from core.errors import RasterInputError
from tasks.coregister import Coregistration, ModalityRecord, align_modality, candidate_windows, shifted_grid
from tasks.dem import read_dem_tiles
from tasks.grid import GridSpec
from tasks.pairing import ScenePlan
from tasks.preprocess import S2_BANDS, _warp, decide_s2_offset, harmonise_s2_dn
from tasks.read_errors import NoPixelOnGrid
from tasks.s1_read import S1Source, open_s1_acquisition
from tasks.sar import lee_filter, sigma0_to_db
from tasks.stack import STACK_CODES, StackInfo, stack_info, stack_tags, stack_writer
from tasks.stack_format import STORED_NODATA, TILE_PX, decode, encode
from tasks.validity import CLOUD_SCL_CLASSES, SCL_INVALID_CLASSES, SNOW_ICE_SCL_CLASSES, S2Offset

__all__ = ["PREPARE_THREADS", "SAMPLE_PIXELS", "STRIP_PIXELS", "STRIP_ROWS", "prepare_stack", "strip_rows"]

STRIP_PIXELS = 3 * 1024**2
"""Pixels per strip, about: rows are this over the grid's width, in whole tile rows of the stack
file (at least one). A full Sentinel-2 tile (10 980 px wide) has strips of one tile row, 2.8 M
px; this size gives 2048 and 4096 px scenes strips of about as many pixels (3.1 M), so the peak
is flat in area from there on. Memory holds :data:`PREPARE_THREADS` (+ 1 with threads) strips
at once, whatever the scene's size; measured peaks are in ``benchmarks/stack_format.py`` (566 MB
peak RSS, 107 MB before, for a 2046 px scene with strips of 2.1 M or 3.1 M px alike)."""
STRIP_ROWS: int | None = None
"""Rows per strip when set (tests); None: from :data:`STRIP_PIXELS`."""
PREPARE_THREADS = 1
"""Strips computed at once (threads; GDAL reads and warps without the GIL). 1: on the shared
2-core machine ``benchmarks/stack_format.py`` measured no gain from 2 (the spread of repeated
runs, ±50 %, was larger than any difference), and each thread holds one more strip; the
argument ``threads`` of :func:`prepare_stack` sets it per call."""
SAMPLE_PIXELS = 1_000_000
"""Pixels of the bounded samples (S1 scale decision; the S2 offset detector's per band)."""
SPECKLE_SIZE = 5
"""Lee filter window, pixels (as :func:`tasks.s1_read.read_s1_acquisition`)."""
_VV_DB_INDEX = 0


def strip_rows(width: int) -> int:
    """Rows per strip of a grid ``width`` pixels wide (:data:`STRIP_ROWS`, else from :data:`STRIP_PIXELS`)."""
    if STRIP_ROWS is not None:
        return STRIP_ROWS
    return max(TILE_PX, STRIP_PIXELS // width // TILE_PX * TILE_PX)


def sub_grid(grid: GridSpec, row0: int, row1: int) -> GridSpec:
    """Rows ``[row0, row1)`` of ``grid`` as a grid of their own (same lattice)."""
    a, b, c, d, e, f = grid.transform
    return GridSpec(grid.epsg, (a, b, c + b * row0, d, e, f + e * row0), grid.width, row1 - row0)


def window_grid(grid: GridSpec, rows: slice, cols: slice) -> GridSpec:
    """The window ``rows`` × ``cols`` of ``grid`` as a grid of its own (same lattice)."""
    a, b, c, d, e, f = grid.transform
    r, k = rows.start, cols.start
    return GridSpec(grid.epsg, (a, b, c + a * k + b * r, d, e, f + d * k + e * r), cols.stop - k, rows.stop - r)


def decimated_grid(grid: GridSpec, max_pixels: int) -> GridSpec:
    """``grid`` itself when it has at most ``max_pixels`` pixels, else a coarser grid over the same bounds."""
    k = math.ceil(math.sqrt(grid.width * grid.height / max_pixels))
    if k <= 1:
        return grid
    a, b, c, d, e, f = grid.transform
    return GridSpec(grid.epsg, (a * k, b, c, d, e * k, f), math.ceil(grid.width / k), math.ceil(grid.height / k))


def _halo(grid: GridSpec, rows: slice, cols: slice) -> tuple[int, int, int, int]:
    """Pixels of ``grid`` the Lee filter reads around the window ``rows`` × ``cols``: (top, bottom, left, right)."""
    h = SPECKLE_SIZE // 2
    return (
        min(h, rows.start),
        min(h, grid.height - rows.stop),
        min(h, cols.start),
        min(h, grid.width - cols.stop),
    )


# --- per-strip reads -----------------------------------------------------------------------------


class _Coverage:
    """Which sources had a valid pixel on some strip; the first "no pixel" error of each one kept."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.missing: dict[str, NoPixelOnGrid] = {}

    def read(self, key: str, read: Callable[[], NDArray[np.float32]], shape: tuple[int, ...]) -> NDArray[np.float32]:
        """``read()``, or NaN of ``shape`` where the strip lies outside the source's data."""
        try:
            out = read()
        except NoPixelOnGrid as exc:
            self.missing.setdefault(key, exc)
            return np.full(shape, np.nan, dtype=np.float32)
        self.seen.add(key)  # set.add is atomic under the GIL: strips may run in threads
        return out

    def raise_missing(self, keys: list[str]) -> None:
        """Raises the error of the first source in ``keys`` without a valid pixel on any strip."""
        for key in keys:
            if key not in self.seen and key in self.missing:
                raise self.missing[key]


@dataclass(frozen=True)
class _Sources:
    """What a strip reads: the plan's hrefs, the decided S1 reading and the S2 offset."""

    s2: dict[str, str]
    scl: str | None
    s1: S1Source
    dem: tuple[str, ...]
    offset: S2Offset
    coverage: _Coverage = field(default_factory=_Coverage)

    def s2_dn(self, grid: GridSpec, band: str) -> NDArray[np.float32]:
        return self.coverage.read(band, lambda: _warp(self.s2[band], grid, src_nodata=0), grid.shape)

    def s1_db(self, grid: GridSpec, halo: tuple[int, int, int, int]) -> NDArray[np.float32]:
        """VV, VH dB ``(2, H, W)`` on ``grid``, Lee-filtered on it widened by ``halo`` (top, bottom, left, right).

        The halo is the scene's pixels around ``grid`` the filter reads (up to ``SPECKLE_SIZE // 2``
        a side; fewer at the scene's edge, where the whole-grid filter has none either).
        """
        top, bottom, left, right = halo
        a, b, c, d, e, f = grid.transform
        padded = GridSpec(
            grid.epsg,
            (a, b, c - a * left - b * top, d, e, f - d * left - e * top),
            grid.width + left + right,
            grid.height + top + bottom,
        )
        shape = (2, *padded.shape)
        linear = self.coverage.read("S1", lambda: np.stack(self.s1.linear(padded)), shape)
        rows, cols = slice(top, top + grid.height), slice(left, left + grid.width)
        return np.stack([sigma0_to_db(lee_filter(band, SPECKLE_SIZE))[rows, cols] for band in linear])

    def dem_m(self, grid: GridSpec) -> NDArray[np.float32]:
        return self.coverage.read("DEM", lambda: read_dem_tiles(list(self.dem), grid), grid.shape)


@dataclass
class _Strip:
    """One strip's stack rows, masks and counts."""

    row0: int
    data: NDArray[np.float32]
    valid: NDArray[np.bool_]
    dry: NDArray[np.bool_] | None
    clear: NDArray[np.bool_]
    observed: int
    cloud: int
    common: bool


def _strip(src: _Sources, grid: GridSpec, row0: int, row1: int, shifts: dict[str, tuple[float, float]]) -> _Strip:
    """Reads and assembles rows ``[row0, row1)`` (S1 / DEM on the grid shifted by ``shifts``, pixels)."""
    g = sub_grid(grid, row0, row1)
    baseline = "04.00" if src.offset.dn else "00.00"  # harmonise_s2_dn keys the offset on a baseline
    data = np.empty((len(S2_BANDS) + 3, *g.shape), dtype=np.float32)
    for i, band in enumerate(S2_BANDS):  # one band's DN at a time beside the strip
        data[i] = harmonise_s2_dn(src.s2_dn(g, band), baseline)
    s1_grid = shifted_grid(g, *shifts["s1"]) if "s1" in shifts else g
    data[12:14] = src.s1_db(s1_grid, _halo(grid, slice(row0, row1), slice(0, grid.width)))
    dem_grid = shifted_grid(g, *shifts["dem"]) if "dem" in shifts else g
    data[14] = src.dem_m(dem_grid)
    finite = np.isfinite(data)
    s2_data: NDArray[np.bool_] = np.asarray(finite[:12].all(axis=0))
    all_finite: NDArray[np.bool_] = s2_data & finite[12:].all(axis=0)
    del finite
    if src.scl is None:  # cloud state unknown: every pixel with data may be read, none seen dry
        valid = s2_data & all_finite
        return _Strip(row0, data, valid, None, s2_data, 0, 0, bool(all_finite.any()))
    # As tasks.validity.s2_validity, with counts in place of the fraction (summed over the strips).
    scl = _warp(src.scl, g, resampling="nearest", dtype="uint8")
    seen = s2_data & ~np.isin(scl, list(SCL_INVALID_CLASSES))
    clouded = seen & np.isin(scl, list(CLOUD_SCL_CLASSES))
    clear = seen & ~clouded
    observed, cloud = int(seen.sum()), int(clouded.sum())
    valid = clear & all_finite
    dry = valid & ~np.isin(scl, list(SNOW_ICE_SCL_CLASSES))  # valid ∧ ¬snow/ice (dry_capable_before_water)
    return _Strip(row0, data, valid, dry, clear, observed, cloud, bool(all_finite.any()))


def _strips(src: _Sources, grid: GridSpec, shifts: dict[str, tuple[float, float]], threads: int) -> Iterator[_Strip]:
    """The scene's strips in order, ``threads`` computed at once (at most ``threads + 1`` in memory)."""
    step = strip_rows(grid.width)
    bounds = [(r, min(grid.height, r + step)) for r in range(0, grid.height, step)]
    if threads <= 1:
        for r0, r1 in bounds:
            yield _strip(src, grid, r0, r1, shifts)
        return
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending: list[Future[_Strip]] = []
        for r0, r1 in bounds:
            pending.append(pool.submit(_strip, src, grid, r0, r1, shifts))
            if len(pending) > threads:
                yield pending.pop(0).result()
        for future in pending:
            yield future.result()


# --- the co-registration sample ----------------------------------------------------------------


class _Windows:
    """The candidate windows' rows × columns of B08, clear, VV dB and DEM, kept as the strips pass.

    Kept as the stack stores them (int16, :mod:`tasks.stack_format`: 7 bytes a pixel, 66 MB for
    the nine windows of a large scene), so the measurement sees the stack's own values.
    """

    _BANDS: ClassVar[dict[str, int]] = {"B08": S2_BANDS.index("B08"), "VV": 12 + _VV_DB_INDEX, "DEM": 14}

    def __init__(self, grid: GridSpec) -> None:
        self.windows = candidate_windows(grid.shape)
        self.rows = np.unique(np.concatenate([np.arange(r.start, r.stop) for r, _ in self.windows]))
        self.cols = np.unique(np.concatenate([np.arange(c.start, c.stop) for _, c in self.windows]))
        shape = (len(self.rows), len(self.cols))
        self.stored = {name: np.full(shape, STORED_NODATA, dtype=np.int16) for name in self._BANDS}
        self.clear = np.zeros(shape, dtype=bool)

    def keep(self, strip: _Strip) -> None:
        r1 = strip.row0 + strip.valid.shape[0]
        take = (self.rows >= strip.row0) & (self.rows < r1)
        if not take.any():
            return
        local = self.rows[take] - strip.row0
        pos = np.nonzero(take)[0]
        for name, band in self._BANDS.items():
            self.stored[name][pos] = encode(strip.data[band][local][:, self.cols], STACK_CODES[band])
        self.clear[pos] = strip.clear[local][:, self.cols]

    def image(self, name: str, here: tuple[slice, slice]) -> NDArray[np.float32]:
        """Band ``name`` (B08, VV, DEM) in the window ``here`` (this sample's coordinates), the stack's units."""
        return decode(self.stored[name][here], STACK_CODES[self._BANDS[name]])

    def local(self, rows: slice, cols: slice) -> tuple[slice, slice]:
        """A window of the scene in this sample's coordinates (its rows and columns are contiguous here)."""
        r, c = int(np.searchsorted(self.rows, rows.start)), int(np.searchsorted(self.cols, cols.start))
        return slice(r, r + rows.stop - rows.start), slice(c, c + cols.stop - cols.start)

    def best(self, name: str) -> tuple[slice, slice]:
        """The candidate window with the most clear pixels where band ``name`` has data (as on the whole grid)."""
        usable = self.clear & (self.stored[name] != STORED_NODATA)
        return max(self.windows, key=lambda w: int(usable[self.local(*w)].sum()))


def _coregister(src: _Sources, grid: GridSpec, kept: _Windows) -> tuple[Coregistration, dict[str, tuple[float, float]]]:
    """Measures S1 and the DEM against S2 in their best windows; the shifts to apply (pixels)."""
    records: dict[str, ModalityRecord] = {}
    shifts: dict[str, tuple[float, float]] = {}
    for key, name in (("s1", "VV"), ("dem", "DEM")):
        rows, cols = kept.best(name)
        here = kept.local(rows, cols)
        wgrid = window_grid(grid, rows, cols)

        def reread(
            g: GridSpec, key: str = key, halo: tuple[int, int, int, int] = _halo(grid, rows, cols)
        ) -> NDArray[np.float32]:
            # g: the window's grid, shifted; S1 is filtered with the scene's pixels around the window
            return src.dem_m(g) if key == "dem" else src.s1_db(g, halo)[_VV_DB_INDEX]

        nir, image = kept.image("B08", here), kept.image(name, here)
        _, record = align_modality(nir, kept.clear[here], image, lambda a: a, reread, wgrid)
        records[key] = record
        if record.applied and record.measured is not None:
            shifts[key] = (record.measured.dy, record.measured.dx)
    return Coregistration(s1=records["s1"], dem=records["dem"]), shifts


# --- the stage -----------------------------------------------------------------------------------


def _s2_offset(plan: ScenePlan, s2: dict[str, str], grid: GridSpec, coverage: _Coverage) -> S2Offset:
    """The item's offset decision: its baseline, else the detector on the even sample of the whole grid."""
    baseline = plan.s2.processing_baseline
    if baseline is not None:
        return decide_s2_offset(baseline, [])
    total = grid.width * grid.height
    step = max(1, -(-total // SAMPLE_PIXELS))
    samples: list[list[NDArray[np.float32]]] = [[] for _ in S2_BANDS]
    rows = strip_rows(grid.width)
    for row0 in range(0, grid.height, rows):
        row1 = min(grid.height, row0 + rows)
        g = sub_grid(grid, row0, row1)
        first = -(-row0 * grid.width // step) * step
        at = np.arange(first, row1 * grid.width, step) - row0 * grid.width
        for i, band in enumerate(S2_BANDS):
            href = s2[band]
            dn = coverage.read(band, partial(_warp, href, g, src_nodata=0), g.shape)
            samples[i].append(dn.ravel()[at])
    # decide_s2_offset samples with the step of its first band's size: give it the sample, step 1
    return decide_s2_offset(None, [np.concatenate(s) for s in samples], max_pixels=total)


def prepare_stack(plan: ScenePlan, grid: GridSpec, out_dir: Path, *, threads: int | None = None) -> StackInfo:
    """Reads, harmonises and co-registers S2 + S1 + DEM onto ``grid`` and writes the stack, by strips.

    The DEM is one tile or a mosaic of the plan's tiles (:func:`tasks.dem.read_dem_tiles`). S1
    and the DEM are measured against S2 by phase correlation and re-warped only for a confident
    offset (:func:`tasks.coregister.align_modality`); the measurement is in the result's
    ``quality``. Memory: a few strips (see the module docstring), whatever the scene's size.

    Raises:
        RasterInputError: an input leaves no valid pixel on the grid (wrong CRS, no overlap, only
            nodata; the file is named), or the three have data on no common pixel (all named).
            A scene so raised is never merged: a clouded scene still is (cloud is an observation).

    The S2 offset comes from the item's processing baseline, or, without one, from the offset
    detector (``StackInfo.s2_offset`` says which, with its evidence); the dry-capable band is
    written only when the cloud state is known from SCL (:mod:`tasks.validity`).
    """
    try:
        return _prepare(plan, grid, out_dir, PREPARE_THREADS if threads is None else threads)
    except NoPixelOnGrid as exc:  # for the scene, a source without a pixel on its grid is plain bad input
        raise RasterInputError(str(exc)) from None


def _prepare(plan: ScenePlan, grid: GridSpec, out_dir: Path, threads: int) -> StackInfo:
    s2 = {k: v for k, v in plan.s2.assets if k != "SCL"}
    missing = [b for b in S2_BANDS if b not in s2]
    if missing:
        raise KeyError(f"Sentinel-2 bands missing: {', '.join(missing)}")
    coverage = _Coverage()
    offset = _s2_offset(plan, s2, grid, coverage)
    s1 = open_s1_acquisition(plan.s1, decimated_grid(grid, SAMPLE_PIXELS))
    src = _Sources(s2, plan.s2.asset_map.get("SCL"), s1, tuple(plan.dem_hrefs), offset, coverage)
    kept = _Windows(grid)
    info, common = _write(src, grid, out_dir, plan.scene_id, {}, threads, kept)
    try:
        coverage.raise_missing([*S2_BANDS, "S1", "DEM"])
        coreg, shifts = _coregister(src, grid, kept)
        if shifts:  # a confident correction: S1 / the DEM re-read onto the shifted grid, the scene written again
            info, common = _write(src, grid, out_dir, plan.scene_id, shifts, threads, None)
        if info.valid_fraction == 0 and not common:  # cloud alone is an observation; no data is not
            raise RasterInputError(
                f"scene {plan.scene_id}: S2 {plan.s2.product_id}, S1 {plan.s1.asset('vv')} and DEM "
                f"{', '.join(plan.dem_hrefs)} have data on no common pixel of the AOI grid (EPSG:{grid.epsg})"
            )
    except BaseException:
        info.path.unlink(missing_ok=True)  # a refused scene leaves no stack to be read
        raise
    return replace(info, quality=(*s1.radiometry.as_inputs().items(), *coreg.as_inputs().items()))


def _write(
    src: _Sources,
    grid: GridSpec,
    out_dir: Path,
    name: str,
    shifts: dict[str, tuple[float, float]],
    threads: int,
    kept: _Windows | None,
) -> tuple[StackInfo, bool]:
    """One pass over the strips, written as they come; ``(info, any pixel with every band's data)``."""
    n_valid = observed = cloud = 0
    common = False
    dry_known = src.scl is not None
    with stack_writer(grid, out_dir, name, dry_known=dry_known, threads=threads) as writer:
        for strip in _strips(src, grid, shifts, threads):
            masks = (strip.valid,) if strip.dry is None else (strip.valid, strip.dry)
            writer.write_rows(strip.row0, strip.data, masks)
            if kept is not None:
                kept.keep(strip)
            n_valid += int(strip.valid.sum())
            observed, cloud = observed + strip.observed, cloud + strip.cloud
            common |= strip.common
            # Released before the next strip is computed: otherwise the loop variable keeps this
            # strip alive beside the next one (two strips' arrays at the peak, not one).
            del strip, masks
        valid_fraction = n_valid / (grid.width * grid.height)
        cloud_fraction = (cloud / observed if observed else 1.0) if dry_known else math.nan
        writer.finish(stack_tags(valid_fraction, cloud_fraction, src.offset, dry_known))
    info = stack_info(writer.path, grid, valid_fraction, cloud_fraction, dry_known=dry_known, s2_offset=src.offset)
    return info, common
