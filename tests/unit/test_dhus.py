"""``dhus:URL``: the real sentinelsat client against a loopback DHuS hub built from recorded answers.

Each fault of the hub yields its documented outcome: a cut download is resumed with a Range
request, a 503 maintenance page is retried, a checksum mismatch is quarantined (CorruptDownloadError,
an InputError) while the other products still land, 401 is a SettingsError naming the credential
settings, a zip with ``../`` members is refused; nothing already in the data root is lost.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from shapely.geometry import box, mapping

from core.errors import CorruptDownloadError, InputError, SafeProductError, SettingsError, SourceError
from flows.cli import main
from tasks.acquisition import Acquisition, TransientSourceError
from tasks.dhus import DhusCredentials, DhusOptions, DhusSource, fetch_dhus
from tasks.safe_files import open_product
from tasks.sources import source_from_uri
from tasks.stac_api import SearchCapError
from tests.helpers.dhus_server import PASSWORD, USER, LoopbackDhus, ServedProduct, loopback_dhus, safe_zip

AOI = box(86.80, 27.80, 86.95, 27.95)
"""A test AOI (Khumbu, EPSG:4326) that the served products cover."""
S2_TITLE = "S2B_MSIL2A_20210122T133229_N0214_R081_T45RVL_20210122T155500"
S1_TITLE = "S1A_IW_GRDH_1SDV_20210124T001500_20210124T001525_036260_0440B1_6FF8"


def _manifest(realdata: Path, kind: str) -> bytes:
    folder = "s2_safe_metadata" if kind == "S2L2A" else "s1_safe_metadata"
    return next((realdata / folder).glob("*.SAFE/manifest.safe")).read_bytes()


def _products(realdata: Path) -> list[ServedProduct]:
    s2 = safe_zip(
        S2_TITLE, {"manifest.safe": _manifest(realdata, "S2L2A"), "pad.bin": random.Random(0).randbytes(3 << 20)}
    )
    s1 = safe_zip(S1_TITLE, {"manifest.safe": _manifest(realdata, "S1GRD")})
    cloudy = "S2A_MSIL2A_20210127T133229_N0214_R081_T45RVL_20210127T155500"
    return [
        ServedProduct(
            "0a1b2c3d-0000-4000-8000-000000000001",
            S2_TITLE,
            "S2L2A",
            datetime(2021, 1, 22, 5, 0, tzinfo=UTC),
            box(86.5, 27.5, 87.5, 28.5),
            s2,
            3.5,
        ),
        ServedProduct(
            "0a1b2c3d-0000-4000-8000-000000000002",
            S1_TITLE,
            "S1GRD",
            datetime(2021, 1, 24, 0, 15, tzinfo=UTC),
            box(86.0, 27.0, 88.0, 29.0),
            s1,
        ),
        ServedProduct(
            "0a1b2c3d-0000-4000-8000-000000000003",
            cloudy,
            "S2L2A",
            datetime(2021, 1, 27, 5, 0, tzinfo=UTC),
            box(86.5, 27.5, 87.5, 28.5),
            safe_zip(cloudy, {"manifest.safe": b"<x/>"}),
            80.0,
        ),
        ServedProduct(
            "0a1b2c3d-0000-4000-8000-000000000004",
            S2_TITLE.replace("T45RVL", "T44RPQ"),
            "S2L2A",
            datetime(2021, 1, 22, 5, 0, tzinfo=UTC),
            box(80.0, 27.5, 81.0, 28.5),
            safe_zip("x", {"m": b""}),
            1.0,
        ),
    ]


@pytest.fixture
def hub(realdata: Path) -> Iterator[LoopbackDhus]:
    with loopback_dhus(realdata, _products(realdata)) as state:
        yield state


def _source(hub: LoopbackDhus, root: Path, password: str = PASSWORD, **kw: object) -> DhusSource:
    options = DhusOptions(data_root=root, credentials=DhusCredentials(USER, password), **kw)  # type: ignore[arg-type]
    return DhusSource(hub.url, options)


def test_search_by_aoi_window_kind_and_cloud_cover(hub: LoopbackDhus, tmp_path: Path) -> None:
    """One OpenSearch query per kind; the AOI, window, product type and cloud cover select the products."""
    found = _source(hub, tmp_path, max_cloud_cover=20.0).search(
        AOI, date(2021, 1, 20), date(2021, 1, 31), ["S2L2A", "S1GRD"]
    )
    assert [(a.product_id, a.kind) for a in found] == [(S2_TITLE, "S2L2A"), (S1_TITLE, "S1GRD")]
    s2 = found[0]
    assert s2.cloud_cover == pytest.approx(3.5)
    assert s2.platform == "sentinel-2b"
    assert s2.processing_baseline == "02.11"  # the recorded entry's, kept by the rewrite
    assert s2.footprint.equals(box(86.5, 27.5, 87.5, 28.5))
    assert s2.asset("product").startswith(hub.url + "odata/v1/Products(")
    assert s2.source == f"dhus:{hub.url}" and s2.fingerprint.startswith("dhus:0a1b2c3d-")
    queries = [p for m, p, _, s in hub.seen.requests if p.startswith("/search")]
    assert any("producttype%3A%22S2MSI2A%22" in q and "cloudcoverpercentage" in q for q in queries)
    assert any("producttype%3A%22GRD%22" in q for q in queries)
    # Without a cloud-cover maximum the cloudy scene is found too.
    every = _source(hub, tmp_path).search(AOI, date(2021, 1, 20), date(2021, 1, 31), ["S2L2A"])
    assert len(every) == 2


def test_paging_and_the_cap(realdata: Path, tmp_path: Path) -> None:
    """Sentinelsat pages by 100; a query matching more than the cap fails naming the setting."""
    many = [
        ServedProduct(
            f"00000000-0000-4000-8000-{i:012d}",
            f"S2A_MSIL2A_20210101T0000{i:02d}_N0214_R081_T45RVL_X{i:03d}",
            "S2L2A",
            datetime(2021, 1, 1 + i % 28, tzinfo=UTC),
            box(86.5, 27.5, 87.5, 28.5),
            b"z",
            1.0,
        )
        for i in range(130)
    ]
    with loopback_dhus(realdata, many) as hub:
        found = _source(hub, tmp_path).search(AOI, date(2021, 1, 1), date(2021, 1, 31), ["S2L2A"])
        assert len(found) == 130 and len({a.product_id for a in found}) == 130
        starts = [p for _, p, _, _ in hub.seen.requests if "rows=100" in p or "rows=30" in p]
        assert any("start=100" in p for p in starts)
        with pytest.raises(
            SearchCapError, match=r"130 S2MSI2A products .* more than 120.*GLACIAL_LAKES_DHUS_MAX_ITEMS"
        ):
            _source(hub, tmp_path, max_items=120).search(AOI, date(2021, 1, 1), date(2021, 1, 31), ["S2L2A"])


def _s2(hub: LoopbackDhus, tmp_path: Path) -> tuple[DhusSource, Acquisition]:
    source = _source(hub, tmp_path)
    found = source.search(AOI, date(2021, 1, 20), date(2021, 1, 31), ["S2L2A", "S1GRD"])
    return source, next(a for a in found if a.product_id == S2_TITLE)


def test_fetch_downloads_and_verifies_the_zip_read_in_place(hub: LoopbackDhus, tmp_path: Path, realdata: Path) -> None:
    """The zip lands under the data root with the OData MD5 and is the product, read in place (nothing extracted)."""
    uuid = "0a1b2c3d-0000-4000-8000-000000000001"
    source, s2 = _s2(hub, tmp_path)
    archive = source.fetch(s2)
    assert archive == (tmp_path / source.folder / f"{S2_TITLE}.zip").resolve()
    assert hashlib.md5(archive.read_bytes(), usedforsecurity=False).hexdigest() == hub.products[uuid].md5
    product = open_product(archive)
    assert product.name == f"{S2_TITLE}.SAFE" and product.read("manifest.safe") == _manifest(realdata, "S2L2A")
    assert [p.name for p in archive.parent.iterdir()] == [archive.name]  # no .part left, no extracted copy
    # A second fetch makes no new download: the verified file is kept.
    before = len(hub.seen.downloads(uuid))
    source.fetch(s2)
    assert len(hub.seen.downloads(uuid)) == before
    # An acquisition of another source is no DHuS product: fetch_dhus leaves it as it is.
    other = replace(s2, source="local:/somewhere")
    assert fetch_dhus(other, source.options) is other


def test_cut_download_is_resumed_with_a_range_request(hub: LoopbackDhus, tmp_path: Path) -> None:
    """The connection drops after half the bytes; the next request asks for the rest (206)."""
    uuid = "0a1b2c3d-0000-4000-8000-000000000001"
    hub.faults.cut.add(uuid)
    source, s2 = _s2(hub, tmp_path)
    assert source.fetch(s2).is_file()
    size = len(hub.products[uuid].data)
    ranges = hub.seen.downloads(uuid)
    assert ranges[0] == ("", 200)
    resumed_from = int(ranges[-1][0].removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_from <= size // 2 and ranges[-1][1] == 206, ranges
    assert len(ranges) == 2


def test_maintenance_page_is_retried(hub: LoopbackDhus, tmp_path: Path) -> None:
    """Two 503 maintenance answers, then the search and the download go through."""
    hub.faults.maintenance = 2
    source, s2 = _s2(hub, tmp_path)
    assert [s for *_, s in hub.seen.requests[:2]] == [503, 503]
    hub.faults.maintenance = 1
    assert source.fetch(s2).is_file()
    assert 503 in [s for *_, s in hub.seen.requests[2:]]


def test_checksum_mismatch_is_quarantined_and_loses_nothing(hub: LoopbackDhus, tmp_path: Path) -> None:
    """A zip whose MD5 differs from the OData checksum: InputError, kept in quarantine, the data root intact."""
    uuid = "0a1b2c3d-0000-4000-8000-000000000001"
    source, s2 = _s2(hub, tmp_path)
    s1 = next(a for a in source.search(AOI, date(2021, 1, 20), date(2021, 1, 31), ["S1GRD"]))
    kept = tmp_path / source.folder / "earlier.txt"
    kept.parent.mkdir(parents=True)
    kept.write_text("already here")
    hub.faults.bad_checksum.add(uuid)
    with pytest.raises(
        CorruptDownloadError, match=f"download of {S2_TITLE}.zip: MD5 .* the source states 0{{32}}"
    ) as info:
        source.fetch(s2)
    assert isinstance(info.value, InputError)  # the outcome policy quarantines InputErrors
    assert not (tmp_path / source.folder / f"{S2_TITLE}.zip").exists()
    assert [p.name.split(".zip")[0] for p in (tmp_path / "quarantine").iterdir()] == [S2_TITLE]
    assert kept.read_text() == "already here"
    assert source.fetch(s1).is_file()  # the rest goes on


def test_wrong_password_is_a_settings_error_naming_the_credentials(hub: LoopbackDhus, tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as info:
        _source(hub, tmp_path, password="wrong").search(AOI, date(2021, 1, 20), date(2021, 1, 31), ["S2L2A"])
    message = str(info.value)
    assert "HTTP 401" in message and "GLACIAL_LAKES_DHUS_USER / GLACIAL_LAKES_DHUS_PASSWORD" in message
    assert "\n" not in message and "wrong" not in message


def test_zip_with_parent_members_is_refused(realdata: Path, tmp_path: Path) -> None:
    """A product zip with a ``../`` member: SafeProductError before anything is read; nothing lands outside."""
    title = S2_TITLE
    evil = safe_zip(title, {"manifest.safe": b"<x/>", "../../escaped.txt": b"owned"})
    product = ServedProduct(
        "0a1b2c3d-0000-4000-8000-00000000000e",
        title,
        "S2L2A",
        datetime(2021, 1, 22, tzinfo=UTC),
        box(86.5, 27.5, 87.5, 28.5),
        evil,
        1.0,
    )
    with loopback_dhus(realdata, [product]) as hub:
        source, s2 = _s2(hub, tmp_path)
        with pytest.raises(SafeProductError, match=r"member '\.\./\.\./escaped\.txt' escapes the product") as info:
            fetch_dhus(s2, source.options)
    assert isinstance(info.value, InputError)  # quarantined by the outcome policy
    assert not list(tmp_path.rglob("escaped.txt")) and not (tmp_path.parent / "escaped.txt").exists()
    assert not list(tmp_path.rglob("*.SAFE"))


def test_source_uri_and_missing_credentials(hub: LoopbackDhus, tmp_path: Path) -> None:
    """``dhus:URL`` through source_from_uri: checked with one count query; no credentials → SettingsError."""
    good = DhusOptions(data_root=tmp_path, credentials=DhusCredentials(USER, PASSWORD))
    assert isinstance(source_from_uri(f"dhus:{hub.url}", dhus=good), DhusSource)
    with pytest.raises(SettingsError, match="no credentials; set GLACIAL_LAKES_DHUS_USER"):
        source_from_uri(f"dhus:{hub.url}", dhus=DhusOptions(data_root=tmp_path))


def test_cli_run_with_a_wrong_password_exits_2_with_one_line(hub: LoopbackDhus, tmp_path: Path) -> None:
    """``glacial-lakes run --source dhus:URL`` refused by the hub: exit 2, one line naming the settings."""
    aoi = tmp_path / "aoi.geojson"
    feature = {"type": "Feature", "properties": {"name": "khumbu"}, "geometry": mapping(AOI)}
    aoi.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    env = {
        "GLACIAL_LAKES_HOME": str(tmp_path / "home"),
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
        "GLACIAL_LAKES_DHUS_USER": USER,
        "GLACIAL_LAKES_DHUS_PASSWORD": "not-the-password",
    }
    args = ["run", "--aoi", str(aoi), "--start", "2021-01-20", "--end", "2021-01-31", "--source", f"dhus:{hub.url}"]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "GLACIAL_LAKES_DHUS_PASSWORD" in lines[0] and "HTTP 401" in lines[0], result.output
    assert "not-the-password" not in result.output


def test_credentials_from_settings_or_netrc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings win; else the netrc entry of the hub's host; one of the two settings alone is an error."""
    from flows.settings import Settings

    monkeypatch.setenv("GLACIAL_LAKES_HOME", str(tmp_path / "home"))
    netrc_file = tmp_path / "netrc"
    netrc_file.write_text("machine 127.0.0.1 login netrc-user password netrc-secret\n")
    netrc_file.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc_file))
    for variable in ("GLACIAL_LAKES_DHUS_USER", "GLACIAL_LAKES_DHUS_PASSWORD", "GLACIAL_LAKES_DHUS_DEM_SOURCE"):
        monkeypatch.delenv(variable, raising=False)
    options = Settings().dhus_options("dhus:http://127.0.0.1:8080/")
    assert options is not None and options.credentials == DhusCredentials("netrc-user", "netrc-secret")
    assert options.data_root == tmp_path / "home" / "data"
    assert "netrc-secret" not in repr(options)
    assert Settings().dhus_options("dhus:http://elsewhere.example/") == DhusOptions(
        data_root=tmp_path / "home" / "data"
    )
    assert Settings().dhus_options("stac:http://127.0.0.1:8080/") is None
    monkeypatch.setenv("GLACIAL_LAKES_DHUS_USER", "u")
    with pytest.raises(SettingsError, match="set both or neither"):
        Settings().dhus_options("dhus:http://127.0.0.1:8080/")
    monkeypatch.setenv("GLACIAL_LAKES_DHUS_PASSWORD", "p")
    options = Settings().dhus_options("dhus:http://127.0.0.1:8080/")
    assert options is not None and options.credentials == DhusCredentials("u", "p")


