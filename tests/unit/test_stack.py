"""The analysis-ready stack file (tasks.stack): valid mask logic, NaN nodata, COG round trip, readers."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from models.segmenter import STACK_BANDS as MODEL_STACK_BANDS
from tasks.grid import GridSpec
from tasks.preprocess import S2Scene
from tasks.stack import STACK_BANDS, StackInfo, read_stack, stack_arrays, write_stack

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
    with pytest.raises(ValueError, match=r"like S2|must be"):
        stack_arrays(*bad(*_inputs()))


def test_cog_round_trip_keeps_nan_mask_and_grid(tmp_path):
    """The stack COG and mask COG round-trip exactly: bands, NaN, mask, grid and fractions."""
    s2, s1, dem = _inputs()
    stack, valid = stack_arrays(s2, s1, dem)
    info = write_stack(stack, valid, GRID, tmp_path / "out", "scene-1", cloud_fraction=0.09)
    assert isinstance(info, StackInfo)
    # One file a scene: the masks are bands of the stack file.
    assert info.path.name == "scene-1_stack.tif" and info.valid_path == info.path
    assert info.valid_fraction == pytest.approx(valid.mean())
    assert info.cloud_fraction == 0.09 and info.grid == GRID
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["scene-1_stack.tif"], "no temporary files left behind"

    with rasterio.open(info.path) as ds:  # a tiled, compressed GeoTIFF written by strips (not a COG)
        assert ds.profile["tiled"] and ds.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "ZSTD"
        assert ds.count == 16 and set(ds.dtypes) == {"int16"}
        assert ds.nodata == -32768
        assert ds.descriptions == (*STACK_BANDS, "valid")
        assert ds.crs.to_epsg() == 32645
        assert set(np.unique(ds.read(16))) == {0, 1}

    for source in (info, info.path, str(info.path)):
        back, back_valid, grid = read_stack(source)
        assert grid == GRID
        np.testing.assert_array_equal(back, stack)  # NaN positions equal too
        np.testing.assert_array_equal(back_valid, valid)


def test_read_stack_refuses_foreign_files(tmp_path):
    """A raster not written by write_stack is refused with a reason."""
    path = tmp_path / "other.tif"
    profile = {
        "driver": "GTiff",
        "width": 4,
        "height": 4,
        "count": 1,
        "dtype": "float32",
        "crs": "EPSG:32645",
        "transform": GRID.affine,
    }
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


def test_stack_file_format_contract(tmp_path):
    """STACK FILE FORMAT CONTRACT (tasks.stack): what write_stack writes is what StackReader reads.

    Bands and their order (descriptions and the ``bands`` tag), int16 with −32768 nodata and the
    GDAL scale/offset of each band, then the ``valid`` mask band named by the ``valid_mask`` tag;
    the readers return float32 in the stack's units with NaN nodata.
    """
    import json

    from tasks.stack import STACK_CODES, STACK_NODATA, VALID_BAND, StackReader

    s2, s1, dem = _inputs()
    stack, valid = stack_arrays(s2, s1, dem)
    info = write_stack(stack, valid, GRID, tmp_path, "scene-1", cloud_fraction=0.09)
    assert np.isnan(STACK_NODATA)
    with rasterio.open(info.path) as ds:
        tags = ds.tags()
        assert json.loads(tags["bands"]) == list(STACK_BANDS) == list(ds.descriptions[:15])
        assert json.loads(tags["bands"]) == list(ds.descriptions[:15])
        assert tags["valid_mask"] == VALID_BAND == ds.descriptions[15] and ds.count == 16
        assert tags["encoding"] == "int16-scaled-1"
        assert float(tags["valid_fraction"]) == pytest.approx(valid.mean())
        assert float(tags["cloud_fraction"]) == 0.09
        assert set(ds.dtypes) == {"int16"} and ds.nodata == -32768
        # GDAL (and QGIS) show physical values: reflectance 0–1, dB, metres.
        assert ds.scales[:15] == tuple(c.scale for c in STACK_CODES) and ds.scales[0] == 1e-4
        assert ds.offsets[14] == 4000.0 and ds.units[12] == "dB" and ds.units[14] == "m"
        assert ds.profile["compress"].lower() == "zstd" and ds.profile["tiled"]
        assert set(ds.read(16).ravel()) == {0, 1}
    # Nothing but the final file: the temporary sibling of the atomic write is gone.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene-1_stack.tif"]

    for source in (info, info.path):
        with StackReader(source) as reader:
            assert (reader.height, reader.width) == GRID.shape
            assert reader.crs.to_epsg() == GRID.epsg and reader.transform == GRID.affine
            assert reader.grid == GRID
            rows, rows_valid = reader.read_rows(3, 11)
            assert rows.dtype == np.float32 and rows.shape == (15, 8, GRID.width)
            np.testing.assert_array_equal(rows, stack[:, 3:11])
            np.testing.assert_array_equal(rows_valid, valid[3:11])
            for i, name in enumerate(STACK_BANDS):
                band = reader.read_band(name)
                assert band.dtype == np.float32
                np.testing.assert_array_equal(band, stack[i])
            np.testing.assert_array_equal(reader.read_valid(), valid)
            # A strip of rows, as the streaming stages read it; rows outside the raster refused.
            np.testing.assert_array_equal(reader.read_band("DEM", rows=(2, 9)), stack[-1, 2:9])
            np.testing.assert_array_equal(reader.read_valid(rows=(2, 9)), valid[2:9])
            with pytest.raises(ValueError, match="outside the stack"):
                reader.read_band("DEM", rows=(5, GRID.height + 1))
            with pytest.raises(ValueError, match="unknown stack band"):
                reader.read_band("B10")
            assert reader.read_dry_capable() is None  # written without one: cloud state unknown

    # The dry-capable sidecar and the S2 offset tag (tasks.validity), when the writer is given them.
    from tasks.stack import DRY_CAPABLE_BAND
    from tasks.validity import S2Offset

    dry = valid.copy()
    dry[0:3, :] = False  # e.g. snow
    offset = S2Offset(1000, "detector", "every band's p1 is ≥ 950 DN")
    info = write_stack(stack, valid, GRID, tmp_path / "dry", "scene-1", dry_capable=dry, s2_offset=offset)
    assert info.dry_capable_path == info.path and info.s2_offset == offset
    with rasterio.open(info.path) as ds:
        assert ds.tags()["dry_capable_mask"] == DRY_CAPABLE_BAND == ds.descriptions[16] and ds.count == 17
        assert ds.tags()["s2_offset"] == offset.describe()
    for source in (info, info.path):
        with StackReader(source) as reader:
            np.testing.assert_array_equal(reader.read_dry_capable(), dry)


def test_stack_reader_is_a_window_source_for_every_segmenter(tmp_path):
    """The reader serves models' WindowSource protocol: the baseline streams it to its in-memory predict."""
    from models.baseline import SpectralBaseline
    from models.segmenter import WindowSource
    from tasks.stack import StackReader

    s2, s1, dem = _inputs()
    stack, valid = stack_arrays(s2, s1, dem)
    info = write_stack(stack, valid, GRID, tmp_path, "scene-1")
    with StackReader(info) as reader:
        source: WindowSource = reader
        rows = list(SpectralBaseline().iter_probability_rows(source))
    streamed = np.concatenate([p for _, p in rows])
    np.testing.assert_array_equal(streamed, SpectralBaseline().predict(stack, valid))


