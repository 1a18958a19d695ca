"""The read side: ``lake_area_series`` / ``lake_area_timeseries`` (revision 0002) and the QGIS
readiness of the views (a unique integer key, a typed geometry, a spatial index that a map
extent query actually uses).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from shapely.geometry import Point

from db.engine import make_engine
from db.merge import ensure_aoi, merge_scene
from db.schema import SCHEMA
from tests import helpers as h

pytestmark = pytest.mark.db

AOI = "khumbu"
# view → (key column, base-table GiST index a bbox filter must use, or None without geometry)
QGIS_LAYERS = {
    "current_lakes": ("lake_id", "idx_lake_geom"),
    "lake_changes": ("version_id", "idx_lake_version_geom"),
    "growing_lakes": ("lake_id", "idx_lake_geom"),
    "lake_growth": ("lake_id", "idx_lake_geom"),
    "lake_glacier_context": ("lake_id", "idx_lake_geom"),
    "lake_area_timeseries": ("observation_id", None),
}


@pytest.fixture(scope="module")
def seeded(pg_url_base: str, template_db: str) -> Iterator[sa.Engine]:
    """One database for the module: the seven-scene scenario merged in a shuffled order (the
    series must still come out in time order). The tests only read it.
    """
    with h.fresh_database(pg_url_base, template_db) as url:
        engine = make_engine(url)
        try:
            ensure_aoi(engine, AOI, h.footprint(), h.UTM)
            scenes = h.scenario(AOI)
            random.Random(7).shuffle(scenes)
            for s in scenes:
                merge_scene(engine, s)
            yield engine
        finally:
            engine.dispose()


def _lake_at(engine: sa.Engine, dx: float, dy: float) -> int:
    """Lake whose outline holds the scenario point (dx, dy) m from the origin."""
    point = h.lonlat(Point(h.X0 + dx, h.Y0 + dy))
    sql = f"SELECT lake_id FROM {SCHEMA}.lake WHERE ST_Intersects(geom, ST_GeomFromText(:p, 4326))"
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql), {"p": point.wkt}).scalar_one())


def test_lake_area_series_is_the_observations_in_time_order(seeded: sa.Engine) -> None:
    drained = _lake_at(seeded, 2_000, 0)  # present, present, dry, dry, present ×3
    series_sql = sa.text(f"SELECT sensing_time, present, area_m2, scene_id FROM {SCHEMA}.lake_area_series(:l)")
    facts_sql = sa.text(
        f"SELECT sensing_time, present, area_m2, scene_id FROM {SCHEMA}.lake_observation "
        "WHERE lake_id = :l ORDER BY sensing_time"
    )
    view_sql = sa.text(
        f"SELECT sensing_time, present, area_m2, s2_product_id FROM {SCHEMA}.lake_area_timeseries "
        "WHERE lake_id = :l ORDER BY sensing_time"
    )
    with seeded.connect() as conn:
        series = conn.execute(series_sql, {"l": drained}).all()
        facts = conn.execute(facts_sql, {"l": drained}).all()
        view = conn.execute(view_sql, {"l": drained}).all()
        products = dict(conn.execute(sa.text(f"SELECT scene_id, s2_product_id FROM {SCHEMA}.scene")).all())
        lakes = conn.execute(sa.text(f"SELECT lake_id FROM {SCHEMA}.lake")).scalars().all()
        every = {
            lake: conn.execute(series_sql, {"l": lake}).all() == conn.execute(facts_sql, {"l": lake}).all()
            for lake in lakes
        }
        unknown = conn.execute(series_sql, {"l": -1}).all()
    times = [r.sensing_time for r in series]
    assert [r.present for r in series] == [True, True, False, False, True, True, True]
    assert times == sorted(times) == [s.sensing_time for s in h.scenario(AOI)]
    assert all((r.area_m2 is None) == (not r.present) for r in series)
    assert series == facts and all(every.values()) and unknown == []
    assert view == [(t, p, a, products[s]) for t, p, a, s in series]
    h.write_report("queries", {"series_rows_for_drained_lake": len(series), "lakes_checked": len(every)})


@pytest.mark.parametrize("view", sorted(QGIS_LAYERS))
def test_views_are_qgis_layers(seeded: sa.Engine, view: str) -> None:
    key, index = QGIS_LAYERS[view]
    with seeded.connect() as conn:
        rows, keys, nulls = conn.execute(
            sa.text(f"SELECT count(*), count(DISTINCT {key}), count(*) - count({key}) FROM {SCHEMA}.{view}")
        ).one()
        key_type = conn.execute(
            sa.text(
                "SELECT data_type FROM information_schema.columns "
                "WHERE table_schema = :s AND table_name = :v AND column_name = :c"
            ),
            {"s": SCHEMA, "v": view, "c": key},
        ).scalar_one()
        registered = conn.execute(
            sa.text(
                "SELECT type, srid, coord_dimension FROM geometry_columns "
                "WHERE f_table_schema = :s AND f_table_name = :v AND f_geometry_column = 'geom'"
            ),
            {"s": SCHEMA, "v": view},
        ).all()
        plan = ""
        if index is not None:
            # What QGIS sends for a map extent; the planner must reach the base table's GiST index.
            conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
            extent = h.footprint(-500, -500, 500, 500).bounds
            plan = "\n".join(
                conn.execute(
                    sa.text(
                        f"EXPLAIN SELECT * FROM {SCHEMA}.{view} WHERE geom && ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4326)"
                    ),
                    dict(zip(("x0", "y0", "x1", "y1"), extent, strict=True)),
                ).scalars()
            )
    h.write_report(
        "queries",
        {view: {"rows": rows, "distinct_keys": keys, "null_keys": nulls, "uses_index": bool(index and index in plan)}},
    )
    assert rows > 0 and keys == rows and nulls == 0
    assert key_type in ("bigint", "integer")
    if index is None:
        assert registered == []
    else:
        assert registered == [("MULTIPOLYGON", 4326, 2)]
        assert index in plan, plan
