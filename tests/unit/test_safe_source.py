"""``safe:DIR`` over the demo scenes as SAFE products, against the STAC path on the same scenes.

:func:`tests.helpers.safe_products.safe_products_for_demo` writes the demo's S2 L2A scenes as
JPEG 2000 SAFE products and its S1 scenes as GRD DN in radar geometry (real calibration and noise
LUTs, resampled), some as folders, some as zips, beside the demo catalog (``DIR/dem``) that holds
the same scenes as COGs. The S2 read must be identical; S1 σ⁰ through the SAFE path (LUT
calibration, thermal-noise removal, geocoding through the geolocation grid) within 0.1 dB of the
COGs' σ⁰ through the STAC path.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from core.errors import SafeProductError, SourceError
from tasks.acquisition import Acquisition
from tasks.grid import GridSpec, grid_for_geometry

pytestmark = [pytest.mark.slow]  # the products are built once per module (~15 s)

KINDS = ["S2L2A", "S1GRD", "S1RTC", "DEM"]
WINDOW = (date(2024, 6, 1), date(2024, 10, 1))


@pytest.fixture(scope="module")
def products(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers import realdata
    from tests.helpers.safe_products import safe_products_for_demo

    realdata.require("s2_safe_metadata")
    root = tmp_path_factory.mktemp("safe")
    safe_products_for_demo(root, size_px=256)
    return root


@pytest.fixture(scope="module")
def aoi(products: Path) -> BaseGeometry:
    feature = json.loads((products / "dem" / "aoi.geojson").read_text())
    return shape(feature.get("geometry") or feature["features"][0]["geometry"])


@pytest.fixture(scope="module")
def grid(aoi: BaseGeometry) -> GridSpec:
    return grid_for_geometry(aoi)


def _search(uri: str, aoi: BaseGeometry) -> dict[str, Acquisition]:
    from tasks.sources import source_from_uri

    return {a.product_id: a for a in source_from_uri(uri).search(aoi, *WINDOW, KINDS)}


def test_safe_source_finds_the_scenes_of_the_stac_path(products: Path, aoi: BaseGeometry) -> None:
    safe, stac = _search(f"safe:{products}", aoi), _search(f"local:{products / 'dem'}", aoi)
    assert sorted(safe) == sorted(stac) and len(safe) == 10  # 5 S2, 4 S1, 1 DEM
    for pid, acq in safe.items():
        assert (acq.kind, acq.sensing_time, acq.platform) == (
            stac[pid].kind,
            stac[pid].sensing_time,
            stac[pid].platform,
        )
        if acq.kind == "S2L2A":
            assert acq.processing_baseline == stac[pid].processing_baseline
    hrefs = [a.asset("vv" if a.kind == "S1GRD" else "B02") for a in safe.values() if a.kind != "DEM"]
    assert any(h.startswith("/vsizip/") for h in hrefs) and any(not h.startswith("/vsi") for h in hrefs)
    assert safe["Copernicus_DSM_COG_10_N43_00_E077_00_DEM"].source == f"local:{products / 'dem'}"


def test_s2_through_safe_reads_as_through_stac(products: Path, aoi: BaseGeometry, grid: GridSpec) -> None:
    from tasks.preprocess import read_s2

    safe, stac = _search(f"safe:{products}", aoi), _search(f"local:{products / 'dem'}", aoi)
    for pid in (p for p, a in safe.items() if a.kind == "S2L2A"):
        scenes = []
        for acq in (safe[pid], stac[pid]):
            bands = {k: v for k, v in acq.assets if k != "SCL"}
            scenes.append(read_s2(bands, acq.asset_map["SCL"], acq.processing_baseline, grid))
        a, b = scenes
        np.testing.assert_array_equal(a.reflectance, b.reflectance)  # lossless JPEG 2000, same DN
        assert (a.clear == b.clear).all() and a.cloud_fraction == b.cloud_fraction


def _db_figures(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Median and p95 of |Δ dB| per pixel, and the largest difference of mean power (dB) of VV, VH."""
    d = np.abs(x - y)[np.isfinite(x) & np.isfinite(y)]
    mean_db = [
        abs(10 * np.log10(np.nanmean(10 ** (a / 10)) / np.nanmean(10 ** (b / 10)))) for a, b in zip(x, y, strict=True)
    ]
    return float(np.median(d)), float(np.percentile(d, 95)), float(max(mean_db))


