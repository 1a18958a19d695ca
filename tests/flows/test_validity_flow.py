"""The update flow's observation validity on the demo world (tasks.validity), item by item.

In the pristine demo the "draining" lake holds water on the first two dates and none after: the
two dry scenes retire it (``test_update_inventory``). Each test edits a copy of the catalog so
that those scenes must *not* retire it, and checks that the flow keeps it active:

* the scenes carry no SCL (cloud state unknown): lakes mapped, none marked absent;
* SCL says snow/ice (11) over the lake's place;
* a puddle below the mapping unit remains in the lake's place;

and that an item without a processing baseline gets its offset from the detector, the decision
and its evidence logged and recorded, with the same lakes as the pristine catalog.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.features import rasterize
from rasterio.windows import from_bounds
from shapely.geometry import box
from sqlalchemy import Engine, text

from db.engine import make_engine
from demo.synthetic import DemoCatalog, generate_demo_catalog, load_truth
from flows.aoi import load_aoi
from tests.helpers.database import fresh_database

pytestmark = [pytest.mark.db, pytest.mark.flow, pytest.mark.slow]

UTM = 32643  # the demo's UTM zone
DRY_DATES = (2, 3, 4)
"""Date indices after the draining lake dried (3 has no S1 partner and is skipped)."""


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalog:
    return generate_demo_catalog(tmp_path_factory.mktemp("pristine"), size_px=256, seed=0)


@pytest.fixture
def catalog(pristine: DemoCatalog, tmp_path: Path) -> DemoCatalog:
    """A private copy of the demo catalog, free to edit (hrefs are relative)."""
    root = tmp_path / "catalog"
    shutil.copytree(pristine.root, root)
    return DemoCatalog(
        root,
        root / pristine.catalog_path.relative_to(pristine.root),
        root / pristine.aoi_path.relative_to(pristine.root),
        root / pristine.truth_path.relative_to(pristine.root),
        pristine.dates,
    )


@pytest.fixture
def flow_env(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_backend: None) -> Iterator[None]:
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("GLACIAL_LAKES_HOME", str(tmp_path / "home"))
    yield


def _run(catalog: DemoCatalog) -> Any:
    from flows.update_inventory import update_inventory

    report = update_inventory(
        aoi=load_aoi(catalog.aoi_path),
        start=min(catalog.dates) - timedelta(days=1),
        end=max(catalog.dates) + timedelta(days=1),
        source=f"local:{catalog.root}",
        model="baseline",
    )
    assert report.failed == 0 and report.processed == len(catalog.dates) - 1, report.markdown()
    return report


def _dates(catalog: DemoCatalog) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads((catalog.root / "truth" / "truth.json").read_text())["dates"]
    return rows


def _item_path(catalog: DemoCatalog, collection: str, item_id: str) -> Path:
    return catalog.root / collection / item_id / f"{item_id}.json"


def _edit_s2_item(catalog: DemoCatalog, index: int, edit: Callable[[dict[str, Any]], None]) -> None:
    path = _item_path(catalog, "sentinel-2-l2a", _dates(catalog)[index]["s2_item_id"])
    item = json.loads(path.read_text())
    edit(item)
    path.write_text(json.dumps(item))


def _asset(catalog: DemoCatalog, collection: str, item_id: str, key: str) -> Path:
    path = _item_path(catalog, collection, item_id)
    return (path.parent / json.loads(path.read_text())["assets"][key]["href"]).resolve()


def _draining(catalog: DemoCatalog) -> Any:
    """The draining lake's largest truth outline (first date), EPSG:32643."""
    truth = load_truth(catalog.truth_path).to_crs(UTM)
    rows = truth[truth["lake"] == "draining"]
    return rows.geometry.iloc[int(rows.geometry.area.argmax())]


def _lake_status(engine: Engine, outline: Any) -> list[str]:
    with engine.connect() as conn:
        lakes = gpd.read_postgis("SELECT lake_id, status, geom FROM inventory.lake", conn, geom_col="geom")
    return list(lakes[lakes.to_crs(UTM).intersects(outline)].status)


