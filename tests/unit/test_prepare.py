"""Streaming stack preparation (tasks.prepare): by strips, the same stack as from whole-grid reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tasks.prepare as prepare
from demo.plans import demo_scene_plans
from demo.synthetic import generate_demo_catalog
from tasks.coregister import align
from tasks.dem import read_dem_tiles
from tasks.grid import GridSpec
from tasks.pairing import ScenePlan
from tasks.preprocess import S2_BANDS, read_s2
from tasks.s1_read import read_s1_acquisition
from tasks.stack import STACK_BANDS, StackReader, stack_arrays
from tasks.validity import dry_capable_before_water

# The stored precision (tasks.stack_format): reflectance × 10 000 to 2, dB to 0.025, metres to 0.125.
TOLERANCE = np.array([2.0] * 12 + [0.025, 0.025, 0.125]) + 1e-4


def _whole_grid(
    plan: ScenePlan, grid: GridSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, float, dict[str, object]]:
    """The stack as the whole-grid readers assemble it (the preparation before it streamed)."""
    s2_bands = {k: v for k, v in plan.s2.assets if k != "SCL"}
    s2 = read_s2(s2_bands, plan.s2.asset_map.get("SCL"), plan.s2.processing_baseline, grid)
    s1 = read_s1_acquisition(plan.s1, grid).backscatter
    dem = read_dem_tiles(plan.dem_hrefs, grid)
    s1, dem, coreg = align(
        s2.reflectance[S2_BANDS.index("B08")],
        s2.clear,
        s1,
        dem,
        grid,
        read_s1=lambda g: read_s1_acquisition(plan.s1, g).backscatter,
        read_dem=lambda g: read_dem_tiles(plan.dem_hrefs, g),
    )
    stack, valid = stack_arrays(s2, s1, dem)
    record = json.loads(coreg.as_inputs()["coregistration"])
    return stack, valid, dry_capable_before_water(valid, s2.snow_ice), s2.cloud_fraction, record


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[ScenePlan], GridSpec]:
    root = tmp_path_factory.mktemp("demo")
    catalog = generate_demo_catalog(root / "catalog", size_px=256, seed=0)
    return demo_scene_plans(catalog.root)


@pytest.mark.slow
@pytest.mark.parametrize(("strip_rows", "threads"), [(80, 2), (256, 1)])
def test_strips_give_the_whole_grid_stack(
    demo: tuple[list[ScenePlan], GridSpec],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    strip_rows: int,
    threads: int,
) -> None:
    """Strips of 80 rows (not a tile multiple; the Lee halo across their edges) in 2 threads: the same stack.

    Values within the stored precision, masks and fractions exactly, the same co-registration record.
    """
    plans, grid = demo
    monkeypatch.setattr(prepare, "STRIP_ROWS", strip_rows)
    for plan in plans[:2]:
        info = prepare.prepare_stack(plan, grid, tmp_path / plan.scene_id[:30], threads=threads)
        stack, valid, dry, cloud_fraction, whole_record = _whole_grid(plan, grid)
        with StackReader(info) as reader:
            back = reader.read_all()
            np.testing.assert_array_equal(reader.read_valid(), valid)
            got_dry = reader.read_dry_capable()
        assert dry is not None and got_dry is not None
        np.testing.assert_array_equal(got_dry, dry)
        np.testing.assert_array_equal(np.isnan(back), np.isnan(stack))
        error = np.nanmax(np.abs(back - stack).reshape(len(STACK_BANDS), -1), axis=1)
        assert (error <= TOLERANCE).all(), dict(zip(STACK_BANDS, error.round(4), strict=True))
        assert info.valid_fraction == pytest.approx(float(valid.mean()), abs=1e-12)
        assert info.cloud_fraction == pytest.approx(cloud_fraction, abs=1e-12)
        record = json.loads(dict(info.quality)["coregistration"])
        # The same decisions; the measured shifts within 0.05 px (measured on the stored precision).
        for modality in ("s1", "dem"):
            got, want = record[modality], whole_record[modality]
            assert (got["applied"], got["reason"]) == (want["applied"], want["reason"]), modality
            if want["measured"] is not None:
                assert got["measured"] is not None
                for axis in ("dx", "dy"):
                    assert got["measured"][axis] == pytest.approx(want["measured"][axis], abs=0.05), modality
        assert record["s1"]["measured"] is not None


def test_the_offset_detector_sees_the_whole_grid_sample(
    demo: tuple[list[ScenePlan], GridSpec], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a processing baseline the detector decides, on the same even sample as a whole-grid read."""
    import dataclasses

    plans, grid = demo
    plan = plans[0]
    monkeypatch.setattr(prepare, "STRIP_ROWS", 80)
    monkeypatch.setattr(prepare, "SAMPLE_PIXELS", 5_000)  # a sparse sample: strips must pick its pixels
    no_baseline = dataclasses.replace(plan, s2=dataclasses.replace(plan.s2, processing_baseline=None))
    info = prepare.prepare_stack(no_baseline, grid, tmp_path / "detector", threads=1)
    s2_bands = {k: v for k, v in plan.s2.assets if k != "SCL"}
    from tasks.preprocess import _warp, decide_s2_offset

    dn = [_warp(s2_bands[b], grid, src_nodata=0) for b in S2_BANDS]
    expected = decide_s2_offset(None, dn, max_pixels=5_000)
    assert info.s2_offset == expected and expected.source == "detector"
    assert plan.s2.processing_baseline is not None
    baseline_info = prepare.prepare_stack(plan, grid, tmp_path / "baseline", threads=1)
    assert info.s2_offset is not None and baseline_info.s2_offset is not None
    assert info.s2_offset.dn == baseline_info.s2_offset.dn  # the detector agrees with the baseline


