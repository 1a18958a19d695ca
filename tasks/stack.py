"""The analysis-ready stack file: S2 + S1 + DEM on one grid, a COG with a valid-mask sidecar.

This module is the one owner of the stack file: its band order, dtype, nodata, tags and the
valid-mask sidecar, its writer (:func:`write_stack`) and its readers (:class:`StackReader` for
windowed row reads and single bands, :func:`read_stack` for the whole stack).

Stack: float32 ``(15, H, W)`` in :data:`STACK_BANDS` order (S2 reflectance × 10 000 on the
pre-04.00 scale, VV and VH in dB, DEM in metres), NaN nodata, on the scene grid (a north-up UTM
grid, metres). The valid mask is where all three sources could see: clear S2 ∧ finite S1 ∧
finite DEM. Pixels outside it keep their data (a cloud still has a reflectance); the mask, not a
fill value, says they are not to be used.

STACK FILE FORMAT CONTRACT (change together):
    The file layout is written in :func:`write_stack` and read back in :class:`StackReader`:

    * ``<name>_stack.tif``: COG, :data:`STACK_BANDS` as band descriptions and in the ``bands``
      tag, float32, nodata NaN, tags ``valid_mask`` (the sidecar's file name),
      ``valid_fraction``, ``cloud_fraction``;
    * ``<name>_valid.tif``: COG, uint8, one band ``valid``, 1 valid / 0 not, on the same grid;
    * ``<name>_drycapable.tif`` (only when the scene's cloud state is known): COG, uint8, one band
      ``dry_capable``, 1 where a lake's place could be seen dry before the segmentation (valid
      ∧ not snow/ice, :func:`tasks.validity.dry_capable_before_water`), named by the stack's
      ``dry_capable_mask`` tag; the stack's ``s2_offset`` tag says how the S2 offset was decided.

    :data:`STACK_BANDS` must equal ``models.segmenter.STACK_BANDS`` (the segmenters' input
    order; checked at import). A change to any item above changes the writer, the reader and
    ``tests/unit/test_stack.py::test_stack_file_format_contract`` together.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from core.errors import RasterInputError
from core.files import atomic_path
from models.segmenter import STACK_BANDS as _MODEL_STACK_BANDS
from tasks.grid import GridSpec, read_grid
from tasks.preprocess import S2_BANDS, S2Scene
from tasks.validity import S2Offset

__all__ = [
    "STACK_BANDS",
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
"""Nodata of every stack band (never a fill value such as 0, which would read as data)."""
VALID_BAND = "valid"
"""Band description of the uint8 valid-mask sidecar (1 valid, 0 not)."""
DRY_CAPABLE_BAND = "dry_capable"
"""Band description of the uint8 dry-capable sidecar (1 could be seen dry, 0 not)."""
_VALID_TAG = "valid_mask"
_DRY_CAPABLE_TAG = "dry_capable_mask"
_STACK_SUFFIX = "_stack.tif"
_VALID_SUFFIX = "_valid.tif"
_DRY_CAPABLE_SUFFIX = "_drycapable.tif"


@dataclass(frozen=True)
class StackInfo:
    """Where a scene's stack lives and what it covers (small: passed between tasks).

    Attributes:
        path: The 15-band float32 COG.
        valid_path: The uint8 valid-mask COG (1 valid, 0 not).
        grid: The scene grid.
        valid_fraction: Share of grid pixels that are valid, 0–1.
        cloud_fraction: Share of S2 data pixels flagged cloud/cloud shadow, 0–1 (NaN if unknown).
        quality: ``(key, text)`` measurements made while the stack was assembled, for the
            scene's ``inputs`` (e.g. ``coregistration``: JSON, see ``tasks.coregister``).
        dry_capable_path: The uint8 dry-capable COG (see the format contract); None when the
            cloud state is unknown (no SCL): then no place of the scene counts as seen dry.
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


