"""Each public catalog's table against its real items: every band the pipeline reads is found.

The Earth Search v1 item spells bands by common name (``blue`` … ``swir22``), Copernicus Data
Space per resolution (``B02_10m``) behind ``s3://`` hrefs, Planetary Computer ``B01`` … ``SCL``;
the acquisition carries what the item states of scale, offset and baseline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pystac
import pytest

from core.errors import SettingsError, SourceError
from flows.settings import load_settings
from tasks.acquisition import item_to_acquisition, remote_href
from tasks.catalogs import CDSE, EARTH_SEARCH_V1, PLANETARY_COMPUTER, STATIC, layout_for
from tasks.stac_api import StacApiSource

S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")


def _item(realdata: Path, name: str, index: int = 0) -> pystac.Item:
    data: Any = json.loads((realdata / "stac_items" / name).read_text())
    if isinstance(data, list):
        data = data[index]
    elif data.get("type") == "FeatureCollection":
        data = data["features"][index]
    return pystac.Item.from_dict(data)


def test_earth_search_v1_spelling_maps_every_band(realdata: Path) -> None:
    item = _item(realdata, "earth-search-v1-sentinel-2-l1c-search.json")
    check = remote_href(allow_s3=True)
    acq = item_to_acquisition(item, "S2L2A", "stac:es", check, aliases=EARTH_SEARCH_V1.aliases("S2L2A"))
    # An L1C item has no SCL; every one of the 12 reflectance bands is found under its common name.
    assert [k for k, _ in acq.assets] == list(S2_BANDS)
    assert acq.asset("B8A").endswith("/B8A.jp2") and acq.asset("B05").endswith("/B05.jp2")
    assert acq.processing_baseline == "05.10"
    assert {(s.scale, s.offset) for s in acq.scaling} == {(0.0001, -0.1)}
    assert [s.key for s in acq.scaling] == list(S2_BANDS)
    # Through the table auto-detected from Earth Search's host, the same item keeps all 12 bands.
    layout = StacApiSource("https://earth-search.aws.element84.com/v1").layout
    assert layout is EARTH_SEARCH_V1
    assert len(item_to_acquisition(item, "S2L2A", "x", check, aliases=layout.aliases("S2L2A")).assets) == 12


def test_copernicus_data_space_spelling_and_s3_hrefs(realdata: Path) -> None:
    item = _item(realdata, "S2C_MSIL2A_20250330T100051_N0511_R122_T33UWP_20250330T145914_cdse_stac_v110_trimmed.json")
    with pytest.raises(SourceError, match=r"'B02_10m'.*GLACIAL_LAKES_ALLOW_S3"):
        item_to_acquisition(item, "S2L2A", "stac:cdse", remote_href(), aliases=CDSE.aliases("S2L2A"))
    acq = item_to_acquisition(item, "S2L2A", "stac:cdse", remote_href(allow_s3=True), aliases=CDSE.aliases("S2L2A"))
    # The trimmed item keeps 6 of the bands and the SCL: all of them are found.
    assert [k for k, _ in acq.assets] == ["B02", "B03", "B04", "B08", "B11", "B12", "SCL"]
    assert acq.asset("SCL").startswith("s3://eodata/") and acq.asset("B11").endswith("_B11_20m.jp2")
    assert acq.processing_baseline == "05.11"
    # raster:scale / raster:offset on the asset (raster extension v2), none stated for SCL.
    assert acq.scaling_of("B04") is not None and (acq.scaling_of("B04").scale, acq.scaling_of("B04").offset) == (
        0.0001,
        -0.1,
    )
    assert acq.scaling_of("SCL") is None
    assert acq.platform == "sentinel-2c"


def test_planetary_computer_spelling(realdata: Path) -> None:
    s2 = _item(realdata, "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json")
    acq = item_to_acquisition(s2, "S2L2A", "stac:pc", remote_href(), aliases=PLANETARY_COMPUTER.aliases("S2L2A"))
    assert [k for k, _ in acq.assets] == [*S2_BANDS, "SCL"]
    assert acq.processing_baseline == "02.12"
    assert acq.scaling == ()  # the item states no scale/offset: none is invented
    assert acq.boa_offset_applied is None
    rtc = _item(realdata, "sentinel-1-rtc-pc.json")
    assert PLANETARY_COMPUTER.collections[str(rtc.collection_id)] == "S1RTC"
    s1 = item_to_acquisition(rtc, "S1RTC", "stac:pc", remote_href(), aliases=PLANETARY_COMPUTER.aliases("S1RTC"))
    assert [k for k, _ in s1.assets] == ["vv", "vh"]
    dem = _item(realdata, "cop-dem-glo-30-pc.json")
    assert PLANETARY_COMPUTER.collections[str(dem.collection_id)] == "DEM"
    d = item_to_acquisition(dem, "DEM", "stac:pc", remote_href(), aliases=PLANETARY_COMPUTER.aliases("DEM"))
    assert d.asset("data").startswith("https://elevationeuwest.blob.core.windows.net/")
    assert layout_for("https://planetarycomputer.microsoft.com/api/stac/v1").signing == "planetary-computer"


def test_static_table_reads_every_spelling(realdata: Path) -> None:
    es = _item(realdata, "earth-search-v1-sentinel-2-l1c-search.json")
    cdse = _item(realdata, "S2C_MSIL2A_20250330T100051_N0511_R122_T33UWP_20250330T145914_cdse_stac_v110_trimmed.json")
    check = remote_href(allow_s3=True)
    assert len(item_to_acquisition(es, "S2L2A", "x", check).assets) == 12  # the default table is STATIC
    assert len(item_to_acquisition(cdse, "S2L2A", "x", check).assets) == 7
    assert layout_for("http://127.0.0.1:8080/stac") is STATIC


def test_an_unknown_catalog_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SourceError, match="unknown STAC catalog layout 'pc'"):
        layout_for("http://127.0.0.1/", "pc")
    monkeypatch.setenv("GLACIAL_LAKES_STAC_CATALOG", "pc")
    with pytest.raises(SettingsError, match="GLACIAL_LAKES_STAC_CATALOG='pc'"):
        load_settings()


def test_earth_search_boa_flag_is_carried() -> None:
    item = pystac.Item(
        "x",
        geometry=None,
        bbox=None,
        datetime=pystac.utils.str_to_datetime("2024-07-04T05:56:41Z"),
        properties={"earthsearch:boa_offset_applied": True, "s2:processing_baseline": "05.09"},
    )
    item.add_asset("blue", pystac.Asset("https://example.org/B02.tif", extra_fields={"raster:bands": [{"offset": 0}]}))
    acq = item_to_acquisition(item, "S2L2A", "x", remote_href(), aliases=EARTH_SEARCH_V1.aliases("S2L2A"))
    assert acq.boa_offset_applied is True
    assert acq.scaling_of("B02") is not None and acq.scaling_of("B02").offset == 0.0
