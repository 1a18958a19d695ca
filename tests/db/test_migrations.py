"""M1–M3: the revision chain (single head, no embedded COMMIT), schema round trips on an empty
database, and an upgrade of a populated database that must not touch its data.
"""

from __future__ import annotations

import io
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from db import migrate
from db.engine import make_engine
from db.importer import import_inventory
from db.merge import ensure_aoi, merge_scene, stale_histories
from db.schema import SCHEMA
from tests import helpers as h

pytestmark = pytest.mark.db

HEAD = "0013_glof_screening"
EVEREST = ("icimod_glacial_lakes_2015", "GL_3basins_2015_everest_subset.geojson")
"""The real ICIMOD 2015 Khumbu subset (42 lakes), under the ``realdata`` fixture's folder."""

# Everything a revision creates, as sorted text rows per kind: a structural diff, like a
# normalised ``pg_dump --schema-only``, without needing the client binaries.
_SCHEMA_DUMP = {
    "columns": """
        SELECT table_name, column_name,
               -- The logical position: a column dropped and added again takes a new attnum. 0006's
               -- downgrade can only re-add lake.aoi_id at the end of the table: it ranks last.
               row_number() OVER (PARTITION BY table_name
                                  ORDER BY (table_name, column_name) = ('lake', 'aoi_id'), ordinal_position),
               data_type, udt_name, is_nullable,
               coalesce(column_default, ''), is_identity, coalesce(col_description(
                   (quote_ident(table_schema) || '.' || quote_ident(table_name))::regclass, ordinal_position), '')
        FROM information_schema.columns WHERE table_schema = :s""",
    "constraints": """
        SELECT c.conrelid::regclass::text, c.conname, c.contype, pg_get_constraintdef(c.oid),
               c.condeferrable, c.condeferred
        FROM pg_constraint AS c WHERE c.connamespace = CAST(:s AS regnamespace)""",
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = :s",
    "views": "SELECT viewname, definition FROM pg_views WHERE schemaname = :s",
    "functions": """
        SELECT p.proname, pg_get_functiondef(p.oid), coalesce(obj_description(p.oid, 'pg_proc'), ''),
               coalesce(array_to_string(p.proacl, ','), '')
        FROM pg_proc AS p WHERE p.pronamespace = CAST(:s AS regnamespace)""",
    "relations": """
        SELECT c.relname, c.relkind, pg_get_userbyid(c.relowner), coalesce(array_to_string(c.relacl, ','), ''),
               coalesce(obj_description(c.oid, 'pg_class'), '')
        FROM pg_class AS c WHERE c.relnamespace = CAST(:s AS regnamespace)""",
    "geometry_columns": """
        SELECT f_table_name, f_geometry_column, coord_dimension, srid, type
        FROM geometry_columns WHERE f_table_schema = :s""",
    "default_privileges": """
        SELECT pg_get_userbyid(d.defaclrole), d.defaclobjtype, array_to_string(d.defaclacl, ',')
        FROM pg_default_acl AS d WHERE d.defaclnamespace = CAST(:s AS regnamespace)""",
}

_GEOMETRIES = {
    "aoi": ("aoi_id", "geom"),
    "scene": ("scene_id", "valid_footprint"),
    "lake": ("lake_id", "geom"),
    "lake_observation": ("observation_id", "geom"),
    "lake_version": ("version_id", "geom"),
}


def schema_dump(url: str) -> dict[str, list[tuple[object, ...]]]:
    """Sorted catalogue rows per kind for schema ``inventory`` (empty lists when it is absent)."""
    engine = make_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            if conn.execute(sa.text("SELECT to_regnamespace(:s)"), {"s": SCHEMA}).scalar() is None:
                return {kind: [] for kind in _SCHEMA_DUMP}
            return {
                kind: sorted(tuple(map(str, row)) for row in conn.execute(sa.text(sql), {"s": SCHEMA}))
                for kind, sql in _SCHEMA_DUMP.items()
            }
    finally:
        engine.dispose()


