"""The analysis-ready stack file: S2 + S1 + DEM and their masks on one grid, one file a scene.

This module is the one owner of the stack file: its band order, encoding, nodata, tags and masks,
its writer (:func:`write_stack` for arrays; :class:`tasks.stack_format.StackWriter` for strips)
and its readers (:class:`StackReader` for windowed row reads and single bands, :func:`read_stack`
for the whole stack).

Stack, as the readers return it: float32 ``(15, H, W)`` in :data:`STACK_BANDS` order (S2
reflectance × 10 000 on the pre-04.00 scale, VV and VH in dB, DEM in metres), NaN nodata, on the
scene grid (a north-up UTM grid, metres). The valid mask is where all three sources could see:
clear S2 ∧ finite S1 ∧ finite DEM. Pixels outside it keep their data (a cloud still has a
reflectance); the mask, not a fill value, says they are not to be used.

STACK FILE FORMAT CONTRACT (change together):
    The file layout is written in :class:`tasks.stack_format.StackWriter` (through
    :func:`write_stack` and :func:`tasks.prepare.prepare_stack`) and read back in :class:`StackReader`:

    * ``<name>_stack.tif``: a tiled GeoTIFF (256 px tiles, band-interleaved, ZSTD), int16,
      nodata −32768, the 15 :data:`STACK_BANDS` scaled as :mod:`tasks.stack_format` tabulates
      (GDAL ``scale``/``offset``/``units`` per band: reflectance 1e-4 stored in steps of 4, dB 0.01
      in steps of 5, DEM 0.25 m + 4000 m),
      then the mask bands ``valid`` (1 valid / 0 not) and, only when the scene's cloud state is
      known from SCL, ``dry_capable`` (1 where a lake's place could be seen dry before the
      segmentation: valid ∧ not snow/ice, :func:`tasks.validity.dry_capable_before_water`);
      band descriptions are the names; tags ``encoding`` (:data:`tasks.stack_format.ENCODING_VERSION`),
      ``bands`` (the 15 names), ``valid_mask`` and ``dry_capable_mask`` (the mask bands' names),
      ``valid_fraction``, ``cloud_fraction`` and ``s2_offset`` (how the S2 offset was decided).

    :data:`STACK_BANDS` must equal ``models.segmenter.STACK_BANDS`` (the segmenters' input
    order; checked at import). A change to any item above changes the writer, the reader and
    ``tests/unit/test_stack.py::test_stack_file_format_contract`` together.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from core.errors import RasterInputError
from models.segmenter import STACK_BANDS as _MODEL_STACK_BANDS
from tasks.grid import GridSpec, read_grid
from tasks.preprocess import S2_BANDS, S2Scene
from tasks.stack_format import DRY_CAPABLE_BAND, ENCODING_TAG, ENCODING_VERSION, VALID_BAND, StackWriter, band_codes
from tasks.stack_format import decode as _decode
from tasks.validity import S2Offset

__all__ = [
    "DRY_CAPABLE_BAND",
    "STACK_BANDS",
    "STACK_CODES",
    "STACK_NODATA",
    "VALID_BAND",
    "StackInfo",
    "StackReader",
    "read_stack",
    "stack_arrays",
    "write_stack",
]

STACK_BANDS = (*S2_BANDS, "VV", "VH", "DEM")
"""Band order of the stack: 12 × S2 L2A (TerraMind order), S1 VV, VH (dB), DEM (m)."""

if STACK_BANDS != _MODEL_STACK_BANDS:  # pragma: no cover - a programming error, caught at import
    raise ImportError("tasks.stack.STACK_BANDS and models.segmenter.STACK_BANDS disagree")

STACK_DTYPE = "float32"
STACK_NODATA = float("nan")
"""Nodata of every band as the readers return it (never a fill value such as 0, which would read as data)."""
STACK_CODES = band_codes(S2_BANDS)
"""How each of :data:`STACK_BANDS` is stored (:mod:`tasks.stack_format`)."""
_VALID_TAG = "valid_mask"
_DRY_CAPABLE_TAG = "dry_capable_mask"
_STACK_SUFFIX = "_stack.tif"
# Earlier layouts kept the masks in sidecars; a rewrite under the same name removes them.
_OLD_SIDECARS = ("_valid.tif", "_drycapable.tif")


@dataclass(frozen=True)
class StackInfo:
    """Where a scene's stack lives and what it covers (small: passed between tasks).

    Attributes:
        path: The stack file (see the format contract).
        valid_path: The file holding the valid mask: the stack file itself (its ``valid`` band),
            or, for a stack made elsewhere, a one-band uint8 sidecar (1 valid, 0 not).
        grid: The scene grid.
        valid_fraction: Share of grid pixels that are valid, 0–1.
        cloud_fraction: Share of S2 data pixels flagged cloud/cloud shadow, 0–1 (NaN if unknown).
        quality: ``(key, text)`` measurements made while the stack was assembled, for the
            scene's ``inputs`` (e.g. ``coregistration``: JSON, see ``tasks.coregister``).
        dry_capable_path: The file holding the dry-capable mask (the stack file itself, its
            ``dry_capable`` band); None when the cloud state is unknown (no SCL): then no place
            of the scene counts as seen dry.
        s2_offset: How the S2 DN offset was decided; None where the writer was not told.
    """

    path: Path
    valid_path: Path
    grid: GridSpec
    valid_fraction: float
    cloud_fraction: float
    quality: tuple[tuple[str, str], ...] = ()
    dry_capable_path: Path | None = None
    s2_offset: S2Offset | None = None


# --- pure functions --------------------------------------------------------------------------


def stack_arrays(
    s2: S2Scene, s1: NDArray[np.floating], dem: NDArray[np.floating]
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Stacks the three modalities (already on one grid) and derives the valid mask.

    Args:
        s2: S2 scene: reflectance ``(12, H, W)`` and its clear mask.
        s1: ``(2, H, W)`` VV, VH in dB, NaN nodata.
        dem: ``(H, W)`` metres, NaN nodata.

    Returns:
        ``(stack, valid)``: float32 ``(15, H, W)`` and bool ``(H, W)``.

    Raises:
        ValueError: The arrays are not on the same grid (shape mismatch) or have wrong band counts.
    """
    refl = np.asarray(s2.reflectance)
    s1 = np.asarray(s1)
    dem = np.asarray(dem)
    if refl.ndim != 3 or refl.shape[0] != len(S2_BANDS):
        raise ValueError(f"S2 must be ({len(S2_BANDS)}, H, W), got {refl.shape}")
    hw = refl.shape[1:]
    if s1.shape != (2, *hw):
        raise ValueError(f"S1 must be (2, {hw[0]}, {hw[1]}) like S2, got {s1.shape}")
    if dem.shape != hw:
        raise ValueError(f"DEM must be {hw} like S2, got {dem.shape}")
    if s2.clear.shape != hw:
        raise ValueError(f"S2 clear mask must be {hw}, got {s2.clear.shape}")
    stack = np.concatenate([refl, s1, dem[np.newaxis]]).astype(np.float32, copy=False)
    valid = s2.clear & np.isfinite(stack).all(axis=0)
    return stack, valid