def _absent_rows(engine: Engine) -> list[tuple[str, str]]:
    """(sensing day, cloud_state) of every absent observation."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT to_char(o.sensing_time, 'YYYY-MM-DD'), s.inputs->>'cloud_state' "
                "FROM inventory.lake_observation o JOIN inventory.scene s USING (scene_id) WHERE NOT o.present"
            )
        ).all()
    return [(str(r[0]), str(r[1])) for r in rows]


def test_scenes_without_scl_map_lakes_but_retire_none(catalog: DemoCatalog, engine: Engine, flow_env: None) -> None:
    for i in DRY_DATES:
        _edit_s2_item(catalog, i, lambda item: item["assets"].pop("SCL"))
    _run(catalog)
    assert _lake_status(engine, _draining(catalog)) == ["active"], "two scenes without SCL retired the lake"
    dry_days = {_dates(catalog)[i]["date"] for i in DRY_DATES}
    assert not [r for r in _absent_rows(engine) if r[0] in dry_days], "a scene without SCL marked a lake absent"
    with engine.connect() as conn:
        scenes = conn.execute(
            text(
                "SELECT to_char(s.sensing_time, 'YYYY-MM-DD') AS day, s.inputs->>'cloud_state' AS state, "
                "s.valid_footprint IS NULL AS no_fp, s.cloud_fraction, "
                "(SELECT count(*) FROM inventory.lake_observation o WHERE o.scene_id = s.scene_id AND o.present) AS n "
                "FROM inventory.scene s ORDER BY s.sensing_time"
            )
        ).all()
    unknown = [s for s in scenes if s.day in dry_days]
    assert len(unknown) == 2 and all(s.state == "unknown" and s.no_fp and s.cloud_fraction is None for s in unknown)
    assert all(s.n > 0 for s in unknown), "a scene without SCL still maps lakes"
    assert all(s.state == "scl" and not s.no_fp and s.cloud_fraction is not None for s in scenes if s not in unknown)


def _paint_scl(path: Path, outline: Any, value: int) -> None:
    with rasterio.open(path, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as ds:
        scl = ds.read(1)
        inside = rasterize([(outline, 1)], out_shape=scl.shape, transform=ds.transform, all_touched=True) == 1
        scl[inside] = value
        ds.write(scl, 1)


def test_snow_over_a_lake_never_retires_it(catalog: DemoCatalog, engine: Engine, flow_env: None) -> None:
    outline = _draining(catalog).buffer(40.0)
    for i in DRY_DATES:
        _paint_scl(_asset(catalog, "sentinel-2-l2a", _dates(catalog)[i]["s2_item_id"], "SCL"), outline, 11)
    _run(catalog)
    assert _lake_status(engine, _draining(catalog)) == ["active"], "two snowy scenes retired the lake"
    dry_days = {_dates(catalog)[i]["date"] for i in DRY_DATES}
    with engine.connect() as conn:
        fp = gpd.read_postgis(
            "SELECT to_char(sensing_time, 'YYYY-MM-DD') AS day, valid_footprint FROM inventory.scene",
            conn,
            geom_col="valid_footprint",
        ).to_crs(UTM)
    snowy = fp[fp.day.isin(dry_days)]
    assert len(snowy) == 2
    # The snow is valid data (the scene still has a footprint) but not dry-capable.
    assert all(g.intersection(_draining(catalog)).area < 0.05 * _draining(catalog).area for g in snowy.geometry)


def _copy_window(src: Path, dst: Path, bounds: tuple[float, float, float, float], dn_shift: float) -> None:
    """Copies ``src``'s pixels inside ``bounds`` (UTM) into ``dst`` (same grid), plus ``dn_shift``."""
    with rasterio.open(src) as s:
        window = from_bounds(*bounds, transform=s.transform).round_offsets().round_lengths()
        patch = s.read(1, window=window).astype(np.float64)
    with rasterio.open(dst, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as d:
        out = np.clip(patch + dn_shift, 1, None) if dn_shift else patch
        d.write(out.astype(d.dtypes[0])[np.newaxis], window=window)


def test_water_below_the_mapping_unit_keeps_a_shrunken_lake(
    catalog: DemoCatalog, engine: Engine, flow_env: None
) -> None:
    """A 60 m × 60 m puddle (0.36 ha < 0.5 ha) left in the drained lake: not mapped, and not "seen dry"."""
    rows = _dates(catalog)
    lake = _draining(catalog)
    with rasterio.open(_asset(catalog, "sentinel-2-l2a", rows[0]["s2_item_id"], "B01")) as ds:  # 60 m grid
        col, row = ~ds.transform @ (lake.centroid.x, lake.centroid.y)
        x0, y0 = ds.transform @ (int(col), int(row))
    puddle = (x0, y0 - 60.0, x0 + 60.0, y0)
    assert lake.contains(box(*puddle))
    wet, wet_offset = rows[0], 1000  # the first date: the lake full, baseline 05.09 (+1000 DN)
    for i in (2, 4):
        dry = rows[i]
        shift = (1000 if dry["processing_baseline"] >= "04.00" else 0) - wet_offset
        item = json.loads(_item_path(catalog, "sentinel-2-l2a", dry["s2_item_id"]).read_text())
        for key in item["assets"]:
            if key != "SCL":
                src = _asset(catalog, "sentinel-2-l2a", wet["s2_item_id"], key)
                _copy_window(src, _asset(catalog, "sentinel-2-l2a", dry["s2_item_id"], key), puddle, shift)
        for pol in ("vv", "vh"):
            src = _asset(catalog, "sentinel-1-grd", wet["s1_item_id"], pol)
            _copy_window(src, _asset(catalog, "sentinel-1-grd", dry["s1_item_id"], pol), puddle, 0.0)
    _run(catalog)

    with engine.connect() as conn:
        scenes = conn.execute(
            text("SELECT to_char(sensing_time, 'YYYY-MM-DD'), inputs->>'probability' FROM inventory.scene")
        ).all()
    for day, probability in scenes:
        if day in (rows[2]["date"], rows[4]["date"]):
            with rasterio.open(probability) as ds:
                window = from_bounds(*puddle, transform=ds.transform).round_offsets().round_lengths()
                water = int((ds.read(1, window=window) > 0.5).sum())
            assert 0 < water < 50, f"{day}: {water} water pixels in the puddle (below 0.5 ha: 50)"
    assert _lake_status(engine, lake) == ["active"], "the lake was seen dry while water remained"
    with engine.connect() as conn:
        present = conn.execute(
            text(
                "SELECT count(*) FROM inventory.lake_observation o JOIN inventory.lake l USING (lake_id) "
                "WHERE o.present AND o.sensing_time > :t AND ST_Intersects(l.geom, ST_Transform("
                "ST_GeomFromText(:wkt, 32643), 4326))"
            ),
            {"t": f"{rows[1]['date']}T23:59:59Z", "wkt": lake.wkt},
        ).scalar_one()
    assert present == 0, "the puddle must stay below the mapping unit (not mapped as the lake)"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _lakes_digest(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text(
                    "SELECT status, area_m2, encode(ST_AsBinary(geom), 'hex'), first_seen, last_seen, n_observations "
                    "FROM inventory.lake ORDER BY area_m2"
                )
            ).all()
        ]


