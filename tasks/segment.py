"""Segmentation stage: analysis-ready stack in, water-probability COG out.

The probability raster is float32 0–1 on the scene grid, NaN (declared nodata) outside the
valid mask: nodata is never written as 0, which would read as "certainly dry".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from numpy.typing import NDArray
from prefect import task
from prefect.cache_policies import NO_CACHE

from models.registry import load_segmenter
from tasks.coregister import StackInfo, read_stack
from tasks.grid import GridSpec


def write_float_cog(array: NDArray[np.float32], grid: GridSpec, path: Path, description: str) -> Path:
    """Write one float32 band as a tiled, deflate-compressed COG with NaN nodata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial.tif")
    profile = {
        "driver": "COG",
        "dtype": "float32",
        "count": 1,
        "width": grid.width,
        "height": grid.height,
        "crs": grid.crs,
        "transform": grid.affine,
        "nodata": float("nan"),
        "compress": "deflate",
        "predictor": 3,
        "blocksize": 256,
    }
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(array.astype(np.float32, copy=False), 1)
        dst.set_band_description(1, description)
    # Write-then-rename: a crash never leaves a half-written file under the final name.
    tmp.replace(path)
    return path


def segment_stack(stack_info: StackInfo, model_spec: str, out_path: Path) -> Path:
    """Run the named segmenter over a stack file and write the probability COG."""
    stack, valid, grid = read_stack(stack_info)
    segmenter = load_segmenter(model_spec)
    prob = segmenter.predict(stack, valid)
    prob = np.where(valid, prob, np.nan).astype(np.float32)
    return write_float_cog(prob, grid, out_path, f"water probability ({segmenter.name})")


@task(name="segment", cache_policy=NO_CACHE)
def segment_task(stack_info: StackInfo, model_spec: str, out_path: Path) -> Path:
    """Prefect wrapper of ``segment_stack`` (small in, a path out)."""
    return segment_stack(stack_info, model_spec, out_path)