def data_fingerprint(engine: sa.Engine) -> dict[str, tuple[int, str]]:
    """Per table: row count and md5 of its geometries' WKB ordered by primary key."""
    out = {}
    with engine.connect() as conn:
        for table, (key, column) in _GEOMETRIES.items():
            sql = (
                f"SELECT count(*), md5(string_agg(encode(ST_AsBinary({column}), 'hex'), ',' ORDER BY {key})) "
                f"FROM {SCHEMA}.{table}"
            )
            n, digest = conn.execute(sa.text(sql)).one()
            out[table] = (int(n), digest or "")
        for table in ("lake_lineage", "acquisition", "ingest_run"):
            out[table] = (int(conn.execute(sa.text(f"SELECT count(*) FROM {SCHEMA}.{table}")).scalar_one()), "")
    return out


def offline_sql(*args: str) -> str:
    """The SQL an upgrade/downgrade would run (Alembic ``--sql`` mode), as one script."""
    config = migrate.alembic_config("postgresql+psycopg://offline@localhost/offline")
    config.output_buffer = io.StringIO()
    getattr(command, args[0])(config, args[1], sql=True)
    return config.output_buffer.getvalue()


def _transaction_statements(sql: str) -> list[str]:
    # Top-level statements only: PL/pgSQL's BEGIN/END inside DO blocks carry no semicolon
    # (BEGIN) or a label/keyword (END IF; END $$;).
    pattern = r"^\s*(BEGIN|START TRANSACTION|COMMIT|END|ROLLBACK|SAVEPOINT\b.*)\s*;\s*$"
    return [m.group(1).upper() for m in re.finditer(pattern, sql, re.IGNORECASE | re.MULTILINE)]


def test_single_head_and_one_transaction_per_chain() -> None:
    script = ScriptDirectory.from_config(migrate.alembic_config(""))
    heads = script.get_heads()
    chain = [rev.revision for rev in script.walk_revisions("base", "heads")][::-1]
    # pgstac's lesson: a COMMIT inside a revision would split the one-transaction chain.
    up = _transaction_statements(offline_sql("upgrade", "head"))
    down = _transaction_statements(offline_sql("downgrade", f"{HEAD}:base"))
    h.write_report("migrations", {"heads": heads, "chain": chain, "upgrade_transaction_statements": up})
    assert heads == [HEAD] and migrate.head() == HEAD
    assert chain == [
        "0001",
        "0002_queries",
        "0003_merge_performance",
        "0004_row_hash_function",
        "0005_geometry_validity_triggers",
        "0006_spatial_lake_identity",
        "0007_observation_indexes",
        "0008_supersede",
        "0009_run_ledger",
        "0011_lake_attributes",
        "0012_glaciers",
        HEAD,
    ]
    assert up == down == ["BEGIN", "COMMIT"]


