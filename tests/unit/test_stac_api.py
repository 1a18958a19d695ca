"""STAC APIs as users meet them, over real HTTP on 127.0.0.1 (``tests.helpers.stac_api``).

The demo catalog is served in Earth Search v1, Planetary Computer and Copernicus Data Space
spelling; the real pystac-client pages through it, backs off on 429, signs Planetary Computer
hrefs with tokens from a loopback token endpoint, and GDAL reads the COGs by range requests
(``s3://`` ones through a loopback S3 endpoint, with credentials from settings).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import requests
from pystac_client.exceptions import APIError

from core.errors import SourceError
from demo.synthetic import DemoCatalog, generate_demo_catalog
from flows.aoi import AoiSpec, load_aoi
from flows.settings import load_settings
from tasks.acquisition import TransientSourceError
from tasks.grid import GridSpec, grid_for_geometry, utm_epsg_for
from tasks.pairing import pair_scenes
from tasks.preprocess import read_dem, read_s2
from tasks.remote_read import use_s3_access
from tasks.search_window import search_for_pairing
from tasks.signing import PlanetaryComputerSigner, refresh_signatures
from tasks.sources import LocalStacSource, source_from_uri
from tasks.stac_api import SearchCapError, StacApiSource
from tests.helpers import stac_api
from tests.helpers.database import free_port
from tests.helpers.stac_api import S3_KEY_ID, S3_SECRET, SAS_SIG, LoopbackStac, loopback_stac

KINDS = ("S2L2A", "S1GRD", "S1RTC", "DEM")
SUMMER = (date(2024, 7, 1), date(2024, 9, 30))


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalog:
    return generate_demo_catalog(tmp_path_factory.mktemp("catalog"), size_px=256, seed=0)


@pytest.fixture(scope="module")
def module_server(catalog: DemoCatalog, realdata: Path) -> Iterator[LoopbackStac]:
    with loopback_stac(catalog.root, realdata) as server:
        yield server


@pytest.fixture(scope="module")
def realdata() -> Path:
    from tests.helpers import realdata as rd

    return rd.require()


@pytest.fixture
def server(module_server: LoopbackStac) -> LoopbackStac:
    module_server.faults = stac_api.Faults()
    module_server.seen = stac_api.Seen()
    module_server.search_methods = ("GET", "POST")
    return module_server


@pytest.fixture(scope="module")
def aoi(catalog: DemoCatalog) -> AoiSpec:
    return load_aoi(catalog.aoi_path)


@pytest.fixture(scope="module")
def grid(aoi: AoiSpec) -> GridSpec:
    return grid_for_geometry(aoi.shape, utm_epsg_for(aoi.shape.centroid.x, aoi.shape.centroid.y))


def _source(server: LoopbackStac, layout: str, **kw: object) -> StacApiSource:
    kw.setdefault("pc_token_url", server.token_url)
    return StacApiSource(server.url(layout), catalog=layout, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("layout", stac_api.LAYOUTS)
def test_each_layout_is_searched_and_paged_whole(server: LoopbackStac, aoi: AoiSpec, layout: str) -> None:
    found = _source(server, layout, allow_s3=True).search(aoi.shape, *SUMMER, KINDS)
    kinds = [a.kind for a in found]
    s1 = "S1RTC" if layout == "planetary-computer" else "S1GRD"
    assert (kinds.count("S2L2A"), kinds.count(s1), kinds.count("DEM")) == (5, 4, 1)
    s2 = [a for a in found if a.kind == "S2L2A"]
    assert all(len(a.assets) == 13 for a in s2), [a.asset_map.keys() for a in s2]
    assert {a.processing_baseline for a in s2} == {"05.09", "02.14"}
    offsets = {a.processing_baseline: a.scaling_of("B04").offset for a in s2 if a.scaling_of("B04")}
    assert offsets == {"05.09": -0.1, "02.14": -0.0}  # as the items state them
    assert all(a.fingerprint for a in found)
    if layout == "earth-search-v1":
        assert {a.boa_offset_applied for a in s2} == {False}
    # Five S2 items at two a page: three pages, every one asked for.
    assert len(server.seen.paths(f"/{layout}/search", 200)) >= 3 + 2 + 1


def test_get_only_api_pages_through_next_links(server: LoopbackStac, aoi: AoiSpec) -> None:
    server.search_methods = ("GET",)
    found = _source(server, "earth-search-v1").search(aoi.shape, *SUMMER, ["S2L2A"])
    assert len(found) == 5
    gets = [p for m, p, _ in server.seen.requests if m == "GET" and p.startswith("/earth-search-v1/search")]
    assert len(gets) == 3 and sum("token=" in p for p in gets) == 2


def test_a_429_with_retry_after_is_waited_out(server: LoopbackStac, aoi: AoiSpec) -> None:
    server.faults.search_429 = 1
    found = _source(server, "earth-search-v1").search(aoi.shape, *SUMMER, ["S2L2A"])
    assert len(found) == 5
    statuses = [s for _, p, s in server.seen.requests if p.startswith("/earth-search-v1/search")]
    assert statuses[0] == 429 and statuses[1] == 200


def test_a_busy_api_that_stays_busy_is_transient(server: LoopbackStac, aoi: AoiSpec) -> None:
    server.faults.search_429 = 10
    with pytest.raises(TransientSourceError, match="HTTP 429"):
        _source(server, "earth-search-v1").search(aoi.shape, *SUMMER, ["S2L2A"])
    assert len(server.seen.paths("/earth-search-v1/search", 429)) == 4  # one request, three retries


def test_the_item_cap_is_an_error_never_a_truncation(server: LoopbackStac, aoi: AoiSpec) -> None:
    with pytest.raises(SearchCapError, match=r"more than 4 items of sentinel-2-l2a.*GLACIAL_LAKES_STAC_MAX_ITEMS"):
        _source(server, "earth-search-v1", max_items=4).search(aoi.shape, *SUMMER, ["S2L2A"])
    assert len(_source(server, "earth-search-v1", max_items=5).search(aoi.shape, *SUMMER, ["S2L2A"])) == 5


def test_planetary_computer_hrefs_are_signed_with_cached_tokens(
    server: LoopbackStac, aoi: AoiSpec, grid: GridSpec
) -> None:
    # Tokens are cached per endpoint and process: an endpoint URL of this test's own starts empty.
    endpoint = f"{server.token_url}?case=signing"
    found = _source(server, "planetary-computer", pc_token_url=endpoint).search(aoi.shape, *SUMMER, KINDS)
    hrefs = [h for a in found for _, h in a.assets]
    assert hrefs and all(f"sig={SAS_SIG}" in h for h in hrefs)
    # One token per collection for 5 × 13 + 4 × 2 + 1 hrefs.
    assert sorted(server.seen.tokens) == ["cop-dem-glo-30", "sentinel-1-rtc", "sentinel-2-l2a"]
    # A second search reuses the tokens (cached until near expiry) ...
    again = _source(server, "planetary-computer", pc_token_url=endpoint).search(aoi.shape, *SUMMER, KINDS)
    assert len(server.seen.tokens) == 3 and [a.assets for a in again] == [a.assets for a in found]
    # ... and the fingerprint is of the unsigned hrefs: another token makes no new scene key.
    other = _source(server, "planetary-computer", modifier=lambda href, c: f"{href}?sig=other")
    resigned = other.search(aoi.shape, *SUMMER, KINDS)
    assert [a.fingerprint for a in resigned] == [a.fingerprint for a in found]
    assert [a.assets for a in resigned] != [a.assets for a in found]
    # GDAL reads the signed COG by range requests; without the token the server refuses it.
    dem = next(a for a in found if a.kind == "DEM")
    elevation = read_dem(dem.asset("data"), grid)
    assert np.isfinite(elevation).mean() > 0.99
    assert server.seen.paths("/files/signed/", 206), "COG read by HTTP range requests"
    unsigned = dem.asset("data").split("?")[0]
    assert requests.get(unsigned, timeout=5).status_code == 403
    with pytest.raises(OSError, match="remote read failed") as err:
        read_dem(unsigned, grid)
    assert unsigned in str(err.value)


def test_tokens_are_renewed_near_expiry(server: LoopbackStac) -> None:
    signer = PlanetaryComputerSigner(server.token_url)
    signer("http://x/a.tif", "sentinel-2-l2a")
    signer("http://x/b.tif", "sentinel-2-l2a")
    assert signer.requests_made == 1
    server.faults.token_ttl_s = 0  # expired when issued: never served from the cache
    fresh = PlanetaryComputerSigner(server.token_url)
    fresh("http://x/a.tif", "sentinel-1-rtc")
    fresh("http://x/b.tif", "sentinel-1-rtc")
    assert fresh.requests_made == 2
    # An endpoint that answers 404 is bad input naming it; one that is not there is transient.
    with pytest.raises(SourceError, match=r"SAS token endpoint .*/nope/sentinel-2-l2a: HTTP 404"):
        PlanetaryComputerSigner(f"{server.base}/nope/{{collection}}").token("sentinel-2-l2a")
    with pytest.raises(TransientSourceError, match="SAS token endpoint"):
        PlanetaryComputerSigner(f"http://127.0.0.1:{free_port()}/{{collection}}").token("sentinel-2-l2a")


def test_signed_hrefs_are_refreshed_near_expiry(server: LoopbackStac, aoi: AoiSpec, grid: GridSpec) -> None:
    server.faults.token_ttl_s = 0  # expired when issued: every refresh asks for a new token
    endpoint = f"{server.token_url}?case=refresh"
    (dem,) = _source(server, "planetary-computer", pc_token_url=endpoint).search(aoi.shape, *SUMMER, ["DEM"])
    asked = len(server.seen.tokens)
    again = refresh_signatures(dem)
    assert len(server.seen.tokens) == asked + 1
    assert again.fingerprint == dem.fingerprint and f"sig={SAS_SIG}" in again.asset("data")
    assert np.isfinite(read_dem(again.asset("data"), grid)).mean() > 0.99
    # Hrefs nobody signed stay as they are.
    (plain,) = _source(server, "earth-search-v1").search(aoi.shape, *SUMMER, ["DEM"])
    assert refresh_signatures(plain) is plain


def test_a_transient_asset_error_is_retried(server: LoopbackStac, aoi: AoiSpec, grid: GridSpec) -> None:
    s2 = next(a for a in _source(server, "earth-search-v1").search(aoi.shape, *SUMMER, ["S2L2A"]))
    path = s2.asset("B04").removeprefix(server.base)
    server.faults.file_503 = {path}
    scene = read_s2({k: v for k, v in s2.assets if k != "SCL"}, s2.asset("SCL"), s2.processing_baseline or "", grid)
    assert np.isfinite(scene.reflectance).mean() > 0.9
    assert server.seen.paths(path, 503) and server.seen.paths(path, 206)


def test_s3_assets_read_with_credentials_from_settings(
    server: LoopbackStac,
    aoi: AoiSpec,
    grid: GridSpec,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    endpoint = server.base.removeprefix("http://")
    for name, value in {
        "ALLOW_S3": "true",
        "S3_ACCESS_KEY_ID": S3_KEY_ID,
        "S3_SECRET_ACCESS_KEY": S3_SECRET,
        "S3_ENDPOINT": endpoint,
        "S3_VIRTUAL_HOSTING": "false",
        "S3_HTTPS": "false",
    }.items():
        monkeypatch.setenv(f"GLACIAL_LAKES_{name}", value)
    settings = load_settings()
    assert S3_SECRET not in repr(settings) and S3_SECRET not in repr(settings.s3_access)
    assert S3_SECRET not in repr(settings.stac_options)  # what travels as a task parameter
    caplog.set_level(logging.DEBUG)
    source = source_from_uri(f"stac:{server.url('cdse')}", options=settings.stac_options)
    found = source.search(aoi.shape, *SUMMER, KINDS)
    dem = next(a for a in found if a.kind == "DEM")
    assert dem.asset("data").startswith("s3://eodata/")
    with pytest.raises(OSError, match="remote read failed") as err:  # no credentials: refused
        read_dem(dem.asset("data"), grid)
    assert dem.asset("data") in str(err.value)
    with use_s3_access(settings.s3_access):
        elevation = read_dem(dem.asset("data"), grid)
    assert np.isfinite(elevation).mean() > 0.99
    signed = [a for a in server.seen.s3_auth if a.startswith(f"AWS4-HMAC-SHA256 Credential={S3_KEY_ID}/")]
    assert signed, server.seen.s3_auth
    assert server.seen.paths("/eodata/", 206), "read by range requests, path-style"
    assert S3_SECRET not in caplog.text
    assert all(S3_SECRET not in h for h in server.seen.headers), "the secret signs; it is never sent"


def test_failures_are_classified_narrowly(server: LoopbackStac) -> None:
    source = _source(server, "earth-search-v1")
    bad = APIError("bad request")
    bad.status_code = 400
    assert isinstance(source.classify(bad), SourceError)
    busy = APIError("busy")
    busy.status_code = 503
    assert isinstance(source.classify(busy), TransientSourceError)
    bug = KeyError("a bug of ours")
    assert source.classify(bug) is bug
    # A closed port: a dropped connection, transient.
    with pytest.raises(TransientSourceError, match="connection failed"):
        StacApiSource(f"http://127.0.0.1:{free_port()}/").client()
    # No page, or a page that is not STAC JSON (a GeoTIFF): the user's input.
    with pytest.raises(SourceError, match="not a usable STAC API"):
        StacApiSource(f"{server.base}/earth-search-v1/no-such-page").client()
    dem = "cop-dem-glo-30/Copernicus_DSM_COG_10_N43_00_E077_00_DEM/Copernicus_DSM_COG_10_N43_00_E077_00_DEM.tif"
    with pytest.raises(SourceError, match=f"stac:{server.base}/files/plain/"):
        StacApiSource(f"{server.base}/files/plain/{dem}").client()


def test_partners_are_searched_past_the_window(catalog: DemoCatalog, aoi: AoiSpec, server: LoopbackStac) -> None:
    day = date(2024, 8, 18)  # the demo's S1 partner of this S2 date is five days later, 2024-08-23
    for source in (LocalStacSource(catalog.root), _source(server, "earth-search-v1")):
        inside = source.search(aoi.shape, day, day, KINDS)
        plans, skipped = pair_scenes(inside, aoi.shape, 7)
        assert plans == [] and [s.reason for s in skipped] == ["no S1 within 7 days"]
        widened = search_for_pairing(source, aoi.shape, day, day, KINDS, 7)
        assert [a.kind for a in widened if a.kind == "S2L2A"] == ["S2L2A"], "S2 only inside the window"
        plans, skipped = pair_scenes(widened, aoi.shape, 7)
        assert skipped == [] and len(plans) == 1
        assert plans[0].s1.sensing_time.date() == date(2024, 8, 23)
        # The tolerance bounds the widening to the second: 4 days do not reach 2024-08-23.
        assert not [a for a in search_for_pairing(source, aoi.shape, day, day, KINDS, 4) if a.kind == "S1GRD"]