def test_stack_reader_strictness(tmp_path):
    """Strict (the pipeline's files): a foreign raster is an input error naming the file; lenient: any 15 bands."""
    from core.errors import RasterInputError
    from tasks.stack import StackReader

    path = tmp_path / "foreign.tif"
    profile = {
        "driver": "GTiff",
        "width": 4,
        "height": 3,
        "count": 15,
        "dtype": "float32",
        "crs": "EPSG:32645",
        "transform": GRID.affine,
        "nodata": float("nan"),
    }
    data = np.ones((15, 3, 4), np.float32)
    data[14, 0, 0] = np.nan
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    with pytest.raises(RasterInputError, match=r"foreign\.tif.*valid_mask"):
        StackReader(path)
    with pytest.raises(RasterInputError, match="valid_mask"):
        read_stack(path)
    with StackReader(path, strict=False) as reader:  # no mask: valid where every band is finite
        _, rows_valid = reader.read_rows(0, 3)
        assert not rows_valid[0, 0] and rows_valid.sum() == 11
        np.testing.assert_array_equal(reader.read_valid(), rows_valid)
    one_band = tmp_path / "one.tif"
    with rasterio.open(one_band, "w", **{**profile, "count": 1}) as ds:
        ds.write(data[:1])
    with pytest.raises(RasterInputError, match="15-band"):
        StackReader(one_band, strict=False)