def _write_cog(
    path: Path,
    profile: dict[str, object],
    data: NDArray[np.generic],
    descriptions: tuple[str, ...],
    tags: dict[str, str],
) -> None:
    """Writes one COG under ``path`` through a temporary sibling, so a crash leaves no half file."""
    import rasterio

    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = descriptions
        dst.update_tags(**tags)


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
    """Writes a scene's stack and valid mask as two COGs in ``out_dir`` (see the format contract above).

    ``<name>_stack.tif``: 15-band float32, nodata NaN, band descriptions = :data:`STACK_BANDS`.
    ``<name>_valid.tif``: uint8, 1 valid / 0 not. Each file is written to a temporary name and
    renamed into place.

    Args:
        stack: float32 ``(15, H, W)`` on ``grid``, NaN nodata.
        valid: bool ``(H, W)``.
        grid: The grid both arrays are on (UTM, metres).
        out_dir: Target folder (created if missing).
        name: File stem, e.g. a scene key or product id (no path separators).
        cloud_fraction: The S2 scene's cloud fraction (0–1), recorded in the COG tags and the result.
        dry_capable: bool ``(H, W)`` from :func:`tasks.validity.dry_capable_before_water`, written
            as ``<name>_drycapable.tif``; None (cloud state unknown) writes no such file.
        s2_offset: The S2 offset decision, recorded in the ``s2_offset`` tag and the result.
    """
    if stack.shape != (len(STACK_BANDS), *grid.shape):
        raise ValueError(f"stack {stack.shape} does not match the grid {grid.shape}")
    if valid.shape != grid.shape:
        raise ValueError(f"valid mask {valid.shape} does not match the grid {grid.shape}")
    if dry_capable is not None and dry_capable.shape != grid.shape:
        raise ValueError(f"dry-capable mask {dry_capable.shape} does not match the grid {grid.shape}")
    if not name or "/" in name or "\\" in name or name in {".", ".."}:
        raise ValueError(f"bad stack name: {name!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path, valid_path = out_dir / f"{name}{_STACK_SUFFIX}", out_dir / f"{name}{_VALID_SUFFIX}"
    dry_path = out_dir / f"{name}{_DRY_CAPABLE_SUFFIX}" if dry_capable is not None else None
    valid_fraction = float(valid.mean())
    common = {
        "driver": "COG",
        "width": grid.width,
        "height": grid.height,
        "crs": grid.crs,
        "transform": grid.affine,
        "compress": "deflate",
        "blocksize": 256,
    }
    tags = {
        _VALID_TAG: valid_path.name,
        "valid_fraction": repr(valid_fraction),
        "cloud_fraction": repr(float(cloud_fraction)),
        "bands": json.dumps(list(STACK_BANDS)),
    }
    if dry_path is not None:
        tags[_DRY_CAPABLE_TAG] = dry_path.name
    if s2_offset is not None:
        tags["s2_offset"] = s2_offset.describe()
    _write_cog(
        path,
        {**common, "count": len(STACK_BANDS), "dtype": STACK_DTYPE, "nodata": STACK_NODATA, "predictor": 3},
        stack.astype(np.float32, copy=False),
        STACK_BANDS,
        tags,
    )
    _write_cog(
        valid_path,
        {**common, "count": 1, "dtype": "uint8", "predictor": 2},
        valid.astype(np.uint8)[np.newaxis],
        (VALID_BAND,),
        {"meaning": "1 = clear S2, finite S1 and DEM; 0 = not observed"},
    )
    if dry_path is not None:
        assert dry_capable is not None
        # A stale sidecar of an earlier write under this name is replaced, never left to be read.
        _write_cog(
            dry_path,
            {**common, "count": 1, "dtype": "uint8", "predictor": 2},
            dry_capable.astype(np.uint8)[np.newaxis],
            (DRY_CAPABLE_BAND,),
            {"meaning": "1 = valid and not snow/ice, cloud state known from SCL; 0 = cannot be seen dry"},
        )
    else:
        (out_dir / f"{name}{_DRY_CAPABLE_SUFFIX}").unlink(missing_ok=True)
    return StackInfo(
        path, valid_path, grid, valid_fraction, float(cloud_fraction), dry_capable_path=dry_path, s2_offset=s2_offset
    )


# --- reading ---------------------------------------------------------------------------------


class StackReader:
    """Reads a stack file a band of rows, or one band, at a time (models' ``WindowSource``).

    ``read_rows`` serves the segmenters' windowed inference; ``read_band`` and ``read_valid``
    serve stages that need one band (the DEM for lake attributes), so no stage has to hold all
    15 bands. Use as a context manager.

    Args:
        source: A :class:`StackInfo`, or the path of a ``*_stack.tif``.
        valid_path: The valid-mask sidecar; default: the :class:`StackInfo`'s, else the file named
            by the stack's ``valid_mask`` tag beside it, else (``strict=False`` only) "every band
            finite".
        strict: Require a file written by :func:`write_stack`: :data:`STACK_BANDS` as band
            descriptions and a valid mask on the stack's grid. ``False`` accepts any 15-band
            raster (e.g. a training stack made elsewhere).

    Attributes:
        dry_capable_path: The dry-capable sidecar (from the :class:`StackInfo`, else the stack's
            ``dry_capable_mask`` tag), or None: the cloud state is unknown.
        height, width: Raster size in pixels.
        crs, transform: The stack's rasterio CRS and affine transform (pixel corners, metres).

    Raises:
        RasterInputError: Not a 15-band raster; or, when strict, not written by :func:`write_stack`
            (no ``valid_mask`` tag, other band descriptions, a mask on another grid).
    """

    def __init__(
        self, source: StackInfo | str | Path, valid_path: str | Path | None = None, *, strict: bool = True
    ) -> None:
        import rasterio

        dry_path: Path | None = None
        if isinstance(source, StackInfo):
            path, valid_path = Path(source.path), Path(valid_path or source.valid_path)
            dry_path = source.dry_capable_path
        else:
            path = Path(source)
        self.path = path
        with rasterio.open(path) as ds:
            tag = ds.tags().get(_VALID_TAG)
            dry_tag = ds.tags().get(_DRY_CAPABLE_TAG)
            if dry_path is None and not isinstance(source, StackInfo) and dry_tag:
                dry_path = path.with_name(dry_tag)
            if valid_path is None and tag:
                valid_path = path.with_name(tag)
            if strict and valid_path is None:
                raise RasterInputError(f"{path}: no {_VALID_TAG} tag; not written by write_stack")
            if ds.count != len(STACK_BANDS):
                raise RasterInputError(f"{path}: expected a {len(STACK_BANDS)}-band stack, found {ds.count} bands")
            if strict and tuple(ds.descriptions) != STACK_BANDS:
                raise RasterInputError(f"{path}: bands {ds.descriptions} are not {STACK_BANDS}")
            self.height, self.width = ds.height, ds.width
            self.crs, self.transform = ds.crs, ds.transform
        self.valid_path = Path(valid_path) if valid_path is not None else None
        self.dry_capable_path = dry_path
        if strict and read_grid(str(self.valid_path)) != read_grid(str(path)):
            raise RasterInputError(f"{self.valid_path}: valid mask is not on the stack's grid")
        if self.valid_path is not None:
            with rasterio.open(self.valid_path):  # an unreadable mask is refused now, not mid-scene
                pass

    # No file is held open between reads, and reads go a block row at a time (see _read_block_rows):
    # GDAL's cache of an open dataset's blocks would otherwise stay resident next to the arrays.

    @property
    def grid(self) -> GridSpec:
        """The stack's grid (raises ``ValueError`` for a CRS without EPSG code or a rotated grid)."""
        return read_grid(str(self.path))

    def read_rows(self, row0: int, row1: int) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
        """Rows ``[row0, row1)``: float32 ``(15, r, W)`` NaN nodata, and bool ``(r, W)`` valid."""
        stack = _read_block_rows(self.path, None, row0, row1, STACK_DTYPE)
        if self.valid_path is None:
            valid: NDArray[np.bool_] = np.isfinite(stack).all(axis=0)
        else:
            valid = _read_block_rows(self.valid_path, 1, row0, row1, "uint8") == 1
        return stack, valid

    def read_band(self, name: str, rows: tuple[int, int] | None = None) -> NDArray[np.float32]:
        """One band by its :data:`STACK_BANDS` name, float32 ``(r, W)``, NaN nodata.

        E.g. ``read_band("DEM")``: elevation in metres. ``rows``: ``(row0, row1)``, the rows
        ``[row0, row1)`` only (a strip, for stages that stream a scene); default: every row.
        """
        if name not in STACK_BANDS:
            raise ValueError(f"unknown stack band {name!r}; bands are {STACK_BANDS}")
        row0, row1 = self._rows(rows)
        return _read_block_rows(self.path, STACK_BANDS.index(name) + 1, row0, row1, STACK_DTYPE)

    def read_valid(self, rows: tuple[int, int] | None = None) -> NDArray[np.bool_]:
        """The valid mask, bool ``(r, W)``: rows ``[row0, row1)`` of ``rows``, default every row."""
        row0, row1 = self._rows(rows)
        if self.valid_path is None:
            return self.read_rows(row0, row1)[1]
        mask: NDArray[np.bool_] = _read_block_rows(self.valid_path, 1, row0, row1, "uint8") == 1
        return mask

    def read_dry_capable(self, rows: tuple[int, int] | None = None) -> NDArray[np.bool_] | None:
        """The dry-capable mask, bool ``(r, W)``, rows as :meth:`read_valid`; None: cloud state unknown.

        None when the stack has no dry-capable sidecar (written without SCL).
        """
        if self.dry_capable_path is None:
            return None
        row0, row1 = self._rows(rows)
        mask: NDArray[np.bool_] = _read_block_rows(self.dry_capable_path, 1, row0, row1, "uint8") == 1
        return mask

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


_MIN_STRIP_ROWS = 256
"""Rows read per file opening at least (a block row of our COGs)."""


def _read_block_rows(path: Path, band: int | None, row0: int, row1: int, dtype: str) -> NDArray[Any]:
    """Rows ``[row0, row1)`` of one band (1-based) or of all (``None``), read a block row at a time.

    The file is opened and closed again for each block row, for memory: GDAL's block cache keeps
    every block an open dataset has decompressed (up to GDAL_CACHEMAX, 5 % of RAM by default), and
    a block of the pixel-interleaved stack COG holds all 15 bands, so even a one-band read would
    leave the whole stack in the cache. Closing frees the blocks: the cache peaks at one block row
    (15 × W × 256 × 4 bytes, 63 MB at 4096 px). Strips start on block boundaries, so a block is
    decompressed once per call.

    Returns:
        ``dtype`` ``(r, W)`` for one band, ``(count, r, W)`` for all.
    """
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path) as ds:
        block_h, width, count = ds.block_shapes[0][0], ds.width, ds.count
    step = block_h * max(1, -(-_MIN_STRIP_ROWS // block_h))
    shape = (row1 - row0, width) if band is not None else (count, row1 - row0, width)
    out = np.empty(shape, dtype=dtype)
    r = row0
    while r < row1:
        end = min(row1, (r // step + 1) * step)
        with rasterio.open(path) as ds:
            out[..., r - row0 : end - row0, :] = ds.read(band, window=Window(0, r, width, end - r), out_dtype=dtype)
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
