"""What each constraint of ``inventory.lake_version`` costs a merge's bulk insert and close.

The merge writes one version per new or changed lake (``INSERT … SELECT``) and closes the current
one of each changed lake (``UPDATE … SET valid``). This benchmark merges the ``--lakes`` outlines of
:mod:`inventory_merge` once (so the versions are real rows: outlines, attributes, scene ids), then
copies the current versions into scratch tables that each carry one of ``lake_version``'s
constraints or indexes, and times the same ``INSERT … SELECT`` into each (best of ``--repeat``),
and a close (``UPDATE`` of ``valid``) on a table with and without the exclusion constraint.

The figure that matters: ``EXCLUDE USING gist (lake_id WITH =, valid WITH &&)`` (design §7) against
the bare table and the other constraints. Uses ``DATABASE_URL`` when set (as a superuser: it
creates scratch tables), else a private cluster, like :mod:`inventory_merge`. The last line of
stdout is one JSON object.

Run from the project root: ``.venv/bin/python benchmarks/version_constraints.py --lakes 31698``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import shapely
from shapely.geometry import MultiPolygon, box
from sqlalchemy import Engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))

import inventory_merge as bench

from db.engine import make_engine
from db.merge import ensure_aoi, merge_scene
from db.migrate import upgrade

COLUMNS = (
    "lake_id, valid, change_kind, status, geom, area_m2, perimeter_m, centroid_lon, centroid_lat, "
    "elevation_m, mean_probability, area_change_m2, growth_rate_m2_per_year, scene_id, model_version"
)
T = "inventory.version_cost"
VARIANTS: dict[str, tuple[str, ...]] = {
    "bare": (),
    "primary key": (f"ALTER TABLE {T} ADD PRIMARY KEY (version_id)",),
    "exclusion constraint": (f"ALTER TABLE {T} ADD EXCLUDE USING gist (lake_id WITH =, valid WITH &&)",),
    "outline GiST": (f"CREATE INDEX ON {T} USING gist (geom)",),
    "lake_id btree": (f"CREATE INDEX ON {T} (lake_id)",),
    "FK lake": (f"ALTER TABLE {T} ADD FOREIGN KEY (lake_id) REFERENCES inventory.lake (lake_id)",),
    "FK scene": (f"ALTER TABLE {T} ADD FOREIGN KEY (scene_id) REFERENCES inventory.scene (scene_id)",),
    "validity trigger": (
        f"CREATE CONSTRAINT TRIGGER version_cost_valid AFTER INSERT ON {T} FOR EACH ROW "
        "WHEN (NOT ST_IsValid(NEW.geom)) EXECUTE FUNCTION inventory.reject_invalid_geom()",
    ),
}


def _table(engine: Engine, ddl: Sequence[str]) -> None:
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS {T}"))
        conn.execute(text(f"CREATE TABLE {T} (LIKE inventory.lake_version INCLUDING DEFAULTS INCLUDING IDENTITY)"))
        for statement in ddl:
            conn.execute(text(statement))


def _insert_s(engine: Engine, ddl: Sequence[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        _table(engine, ddl)
        with engine.begin() as conn:
            t = time.perf_counter()
            conn.execute(text(f"INSERT INTO {T} ({COLUMNS}) SELECT {COLUMNS} FROM inventory.lake_version"))
            best = min(best, time.perf_counter() - t)
    return best


def _close_s(engine: Engine, ddl: Sequence[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        _table(engine, ddl)
        with engine.begin() as conn:
            conn.execute(text(f"INSERT INTO {T} ({COLUMNS}) SELECT {COLUMNS} FROM inventory.lake_version"))
        with engine.begin() as conn:
            t = time.perf_counter()
            conn.execute(text(f"UPDATE {T} SET valid = tstzrange(lower(valid), lower(valid) + interval '1 day')"))
            best = min(best, time.perf_counter() - t)
    return best


def run(n: int, url: str, repeat: int) -> dict[str, object]:
    """Merge ``n`` lakes once, then time the inserts and closes; return the figures (seconds)."""
    outlines = bench.load_outlines(n)
    lakes = bench.observed(outlines)
    footprint = MultiPolygon([box(*shapely.total_bounds(outlines.lonlat)).buffer(0.05, join_style="mitre")])
    aoi = f"cost-{uuid.uuid4().hex[:8]}"
    upgrade(url, "head")
    engine = make_engine(url)
    try:
        ensure_aoi(engine, aoi, footprint, bench.UTM_EPSG)
        merge_scene(engine, bench.scene("c1", 0, lakes, footprint, aoi))
        inserts = {label: round(_insert_s(engine, ddl, repeat), 3) for label, ddl in VARIANTS.items()}
        every = tuple(s for ddl in VARIANTS.values() for s in ddl)
        inserts["all of them"] = round(_insert_s(engine, every, repeat), 3)
        closes = {
            "bare": round(_close_s(engine, (), repeat), 3),
            "exclusion constraint": round(_close_s(engine, VARIANTS["exclusion constraint"], repeat), 3),
        }
        with engine.begin() as conn:
            conn.execute(text(f"DROP TABLE IF EXISTS {T}"))
    finally:
        engine.dispose()
    return {"versions": n, "insert_s": inserts, "close_s": closes}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lakes", type=int, default=bench.DEFAULT_LAKES, help="number of lakes (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure, the best kept (default %(default)s)")
    args = parser.parse_args(argv)
    with bench.database() as url:
        figures = run(args.lakes, url, args.repeat)
    for label, seconds in figures["insert_s"].items():  # type: ignore[union-attr]
        print(f"insert {figures['versions']} versions, {label}: {seconds:.3f} s", file=sys.stderr)
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
