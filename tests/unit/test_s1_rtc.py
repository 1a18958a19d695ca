"""RTC γ⁰ linear vs dB: decided from metadata, confirmed from values, stated; contradictions refused.

Items are the real Planetary Computer ``sentinel-1-rtc`` item (its titles, descriptions and
``raster:bands`` nodata −32768 kept) with the asset hrefs pointed at small local rasters.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
from rasterio.transform import from_origin

from core.errors import RasterInputError
from tasks.grid import GridSpec
from tasks.s1_read import read_s1_acquisition
from tasks.sar import declared_radiometry, scales_fitting_values
from tasks.sources import item_to_acquisition

EPSG = 32633
X0, Y0 = 400_000.0, 3_400_000.0
GRID = GridSpec(EPSG, (10.0, 0.0, X0, 0.0, -10.0, Y0), 32, 32)
NODATA = -32768.0


def _gamma0(pol: str) -> np.ndarray:
    """Speckled γ⁰ (linear power) on a 20 m source grid: a dark lake in brighter rock, a nodata corner."""
    rng = np.random.default_rng(1 if pol == "vv" else 2)
    base = np.full((20, 20), 0.08 if pol == "vv" else 0.015)
    base[6:14, 6:14] = 0.002 if pol == "vv" else 0.0004
    out = base * rng.gamma(4.4, 1 / 4.4, size=base.shape)
    out[:2, :2] = np.nan
    return out


def _write(path: Path, values: np.ndarray) -> str:
    profile = {
        "driver": "GTiff",
        "width": values.shape[1],
        "height": values.shape[0],
        "count": 1,
        "dtype": "float32",
        "crs": f"EPSG:{EPSG}",
        "transform": from_origin(X0 - 20, Y0 + 20, 20, 20),
        "nodata": NODATA,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.where(np.isfinite(values), values, NODATA).astype(np.float32), 1)
    return str(path)


def _rtc_item(realdata: Path, tmp_path: Path, scale: str, **band_extra: Any) -> pystac.Item:
    """The real PC RTC item, its vv/vh hrefs on local rasters holding γ⁰ in ``scale``."""
    items = json.loads((realdata / "stac_items" / "sentinel-1-rtc-pc.json").read_text())
    item = pystac.Item.from_dict(items[0])
    item.clear_links()  # its PC self link would resolve the local paths below against the PC host
    for pol in ("vv", "vh"):
        lin = _gamma0(pol)
        values = lin if scale == "linear" else 10 * np.log10(lin)
        item.assets[pol].href = _write(tmp_path / f"{scale}-{pol}.tif", values)
        item.assets[pol].extra_fields["raster:bands"][0].update(band_extra)
    return item


def test_pc_rtc_metadata_names_gamma0_and_no_scale(realdata: Path, tmp_path: Path) -> None:
    """The real item says γ⁰ (description) and gives nodata, but no unit: values must decide."""
    acq = item_to_acquisition(_rtc_item(realdata, tmp_path, "linear"), "S1RTC", "stac:test")
    meta = dict(acq.metadata)
    assert meta["vv.nodata"] == "-32768" and meta["sar:product_type"] == "GRD"
    assert declared_radiometry(meta, "vv") == ("gamma0", None, "metadata states no scale")


def test_rtc_linear_and_db_inputs_give_the_same_output(realdata: Path, tmp_path: Path) -> None:
    """γ⁰ as linear power (scale from values) and as dB (from the unit) read to the same dB stack."""
    lin = item_to_acquisition(_rtc_item(realdata, tmp_path, "linear"), "S1RTC", "stac:test")
    db = item_to_acquisition(_rtc_item(realdata, tmp_path, "db", unit="dB"), "S1RTC", "stac:test")
    a, b = read_s1_acquisition(lin, GRID), read_s1_acquisition(db, GRID)
    assert (a.radiometry.scale, b.radiometry.scale) == ("linear", "db")
    assert a.radiometry.quantity == b.radiometry.quantity == "gamma0"
    assert "linear from values" in a.radiometry.reason and "db from metadata (unit 'db')" in b.radiometry.reason
    assert lin.product_id in a.radiometry.reason
    np.testing.assert_allclose(a.backscatter, b.backscatter, atol=1e-3)  # NaN where both are NaN
    assert np.isnan(a.backscatter[:, 0, 0]).all() and np.isnan(b.backscatter[:, 0, 0]).all(), "nodata −32768 stays NaN"
    lake, rock = a.backscatter[0, 16, 16], a.backscatter[0, 28, 28]
    assert lake < -20.0 < rock, "dark water, bright rock: the values are dB of γ⁰"
    assert a.radiometry.as_inputs()["s1_kind"] == "S1RTC"


@pytest.mark.parametrize(
    ("scale", "extra", "said"),
    [("db", {"unit": "linear"}, "metadata says linear"), ("linear", {"unit": "dB"}, "metadata says db")],
)
def test_metadata_contradicted_by_values_is_refused(
    realdata: Path, tmp_path: Path, scale: str, extra: dict[str, str], said: str
) -> None:
    """Values in dB under a "linear" unit (and the reverse) are refused, naming the item and asset."""
    acq = item_to_acquisition(_rtc_item(realdata, tmp_path, scale, **extra), "S1RTC", "stac:test")
    with pytest.raises(RasterInputError) as err:
        read_s1_acquisition(acq, GRID)
    message = str(err.value)
    assert said in message and acq.product_id in message and "asset 'vv'" in message and "refused" in message


def test_values_that_fit_neither_scale_are_refused(realdata: Path, tmp_path: Path) -> None:
    """Without a stated scale, amplitude-like values (hundreds) are neither linear power nor dB."""
    item = _rtc_item(realdata, tmp_path, "linear")
    item.assets["vv"].href = _write(tmp_path / "dn-like.tif", np.full((20, 20), 300.0))
    with pytest.raises(RasterInputError, match=r"values fit neither linear power and dB"):
        read_s1_acquisition(item_to_acquisition(item, "S1RTC", "stac:test"), GRID)


def test_grd_declared_calibrated_sigma0_is_read_as_such(realdata: Path, tmp_path: Path) -> None:
    """A GRD whose catalog says "sigma0, linear power" (the demo's) is calibrated σ⁰, not DN."""
    item = _rtc_item(realdata, tmp_path, "linear", unit="linear power")
    for pol in ("vv", "vh"):
        item.assets[pol].title = f"{pol.upper()}: sigma0, linear power, geocoded"
        item.assets[pol].description = None
    obs = read_s1_acquisition(item_to_acquisition(item, "S1GRD", "local:test"), GRID)
    assert (obs.radiometry.kind, obs.radiometry.quantity, obs.radiometry.scale) == ("S1GRD", "sigma0", "linear")


def test_value_test_on_its_own() -> None:
    """Linear power fits only "linear", dB only "db", DN-like values neither; too few confirm nothing."""
    lin = _gamma0("vv")
    assert scales_fitting_values(lin)[0] == {"linear"}
    assert scales_fitting_values(10 * np.log10(lin))[0] == {"db"}
    assert scales_fitting_values(np.full(10, 0.1))[0] == {"linear", "db"}
    overshoot = lin.copy()
    overshoot[5, :3] = -1e-4  # a few resampling artefacts do not make linear power unreadable
    assert scales_fitting_values(overshoot)[0] == {"linear"}
    amplitude = np.full((20, 20), 300.0)  # DN-like: neither
    assert scales_fitting_values(amplitude)[0] == frozenset()
