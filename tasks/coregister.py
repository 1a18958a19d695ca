"""The analysis-ready stack: S2 + S1 + DEM on one grid, written as a COG with a valid-data mask.

Stack: float32 ``(15, H, W)`` in :data:`STACK_BANDS` order (S2 reflectance × 10 000 on the
pre-04.00 scale, VV and VH in dB, DEM in metres), NaN nodata. The valid mask is where all three
sources could see: clear S2 ∧ finite S1 ∧ finite DEM. Pixels outside it keep their data (a cloud
still has a reflectance); the mask, not a fill value, says they are not to be used.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from models.segmenter import STACK_BANDS as _MODEL_STACK_BANDS
from tasks.grid import GridSpec
from tasks.preprocess import S2_BANDS, S2Scene

__all__ = ["STACK_BANDS", "StackInfo", "read_stack", "stack_arrays", "write_stack"]

STACK_BANDS = (*S2_BANDS, "VV", "VH", "DEM")
"""Band order of the stack: 12 × S2 L2A (TerraMind order), S1 VV, VH (dB), DEM (m)."""

if STACK_BANDS != _MODEL_STACK_BANDS:  # pragma: no cover - a programming error, caught at import
    raise ImportError("tasks.coregister.STACK_BANDS and models.segmenter.STACK_BANDS disagree")

_STACK_SUFFIX = "_stack.tif"
_VALID_SUFFIX = "_valid.tif"


@dataclass(frozen=True)
class StackInfo:
    """Where a scene's stack lives and what it covers (small: passed between tasks).

    Attributes:
        path: The 15-band float32 COG.
        valid_path: The uint8 valid-mask COG (1 valid, 0 not).
        grid: The scene grid.
        valid_fraction: Share of grid pixels that are valid, 0–1.
        cloud_fraction: Share of S2 data pixels flagged cloud/cloud shadow, 0–1 (NaN if unknown).
    """

    path: Path
    valid_path: Path
    grid: GridSpec
    valid_fraction: float
    cloud_fraction: float


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


# --- I/O -------------------------------------------------------------------------------------


def _atomic_write(
    path: Path,
    profile: dict[str, object],
    data: NDArray[np.generic],
    descriptions: tuple[str, ...],
    tags: dict[str, str],
) -> None:
    """Writes a COG next to ``path`` and renames it into place, so a crash leaves no half file."""
    import rasterio

    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
            dst.descriptions = descriptions
            dst.update_tags(**tags)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_stack(
    stack: NDArray[np.float32],
    valid: NDArray[np.bool_],
    grid: GridSpec,
    out_dir: Path,
    name: str,
    *,
    cloud_fraction: float = float("nan"),
) -> StackInfo:
    """Writes a scene's stack and valid mask as two COGs in ``out_dir``.

    ``<name>_stack.tif``: 15-band float32, nodata NaN, band descriptions = :data:`STACK_BANDS`.
    ``<name>_valid.tif``: uint8, 1 valid / 0 not. Each file is written to a temporary name and
    renamed into place.

    Args:
        stack: float32 ``(15, H, W)`` on ``grid``.
        valid: bool ``(H, W)``.
        grid: The grid both arrays are on.
        out_dir: Target folder (created if missing).
        name: File stem, e.g. a scene key or product id (no path separators).
        cloud_fraction: The S2 scene's cloud fraction, recorded in the COG tags and the result.
    """
    if stack.shape != (len(STACK_BANDS), *grid.shape):
        raise ValueError(f"stack {stack.shape} does not match the grid {grid.shape}")
    if valid.shape != grid.shape:
        raise ValueError(f"valid mask {valid.shape} does not match the grid {grid.shape}")
    if not name or "/" in name or "\\" in name or name in {".", ".."}:
        raise ValueError(f"bad stack name: {name!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path, valid_path = out_dir / f"{name}{_STACK_SUFFIX}", out_dir / f"{name}{_VALID_SUFFIX}"
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
        "valid_mask": valid_path.name,
        "valid_fraction": repr(valid_fraction),
        "cloud_fraction": repr(float(cloud_fraction)),
        "bands": json.dumps(list(STACK_BANDS)),
    }
    _atomic_write(
        path,
        {**common, "count": len(STACK_BANDS), "dtype": "float32", "nodata": np.nan, "predictor": 3},
        stack.astype(np.float32, copy=False),
        STACK_BANDS,
        tags,
    )
    _atomic_write(
        valid_path,
        {**common, "count": 1, "dtype": "uint8", "predictor": 2},
        valid.astype(np.uint8)[np.newaxis],
        ("valid",),
        {"meaning": "1 = clear S2, finite S1 and DEM; 0 = not observed"},
    )
    return StackInfo(path, valid_path, grid, valid_fraction, float(cloud_fraction))


def read_stack(
    info_or_path: StackInfo | Path | str,
) -> tuple[NDArray[np.float32], NDArray[np.bool_], GridSpec]:
    """Reads a stack written by :func:`write_stack`.

    Args:
        info_or_path: A :class:`StackInfo`, or the path of the ``*_stack.tif`` (its valid mask is
            found through the file's tags).

    Returns:
        ``(stack, valid, grid)``: float32 ``(15, H, W)`` NaN nodata, bool ``(H, W)``, the grid.

    Raises:
        ValueError: The file's bands are not :data:`STACK_BANDS`, or the mask is on another grid.
    """
    import rasterio

    from tasks.grid import read_grid

    if isinstance(info_or_path, StackInfo):
        path, valid_path = Path(info_or_path.path), Path(info_or_path.valid_path)
    else:
        path = Path(info_or_path)
        with rasterio.open(path) as ds:
            valid_name = ds.tags().get("valid_mask")
        if not valid_name:
            raise ValueError(f"{path}: no valid_mask tag; not written by write_stack")
        valid_path = path.parent / valid_name
    grid = read_grid(str(path))
    with rasterio.open(path) as ds:
        if tuple(ds.descriptions) != STACK_BANDS:
            raise ValueError(f"{path}: bands {ds.descriptions} are not {STACK_BANDS}")
        stack = ds.read().astype(np.float32, copy=False)
    if read_grid(str(valid_path)) != grid:
        raise ValueError(f"{valid_path}: valid mask is not on the stack's grid")
    with rasterio.open(valid_path) as ds:
        valid = ds.read(1) == 1
    return stack, valid, grid