# --- writing ---------------------------------------------------------------------------------


def stack_tags(
    valid_fraction: float, cloud_fraction: float, s2_offset: S2Offset | None, dry_known: bool
) -> dict[str, str]:
    """The stack file's tags (see the format contract)."""
    tags = {
        _VALID_TAG: VALID_BAND,
        "valid_fraction": repr(float(valid_fraction)),
        "cloud_fraction": repr(float(cloud_fraction)),
        "bands": json.dumps(list(STACK_BANDS)),
    }
    if dry_known:
        tags[_DRY_CAPABLE_TAG] = DRY_CAPABLE_BAND
    if s2_offset is not None:
        tags["s2_offset"] = s2_offset.describe()
    return tags


def stack_writer(grid: GridSpec, out_dir: Path, name: str, *, dry_known: bool, threads: int = 1) -> StackWriter:
    """The block writer of ``<name>_stack.tif`` in ``out_dir`` on ``grid`` (see the format contract).

    ``dry_known``: the scene's cloud state is known (SCL): the file gets a ``dry_capable`` band.
    """
    if not name or "/" in name or "\\" in name or name in {".", ".."}:
        raise ValueError(f"bad stack name: {name!r}")
    out_dir = Path(out_dir)
    for suffix in _OLD_SIDECARS:  # a stale mask of an earlier layout is removed, never left to be read
        (out_dir / f"{name}{suffix}").unlink(missing_ok=True)
    profile = {"width": grid.width, "height": grid.height, "crs": grid.crs, "transform": grid.affine}
    masks = (VALID_BAND, DRY_CAPABLE_BAND) if dry_known else (VALID_BAND,)
    return StackWriter(out_dir / f"{name}{_STACK_SUFFIX}", profile, STACK_CODES, masks, threads=threads)