def test_grd_sigma0_through_safe_within_a_tenth_of_a_db_of_stac(
    products: Path, aoi: BaseGeometry, grid: GridSpec
) -> None:
    from tasks.s1_read import read_s1_acquisition

    safe, stac = _search(f"safe:{products}", aoi), _search(f"local:{products / 'dem'}", aoi)
    worst = (0.0, 0.0, 0.0)
    for pid in (p for p, a in safe.items() if a.kind == "S1GRD"):
        via_safe = read_s1_acquisition(safe[pid], grid)  # the pipeline's read: Lee 5 × 5, dB
        via_stac = read_s1_acquisition(stac[pid], grid)
        assert via_safe.radiometry.scale == "dn" and "thermal noise removed" in via_safe.radiometry.reason
        assert (np.isfinite(via_safe.backscatter) == np.isfinite(via_stac.backscatter)).all()
        figures = _db_figures(via_safe.backscatter, via_stac.backscatter)
        raw = _db_figures(
            read_s1_acquisition(safe[pid], grid, speckle_size=1).backscatter,
            read_s1_acquisition(stac[pid], grid, speckle_size=1).backscatter,
        )
        print(
            f"{pid}: |Δσ⁰| median {figures[0]:.4f} dB, p95 {figures[1]:.4f} dB (Lee 5×5); unfiltered median "
            f"{raw[0]:.4f}, p95 {raw[1]:.4f} dB; mean power Δ {figures[2]:.4f} dB"
        )
        assert figures[1] < 0.1 and raw[0] < 0.1 and figures[2] < 0.01
        worst = tuple(max(a, b) for a, b in zip(worst, figures, strict=True))  # type: ignore[assignment]
    print(f"worst over the 4 GRD products: median {worst[0]:.4f} dB, p95 {worst[1]:.4f} dB, mean {worst[2]:.4f} dB")


def test_without_the_noise_removal_vh_reads_too_bright(products: Path, aoi: BaseGeometry, grid: GridSpec) -> None:
    """The DN carry the real noise power: skipping its removal must show (VH over water is near the floor)."""
    from tasks.s1_read import read_s1_acquisition

    safe, stac = _search(f"safe:{products}", aoi), _search(f"local:{products / 'dem'}", aoi)
    pid = next(p for p, a in safe.items() if a.kind == "S1GRD")
    noisy = replace(safe[pid], assets=tuple((k, v) for k, v in safe[pid].assets if not k.startswith("noise-")))
    x = read_s1_acquisition(noisy, grid).backscatter
    y = read_s1_acquisition(stac[pid], grid).backscatter
    assert float(np.nanmedian(x[1] - y[1])) > 1.0  # dB: the noise floor dominates dark VH


def test_safe_source_without_dem_catalog_is_refused(tmp_path: Path, realdata: Path) -> None:
    from tasks.sources import source_from_uri
    from tests.helpers.safe_products import build_s2_safe, s2_spec_from_template

    templates = realdata / "s2_safe_metadata"
    build_s2_safe(tmp_path, templates, s2_spec_from_template(templates, "05.09"))
    with pytest.raises(SourceError, match=r"no DEM catalog at .*dem/catalog\.json; SAFE products carry no elevation"):
        source_from_uri(f"safe:{tmp_path}")


def test_other_products_in_the_folder_are_refused(products: Path, tmp_path: Path) -> None:
    from tasks.sources import source_from_uri

    (tmp_path / "S2A_MSIL1C_20240704T055641_N0510_R019_T43TGH_20240704T093512.SAFE").mkdir()
    with pytest.raises(SafeProductError, match=r"MSIL1C.*not a Sentinel-2 L2A .* or Sentinel-1 GRD"):
        source_from_uri(f"safe:{tmp_path}", check=False).search(
            shape({"type": "Point", "coordinates": [0, 0]}), *WINDOW, KINDS
        )


def test_safe_uri_with_a_gdal_prefix_is_refused() -> None:
    from tasks.sources import source_from_uri

    with pytest.raises(SourceError, match=r"unsupported --source"):
        source_from_uri("safe:/vsizip//tmp/x.zip")


def test_cli_run_without_dem_catalog_exits_2(tmp_path: Path, products: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from flows.cli import main

    monkeypatch.setenv("GLACIAL_LAKES_HOME", str(tmp_path / "home"))
    empty = tmp_path / "products"
    empty.mkdir()
    args = ["run", "--aoi", str(products / "dem" / "aoi.geojson"), "--start", "2024-07-01", "--end", "2024-07-30"]
    result = CliRunner().invoke(main, [*args, "--source", f"safe:{empty}", "--model", "baseline"])
    assert result.exit_code == 2, result.output
    assert "no DEM catalog" in result.output and len(result.output.strip().splitlines()) == 1
