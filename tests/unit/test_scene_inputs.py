"""An input raster that leaves no valid pixel on the scene grid is bad input, named (item 2).

A wrong CRS reprojects to all-NaN; before, such a scene was stored with valid fraction 0 and read
"already processed" for ever. Now the read raises RasterInputError naming the file, its CRS and
bounds; unreadable and ungeoreferenced files are RasterInputError too, one line each.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from core.errors import RasterInputError
from tasks.grid import GridSpec
from tasks.preprocess import read_dem, read_s1

GRID = GridSpec(epsg=32643, transform=(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_700_000.0), width=32, height=32)


def _tif(path: Path, epsg: int | None, origin: tuple[float, float], pixel: float) -> Path:
    profile = {
        "driver": "GTiff",
        "width": 16,
        "height": 16,
        "count": 1,
        "dtype": "float32",
        "transform": from_origin(*origin, pixel, pixel),
        **({"crs": f"EPSG:{epsg}"} if epsg else {}),
    }
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(np.full((1, 16, 16), 3000.0, dtype=np.float32))
    return path


def test_a_wrong_crs_is_refused_naming_the_file(tmp_path: Path) -> None:
    good = _tif(tmp_path / "good.tif", 32643, (500_000.0, 4_700_000.0), 20.0)
    assert np.isfinite(read_dem(str(good), GRID)).all()
    # The same numbers under another CRS: UTM zone 1, an ocean away from the grid.
    wrong = _tif(tmp_path / "wrong_crs.tif", 32601, (500_000.0, 4_700_000.0), 20.0)
    with pytest.raises(RasterInputError) as err:
        read_dem(str(wrong), GRID)
    message = str(err.value)
    assert "wrong_crs.tif" in message and "EPSG:32601" in message and "no valid pixel" in message
    assert "\n" not in message
    with pytest.raises(RasterInputError, match=r"wrong_crs\.tif"):
        read_s1(str(wrong), str(wrong), GRID)


def test_unreadable_and_ungeoreferenced_files_are_bad_input(tmp_path: Path) -> None:
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    with pytest.raises(RasterInputError, match=r"notes\.tif: unreadable raster"):
        read_dem(str(text), GRID)
    bare = _tif(tmp_path / "bare.tif", None, (0.0, 16.0), 1.0)
    with pytest.raises(RasterInputError, match=r"bare\.tif: raster is not georeferenced"):
        read_dem(str(bare), GRID)
    with pytest.raises(RasterInputError, match=r"nosuch\.tif"):
        read_dem(str(tmp_path / "nosuch.tif"), GRID)