def write_stack(
    stack: NDArray[np.float32],
    valid: NDArray[np.bool_],
    grid: GridSpec,
    out_dir: Path,
    name: str,
    *,
    cloud_fraction: float = float("nan"),
    dry_capable: NDArray[np.bool_] | None = None,
    s2_offset: S2Offset | None = None,
) -> StackInfo:
    """Writes a scene's stack and masks as ``<name>_stack.tif`` in ``out_dir`` (see the format contract).

    For arrays already in memory; :func:`tasks.prepare.prepare_stack` writes by strips instead.
    The file is written to a temporary name and renamed into place.

    Args:
        stack: float32 ``(15, H, W)`` on ``grid``, NaN nodata, in the stack's units.
        valid: bool ``(H, W)``.
        grid: The grid both arrays are on (UTM, metres).
        out_dir: Target folder (created if missing).
        name: File stem, e.g. a scene key or product id (no path separators).
        cloud_fraction: The S2 scene's cloud fraction (0–1), recorded in the tags and the result.
        dry_capable: bool ``(H, W)`` from :func:`tasks.validity.dry_capable_before_water`, written
            as the ``dry_capable`` band; None (cloud state unknown) writes no such band.
        s2_offset: The S2 offset decision, recorded in the ``s2_offset`` tag and the result.
    """
    if stack.shape != (len(STACK_BANDS), *grid.shape):
        raise ValueError(f"stack {stack.shape} does not match the grid {grid.shape}")
    if valid.shape != grid.shape:
        raise ValueError(f"valid mask {valid.shape} does not match the grid {grid.shape}")
    if dry_capable is not None and dry_capable.shape != grid.shape:
        raise ValueError(f"dry-capable mask {dry_capable.shape} does not match the grid {grid.shape}")
    valid_fraction = float(valid.mean())
    with stack_writer(grid, out_dir, name, dry_known=dry_capable is not None) as writer:
        step = 4 * 256
        for r in range(0, grid.height, step):
            masks = (valid[r : r + step],) + (() if dry_capable is None else (dry_capable[r : r + step],))
            writer.write_rows(r, stack[:, r : r + step], masks)
        writer.finish(stack_tags(valid_fraction, cloud_fraction, s2_offset, dry_capable is not None))
    return stack_info(
        writer.path, grid, valid_fraction, cloud_fraction, dry_known=dry_capable is not None, s2_offset=s2_offset
    )


def stack_info(
    path: Path,
    grid: GridSpec,
    valid_fraction: float,
    cloud_fraction: float,
    *,
    dry_known: bool,
    s2_offset: S2Offset | None,
) -> StackInfo:
    """The :class:`StackInfo` of a stack file in this format (its masks are its own bands)."""
    return StackInfo(
        path,
        path,
        grid,
        valid_fraction,
        float(cloud_fraction),
        dry_capable_path=path if dry_known else None,
        s2_offset=s2_offset,
    )


# --- reading ---------------------------------------------------------------------------------


