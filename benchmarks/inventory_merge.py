"""Inventory merge at High-Mountain-Asia scale, against a plain COPY append of the same rows.

Builds ``--lakes`` lake outlines from the real ICIMOD 2015 inventory (3,609 polygons in the
Koshi, Gandaki and Karnali basins, less those too close to a neighbour to grow without touching
it), replicated on a grid of copies shifted by more than the inventory's extent so copies never
overlap, all in one AOI (UTM 45N), and measures in one database:

* ``append_s``: ``GeoDataFrame.to_postgis`` append of the same rows (outline + attribute
  columns) into an empty scratch table; the mean of one append before the merges and one after,
  so that a change of the machine's load during the run weighs on both sides of the ratios;
* ``first_merge_s``: :func:`db.merge.merge_scene` of the scene into an empty inventory;
* ``repeat_scene_merge_s``: a second scene (new key, 16 days later, same footprint, same
  outlines): one observation per lake (the design records every sighting), no version;
* ``noop_merge_s``: the identical re-merge: that second scene merged again (same ledger key):
  nothing is written, the committed key makes it a no-op;
* ``changed_merge_s``: a third scene where every outline grew by at least two 10 m pixels
  (enough to pass both change tolerances): one new version per lake.

The merges' results are checked (counts of lakes, observations, versions) before any figure is
printed. Uses ``DATABASE_URL`` when set (migrated to head; the benchmark adds an AOI of its own
and drops its scratch table), else starts a private PostGIS cluster under a temporary directory
on a free port and removes it at the end. Progress goes to stderr; the last line of stdout is
one JSON object with the figures. ``--statements`` also lists each merge's slow SQL statements.

Run from the project root: ``.venv/bin/python benchmarks/inventory_merge.py --lakes 31698``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import geopandas as gpd
import numpy as np
import shapely
from pyproj import Transformer
from shapely.geometry import MultiPolygon, box
from sqlalchemy import Engine, event, text

from db.attributes import ATTRIBUTES
from db.engine import make_engine
from db.geometry import as_multipolygon
from db.local_cluster import LocalCluster, ensure_local_database
from db.merge import ensure_aoi, merge_scene
from db.migrate import upgrade
from db.records import MergeReport, ObservedLake, SceneResult

PROJECT = Path(__file__).resolve().parents[1]
ICIMOD = PROJECT / ".." / "shared" / "realdata" / "icimod_glacial_lakes_2015" / "GL_3basins_2015.geojson"
DEFAULT_LAKES = 31_698
UTM_EPSG = 32645  # UTM 45N, the zone of the Koshi basin: one metric CRS for the whole AOI
GROW_M = 20.0  # two 10 m pixels
T0 = datetime(2024, 9, 1, 5, 0, tzinfo=UTC)
SCRATCH_TABLE = "merge_bench_append"
T = TypeVar("T")


@dataclass(frozen=True)
class Outlines:
    """Lake outlines in EPSG:4326 and the same in UTM (metres), index-aligned."""

    lonlat: np.ndarray
    utm: np.ndarray


def _to_utm(epsg: int) -> Transformer:
    return Transformer.from_crs(4326, epsg, always_xy=True)


def _to_lonlat(epsg: int) -> Transformer:
    return Transformer.from_crs(epsg, 4326, always_xy=True)


def _transform(geoms: np.ndarray, transformer: Transformer) -> np.ndarray:
    return shapely.transform(geoms, lambda c: np.column_stack(transformer.transform(c[:, 0], c[:, 1])))


def grown_distance(areas_m2: np.ndarray) -> np.ndarray:
    """Buffer distance (m) that takes every lake past both change tolerances: ≥ 2 pixels, and
    enough for the 5 % relative one on large compact lakes (perimeter ≥ the disc's 2√(πA)).
    """
    return np.maximum(GROW_M, 0.03 * np.sqrt(areas_m2))


def load_outlines(n: int, path: Path = ICIMOD, epsg: int = UTM_EPSG) -> Outlines:
    """``n`` non-overlapping outlines: the ICIMOD polygons, then shifted copies on a grid.

    Lakes closer to a neighbour than twice their growth distance are left out, so the grown
    outlines of the last scene never touch each other (each still continues only its own lake).
    """
    frame = gpd.read_file(path)
    base = np.asarray([as_multipolygon(g) for g in frame.geometry.values if g is not None], dtype=object)
    base = base[[g is not None for g in base]]
    utm = _transform(base, _to_utm(epsg))
    reach = grown_distance(shapely.area(utm)) + 1.0
    tree = shapely.STRtree(utm)
    pairs = tree.query(shapely.buffer(utm, 2 * reach), predicate="intersects")
    crowded = np.zeros(len(base), dtype=bool)
    crowded[pairs[0][pairs[0] != pairs[1]]] = True
    base = base[~crowded]
    x0, y0, x1, y1 = shapely.total_bounds(base)
    step_x, step_y = (x1 - x0) + 0.2, (y1 - y0) + 0.2
    copies = math.ceil(n / len(base))
    columns = math.ceil(math.sqrt(copies))
    out = []
    for k in range(copies):
        dx, dy = step_x * (k % columns), step_y * (k // columns)
        out.append(shapely.transform(base, lambda c, dx=dx, dy=dy: c + np.array([dx, dy])))
    lonlat = np.concatenate(out)[:n]
    return Outlines(lonlat, _transform(lonlat, _to_utm(epsg)))


def observed(outlines: Outlines, epsg: int = UTM_EPSG) -> tuple[ObservedLake, ...]:
    """ObservedLake records as the pipeline hands them over: outline in UTM (``epsg``), area and
    perimeter in UTM metres, centroid in degrees.
    """
    area = shapely.area(outlines.utm)
    length = shapely.length(outlines.utm)
    cx, cy = shapely.get_coordinates(shapely.centroid(outlines.lonlat)).T
    rng = np.random.default_rng(0)
    elevation = rng.uniform(4_000.0, 5_800.0, len(area))
    probability = rng.uniform(0.6, 0.99, len(area))
    return tuple(
        ObservedLake(MultiPolygon([g]) if g.geom_type == "Polygon" else g, *vals, utm_epsg=epsg)
        for g, *vals in zip(
            outlines.utm,
            area.tolist(),
            length.tolist(),
            cx.tolist(),
            cy.tolist(),
            elevation.tolist(),
            probability.tolist(),
            strict=True,
        )
    )


def grown(outlines: Outlines, epsg: int = UTM_EPSG) -> Outlines:
    """Every outline buffered outward in UTM by :func:`grown_distance`, back in EPSG:4326."""
    utm = shapely.buffer(outlines.utm, grown_distance(shapely.area(outlines.utm)), quad_segs=2)
    lonlat = np.asarray([as_multipolygon(g) for g in _transform(utm, _to_lonlat(epsg))], dtype=object)
    return Outlines(lonlat, _transform(lonlat, _to_utm(epsg)))


def scene(
    key: str, days: int, lakes: Sequence[ObservedLake], footprint: MultiPolygon, aoi: str, epsg: int = UTM_EPSG
) -> SceneResult:
    """A synthetic scene result at ``T0 + days`` seeing ``footprint`` (EPSG:4326; handed over in UTM)."""
    return SceneResult(
        scene_key=f"{aoi}-{key}",
        aoi_name=aoi,
        sensing_time=T0 + timedelta(days=days),
        s2_product_id=f"S2B_MSIL2A_BENCH_{key}",
        s1_product_id=None,
        dem_id="COP-DEM-GLO-30",
        model_version="bench",
        params_hash="bench",
        valid_footprint=_transform(np.asarray([footprint], dtype=object), _to_utm(epsg))[0],
        cloud_fraction=0.0,
        valid_fraction=1.0,
        lakes=tuple(lakes),
        utm_epsg=epsg,
    )


def frame_of(lakes: Sequence[ObservedLake], outlines: Outlines) -> gpd.GeoDataFrame:
    """The same rows as a GeoDataFrame (geometry + attribute columns), EPSG:4326 (as stored)."""
    data = {k: [getattr(o, k) for o in lakes] for k in ATTRIBUTES}
    geometry = [MultiPolygon([g]) if g.geom_type == "Polygon" else g for g in outlines.lonlat]
    return gpd.GeoDataFrame(data, geometry=geometry, crs=4326)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def database() -> Iterator[str]:
    """``DATABASE_URL`` when set, else a private cluster that is stopped and removed afterwards."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    root = Path(tempfile.mkdtemp(prefix="gl-bench-"))
    root.chmod(0o755)  # the postgres service user must enter it when we run as root
    port = _free_port()
    try:
        yield ensure_local_database(root, port)
    finally:
        LocalCluster(root, port).stop()
        shutil.rmtree(root, ignore_errors=True)


def _timed(label: str, fn: Callable[..., T], *args: Any) -> tuple[T, float]:
    print(f"{label} …", file=sys.stderr, flush=True)
    start = time.perf_counter()
    value = fn(*args)
    elapsed = time.perf_counter() - start
    print(f"{label}: {elapsed:.3f} s", file=sys.stderr, flush=True)
    return value, elapsed


@contextmanager
def statement_log(engine: Engine, min_s: float = 0.005) -> Iterator[list[tuple[float, str]]]:
    """Collect (seconds, statement) of the engine's SQLAlchemy statements taking ≥ ``min_s``.

    The merge's COPY and binary candidate fetch go through the driver and are not listed: the gap
    between the listed statements and the merge's wall time is those plus the Python work.
    """
    found: list[tuple[float, str]] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        conn.info["gl_bench_t0"] = time.perf_counter()

    def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        elapsed = time.perf_counter() - conn.info.pop("gl_bench_t0")
        if elapsed >= min_s:
            found.append((elapsed, " ".join(statement.split())[:100]))

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        yield found
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)


