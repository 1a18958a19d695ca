"""Catalogs may not reach outside themselves (reliability §5 S3: path traversal corpus, inputs accepted 0).

A local catalog's asset and link hrefs must resolve under its root (``..``, absolute paths and
symlinks resolved); a STAC API's assets must be ``http(s)://`` (``s3://`` only when enabled); GDAL
``/vsi…`` paths and other schemes are refused with the item and asset named. Also: the catalog is
checked when the source is built, fast, before any flow starts.
"""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

import pystac
import pytest
from shapely.geometry import box, mapping

from core.errors import SourceError
from tasks.sources import (
    LocalStacSource,
    item_to_acquisition,
    local_fingerprint,
    remote_href,
    source_from_uri,
)

FOOTPRINT = box(78.0, 42.0, 78.1, 42.1)
WHEN = datetime(2024, 7, 4, 5, 56, 41, tzinfo=UTC)

LOCAL_CORPUS = {
    "parent traversal": "../../../../../../../../etc/passwd",
    "absolute path elsewhere": "/etc/passwd",
    "file URL elsewhere": "file:///etc/passwd",
    "vsicurl": "/vsicurl/http://127.0.0.1:9/x.tif",
    "vsizip": "/vsizip//tmp/evil.zip/B02.tif",
    "vsizip zip-slip member": "/vsizip/{root}/a.zip/../../../../etc/passwd",
    "rasterio zip scheme": "zip:///tmp/evil.zip!/B02.tif",
    "http in a local catalog": "http://127.0.0.1:9/B02.tif",
    "s3 in a local catalog": "s3://bucket/B02.tif",
    "symlink escape": "../../escape.tif",
}