class StackReader:
    """Reads a stack file a band of rows, or one band, at a time (models' ``WindowSource``).

    ``read_rows`` serves the segmenters' windowed inference; ``read_band`` and ``read_valid``
    serve stages that need one band (the DEM for lake attributes), so no stage has to hold all
    15 bands. Every read returns the stack's units (float32, NaN nodata; masks bool), whatever
    the file stores (the int16 encoding of :mod:`tasks.stack_format` is decoded). Use as a
    context manager.

    Args:
        source: A :class:`StackInfo`, or the path of a ``*_stack.tif``.
        valid_path: A valid-mask file other than the stack (one uint8 band, 1 valid): for stacks
            made elsewhere; default: the stack's own ``valid`` band, else (``strict=False``
            only) "every band finite".
        strict: Require a file written by this module's writers (the ``encoding`` tag,
            :data:`STACK_BANDS` as band descriptions, a ``valid`` band). ``False`` accepts any
            raster whose first 15 bands are the stack (e.g. a float32 training stack made elsewhere).

    Attributes:
        dry_capable_path: The file with the dry-capable band (the stack itself), or None: the
            cloud state is unknown.
        height, width: Raster size in pixels.
        crs, transform: The stack's rasterio CRS and affine transform (pixel corners, metres).

    Raises:
        RasterInputError: Fewer than 15 bands; or, when strict, not written by :func:`write_stack`
            (no ``valid_mask`` tag or ``valid`` band, other band descriptions, a mask on another grid).
    """

    def __init__(
        self, source: StackInfo | str | Path, valid_path: str | Path | None = None, *, strict: bool = True
    ) -> None:
        import rasterio

        path = Path(source.path) if isinstance(source, StackInfo) else Path(source)
        if isinstance(source, StackInfo) and valid_path is None and Path(source.valid_path) != path:
            valid_path = source.valid_path
        self.path = path
        with rasterio.open(path) as ds:
            tags = ds.tags()
            names = tuple(ds.descriptions)
            self._encoded = tags.get(ENCODING_TAG) == ENCODING_VERSION
            self._valid_band = names.index(VALID_BAND) + 1 if VALID_BAND in names and valid_path is None else None
            dry_band = names.index(DRY_CAPABLE_BAND) + 1 if DRY_CAPABLE_BAND in names else None
            if strict and not (_VALID_TAG in tags and self._encoded and (self._valid_band or valid_path)):
                raise RasterInputError(f"{path}: no {_VALID_TAG} tag or valid band; not written by write_stack")
            if ds.count < len(STACK_BANDS):
                raise RasterInputError(f"{path}: expected a {len(STACK_BANDS)}-band stack, found {ds.count} bands")
            if strict and names[: len(STACK_BANDS)] != STACK_BANDS:
                raise RasterInputError(f"{path}: bands {names} are not {STACK_BANDS}")
            self.height, self.width = ds.height, ds.width
            self.crs, self.transform = ds.crs, ds.transform
        self._dry_band = dry_band
        self.dry_capable_path = path if dry_band is not None else None
        self.valid_path = Path(valid_path) if valid_path is not None else (path if self._valid_band else None)
        if valid_path is not None:
            if strict and read_grid(str(valid_path)) != read_grid(str(path)):
                raise RasterInputError(f"{valid_path}: valid mask is not on the stack's grid")
            with rasterio.open(valid_path):  # an unreadable mask is refused now, not mid-scene
                pass

    # No file is held open between reads, and reads go a block row at a time (see _read_block_rows):
    # GDAL's cache of an open dataset's blocks would otherwise stay resident next to the arrays.

    @property
    def grid(self) -> GridSpec:
        """The stack's grid (raises ``ValueError`` for a CRS without EPSG code or a rotated grid)."""
        return read_grid(str(self.path))

    def _data(self, bands: list[int], row0: int, row1: int) -> NDArray[np.float32]:
        """Bands (0-based, of :data:`STACK_BANDS`) of rows ``[row0, row1)`` in the stack's units."""
        if not self._encoded:
            raw = _read_block_rows(self.path, [b + 1 for b in bands], row0, row1, "float32")
            return _nodata_to_nan(self.path, raw)
        stored = _read_block_rows(self.path, [b + 1 for b in bands], row0, row1, "int16")
        out = np.empty(stored.shape, dtype=np.float32)
        for i, b in enumerate(bands):
            out[i] = _decode(stored[i], STACK_CODES[b])
        return out

    def _mask(self, path: Path | None, band: int | None, row0: int, row1: int) -> NDArray[np.bool_]:
        assert path is not None and band is not None
        mask: NDArray[np.bool_] = _read_block_rows(path, [band], row0, row1, "uint8")[0] == 1
        return mask

    def read_rows(self, row0: int, row1: int) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
        """Rows ``[row0, row1)``: float32 ``(15, r, W)`` NaN nodata, and bool ``(r, W)`` valid."""
        stack = self._data(list(range(len(STACK_BANDS))), row0, row1)
        if self.valid_path is None:
            return stack, np.asarray(np.isfinite(stack).all(axis=0))
        return stack, self.read_valid((row0, row1))

    def read_band(self, name: str, rows: tuple[int, int] | None = None) -> NDArray[np.float32]:
        """One band by its :data:`STACK_BANDS` name, float32 ``(r, W)``, NaN nodata.

        E.g. ``read_band("DEM")``: elevation in metres. ``rows``: ``(row0, row1)``, the rows
        ``[row0, row1)`` only (a strip, for stages that stream a scene); default: every row.
        """
        if name not in STACK_BANDS:
            raise ValueError(f"unknown stack band {name!r}; bands are {STACK_BANDS}")
        row0, row1 = self._rows(rows)
        band: NDArray[np.float32] = self._data([STACK_BANDS.index(name)], row0, row1)[0]
        return band

    def read_valid(self, rows: tuple[int, int] | None = None) -> NDArray[np.bool_]:
        """The valid mask, bool ``(r, W)``: rows ``[row0, row1)`` of ``rows``, default every row."""
        row0, row1 = self._rows(rows)
        if self.valid_path is None:
            return self.read_rows(row0, row1)[1]
        return self._mask(self.valid_path, self._valid_band or 1, row0, row1)

    def read_dry_capable(self, rows: tuple[int, int] | None = None) -> NDArray[np.bool_] | None:
        """The dry-capable mask, bool ``(r, W)``, rows as :meth:`read_valid`; None: cloud state unknown.

        None when the stack has no dry-capable band (written without SCL).
        """
        if self.dry_capable_path is None:
            return None
        row0, row1 = self._rows(rows)
        return self._mask(self.dry_capable_path, self._dry_band, row0, row1)

    def _rows(self, rows: tuple[int, int] | None) -> tuple[int, int]:
        """``rows`` checked against the raster (``ValueError`` outside it); None: every row."""
        if rows is None:
            return 0, self.height
        row0, row1 = rows
        if not 0 <= row0 < row1 <= self.height:
            raise ValueError(f"rows {rows} outside the stack's 0..{self.height}")
        return row0, row1

    def read_all(self) -> NDArray[np.float32]:
        """The whole stack, float32 ``(15, H, W)``, NaN nodata (15 × H × W × 4 bytes in memory)."""
        return self.read_rows(0, self.height)[0]

    def close(self) -> None:
        """Nothing to release: no file is held open between reads (kept for the context-manager protocol)."""

    def __enter__(self) -> StackReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _nodata_to_nan(path: Path, data: NDArray[np.float32]) -> NDArray[np.float32]:
    """A foreign float stack's nodata value as NaN (NaN nodata stays as read)."""
    import rasterio

    with rasterio.open(path) as ds:
        nodata = ds.nodata
    if nodata is not None and not math.isnan(nodata):
        data[data == nodata] = np.nan
    return data