def _merge(engine: Engine, result: SceneResult, show_statements: bool) -> MergeReport:
    if not show_statements:
        return merge_scene(engine, result)
    with statement_log(engine) as found:
        report = merge_scene(engine, result)
    for elapsed, statement in found:
        print(f"    {elapsed:6.3f} s  {statement}", file=sys.stderr, flush=True)
    return report


def _append(engine: Engine, frame: gpd.GeoDataFrame) -> None:
    """Append the rows to an empty scratch table (created beforehand, not timed apart from this)."""
    frame.to_postgis(SCRATCH_TABLE, engine, schema="public", if_exists="append", index=False)


def _empty_scratch(engine: Engine, frame: gpd.GeoDataFrame) -> None:
    """A fresh, empty scratch table with the frame's columns and geopandas' GiST index."""
    _drop_scratch(engine)
    frame.iloc[:0].to_postgis(SCRATCH_TABLE, engine, schema="public", if_exists="replace", index=False)


def _drop_scratch(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS public.{SCRATCH_TABLE}"))


def _counts(engine: Engine, aoi: str) -> dict[str, int]:
    sql = text(
        # The AOI's lakes: those its scenes observed (identity is spatial, a lake has no AOI column).
        "WITH seen AS (SELECT o.lake_id FROM inventory.lake_observation o JOIN inventory.scene s USING (scene_id)"
        "  JOIN inventory.aoi a USING (aoi_id) WHERE a.name = :a)"
        " SELECT (SELECT count(DISTINCT lake_id) FROM seen), (SELECT count(*) FROM seen),"
        " (SELECT count(*) FROM inventory.lake_version WHERE lake_id IN (SELECT lake_id FROM seen))"
    )
    with engine.connect() as conn:
        lakes, observations, versions = conn.execute(sql, {"a": aoi}).one()
    return {"lakes": lakes, "observations": observations, "versions": versions}


def run(n: int, url: str, show_statements: bool = False) -> dict[str, Any]:
    """Build the scenes, migrate, time the append and the three merges; return the figures."""
    t = time.perf_counter()
    outlines = load_outlines(n)
    if len(outlines.lonlat) < n:
        raise SystemExit(f"only {len(outlines.lonlat)} outlines could be built")
    lakes = observed(outlines)
    changed = observed(grown(outlines))
    footprint = MultiPolygon([box(*shapely.total_bounds(outlines.lonlat)).buffer(0.05, join_style="mitre")])
    aoi = f"bench-{uuid.uuid4().hex[:8]}"
    scenes = [scene("s1", 0, lakes, footprint, aoi), scene("s2", 16, lakes, footprint, aoi)]
    scenes.append(scene("s3", 32, changed, footprint, aoi))
    frame = frame_of(lakes, outlines)
    print(f"built {n} lakes in {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)

    upgrade(url, "head")
    engine = make_engine(url)
    try:
        ensure_aoi(engine, aoi, footprint, UTM_EPSG)
        _empty_scratch(engine, frame)
        _, before_s = _timed("append (to_postgis)", _append, engine, frame)
        first, first_s = _timed("first merge", _merge, engine, scenes[0], show_statements)
        repeat, repeat_s = _timed("same outlines, new scene", _merge, engine, scenes[1], show_statements)
        noop, noop_s = _timed("identical re-merge (same key)", _merge, engine, scenes[1], show_statements)
        change, change_s = _timed("all-changed merge", _merge, engine, scenes[2], show_statements)
        _empty_scratch(engine, frame)
        _, after_s = _timed("append again (to_postgis)", _append, engine, frame)
        _check(n, first, repeat, noop, change, _counts(engine, aoi))
        _drop_scratch(engine)
    finally:
        engine.dispose()
    # The baseline is the mean of an append before and one after the merges, so that a change of
    # the machine's load during the run weighs on both sides of the ratios alike.
    append_s = (before_s + after_s) / 2
    return {
        "lakes": n,
        "append_s": round(append_s, 3),
        "append_before_s": round(before_s, 3),
        "append_after_s": round(after_s, 3),
        "first_merge_s": round(first_s, 3),
        "repeat_scene_merge_s": round(repeat_s, 3),
        "noop_merge_s": round(noop_s, 3),
        "changed_merge_s": round(change_s, 3),
        "first_over_append": round(first_s / append_s, 2),
        "repeat_scene_over_append": round(repeat_s / append_s, 2),
        "noop_over_append": round(noop_s / append_s, 2),
        "changed_over_append": round(change_s / append_s, 2),
    }


def _check(
    n: int, first: MergeReport, repeat: MergeReport, noop: MergeReport, change: MergeReport, counts: dict[str, int]
) -> None:
    """The merges did what the design requires; a benchmark of a wrong result is worthless."""
    expected = [
        (first.new_lakes, first.versions_added, first.observations) == (n, n, n),
        (repeat.new_lakes, repeat.versions_added, repeat.changed_lakes, repeat.observations) == (0, 0, 0, n),
        noop.noop and (noop.observations, noop.versions_added) == (0, 0),
        (change.new_lakes, change.versions_added, change.changed_lakes, change.observations) == (0, n, n, n),
        counts == {"lakes": n, "observations": 3 * n, "versions": 2 * n},
    ]
    if not all(expected):
        raise SystemExit(f"merge results are wrong: {first} {repeat} {noop} {change} {counts}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lakes", type=int, default=DEFAULT_LAKES, help="number of lakes (default %(default)s)")
    parser.add_argument("--statements", action="store_true", help="list each merge's slow SQL statements")
    args = parser.parse_args(argv)
    with database() as url:
        figures = run(args.lakes, url, args.statements)
    a = figures["append_s"]
    print(
        f"{figures['lakes']} lakes: append {a:.2f} s; first merge {figures['first_merge_s']:.2f} s "
        f"({figures['first_over_append']}× append), same outlines in a new scene "
        f"{figures['repeat_scene_merge_s']:.2f} s ({figures['repeat_scene_over_append']}×), identical re-merge "
        f"{figures['noop_merge_s']:.3f} s ({figures['noop_over_append']}×), "
        f"all changed {figures['changed_merge_s']:.2f} s "
        f"({figures['changed_over_append']}×)",
        flush=True,
    )
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