def _catalog(root: Path, href: str) -> Path:
    """A one-item S2 catalog under ``root`` whose B02 asset has ``href`` (written as given)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "inside.tif").write_bytes(b"not read")
    if not (root / "escape.tif").exists():
        os.symlink("/etc/passwd", root / "escape.tif")
    catalog = pystac.Catalog(id="t", description="t")
    collection = pystac.Collection(
        id="sentinel-2-l2a",
        description="s2",
        extent=pystac.Extent(pystac.SpatialExtent([list(FOOTPRINT.bounds)]), pystac.TemporalExtent([[None, None]])),
    )
    item = pystac.Item(
        id="S2A_TEST",
        geometry=mapping(FOOTPRINT),
        bbox=list(FOOTPRINT.bounds),
        datetime=WHEN,
        properties={},
    )
    item.add_asset("B02", pystac.Asset(href="inside.tif"))
    collection.add_item(item)
    catalog.add_child(collection)
    catalog.normalize_and_save(str(root), catalog_type=pystac.CatalogType.SELF_CONTAINED)
    item_path = root / "sentinel-2-l2a" / "S2A_TEST" / "S2A_TEST.json"
    doc = json.loads(item_path.read_text())
    doc["assets"]["B02"]["href"] = href.format(root=root)
    item_path.write_text(json.dumps(doc))
    return root


def test_a_href_inside_the_root_is_accepted(tmp_path: Path) -> None:
    root = _catalog(tmp_path / "cat", "../../inside.tif")
    (acq,) = source_from_uri(f"local:{root}").acquisitions()  # type: ignore[attr-defined]
    assert acq.asset("B02") == str((root / "inside.tif").resolve())


@pytest.mark.parametrize("case", sorted(LOCAL_CORPUS))
def test_local_catalog_corpus_is_refused_naming_item_and_asset(tmp_path: Path, case: str) -> None:
    root = _catalog(tmp_path / "cat", LOCAL_CORPUS[case])
    with pytest.raises(SourceError) as err:
        source_from_uri(f"local:{root}")
    message = str(err.value)
    assert "'S2A_TEST'" in message and "'B02'" in message, message
    assert "\n" not in message


def test_local_corpus_figure(tmp_path: Path) -> None:
    """The S3 figure: of every corpus href, how many a local catalog accepts (must be 0)."""
    accepted = []
    for i, (case, href) in enumerate(sorted(LOCAL_CORPUS.items())):
        root = _catalog(tmp_path / f"c{i}", href)
        try:
            LocalStacSource(root).acquisitions()
            accepted.append(case)
        except SourceError:
            pass
    assert accepted == [], f"inputs accepted: {len(accepted)} of {len(LOCAL_CORPUS)}: {accepted}"


def test_links_outside_the_root_and_loops_are_refused(tmp_path: Path) -> None:
    root = _catalog(tmp_path / "cat", "inside.tif")
    outside = _catalog(tmp_path / "other", "inside.tif")
    doc = json.loads((root / "catalog.json").read_text())
    doc["links"].append({"rel": "child", "href": "../other/sentinel-2-l2a/collection.json"})
    (root / "catalog.json").write_text(json.dumps(doc))
    with pytest.raises(SourceError, match="outside the catalog root"):
        source_from_uri(f"local:{root}")
    assert outside.exists()

    looping = _catalog(tmp_path / "loop", "inside.tif")
    collection = looping / "sentinel-2-l2a" / "collection.json"
    doc = json.loads(collection.read_text())
    doc["links"].append({"rel": "child", "href": "../catalog.json"})
    collection.write_text(json.dumps(doc))
    with pytest.raises(SourceError, match="loops"):
        source_from_uri(f"local:{looping}")


def test_unparseable_or_missing_catalogs_fail_fast_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "catalog.json").write_text("[1, 2")
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now: connection refused
    cases = {
        f"local:{tmp_path / 'nosuch'}": "no STAC catalog",
        f"local:{tmp_path / 'bad'}": "catalog.json: not a STAC",
        f"stac:http://127.0.0.1:{port}/": f"127.0.0.1:{port}",
        "local:/vsicurl/http://127.0.0.1/x": "local:DIR",
        "ftp://example.org": "expected local:DIR or stac:URL",
    }
    for uri, expected in cases.items():
        t0 = time.perf_counter()
        with pytest.raises(SourceError, match=expected.replace("/", ".").replace("?", ".")):
            source_from_uri(uri)
        seconds = time.perf_counter() - t0
        assert seconds < 2.0, f"{uri}: {seconds:.2f} s to refuse"


REMOTE_CORPUS = {
    "vsicurl": "/vsicurl/https://example.org/B02.tif",
    "vsis3": "/vsis3/bucket/B02.tif",
    "local absolute": "/etc/passwd",
    "file URL": "file:///etc/passwd",
    "s3 when not enabled": "s3://bucket/B02.tif",
    "ftp": "ftp://example.org/B02.tif",
    "rasterio zip+https": "zip+https://example.org/a.zip!/B02.tif",
    "gdal prefix in an http url's place": "/vsizip//vsicurl/https://example.org/a.zip/B02.tif",
}


def _remote_item(href: str) -> pystac.Item:
    item = pystac.Item(
        id="S2B_REMOTE",
        geometry=mapping(FOOTPRINT),
        bbox=list(FOOTPRINT.bounds),
        datetime=WHEN,
        properties={"updated": "2024-07-05T00:00:00Z"},
    )
    item.add_asset("B02", pystac.Asset(href=href))
    return item


def test_remote_corpus_is_refused_naming_item_and_asset() -> None:
    accepted = []
    for case, href in sorted(REMOTE_CORPUS.items()):
        try:
            item_to_acquisition(_remote_item(href), "S2L2A", "stac:test", remote_href(allow_s3=False))
            accepted.append(case)
        except SourceError as exc:
            assert "'S2B_REMOTE'" in str(exc) and "'B02'" in str(exc), str(exc)
    assert accepted == [], f"inputs accepted: {len(accepted)} of {len(REMOTE_CORPUS)}: {accepted}"
    ok = item_to_acquisition(_remote_item("https://example.org/B02.tif"), "S2L2A", "stac:test", remote_href())
    assert ok.asset("B02") == "https://example.org/B02.tif"
    s3 = item_to_acquisition(_remote_item("s3://bucket/B02.tif"), "S2L2A", "stac:test", remote_href(allow_s3=True))
    assert s3.asset("B02") == "s3://bucket/B02.tif"


def test_fingerprints_change_with_what_the_inputs_are(tmp_path: Path) -> None:
    """Local: size + mtime + path; remote: the item's ``updated`` time (so a fixed file is processed again)."""
    path = tmp_path / "dem.tif"
    path.write_bytes(b"x" * 10)
    item = _remote_item("https://example.org/B02.tif")
    assets = (("data", str(path)),)
    before = local_fingerprint(item, assets)
    assert local_fingerprint(item, assets) == before
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    touched = local_fingerprint(item, assets)
    path.write_bytes(b"y" * 11)
    assert len({before, touched, local_fingerprint(item, assets)}) == 3

    a = item_to_acquisition(item, "S2L2A", "stac:test", remote_href())
    item.properties["updated"] = "2024-08-01T00:00:00Z"
    b = item_to_acquisition(item, "S2L2A", "stac:test", remote_href())
    assert a.fingerprint and a.fingerprint != b.fingerprint