_MIN_STRIP_ROWS = 256
"""Rows read per file opening at least (a tile row of the stack)."""


def _read_block_rows(path: Path, bands: list[int], row0: int, row1: int, dtype: str) -> NDArray[Any]:
    """Rows ``[row0, row1)`` of ``bands`` (1-based), read a block row at a time: ``(len(bands), r, W)``.

    The file is opened and closed again for each block row, for memory: GDAL's block cache keeps
    every block an open dataset has decompressed (up to GDAL_CACHEMAX, 5 % of RAM by default).
    Closing frees the blocks: the cache peaks at one block row of the bands read. Strips start
    on block boundaries, so a block is decompressed once per call.
    """
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path) as ds:
        block_h, width = ds.block_shapes[0][0], ds.width
    step = block_h * max(1, -(-_MIN_STRIP_ROWS // block_h))
    out = np.empty((len(bands), row1 - row0, width), dtype=dtype)
    r = row0
    while r < row1:
        end = min(row1, (r // step + 1) * step)
        with rasterio.open(path) as ds:
            out[:, r - row0 : end - row0, :] = ds.read(bands, window=Window(0, r, width, end - r), out_dtype=dtype)
        r = end
    return out


def read_stack(
    info_or_path: StackInfo | Path | str,
) -> tuple[NDArray[np.float32], NDArray[np.bool_], GridSpec]:
    """Reads a whole stack written by :func:`write_stack` into memory.

    Args:
        info_or_path: A :class:`StackInfo`, or the path of the ``*_stack.tif`` (its valid mask is
            found through the file's tags).

    Returns:
        ``(stack, valid, grid)``: float32 ``(15, H, W)`` NaN nodata, bool ``(H, W)``, the grid.

    Raises:
        RasterInputError: The file's bands are not :data:`STACK_BANDS`, it has no valid mask, or the
            mask is on another grid.
    """
    with StackReader(info_or_path) as reader:
        return reader.read_all(), reader.read_valid(), reader.grid
