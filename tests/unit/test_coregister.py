"""The analysis-ready stack: valid mask logic, NaN nodata, COG round trip."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from models.segmenter import STACK_BANDS as MODEL_STACK_BANDS
from tasks.coregister import STACK_BANDS, StackInfo, read_stack, stack_arrays, write_stack
from tasks.grid import GridSpec
from tasks.preprocess import S2Scene

GRID = GridSpec(32645, (10.0, 0.0, 500_000.0, 0.0, -10.0, 3_100_000.0), 24, 16)


def _inputs():
    h, w = GRID.shape
    refl = np.full((12, h, w), 1500.0, dtype=np.float32)
    refl[:, 0, 0] = np.nan  # S2 nodata
    clear = np.isfinite(refl).all(axis=0)
    clear[5:8, 5:8] = False  # cloud: data present, not clear
    s1 = np.full((2, h, w), -15.0, dtype=np.float32)
    s1[1, 10, 3] = np.nan  # S1 nodata in VH only
    dem = np.full((h, w), 4800.0, dtype=np.float32)
    dem[15, 23] = np.nan
    return S2Scene(refl, clear, 0.09), s1, dem


def test_band_order_is_one_contract():
    """The tasks and models packages agree on the 15-band order.

    Guards against a silent band shuffle into the model.
    """
    assert len(STACK_BANDS) == 15
    assert STACK_BANDS == MODEL_STACK_BANDS
    assert STACK_BANDS[-3:] == ("VV", "VH", "DEM") and STACK_BANDS[2] == "B03"


def test_valid_is_clear_s2_and_finite_s1_and_dem():
    """Valid = clear S2 ∧ finite S1 ∧ finite DEM, and nodata stays NaN in the stack (never 0)."""
    s2, s1, dem = _inputs()
    stack, valid = stack_arrays(s2, s1, dem)
    assert stack.shape == (15, 16, 24) and stack.dtype == np.float32
    assert not valid[0, 0] and not valid[10, 3] and not valid[15, 23]
    assert not valid[5:8, 5:8].any()
    assert valid.sum() == 16 * 24 - 3 - 9
    # Nodata stays NaN in the stack, never a fill value.
    assert np.isnan(stack[:12, 0, 0]).all()
    assert np.isnan(stack[13, 10, 3]) and stack[12, 10, 3] == -15.0
    assert np.isnan(stack[14, 15, 23])
    assert not (stack == 0).any()
    # Cloudy pixels keep their data; only the mask excludes them.
    assert (stack[:12, 6, 6] == 1500.0).all()


@pytest.mark.parametrize(
    "bad",
    [
        lambda s2, s1, dem: (s2, s1[:, :-1], dem),
        lambda s2, s1, dem: (s2, s1, dem[:-1]),
        lambda s2, s1, dem: (s2, s1[:1], dem),
    ],
)
def test_mismatched_grids_are_refused(bad):
    """Arrays on different grids are refused instead of being stacked misaligned."""
    with pytest.raises(ValueError, match="like S2|must be"):
        stack_arrays(*bad(*_inputs()))


def test_cog_round_trip_keeps_nan_mask_and_grid(tmp_path):
    """The stack COG and mask COG round-trip exactly: bands, NaN, mask, grid and fractions."""
    s2, s1, dem = _inputs()
    stack, valid = stack_arrays(s2, s1, dem)
    info = write_stack(stack, valid, GRID, tmp_path / "out", "scene-1", cloud_fraction=0.09)
    assert isinstance(info, StackInfo)
    assert info.path.name == "scene-1_stack.tif" and info.valid_path.name == "scene-1_valid.tif"
    assert info.valid_fraction == pytest.approx(valid.mean())
    assert info.cloud_fraction == 0.09 and info.grid == GRID
    assert not list((tmp_path / "out").glob("*.part")), "no temporary files left behind"

    with rasterio.open(info.path) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.count == 15 and ds.dtypes[0] == "float32"
        assert np.isnan(ds.nodata)
        assert ds.descriptions == STACK_BANDS
        assert ds.crs.to_epsg() == 32645
    with rasterio.open(info.valid_path) as ds:
        assert ds.dtypes[0] == "uint8" and ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert set(np.unique(ds.read(1))) == {0, 1}

    for source in (info, info.path, str(info.path)):
        back, back_valid, grid = read_stack(source)
        assert grid == GRID
        np.testing.assert_array_equal(back, stack)  # NaN positions equal too
        np.testing.assert_array_equal(back_valid, valid)


def test_read_stack_refuses_foreign_files(tmp_path):
    """A raster not written by write_stack is refused with a reason."""
    path = tmp_path / "other.tif"
    profile = {"driver": "GTiff", "width": 4, "height": 4, "count": 1, "dtype": "float32",
               "crs": "EPSG:32645", "transform": GRID.affine}  # fmt: skip
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(np.zeros((1, 4, 4), np.float32))
    with pytest.raises(ValueError, match="valid_mask"):
        read_stack(path)


def test_write_stack_checks_shapes_and_name(tmp_path):
    """Wrong shapes and path-like names are refused before anything is written."""
    s2, s1, dem = _inputs()
    stack, valid = stack_arrays(s2, s1, dem)
    with pytest.raises(ValueError, match="grid"):
        write_stack(stack[:, :-1], valid[:-1], GRID, tmp_path, "x")
    with pytest.raises(ValueError, match="name"):
        write_stack(stack, valid, GRID, tmp_path, "../escape")