def test_dem_tiles_come_from_the_dem_source(hub: LoopbackDhus, tmp_path: Path) -> None:
    """DHuS serves no DEM: a run's DEM kind is searched in the configured DEM source only."""
    empty = tmp_path / "dem"
    empty.mkdir()
    (empty / "catalog.json").write_text(
        json.dumps({"type": "Catalog", "stac_version": "1.0.0", "id": "dem", "description": "none", "links": []})
    )
    options = DhusOptions(tmp_path, DhusCredentials(USER, PASSWORD), dem_source=f"local:{empty}")
    source = source_from_uri(f"dhus:{hub.url}", dhus=options)
    assert isinstance(source, DhusSource) and source.dem is not None and source.dem.name == f"local:{empty}"
    assert source.search(AOI, date(2021, 1, 20), date(2021, 1, 31), ["DEM"]) == []
    assert not [p for _, p, _, _ in hub.seen.requests if "DEM" in p]
    with pytest.raises(SourceError, match="serves no DEM"):
        source_from_uri(f"dhus:{hub.url}", dhus=DhusOptions(tmp_path, dem_source=f"dhus:{hub.url}"))


def test_offline_product_is_requested_from_the_archive_then_fetched(hub: LoopbackDhus, tmp_path: Path) -> None:
    """Offline (OData ``Online`` false): a retrieval is requested (202), the fetch is transient; next time it lands."""
    uuid = "0a1b2c3d-0000-4000-8000-000000000001"
    hub.faults.offline.add(uuid)
    source, s2 = _s2(hub, tmp_path)
    with pytest.raises(TransientSourceError, match=r"offline .*retrieval requested") as info:
        source.fetch(s2)
    assert "\n" not in str(info.value) and not isinstance(info.value, InputError)  # retried, never quarantined
    assert hub.seen.downloads(uuid) == [("bytes=0-1", 202)]  # the trigger: two bytes asked, none sent
    assert not list((tmp_path / source.folder).glob("*.zip"))
    assert source.fetch(s2).is_file()  # the archive restored it
    assert hub.seen.downloads(uuid)[-1] == ("", 200)


def test_retrieval_quota_exceeded_is_transient(hub: LoopbackDhus, tmp_path: Path) -> None:
    """The hub refuses the archive retrieval (403, quota): transient, one line naming the hub; nothing written."""
    uuid = "0a1b2c3d-0000-4000-8000-000000000001"
    hub.faults.offline.add(uuid)
    hub.faults.lta_quota = True
    source, s2 = _s2(hub, tmp_path)
    with pytest.raises(TransientSourceError, match=r"long-term archive retrieval not accepted now .*quota") as info:
        source.fetch(s2)
    assert "\n" not in str(info.value) and source.name in str(info.value)
    assert not (tmp_path / source.folder).exists() or not any((tmp_path / source.folder).iterdir())
