"""I1 (reliability §5), the fault classes that need a run of their own: a server, another AOI.

* HTTP 5xx mid-read: a loopback STAC API (Earth Search spelling) answers 503 once to a range
  request past the first bytes of one band, after GDAL has opened the file. GDAL's retry of
  the request (``tasks.remote_read``) must carry the read: the scene is processed, every scene
  is, and the lakes are those of a local run over the same catalog.
* Tiny scene: an AOI of 8 × 8 px (80 m) inside a lake, with the shipped TerraMind model (224 px
  windows): processed on a 256 px grid centred on it (``tasks.grid.MIN_GRID_SIDE_PX``), so the
  lake's centre is water as in the full scene, and no lake is retired.
* UTM zone crossing: the demo moved east across 78° E. Per-zone processing does not exist yet,
  so this asserts today's documented behaviour loosely (LOOSE, to tighten once per-zone
  processing lands): the run completes and every lake comes out once (no two lakes overlap).

Figures go to ``tests/_reports/fault_matrix.json`` beside the scene-fault matrix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest
from shapely.geometry import box, mapping
from sqlalchemy import Engine, text

from db.engine import make_engine
from demo.synthetic import DemoCatalog, load_truth
from flows.aoi import load_aoi
from tasks.grid import utm_epsg_for
from tests.data.faults.make import UTM, copy_catalog, lake_outline, shift_catalog, utm_shift_to
from tests.faults.test_raster_fault_matrix import REPORT, record, retired_by_fault
from tests.helpers.database import fresh_database
from tests.helpers.flow_runs import demo_window
from tests.helpers.reports import write_report
from tests.helpers.stac_api import LoopbackStac, _Handler

pytestmark = [pytest.mark.db, pytest.mark.flow, pytest.mark.slow]


def _lakes(engine: Engine) -> gpd.GeoDataFrame:
    with engine.connect() as conn:
        frame = gpd.read_postgis("SELECT lake_id, status, geom FROM inventory.lake", conn, geom_col="geom")
    return frame


# --- HTTP 5xx mid-read ---------------------------------------------------------------------------


class _MidRead503(_Handler):
    """The loopback API, plus: the first range request past byte 0 of a listed path is answered 503."""

    def _serve(self, rel: str, key: str) -> None:
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        state: Any = self.state
        with state.lock:
            hit = key in state.mid_read_503 and m is not None and int(m.group(1)) > 0
            if hit:
                state.mid_read_503.discard(key)
            if key in state.watched:
                state.ranges.append((self.headers.get("Range", ""), 503 if hit else 206))
        if hit:
            return self._send(503, b"busy", "text/plain")
        super()._serve(rel, key)


@contextmanager
def _stac_with_mid_read_503(root: Path, realdata: Path, paths: set[str]) -> Iterator[Any]:
    from http.server import ThreadingHTTPServer
    from threading import Thread

    handler = type("Handler", (_MidRead503,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    state: Any = LoopbackStac(root, realdata, f"http://127.0.0.1:{server.server_address[1]}")
    state.mid_read_503, state.watched, state.ranges = set(paths), set(paths), []
    handler.state = state
    thread = Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_http_503_mid_read_is_retried_and_the_scene_processed(
    pristine: DemoCatalog,
    realdata: Path,
    tmp_path: Path,
    pg_url_base: str,
    template_db: str,
    flow_env: pytest.MonkeyPatch,
) -> None:
    from flows.update_inventory import update_inventory

    rows = json.loads((pristine.root / "truth" / "truth.json").read_text())["dates"]
    item = rows[0]["s2_item_id"]
    band = next((pristine.root / "sentinel-2-l2a" / item).glob("*_B08_10m.tif"))
    key = f"/files/plain/{band.relative_to(pristine.root)}"
    with fresh_database(pg_url_base, template_db) as local_url:
        flow_env.setenv("DATABASE_URL", local_url)
        local = update_inventory(**demo_window(pristine))
        engine = make_engine(local_url)
        try:
            reference = _lakes(engine).to_crs(UTM)
        finally:
            engine.dispose()
    with (
        _stac_with_mid_read_503(pristine.root, realdata, {key}) as server,
        fresh_database(pg_url_base, template_db) as url,
    ):
        flow_env.setenv("DATABASE_URL", url)
        flow_env.setenv("GLACIAL_LAKES_STAC_CATALOG", "earth-search-v1")
        report = update_inventory(**demo_window(pristine, source=f"stac:{server.url('earth-search-v1')}"))
        engine = make_engine(url)
        try:
            lakes = _lakes(engine).to_crs(UTM)
        finally:
            engine.dispose()
    outcome = next(o for o in report.outcomes if o.product_id == item)
    answered = [code for _, code in server.ranges]
    refused = [r for r, code in server.ranges if code == 503]
    retried = bool(refused) and any(r == refused[0] and code == 206 for r, code in server.ranges)
    retired = retired_by_fault(reference, lakes)
    ok = outcome.status == "processed" and not retired and retried
    others = {o.product_id: o.status for o in report.outcomes if o.product_id != item and o.status != "skipped"}
    row = {
        "expected": "processed after GDAL's retry of the 503'd range request; lakes as a local run",
        "observed": f"{outcome.status}; ranges asked of the band: {server.ranges}; lakes {len(lakes)} "
        f"(local run {len(reference)})",
        "as_documented": ok,
    }
    record({"http_5xx_mid_read": row}, "http_5xx_mid_read", len(retired))
    print(f"I1 5xx mid-read: {outcome.status}, ranges {server.ranges}, lakes {len(lakes)} vs {len(reference)}")
    assert local.failed == 0 and local.processed == len(pristine.dates) - 1, local.markdown()
    assert 503 in answered, f"the fault was never injected: {server.ranges}"
    assert ok, (outcome, server.ranges, retired)
    assert others and set(others.values()) == {"processed"}, report.markdown()
    assert len(lakes) == len(reference) and sorted(lakes.status) == sorted(reference.status)


# --- tiny scene ---------------------------------------------------------------------------------


def _tiny_aoi(catalog: DemoCatalog, half_m: float = 40.0) -> Any:
    """(a point inside the growing lake, never dry, EPSG:32643; a square of 2 × ``half_m`` m around it, lon/lat)."""
    centre = lake_outline(catalog, "growing").representative_point()
    square = box(centre.x - half_m, centre.y - half_m, centre.x + half_m, centre.y + half_m)
    return centre, gpd.GeoSeries([square], crs=UTM).to_crs(4326).iloc[0]


def test_tiny_scene_is_processed_and_retires_nothing(
    pristine: DemoCatalog,
    db_url: str,
    engine: Engine,
    tmp_path: Path,
    flow_env: pytest.MonkeyPatch,
) -> None:
    """The demo AOI first (its lakes exist), then an 8 px AOI inside one of them, both with the shipped model.

    The 8 px AOI is processed on a ``MIN_GRID_SIDE_PX`` grid about it: it retires no lake, and every
    lake it records absent on a date the full AOI's run recorded absent on that date too.
    """
    from flows.update_inventory import update_inventory
    from tasks.grid import MIN_GRID_SIDE_PX
    from tasks.zones import partition_aoi

    flow_env.setenv("DATABASE_URL", db_url)
    flow_env.setenv("GLACIAL_LAKES_TTA", "false")  # one pass per window: the shape is what is tested
    full = update_inventory(**demo_window(pristine, model="default"))
    assert full.failed == 0 and full.processed == len(pristine.dates) - 1, full.markdown()
    before = _lakes(engine).to_crs(UTM)

    catalog = copy_catalog(pristine, tmp_path / "tiny")
    _, lonlat = _tiny_aoi(catalog)
    aoi = {"type": "Feature", "properties": {"name": "tiny-scene"}, "geometry": mapping(lonlat)}
    catalog.aoi_path.write_text(json.dumps({"type": "FeatureCollection", "features": [aoi]}))
    spec = load_aoi(catalog.aoi_path)
    grid = partition_aoi(spec.shape).parts[0].grid
    report = update_inventory(**demo_window(catalog, model="default"))
    failed = [o for o in report.outcomes if o.status == "failed"]
    absent_sql = (
        "SELECT o.lake_id, s.sensing_time::date FROM inventory.scene s JOIN inventory.aoi a USING (aoi_id) "
        "JOIN inventory.lake_observation o USING (scene_id) WHERE a.name = :aoi AND NOT o.present"
    )
    with engine.connect() as conn:
        scenes = conn.execute(
            text(
                "SELECT count(*) FROM inventory.scene s JOIN inventory.aoi a USING (aoi_id) WHERE a.name = 'tiny-scene'"
            )
        ).scalar_one()
        absent_tiny = set(conn.execute(text(absent_sql), {"aoi": "tiny-scene"}).tuples())
        absent_full = set(conn.execute(text(absent_sql), {"aoi": load_aoi(pristine.aoi_path).name}).tuples())
    after = _lakes(engine).to_crs(UTM)
    retired = retired_by_fault(before, after)
    processed_ok = report.processed == len(pristine.dates) - 1 and not failed and scenes == report.processed
    row = {
        "expected": "processed on a 256 px grid about the AOI; no lake retired; absent only where the full run says so",
        "observed": f"grid {grid.width}×{grid.height} px; processed {report.processed}, failed "
        f"{[o.reason for o in failed]}; scenes committed {scenes}; absent rows {len(absent_tiny)}, "
        f"of them not absent in the full run {len(absent_tiny - absent_full)}",
        "as_documented": processed_ok and not retired and absent_tiny <= absent_full,
    }
    record({"tiny_scene": row}, "tiny_scene", len(retired))
    print(f"I1 tiny scene: grid {grid.width}x{grid.height}, {report.markdown()}")
    assert (grid.width, grid.height) == (MIN_GRID_SIDE_PX, MIN_GRID_SIDE_PX)
    assert processed_ok, report.markdown()
    assert retired == [] and absent_tiny <= absent_full, (retired, absent_tiny - absent_full)


def test_tiny_scene_maps_the_water_a_full_scene_maps(pristine: DemoCatalog, tmp_path: Path) -> None:
    """The water probability at a lake's centre: the 8 px AOI's scene must agree with the full scene (p > 0.5).

    The 8 px AOI's grid is the pipeline's (:func:`tasks.zones.partition_aoi`): widened to
    ``MIN_GRID_SIDE_PX`` about the AOI, so the model sees the lake's shores, not the lake mirrored.
    """
    import rasterio

    from tasks.grid import MIN_GRID_SIDE_PX
    from tasks.pairing import pair_scenes
    from tasks.scene import prepare_stack
    from tasks.segment import segment_stack
    from tasks.sources import LocalStacSource
    from tasks.zones import partition_aoi

    aoi = load_aoi(pristine.aoi_path)
    plans, _ = pair_scenes(LocalStacSource(pristine.root).acquisitions(["S2L2A", "S1GRD", "DEM"]), aoi.shape)
    centre, tiny = _tiny_aoi(pristine)
    found = {}
    for name, geom in (("full", aoi.shape), ("tiny", tiny)):
        grid = partition_aoi(geom).parts[0].grid
        if name == "tiny":
            assert (grid.width, grid.height) == (MIN_GRID_SIDE_PX, MIN_GRID_SIDE_PX)
            assert box(*grid.bounds).contains(centre)
        info = prepare_stack(plans[0], grid, tmp_path / name)
        with rasterio.open(segment_stack(info, "default", tmp_path / name / "p.tif", False)) as ds:
            found[name] = float(ds.read(1)[ds.index(centre.x, centre.y)])
    write_report(REPORT, {"tiny_scene_lake_centre_probability_full_vs_8px": found})
    print(f"I1 tiny scene: water probability at the lake centre {found}")
    assert found["full"] > 0.5
    assert found["tiny"] > 0.5, found


# --- UTM zone crossing --------------------------------------------------------------------------


def test_utm_crossing_scene_completes_and_every_lake_comes_out_once(
    pristine: DemoCatalog,
    db_url: str,
    engine: Engine,
    tmp_path: Path,
    flow_env: pytest.MonkeyPatch,
) -> None:
    """An AOI across 78° E (UTM 43N | 44N): each acquisition processed once per zone part, on the
    part's own grid (tasks.zones); the run completes and no two lakes overlap (each lake once).
    """
    from flows.update_inventory import update_inventory

    catalog = shift_catalog(pristine, tmp_path / "crossing", utm_shift_to(78.002, pristine))
    spec = load_aoi(catalog.aoi_path)
    west, _, east, _ = spec.shape.bounds
    assert west < 78.0 < east, (west, east)
    flow_env.setenv("DATABASE_URL", db_url)
    report = update_inventory(**demo_window(catalog))
    lakes = _lakes(engine).to_crs(utm_epsg_for(78.0, spec.shape.centroid.y))
    overlaps = [
        (int(a.lake_id), int(b.lake_id))
        for i, a in enumerate(lakes.itertuples())
        for b in list(lakes.itertuples())[i + 1 :]
        if a.geom.intersection(b.geom).area > 1.0
    ]
    truth = load_truth(catalog.truth_path)
    x = truth.geometry.representative_point().x
    on_both_sides = {"west": int((x < 78.0).sum()), "east": int((x >= 78.0).sum())}
    # Only the demo's draining lake may be retired (it dries on two dates), wherever the zone edge runs.
    draining = lake_outline(catalog, "draining")
    gone = lakes[lakes.status == "disappeared"].to_crs(UTM)
    retired = [int(lake.lake_id) for lake in gone.itertuples() if not lake.geom.intersects(draining)]
    parts = 2  # one scene per acquisition and zone part
    processed = report.processed == parts * (len(pristine.dates) - 1)
    ok = report.failed == 0 and processed and not overlaps and len(lakes) > 0
    ok = ok and not retired
    row = {
        "expected": "one scene per acquisition and zone part; the run completes, every lake once (no overlap)",
        "observed": f"processed {report.processed}, failed {report.failed}; lakes {len(lakes)}, "
        f"overlapping pairs {overlaps}; retired other than the draining lake {retired}; "
        f"truth outlines west/east of 78° E {on_both_sides}",
        "as_documented": ok,
    }
    record({"utm_crossing": row}, "utm_crossing", len(retired))
    print(f"I1 UTM crossing: {report.markdown()}\nlakes {len(lakes)}, overlaps {overlaps}, truth {on_both_sides}")
    assert ok, report.markdown()