def test_a_source_missing_from_some_strips_is_nodata_there(
    demo: tuple[list[ScenePlan], GridSpec], tmp_path: Path
) -> None:
    """A grid half outside the scene's data: those strips are NaN and not valid, not an error."""
    plans, grid = demo
    a, b, c, d, e, f = grid.transform
    half = grid.height // 2
    shifted = GridSpec(grid.epsg, (a, b, c, d, e, f - e * half), grid.width, grid.height)  # half a grid north
    info = prepare.prepare_stack(plans[0], shifted, tmp_path / "half", threads=2)
    with StackReader(info) as reader:
        valid = reader.read_valid()
        b08 = reader.read_band("B08")
    assert valid[half + 8 :].any()
    assert not valid[: half - 8].any() and np.isnan(b08[: half - 8]).all()


def test_a_grid_beside_the_data_is_bad_input_naming_the_file(
    demo: tuple[list[ScenePlan], GridSpec], tmp_path: Path
) -> None:
    """No source has a pixel on the grid: a RasterInputError (the class the outcome policy names), no stack left."""
    from core.errors import RasterInputError

    plans, grid = demo
    a, b, c, d, e, f = grid.transform
    away = GridSpec(grid.epsg, (a, b, c + 50_000.0, d, e, f), grid.width, grid.height)
    with pytest.raises(RasterInputError) as caught:
        prepare.prepare_stack(plans[0], away, tmp_path / "away", threads=2)
    assert type(caught.value) is RasterInputError
    assert "no valid pixel on the scene grid" in str(caught.value) or "miss the scene grid" in str(caught.value)
    assert any(href in str(caught.value) for _, href in (*plans[0].s2.assets, *plans[0].s1.assets))
    assert not list((tmp_path / "away").glob("*_stack.tif"))


@pytest.mark.slow
def test_the_demo_lakes_are_those_of_the_whole_grid_float_stack(
    demo: tuple[list[ScenePlan], GridSpec], tmp_path: Path
) -> None:
    """The baseline maps the same lakes from the streamed int16 stack as from the float one, areas within a pixel."""
    from models.baseline import SpectralBaseline
    from tasks.vectorize import mask_to_polygons, probability_to_mask

    plans, grid = demo
    pixel_m2 = grid.resolution**2
    compared = 0
    for plan in plans:
        stack, valid, _, _, _ = _whole_grid(plan, grid)
        info = prepare.prepare_stack(plan, grid, tmp_path / plan.scene_id[:30])
        with StackReader(info) as reader:
            stored = reader.read_all()
        areas = []
        for data in (stack, stored):
            mask = probability_to_mask(SpectralBaseline().predict(data, valid)) & valid
            areas.append(sorted(p.area for p in mask_to_polygons(mask, grid, min_area_m2=5000.0, valid=valid)))
        assert len(areas[0]) == len(areas[1]), (plan.scene_id, areas)
        assert all(abs(a - b) <= pixel_m2 for a, b in zip(*areas, strict=True)), (plan.scene_id, areas)
        compared += len(areas[0])
    assert compared > 0