def test_every_revision_round_trips_on_an_empty_database(pg_url_base: str) -> None:
    """Base → 0001 → head, then head → 0001 → head and head → base → head: equal schema each time."""
    with h.fresh_database(pg_url_base, None) as url:
        assert migrate.current(url) is None and schema_dump(url)["columns"] == []
        migrate.upgrade(url, "0001")
        at_0001 = schema_dump(url)
        migrate.upgrade(url, "0003_merge_performance")
        at_0003 = schema_dump(url)
        migrate.upgrade(url, "0004_row_hash_function")
        at_0004 = schema_dump(url)
        migrate.upgrade(url, "0005_geometry_validity_triggers")
        at_0005 = schema_dump(url)
        migrate.upgrade(url, "0006_spatial_lake_identity")
        at_0006 = schema_dump(url)
        migrate.upgrade(url, "0007_observation_indexes")
        at_0007 = schema_dump(url)
        migrate.upgrade(url, "0008_supersede")
        at_0008 = schema_dump(url)
        migrate.upgrade(url, "0009_run_ledger")
        at_0009 = schema_dump(url)
        migrate.upgrade(url, "0011_lake_attributes")
        at_0011 = schema_dump(url)
        migrate.upgrade(url, "0012_glaciers")
        at_0012 = schema_dump(url)
        migrate.upgrade(url, "head")
        at_head = schema_dump(url)
        migrate.downgrade(url, "0001")
        back_0001 = schema_dump(url)
        migrate.upgrade(url, "head")
        again_head = schema_dump(url)
        migrate.downgrade(url, "base")
        at_base = schema_dump(url)
        assert migrate.current(url) is None
        migrate.upgrade(url, "head")
        rebuilt = schema_dump(url)
        assert migrate.current(url) == HEAD

    diffs = {
        "0001_down_up": sum(len(set(at_0001[k]) ^ set(back_0001[k])) for k in at_0001),
        "head_down_up": sum(len(set(at_head[k]) ^ set(again_head[k])) for k in at_head),
        "base_up": sum(len(set(at_head[k]) ^ set(rebuilt[k])) for k in at_head),
    }
    h.write_report("migrations", {"schema_diff_rows": diffs})
    assert back_0001 == at_0001 and again_head == at_head and rebuilt == at_head
    assert all(rows == [] for rows in at_base.values())
    # 0002 adds exactly the time-series view and function, with their grants (0003 only a setting).
    added = {k: sorted(set(at_0003[k]) - set(at_0001[k])) for k in at_0003}
    assert [r[0] for r in added["views"]] == ["lake_area_timeseries"]
    assert [r[0] for r in added["functions"]] == ["lake_area_series"]
    assert added["indexes"] == added["constraints"] == added["geometry_columns"] == []
    # 0004 adds exactly the row-hash function (not executable by PUBLIC), nothing else.
    added = {k: sorted(set(at_0004[k]) - set(at_0003[k])) for k in at_0004}
    assert [r[0] for r in added["functions"]] == ["lake_row_hash"]
    assert not any(item.startswith("=") for item in added["functions"][0][3].split(","))  # PUBLIC: none
    assert all(added[k] == [] for k in added if k != "functions")
    # 0005 swaps each outline CHECK for its two constraint triggers (same name, SQLSTATE) and adds
    # their raising function (not executable by PUBLIC).
    added = {k: sorted(set(at_0005[k]) - set(at_0004[k])) for k in at_0005}
    removed = {k: sorted(set(at_0004[k]) - set(at_0005[k])) for k in at_0005}
    tables = ("lake", "lake_observation", "lake_version")
    assert [r[0] for r in added["functions"]] == ["reject_invalid_geom"]
    assert not any(item.startswith("=") for item in added["functions"][0][3].split(","))  # PUBLIC: none
    assert sorted((r[1], r[2]) for r in added["constraints"]) == sorted(
        (f"ck_{t}_geom_valid{s}", "t") for t in tables for s in ("", "_on_update")
    )
    assert sorted((r[1], r[2]) for r in removed["constraints"]) == [(f"ck_{t}_geom_valid", "c") for t in tables]
    assert all(added[k] == [] for k in added if k not in ("functions", "constraints"))
    assert all(removed[k] == [] for k in removed if k != "constraints")
    # 0006 drops lake.aoi_id (its index and foreign key) and gives the views and lakes_as_of
    # aoi_names in place of aoi_id / aoi_name.
    added = {k: sorted(set(at_0006[k]) - set(at_0005[k])) for k in at_0006}
    removed = {k: sorted(set(at_0005[k]) - set(at_0006[k])) for k in at_0006}
    assert [r[:2] for r in removed["columns"] if r[0] == "lake"] == [("lake", "aoi_id")]
    assert [r[1] for r in removed["indexes"]] == ["ix_lake_aoi_id"]
    assert [r[1] for r in removed["constraints"]] == ["lake_aoi_id_fkey"]
    names = {"head": {tuple(r[:2]) for r in at_0006["columns"]}, "0005": {tuple(r[:2]) for r in at_0005["columns"]}}
    views = ("current_lakes", "lake_changes", "growing_lakes")
    queue = {("lake_rebuild_queue", "lake_id"), ("lake_rebuild_queue", "queued_at")}
    assert names["head"] - names["0005"] == {(v, "aoi_names") for v in views} | queue
    assert names["0005"] - names["head"] == {("lake", "aoi_id")} | {
        (v, c) for v in views for c in ("aoi_id", "aoi_name") if (v, c) in names["0005"]
    }
    assert [r[0] for r in added["functions"]] == ["lakes_as_of"] and "aoi_names" in added["functions"][0][1]
    # 0007 drops the unread spatial index of the observations, nothing else.
    removed = {k: sorted(set(at_0006[k]) - set(at_0007[k])) for k in at_0007}
    assert [r[1] for r in removed["indexes"]] == ["idx_lake_observation_geom"]
    assert [r[0] for r in removed["relations"]] == ["idx_lake_observation_geom"]
    assert all(removed[k] == [] for k in removed if k not in ("indexes", "relations"))
    assert all(sorted(set(at_0007[k]) - set(at_0006[k])) == [] for k in at_0007)
    # 0008 adds the supersede columns of scene, their index and foreign key, and the view of the
    # superseded observations; the series function and view keep their signatures.
    added = {k: sorted(set(at_0008[k]) - set(at_0007[k])) for k in at_0008}
    assert {r[:2] for r in added["columns"] if r[0] == "scene"} == {
        ("scene", "superseded_by"),
        ("scene", "superseded_at"),
    }
    assert {r[0] for r in added["columns"]} == {"scene", "superseded_observations", "lake"}  # lake: the status comment
    assert [r[1] for r in added["indexes"]] == ["ix_scene_aoi_id_s2_product_id"]
    assert [r[0] for r in added["views"]] == ["lake_area_timeseries", "superseded_observations"]
    # 0009: runs keyed by flow run (run_key no longer unique), acquisitions unique per AOI, the
    # run's request column, the status comments naming the new values.
    added = {k: sorted(set(at_0009[k]) - set(at_0008[k])) for k in at_0009}
    removed = {k: sorted(set(at_0008[k]) - set(at_0009[k])) for k in at_0009}
    assert sorted(r[1] for r in added["constraints"]) == [
        "acquisition_aoi_id_product_id_key",
        "ingest_run_flow_run_id_key",
    ]
    assert sorted(r[1] for r in removed["constraints"]) == ["acquisition_product_id_key", "ingest_run_run_key_key"]
    assert sorted(r[:2] for r in added["columns"]) == [
        ("acquisition", "status"),
        ("ingest_run", "request"),
        ("ingest_run", "status"),
    ]
    assert sorted(r[:2] for r in removed["columns"]) == [("acquisition", "status"), ("ingest_run", "status")]
    assert all(
        added[k] == removed[k] == [] for k in added if k not in ("constraints", "columns", "indexes", "relations")
    )
    # 0011: the six attributes on the three lake tables, the views and lakes_as_of recreated with
    # them, the lake_growth view; no table, constraint or index.
    added = {k: sorted(set(at_0011[k]) - set(at_0009[k])) for k in at_0011}
    removed = {k: sorted(set(at_0009[k]) - set(at_0011[k])) for k in at_0011}
    new_attributes = {
        "perimeter_smoothed_m",
        "area_uncertainty_m2",
        "surrounding_slope_deg",
        "probability_entropy",
        "volume_m3",
        "volume_uncertainty_m3",
    }
    tables = ("lake", "lake_observation", "lake_version")
    assert {r[:2] for r in added["columns"] if r[0] in tables} == {(t, c) for t in tables for c in new_attributes}
    assert {r[0] for r in removed["columns"]} <= {"current_lakes", "lake_changes", "growing_lakes"}
    assert [r[0] for r in added["views"] if r[0] not in ("current_lakes", "lake_changes", "growing_lakes")] == [
        "lake_growth"
    ]
    assert [r[0] for r in added["functions"]] == ["lake_growth_rate", "lakes_as_of"]
    assert not any(item.startswith("=") for r in added["functions"] for item in r[3].split(","))  # PUBLIC: none
    assert added["constraints"] == added["indexes"] == removed["constraints"] == removed["indexes"] == []
    assert ("lake_growth", "geom", "2", "4326", "MULTIPOLYGON") in added["geometry_columns"]
    # 0012: the glacier tables (GiST-indexed, typed), the context function and view, and the five
    # context columns appended to current_lakes and lakes_as_of; nothing removed but redefinitions.
    added = {k: sorted(set(at_0012[k]) - set(at_0011[k])) for k in at_0012}
    removed = {k: sorted(set(at_0011[k]) - set(at_0012[k])) for k in at_0012}
    context = ("glacier_id", "rgi_id", "glacier_distance_m", "glacier_contact", "lake_type")
    assert {r[0] for r in added["columns"]} == {
        "glacier",
        "glacier_source",
        "glacier_context_settings",
        "lake_glacier_context",
        "current_lakes",
    }
    assert {r[1] for r in added["columns"] if r[0] == "current_lakes"} == set(context)
    assert removed["columns"] == [] and removed["indexes"] == [] and removed["constraints"] == []
    assert {r[1] for r in added["indexes"]} >= {"idx_glacier_geom", "idx_glacier_source_coverage"}
    assert sorted(r[0] for r in added["views"]) == ["current_lakes", "lake_glacier_context"]
    assert sorted(r[0] for r in added["functions"]) == ["glacier_context", "lakes_as_of"]
    assert all(c in {r[0]: r[1] for r in added["functions"]}["lakes_as_of"] for c in context)
    assert {(r[0], r[4]) for r in added["geometry_columns"]} == {
        ("glacier", "MULTIPOLYGON"),
        ("glacier", "POINT"),
        ("glacier_source", "MULTIPOLYGON"),
        ("lake_glacier_context", "MULTIPOLYGON"),
    }
    # 0013: the GLOF rule table (two rules, no index but its key) and the two screening views;
    # nothing removed, nothing else redefined.
    added = {k: sorted(set(at_head[k]) - set(at_0012[k])) for k in at_head}
    removed = {k: sorted(set(at_0012[k]) - set(at_head[k])) for k in at_head}
    assert {r[0] for r in added["columns"]} == {"glof_rule", "glof_screening", "glof_flagged_lakes"}
    assert sorted(r[0] for r in added["views"]) == ["glof_flagged_lakes", "glof_screening"]
    assert added["functions"] == [] and all(rows == [] for rows in removed.values())
    assert {(r[0], r[4]) for r in added["geometry_columns"]} == {("glof_flagged_lakes", "MULTIPOLYGON")}