def test_items_without_a_baseline_get_the_offset_from_the_detector(
    catalog: DemoCatalog,
    pristine: DemoCatalog,
    engine: Engine,
    pg_url_base: str,
    template_db: str,
    flow_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = _dates(catalog)
    for i in range(len(rows)):
        _edit_s2_item(catalog, i, lambda item: item["properties"].pop("s2:processing_baseline"))
    records = _Records()
    # The scene's stages log as its process-scene task run (the flow's own lines as the flow run).
    run_loggers = [logging.getLogger("prefect.flow_runs"), logging.getLogger("prefect.task_runs")]
    for run_logger in run_loggers:
        run_logger.addHandler(records)
    try:
        _run(catalog)
    finally:
        for run_logger in run_loggers:
            run_logger.removeHandler(records)
    with engine.connect() as conn:
        offsets = dict(
            conn.execute(text("SELECT s2_product_id, inputs->>'s2_offset' FROM inventory.scene")).all()  # type: ignore[arg-type]
        )
    for row in rows:
        if row["s2_item_id"] in offsets:
            expected = -row["boa_add_offset"]
            assert offsets[row["s2_item_id"]].startswith(f"{expected} DN (detector: "), offsets[row["s2_item_id"]]
    assert {o.split()[0] for o in offsets.values()} == {"0", "1000"}, "both eras are in the demo"
    logged = [m for m in records.messages if "no processing baseline" in m]
    assert len(logged) == len(offsets) and all("p1" in m for m in logged), records.messages

    with fresh_database(pg_url_base, template_db) as clean_url:
        monkeypatch.setenv("DATABASE_URL", clean_url)
        _run(pristine)
        clean = make_engine(clean_url)
        try:
            assert _lakes_digest(engine) == _lakes_digest(clean), "the detector's lakes differ from the baseline's"
            with clean.connect() as conn:
                stated = conn.execute(text("SELECT inputs->>'s2_offset' FROM inventory.scene")).scalars().all()
        finally:
            clean.dispose()
    assert all(s.split(" (")[1].startswith("baseline: processing baseline") for s in stated), stated