def test_reads_span_block_rows_exactly(tmp_path):
    """Row and band reads go a block row (256 px) at a time; pieces join without gap or overlap."""
    from tasks.stack import StackReader

    grid = GridSpec(32645, (10.0, 0.0, 500_000.0, 0.0, -10.0, 3_100_000.0), 40, 600)
    rng = np.random.default_rng(0)
    # Values on the stored lattice (reflectance × 10 000 in steps of 4, 0.05 dB, 0.25 m): they round-trip exactly.
    stack = np.concatenate(
        [
            rng.integers(0, 3_000, size=(12, 600, 40)) * 4,
            rng.integers(-600, 100, size=(2, 600, 40)) / 20,
            rng.integers(0, 20_000, size=(1, 600, 40)) / 4 + 1000,
        ]
    ).astype(np.float32)
    stack[3, 255:258, 5] = np.nan
    valid = rng.random((600, 40)) > 0.3
    info = write_stack(stack, valid, grid, tmp_path, "tall")
    with StackReader(info) as reader:
        for row0, row1 in ((0, 600), (100, 590), (255, 257), (512, 513)):
            rows, rows_valid = reader.read_rows(row0, row1)
            np.testing.assert_array_equal(rows, stack[:, row0:row1])
            np.testing.assert_array_equal(rows_valid, valid[row0:row1])
        np.testing.assert_array_equal(reader.read_band("B04"), stack[3])
        np.testing.assert_array_equal(reader.read_valid(), valid)


def test_stored_precision_is_the_documented_one(tmp_path):
    """Reflectance to 2 (× 10 000), dB to 0.025, metres to 0.125 m; out-of-range values clip, never wrap."""
    from tasks.stack import StackReader

    rng = np.random.default_rng(1)
    h, w = GRID.shape
    stack = np.concatenate(
        [
            rng.uniform(0, 15_000, size=(12, h, w)),
            rng.uniform(-35, 5, size=(2, h, w)),
            rng.uniform(-400, 8_849, size=(1, h, w)),
        ]
    ).astype(np.float32)
    stack[0, 0, 0] = 40_000.0  # beyond the stored range: clipped to 32 764 (the largest step)
    stack[12, 0, 0] = -400.0  # clipped to −327.65 dB, never the nodata value
    stack[14, 0, 1] = np.nan
    valid = np.isfinite(stack).all(axis=0)
    info = write_stack(stack, valid, GRID, tmp_path, "precision")
    with StackReader(info) as reader:
        back = reader.read_all()
    error = np.abs(back - stack)
    assert np.nanmax(error[:12].ravel()[1:]) <= 2.0
    assert np.nanmax(error[12:14].ravel()[1:]) <= 0.025 + 1e-5
    assert np.nanmax(error[14]) <= 0.125 + 1e-3
    assert back[0, 0, 0] == 32_764.0 and np.isnan(back[14, 0, 1])
    assert back[12, 0, 0] == pytest.approx(-327.65)