def test_upgrade_of_a_populated_database_keeps_every_row(pg_url_base: str, realdata: Path) -> None:
    """Seeded with merged scenes and an imported inventory, then at 0001: counts and WKB md5
    unchanged by the upgrade, and the rows' content hashes still those of the row-hash function.
    """
    with h.fresh_database(pg_url_base, None) as url:
        # The merge writes through the row-hash function of 0004: seed at head, then go down to 0001.
        migrate.upgrade(url, "head")
        engine = make_engine(url)
        try:
            ensure_aoi(engine, "khumbu", h.footprint(), h.UTM)
            for s in h.scenario("khumbu"):
                merge_scene(engine, s)
            everest = realdata.joinpath(*EVEREST)
            import_inventory(engine, everest, aoi_name="everest", when=datetime(2015, 10, 1, tzinfo=UTC))
            migrate.downgrade(url, "0001")
            before = data_fingerprint(engine)
            started = time.monotonic()
            migrate.upgrade(url, "head")
            upgrade_s = time.monotonic() - started
            after = data_fingerprint(engine)
            stale = stale_histories(engine, "khumbu")
            started = time.monotonic()
            migrate.downgrade(url, "0001")
            downgrade_s = time.monotonic() - started
            after_down = data_fingerprint(engine)
            migrate.upgrade(url, "head")
            with engine.connect() as conn:
                lake_id = conn.execute(sa.text(f"SELECT min(lake_id) FROM {SCHEMA}.lake")).scalar_one()
                series = conn.execute(
                    sa.text(f"SELECT count(*) FROM {SCHEMA}.lake_area_series(:l)"), {"l": lake_id}
                ).scalar_one()
                observed = conn.execute(
                    sa.text(f"SELECT count(*) FROM {SCHEMA}.lake_observation WHERE lake_id = :l"), {"l": lake_id}
                ).scalar_one()
        finally:
            engine.dispose()

    h.write_report(
        "migrations",
        {
            "populated_rows": {t: n for t, (n, _) in before.items()},
            "populated_tables_changed_by_upgrade": sorted(t for t in before if before[t] != after[t]),
            "seconds_0001_to_head": round(upgrade_s, 3),
            "seconds_head_to_0001": round(downgrade_s, 3),
        },
    )
    assert before["lake"][0] > 0 and before["lake_version"][0] > before["lake"][0]
    assert after == before and after_down == before and stale == []
    assert series == observed > 1  # the new function reads the old rows
