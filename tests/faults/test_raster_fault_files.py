"""I1 at the reader: each raster fault class of reliability §3 in a tiny standalone file (fast, no flow).

The files come from :mod:`tests.data.faults.make` (64 px, 16 px tiles); each is read by the
pipeline's own warper (:func:`tasks.preprocess._warp`, what every S2 band, S1 polarisation and DEM
tile goes through) onto a 64 px scene grid. Bad files raise :class:`~core.errors.RasterInputError`
with one line naming the file and the reason; usable ones land on the grid with NaN as nodata.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from core.errors import RasterInputError
from tasks.grid import GridSpec
from tasks.preprocess import _warp
from tests.data.faults.make import UTM, mislabel_crs, nan_without_nodata, tiny_band, truncate

GRID = GridSpec(UTM, (10.0, 0.0, 668100.0, 0.0, -10.0, 4769760.0), 64, 64)
"""The scene grid the tiny files are read onto (EPSG:32643, 10 m, 64 × 64 px)."""


def _refusal(path: Path) -> str:
    with pytest.raises(RasterInputError) as caught:
        _warp(str(path), GRID, src_nodata=0)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    return message


def test_truncated_file_is_refused_naming_the_failed_block(tmp_path: Path) -> None:
    path = truncate(tiny_band(tmp_path / "b08.tif"), keep=0.6, block=16)
    with rasterio.open(path) as ds:  # the header survived the cut: it opens, the blocks do not read
        assert ds.width == 64
    message = _refusal(path)
    assert "TIFFReadEncodedTile() failed" in message or "IReadBlock failed" in message, message


def test_missing_crs_is_refused(tmp_path: Path) -> None:
    path = tiny_band(tmp_path / "b03.tif", epsg=None)
    assert "not georeferenced" in _refusal(path)


def test_wrong_crs_label_is_refused_with_the_files_crs_and_bounds(tmp_path: Path) -> None:
    path = mislabel_crs(tiny_band(tmp_path / "b04.tif"), 4326)
    message = _refusal(path)
    assert "no valid pixel on the scene grid" in message and "EPSG:4326" in message, message


def test_all_nodata_is_refused(tmp_path: Path) -> None:
    path = tiny_band(tmp_path / "b02.tif", value=0)
    with rasterio.open(path, "r+") as ds:
        ds.write(np.zeros((1, 64, 64), np.uint16))
    assert "holds only nodata" in _refusal(path)


def test_nan_without_a_nodata_tag_is_nodata(tmp_path: Path) -> None:
    path = tiny_band(tmp_path / "vv.tif", dtype="float32", nodata=None, value=0.05)
    nan_without_nodata(path, (668100.0, 4769760.0 - 200.0, 668100.0 + 200.0, 4769760.0))  # 20 × 20 px corner
    out = _warp(str(path), GRID)
    assert np.isnan(out[:20, :20]).all()
    assert np.isfinite(out[25:, 25:]).all()


def test_mismatched_grid_lands_on_the_scene_grid(tmp_path: Path) -> None:
    """20 m, origin half a pixel off the 10 m lattice: resampled onto the grid, no pixel lost inside."""
    path = tiny_band(tmp_path / "b11.tif", size=40, res=20.0, origin=(668100.0 - 10.0, 4769760.0 + 10.0))
    out = _warp(str(path), GRID, src_nodata=0)
    assert out.shape == (64, 64) and np.isfinite(out[1:-1, 1:-1]).all()
