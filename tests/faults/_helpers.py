"""Shared pieces of the tests: a scene scenario, content digests, reports, the real sample data.

Lakes are drawn in UTM 45N metres around a point in the Khumbu (EPSG:32645) and handed to the
merge in that CRS, with its EPSG in the record, like the pipeline does. The test modules load this file by its path (the
tests directory is not a package); the child scripts beside it import it directly.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import shapely
import sqlalchemy as sa
from pyproj import Transformer
from shapely import affinity
from shapely.geometry import MultiPolygon, Point, box
from shapely.geometry.base import BaseGeometry

from db.attributes import ATTRIBUTES
from db.engine import make_engine
from db.records import ObservedLake, SceneResult

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata"
"""Real sample data beside the checkout (see its README); tests that need it skip without it."""
UTM = 32645
X0, Y0 = 470_000.0, 3_090_000.0
T0 = datetime(2023, 7, 1, 4, 55, tzinfo=UTC)
REPORTS = Path(__file__).resolve().parents[1] / "_reports"
_to_lonlat = Transformer.from_crs(UTM, 4326, always_xy=True)
_to_utm = Transformer.from_crs(4326, UTM, always_xy=True)


# -- scenes -------------------------------------------------------------------------------------


def lonlat(geom: BaseGeometry) -> BaseGeometry:
    """UTM 45N metres → EPSG:4326 lon/lat."""
    return shapely.transform(geom, lambda c: np.column_stack(_to_lonlat.transform(c[:, 0], c[:, 1])))


def utm(geom: BaseGeometry) -> BaseGeometry:
    """EPSG:4326 lon/lat → UTM 45N metres."""
    return shapely.transform(geom, lambda c: np.column_stack(_to_utm.transform(c[:, 0], c[:, 1])))


def observed(outline_utm: BaseGeometry) -> ObservedLake:
    """An observed lake from an outline in UTM metres (area and perimeter measured there)."""
    c = lonlat(outline_utm).centroid
    outline = MultiPolygon([outline_utm])
    return ObservedLake(outline, outline_utm.area, outline_utm.length, c.x, c.y, 5000.0, 0.9, utm_epsg=UTM)


def ellipse(dx: float, dy: float, a: float, b: float, angle: float = 0.0) -> BaseGeometry:
    """Ellipse outline (UTM metres) centred (dx, dy) from the scenario origin, semi-axes a, b."""
    circle = Point(X0 + dx, Y0 + dy).buffer(1.0, quad_segs=16)
    return affinity.rotate(affinity.scale(circle, a, b), angle)


def disc(dx: float, dy: float, r: float) -> ObservedLake:
    return observed(ellipse(dx, dy, r, r))


def footprint(x0: float = -5_000, y0: float = -5_000, x1: float = 5_000, y1: float = 5_000) -> MultiPolygon:
    """A valid footprint: box in metres around the scenario origin, EPSG:4326."""
    return MultiPolygon([lonlat(box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1))])


def scene(
    key: str,
    days: float,
    lakes: Sequence[ObservedLake],
    *,
    aoi: str,
    valid: MultiPolygon | None = None,
) -> SceneResult:
    """A scene at T0 + ``days`` seeing ``valid`` (EPSG:4326; handed over in UTM, as the pipeline
    does); its product id depends on the date only (not on key or AOI)."""
    return SceneResult(
        scene_key=key,
        aoi_name=aoi,
        sensing_time=T0 + timedelta(days=days),
        s2_product_id=f"S2A_MSIL2A_{days:g}",
        s1_product_id=None,
        dem_id="COP-DEM",
        model_version="test-model",
        params_hash="p0",
        valid_footprint=utm(footprint() if valid is None else valid),
        cloud_fraction=0.1,
        valid_fraction=0.9,
        lakes=tuple(lakes),
        inputs={"s2": f"local:{days:g}"},
        utm_epsg=UTM,
    )


def scenario(aoi: str, prefix: str = "s") -> list[SceneResult]:
    """Seven scenes on distinct dates, in sensing order: growth, a drain and refill, a lake born
    later, one lake hidden by cloud once, boundary noise. Keys ``{prefix}0`` … ``{prefix}6``."""
    scene_box = box(X0 - 5_000, Y0 - 5_000, X0 + 5_000, Y0 + 5_000)
    cloud_over_e = MultiPolygon([lonlat(scene_box.difference(box(X0 - 2_600, Y0 - 2_600, X0 - 1_400, Y0 - 1_400)))])
    a = (200, 230, 260, 290, 320, 350, 380)  # grows every time
    b = (150, 151, None, None, 140, 141, 142)  # drains (None = seen dry), refills
    d = (None, None, 100, 101, 102, 160, 161)  # born in scene 2, grows in scene 5
    days = (0, 15, 30, 45, 60, 80, 100)
    scenes = []
    for i, t in enumerate(days):
        # Site C moves by a few metres (boundary noise): observations, but never a new version.
        lakes = [disc(0, 0, a[i]), disc(-2_000 + (i % 2) * 3, 1_000 - (i % 3) * 2, 180)]
        if b[i] is not None:
            lakes.append(disc(2_000, 0, b[i]))
        if d[i] is not None:
            lakes.append(disc(0, 2_500, d[i]))
        if i != 3:  # hidden by cloud in scene 3 (no row there), otherwise seen
            lakes.append(disc(-2_000, -2_000, 120))
        scenes.append(scene(f"{prefix}{i}", t, lakes, aoi=aoi, valid=cloud_over_e if i == 3 else None))
    return scenes


# -- content of an inventory --------------------------------------------------------------------


def _row(*exprs: str) -> str:
    # NULL spelled out so that (a, NULL, b) and (a, b, NULL) differ; float8::text is exact.
    return "concat_ws('|', " + ", ".join(f"coalesce(CAST({e} AS text), '~')" for e in exprs) + ")"


def _epoch(column: str) -> str:
    return f"extract(epoch FROM {column})"


_ATTRS = ATTRIBUTES  # every declared lake attribute (db.attributes), in column order
_AOI_FILTER = "(CAST(:aoi AS text) IS NULL OR a.name = :aoi)"
# Ids and creation stamps legitimately differ between databases (identity values consumed by a
# rolled-back transaction, arrival order); every row is keyed by content instead: a lake by its
# state, a scene by its inputs, versions / observations / lineage by those keys.
_DIGEST = f"""
WITH lk AS (
    SELECT l.lake_id, md5({_row("l.status", "encode(ST_AsBinary(l.geom), 'hex')", *[f"l.{c}" for c in _ATTRS],
                                *[_epoch(f"l.{c}") for c in ("first_seen", "last_seen", "last_observed")],
                                "l.n_observations")}) AS k
    FROM inventory.lake AS l JOIN inventory.aoi AS a ON a.aoi_id = l.aoi_id WHERE {_AOI_FILTER}
), sc AS (
    SELECT s.scene_id, md5({_row(_epoch("s.sensing_time"), "s.s2_product_id", "s.s1_product_id", "s.dem_id",
                                 "s.model_version", "s.params_hash", "s.inputs",
                                 "encode(ST_AsBinary(s.valid_footprint), 'hex')", "s.cloud_fraction",
                                 "s.valid_fraction")}) AS k
    FROM inventory.scene AS s JOIN inventory.aoi AS a ON a.aoi_id = s.aoi_id WHERE {_AOI_FILTER}
), rows AS (
    SELECT 'lake' AS t, k AS r FROM lk
    UNION ALL SELECT 'scene', k FROM sc
    UNION ALL
    SELECT 'lake_version', {_row("lk.k", _epoch("lower(v.valid)"), _epoch("upper(v.valid)"), "v.change_kind",
                                  "v.status", "md5(ST_AsBinary(v.geom))", *[f"v.{c}" for c in _ATTRS],
                                  "v.area_change_m2", "v.growth_rate_m2_per_year", "sc.k", "v.model_version")}
    FROM inventory.lake_version AS v JOIN lk ON lk.lake_id = v.lake_id LEFT JOIN sc ON sc.scene_id = v.scene_id
    UNION ALL
    SELECT 'lake_observation', {_row("lk.k", "sc.k", _epoch("o.sensing_time"), "o.present",
                                      "md5(ST_AsBinary(o.geom))", *[f"o.{c}" for c in _ATTRS], "o.attributes")}
    FROM inventory.lake_observation AS o JOIN lk ON lk.lake_id = o.lake_id JOIN sc ON sc.scene_id = o.scene_id
    UNION ALL
    SELECT 'lake_lineage', {_row("p.k", "c.k", "g.kind", "sc.k", _epoch("g.sensing_time"))}
    FROM inventory.lake_lineage AS g JOIN lk AS p ON p.lake_id = g.parent_lake_id
    JOIN lk AS c ON c.lake_id = g.child_lake_id LEFT JOIN sc ON sc.scene_id = g.scene_id
)
SELECT t, count(*), md5(string_agg(r, E'\\n' ORDER BY r)) FROM rows GROUP BY t
"""
TABLES = ("lake", "scene", "lake_version", "lake_observation", "lake_lineage")


def content(engine: sa.Engine, aoi: str | None = None) -> dict[str, tuple[int, str]]:
    """Per table: (row count, md5 over the ordered content rows), optionally of one AOI only."""
    with engine.connect() as conn:
        found = {t: (int(n), digest) for t, n, digest in conn.execute(sa.text(_DIGEST), {"aoi": aoi})}
    return {t: found.get(t, (0, "")) for t in TABLES}


def row_counts(engine: sa.Engine) -> dict[str, int]:
    """Row counts of the inventory tables (all AOIs), read in one snapshot."""
    sql = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM inventory.{t}" for t in (*TABLES, "aoi", "ingest_run"))
    with engine.connect() as conn:
        return {t: int(n) for t, n in conn.execute(sa.text(sql))}


# -- databases and reports ------------------------------------------------------------------------


def admin_sql(base: str, sql: str) -> None:
    """Run one statement on the maintenance database in autocommit (CREATE/DROP DATABASE)."""
    engine = make_engine(base, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(sql))
    finally:
        engine.dispose()


@contextmanager
def fresh_database(pg_url_base: str, template: str | None) -> Iterator[str]:
    """URL of a new database, cloned from ``template`` (a database URL) or empty when None; dropped after."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    clause = f' TEMPLATE "{sa.engine.make_url(template).database}"' if template else ""
    admin_sql(pg_url_base, f'CREATE DATABASE "{name}"{clause}')
    try:
        yield sa.engine.make_url(pg_url_base).set(database=name).render_as_string(hide_password=False)
    finally:
        admin_sql(pg_url_base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def write_report(name: str, figures: dict[str, object]) -> Path:
    """Merge ``figures`` into ``tests/_reports/<name>.json`` (one file per test module)."""
    REPORTS.mkdir(parents=True, exist_ok=True)
    path = REPORTS / f"{name}.json"
    try:
        current = json.loads(path.read_text())
    except (OSError, ValueError):
        current = {}
    current.update(figures)
    path.write_text(json.dumps(current, indent=2, sort_keys=True, default=str) + "\n")
    return path
