"""Merge one processed scene into the inventory: identity, observations, derived history.

One scene is one transaction under an advisory lock per AOI: concurrent merges of an AOI
serialise, a crash leaves nothing half written, and a scene key already committed is a no-op.
Every geometry written is a valid 2-D MultiPolygon in EPSG:4326; every area is measured in the
AOI's UTM CRS.

The merge is set-based, so that an AOI of tens of thousands of lakes merges in a few bulk
statements:

* Identity is decided in Python on the candidates' outlines fetched in one binary query
  (:func:`db.history.match_outlines`: overlaps in metres, computed only where they can change
  the outcome).
* The scene's outlines are COPYed (binary) into a temporary staging table, from which lakes,
  observations and versions are inserted and lake rows updated, one statement each.
* History stays a function of the observations (:func:`db.history.derive_history`). In the
  common case, a scene newer than every observation of a lake, the lake row's tip decides
  (:func:`db.history.extend_histories`): a version opens only where the area changed beyond
  tolerance, closing the previous one. Backfills, repeated sensing times, disappearance and
  reappearance runs, splits and merges derive the affected lakes' histories again from all their
  observations, as before. :func:`stale_histories` checks that both paths agree.

A lake first found by a scene merged *after* other scenes also gets absent rows for those scenes
that saw its place dry (inside their valid footprint, no water matching it), so the
observations, and hence the history, do not depend on the order of arrival.
"""

from __future__ import annotations

import gc
import logging
import struct
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon
from shapely.geometry.base import BaseGeometry
from sqlalchemy import (
    BigInteger,
    Connection,
    DateTime,
    Engine,
    LargeBinary,
    any_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, Range
from sqlalchemy.dialects.postgresql import insert as pg_insert

from db.history import (
    ABSORBED_INTO,
    ABSORBED_OTHERS,
    ACTIVE,
    BORN_BY_SPLIT,
    DISAPPEARED,
    EXTRA_ATTRIBUTES,
    HistoryTips,
    LakeHistory,
    LineageEvent,
    Observation,
    Version,
    absent_lakes,
    area_change,
    as_multipolygon,
    as_multipolygons,
    derive_history,
    extend_histories,
    match_outlines,
    match_polygons,
    metric_transformer,
    project,
)
from db.records import MergeConfig, MergeReport, ObservedLake, SceneResult
from db.schema import SCHEMA, SRID, aoi, lake, lake_lineage, lake_observation, lake_version, scene

log = logging.getLogger(__name__)

ADVISORY_NAMESPACE = 0x4C414B45
"""First key of ``pg_advisory_xact_lock(namespace, hashtext(aoi_name))`` ('LAKE' in ASCII)."""

ATTRIBUTES = ("area_m2", "perimeter_m", *EXTRA_ATTRIBUTES)
_obs, _ver, _lin = lake_observation, lake_version, lake_lineage


def _in(column: Any, ids: Collection[int]) -> Any:
    """``column = ANY(:ids)``: one array parameter, however many ids (no 65 535-parameter limit)."""
    return column == any_(literal(sorted(ids), ARRAY(BigInteger)))


def _geom(name: str = "wkb") -> Any:
    return func.ST_GeomFromWKB(bindparam(name, type_=LargeBinary), SRID)


def _attrs(o: ObservedLake | Observation | None) -> dict[str, float | None]:
    if o is None:
        return dict.fromkeys(ATTRIBUTES)
    if isinstance(o, Observation):
        return {
            "area_m2": o.area_m2,
            "perimeter_m": o.perimeter_m,
            **{k: o.attributes.get(k) for k in EXTRA_ATTRIBUTES},
        }
    return {k: getattr(o, k) for k in ATTRIBUTES}


def ensure_aoi(engine: Engine, name: str, geometry: BaseGeometry, utm_epsg: int) -> int:
    """Insert or update the AOI ``name`` (outline EPSG:4326, scene grid CRS ``utm_epsg``); return its id."""
    metric_transformer(utm_epsg)  # rejects a CRS that is not projected in metres
    outline = as_multipolygon(geometry)
    if outline is None:
        raise ValueError(f"AOI {name!r} has an empty outline")
    new = pg_insert(aoi).values(name=name, utm_epsg=utm_epsg, geom=_geom())
    stmt = new.on_conflict_do_update(
        index_elements=[aoi.c.name], set_={"geom": new.excluded.geom, "utm_epsg": new.excluded.utm_epsg}
    ).returning(aoi.c.aoi_id)
    with engine.begin() as conn:
        return int(conn.execute(stmt, {"wkb": outline.wkb}).scalar_one())


def merge_scene(engine: Engine, result: SceneResult, config: MergeConfig = MergeConfig()) -> MergeReport:
    """Merge one scene in one transaction; a scene key already merged is a no-op.

    Args:
        engine: engine on the migrated inventory database.
        result: the scene's lakes (EPSG:4326, areas in m² UTM) and valid footprint.
        config: identity and change tolerances.

    Returns:
        What the merge wrote: ``observations`` present rows, ``absent`` rows (this scene's),
        ``new_lakes``, ``changed_lakes`` (existing lakes whose current version changed),
        ``disappeared`` / ``reappeared`` (current status flipped), ``versions_added`` (net).

    Raises:
        ValueError: naive sensing time. LookupError: AOI not registered with :func:`ensure_aoi`.
    """
    when = result.sensing_time
    if when.tzinfo is None:
        raise ValueError("SceneResult.sensing_time must be timezone-aware (UTC)")
    with _gc_paused():
        return _merge(engine, result, config)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: a merge allocates some 10^5 short-lived containers, on
    which the collector would walk the whole heap again and again; reference counting still
    frees them. Restored on exit (left alone if someone else had it off)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _merge(engine: Engine, result: SceneResult, config: MergeConfig) -> MergeReport:
    when = result.sensing_time
    outlines = as_multipolygons([o.geometry for o in result.lakes])
    observed = [(o, g) for o, g in zip(result.lakes, outlines, strict=True) if g is not None]
    if len(observed) < len(result.lakes):
        log.warning("scene %s: dropped %d empty outlines", result.scene_key, len(result.lakes) - len(observed))
    footprint = as_multipolygon(result.valid_footprint)

    with engine.begin() as conn:
        lock = text("SELECT pg_advisory_xact_lock(:ns, hashtext(:aoi))")
        conn.execute(lock, {"ns": ADVISORY_NAMESPACE, "aoi": result.aoi_name})
        if conn.execute(select(scene.c.scene_id).where(scene.c.scene_key == result.scene_key)).first():
            return MergeReport(scene_key=result.scene_key, noop=True)
        row = conn.execute(select(aoi.c.aoi_id, aoi.c.utm_epsg).where(aoi.c.name == result.aoi_name)).first()
        if row is None:
            raise LookupError(f"unknown AOI {result.aoi_name!r}: register it with ensure_aoi first")
        aoi_id, epsg = int(row[0]), int(row[1])
        # A few bulk statements: JIT compilation costs more than it saves, and joins and sorts
        # over one scene's rows (outlines included) should stay in memory.
        conn.execute(text("SET LOCAL jit = off"))
        conn.execute(text("SET LOCAL work_mem = '64MB'"))
        scene_id = _insert_scene(conn, result, aoi_id, footprint)

        extent = [g for _, g in observed] + ([footprint] if footprint is not None else [])
        cand = _candidates(conn, aoi_id, when, tuple(shapely.total_bounds(extent))) if extent else _Candidates()
        plan = match_outlines([g for _, g in observed], cand.geoms, epsg, config.match_overlap)
        matched = plan.matched_lakes
        absent: list[int] = []
        if footprint is not None:
            unseen = {i: g for i, g in cand.geoms.items() if i not in matched}
            absent = _absent(unseen, footprint, epsg, config)

        new_ids = _allocate_lake_ids(conn, len(plan.new))
        lake_of = {**plan.continues, **dict(zip(plan.new, new_ids, strict=True))}
        links = [(a, c, "merged") for a, c in plan.merges] + [(par, lake_of[p], "split") for par, p in plan.splits]
        split_children = {lake_of[p] for _, p in plan.splits}
        # History: extended here from each lake's tip where that suffices, else derived again.
        rebuild = {i for a, c, kind in links for i in (a, c) if kind == "merged"} | _lineage_since(conn, when)
        steps = _steps(cand, lake_of, observed, absent, rebuild, when, config)
        rebuild |= {i for i in (*plan.continues.values(), *absent) if i not in steps}
        opened = {i: (cand.area(i), observed[p][0].area_m2) for p, i in plan.continues.items() if steps.get(i)}

        _stage(conn, observed, lake_of, set(new_ids), split_children, steps)
        if new_ids:
            _insert_lakes(conn, aoi_id, when)
        _insert_lineage(conn, scene_id, when, links)
        late = _backfill_absent(conn, scene_id, when, epsg, new_ids, split_children, config)
        if late:
            _mark_rebuilt(conn, {i for i, _, _ in late})
            rebuild |= {i for i, _, _ in late}
        _insert_observations(conn, scene_id, when, absent, late)
        fast = _FastPath(
            opened={i: a for i, a in opened.items() if i not in rebuild},
            dry=sorted(i for i in absent if i in steps and i not in rebuild),
            wet=any(i in steps and i not in rebuild for i in plan.continues.values()),
            first_versions=len(new_ids) > len({i for i, _, _ in late}),
        )
        counts = _extend_histories(conn, scene_id, result.model_version, when, fast)

        touched = set(lake_of.values()) | set(absent) | {a for a, _ in plan.merges}
        status_before = {i: cand.status(i) for i in touched & rebuild if i in cand.position}
        rebuilt = _rebuild_history(conn, sorted(touched & rebuild), status_before, config)
    return MergeReport(
        scene_key=result.scene_key,
        noop=False,
        observations=len(lake_of),
        absent=len(absent),
        new_lakes=len(new_ids),
        **{k: counts[k] + rebuilt[k] for k in counts},
    )


def stale_histories(engine: Engine, aoi_name: str, config: MergeConfig = MergeConfig()) -> list[int]:
    """Lakes of ``aoi_name`` whose stored history differs from :func:`derive_history` of their facts.

    Compares every version (validity, kind, status, area, Δarea, rate, scene, outline) and the lake
    row (status, outline, attributes, time stamps, observation count, content hash) with what the
    lake's observations and lineage derive. The merge keeps this list empty, whichever path wrote
    a history; a non-empty one names lakes to rebuild.
    """
    with engine.connect() as conn:
        ids = sorted(conn.execute(select(lake.c.lake_id).join(aoi).where(aoi.c.name == aoi_name)).scalars())
        if not ids:
            return []
        histories, stored = _load(conn, ids, config)
        digest = func.md5(func.ST_AsBinary(lake.c.geom))
        state = (lake.c.status, lake.c.first_seen, lake.c.last_seen, lake.c.last_observed, lake.c.n_observations)
        hash_ok = lake.c.row_hash == literal_column(_ROW_HASH)
        query = select(lake.c.lake_id, *state, *[lake.c[k] for k in ATTRIBUTES], digest, hash_ok)
        rows = {r[0]: tuple(r[1:]) for r in conn.execute(query.where(_in(lake.c.lake_id, ids)))}
        version_outlines: dict[int, list[str]] = {i: [] for i in ids}
        query = select(_ver.c.lake_id, func.md5(func.ST_AsBinary(_ver.c.geom))).where(_in(_ver.c.lake_id, ids))
        for lake_id, md5 in conn.execute(query.order_by(_ver.c.lake_id, func.lower(_ver.c.valid))):
            version_outlines[lake_id].append(md5)
        sources = {v.source.observation_id for h in histories.values() for v in h.versions}
        query = select(_obs.c.observation_id, func.md5(func.ST_AsBinary(_obs.c.geom)))
        sources.discard(None)
        outline = {i: md5 for i, md5 in conn.execute(query.where(_in(_obs.c.observation_id, sources)))}
    stale = []
    for i in ids:
        history = histories[i]
        ok = [_key(v) for v in history.versions] == stored[i]
        ok = ok and [outline.get(v.source.observation_id) for v in history.versions] == version_outlines[i]
        s = history.state
        if s is not None:
            expected = (s.status, s.first_seen, s.last_seen, s.last_observed, s.n_observations)
            expected += (*_attrs(s.source).values(), outline.get(s.source.observation_id), True)
            ok = ok and rows[i] == expected
        if not ok:
            stale.append(i)
    return stale


@dataclass(frozen=True)
class _Candidates:
    """Lakes a scene may continue or see dry: outlines (EPSG:4326) and history tips, by lake id."""

    geoms: dict[int, BaseGeometry] = field(default_factory=dict)
    position: dict[int, int] = field(default_factory=dict)
    """Lake id → index into ``tips``."""
    tips: HistoryTips = HistoryTips(*(np.zeros(0, dtype=t) for t in (object, float, np.int64, np.int64)))

    def status(self, lake_id: int) -> str:
        return str(self.tips.status[self.position[lake_id]])

    def area(self, lake_id: int) -> float:
        return float(self.tips.area_m2[self.position[lake_id]])


_MICROS = "CAST(EXTRACT(epoch FROM {}) * 1000000 AS bigint)"  # exact: EXTRACT gives numeric
_CANDIDATES = f"""
SELECT l.lake_id, ST_AsBinary(l.geom), l.status, l.area_m2, {_MICROS.format("l.last_seen")},
       {_MICROS.format("l.last_observed")}
FROM {SCHEMA}.lake AS l
WHERE l.aoi_id = %(aoi)s AND l.geom && ST_MakeEnvelope(%(x0)s, %(y0)s, %(x1)s, %(y1)s, {SRID})
  AND l.lake_id NOT IN (SELECT parent_lake_id FROM {SCHEMA}.lake_lineage
                        WHERE kind = 'merged' AND sensing_time <= %(t)s)
  AND l.lake_id NOT IN (SELECT child_lake_id FROM {SCHEMA}.lake_lineage
                        WHERE kind = 'split' AND sensing_time > %(t)s)
"""


def _candidates(conn: Connection, aoi_id: int, when: datetime, bounds: tuple[float, ...]) -> _Candidates:
    """Lakes of the AOI in the bbox that existed at ``when`` (not absorbed yet, not split off later)."""
    params = {"aoi": aoi_id, "t": when, **dict(zip(("x0", "y0", "x1", "y1"), map(float, bounds), strict=True))}
    with _driver(conn).cursor(binary=True) as cur:  # binary: the outlines arrive as raw WKB
        rows = cur.execute(_CANDIDATES, params).fetchall()
    if not rows:
        return _Candidates()
    ids, wkb, status, area, seen, observed = zip(*rows, strict=True)
    tips = HistoryTips(
        np.asarray(status, dtype=object),
        np.asarray(area, dtype=float),  # NULL → NaN
        np.asarray(seen, dtype=np.int64),
        np.asarray(observed, dtype=np.int64),
    )
    geoms = shapely.from_wkb(list(wkb)).tolist()
    return _Candidates(dict(zip(ids, geoms, strict=True)), {i: k for k, i in enumerate(ids)}, tips)


def _driver(conn: Connection) -> Any:
    """The psycopg connection under ``conn`` (same transaction), for COPY and binary fetches."""
    return conn.connection.driver_connection


def _absent(unseen: Mapping[int, BaseGeometry], footprint: MultiPolygon, epsg: int, config: MergeConfig) -> list[int]:
    """Unseen candidates inside the footprint (cover measured in UTM, :func:`absent_lakes`).

    Lakes the footprint does not even touch in EPSG:4326 are not projected: their cover is nil.
    """
    if not unseen:
        return []
    ids = np.asarray(list(unseen))
    geoms = np.asarray(list(unseen.values()), dtype=object)
    near = np.ones(len(ids), dtype=bool)
    if config.min_footprint_cover > 0:
        near = shapely.intersects(footprint, geoms)
    if not near.any():
        return []
    lakes_m = dict(zip(ids[near].tolist(), project(list(geoms[near]), epsg), strict=True))
    return absent_lakes(lakes_m, project([footprint], epsg)[0], config.min_footprint_cover)


def _lineage_since(conn: Connection, when: datetime) -> set[int]:
    """Lakes in a split or merge at or after ``when``: their history needs the whole series."""
    rows = conn.execute(select(_lin.c.parent_lake_id, _lin.c.child_lake_id).where(_lin.c.sensing_time >= when))
    return {int(i) for r in rows for i in r}


def _steps(
    cand: _Candidates,
    lake_of: Mapping[int, int],
    observed: Sequence[tuple[ObservedLake, MultiPolygon]],
    absent: Sequence[int],
    rebuild: Collection[int],
    when: datetime,
    config: MergeConfig,
) -> dict[int, str]:
    """Existing lakes whose history this scene extends from the tip: lake id → kind of the version
    opened, or ``""`` when the current one continues (see :func:`extend_histories`)."""
    wet = [(lake_id, p) for p, lake_id in lake_of.items() if lake_id in cand.position and lake_id not in rebuild]
    ids = [lake_id for lake_id, _ in wet] + [i for i in absent if i not in rebuild]
    if not ids:
        return {}
    index = np.asarray([cand.position[i] for i in ids], dtype=np.int64)
    tips = cand.tips.take(index)
    present = np.arange(len(ids)) < len(wet)
    area = np.full(len(ids), np.nan)
    area[: len(wet)] = [observed[p][0].area_m2 for _, p in wet]
    kinds = extend_histories(tips, when, present, area, config)
    return {i: k for i, k in zip(ids, kinds.tolist(), strict=True) if k is not None}


_STAGE = (
    "p integer, lake_id bigint, is_new boolean, fast boolean, opens smallint, "
    + "".join(f"{k} double precision, " for k in ATTRIBUTES)
    + f"geom geometry(MultiPolygon, {SRID})"
)
_OPENS = ("new", "split", "grown", "shrunk")
"""Version kinds by staged ``opens`` code (1-based; 0: the observation opens no version)."""
_KIND = f"(ARRAY{list(_OPENS)})[s.opens]"


def _stage(
    conn: Connection,
    observed: Sequence[tuple[ObservedLake, MultiPolygon]],
    lake_of: Mapping[int, int],
    new_ids: Collection[int],
    split_children: Collection[int],
    steps: Mapping[int, str],
) -> None:
    """COPY the scene's outlines into ``_merge_obs`` (temporary, dropped at commit).

    One row per present polygon: its lake, whether the lake is new, whether its history is extended
    here (``fast``) and the version it opens (``opens``, see :data:`_OPENS`; 0 also where the
    rebuild decides), its attributes and outline.
    """
    conn.execute(text(f"CREATE TEMPORARY TABLE _merge_obs ({_STAGE}) ON COMMIT DROP"))
    if not lake_of:
        return
    order = sorted(lake_of)
    lake_ids = [lake_of[p] for p in order]
    new = [i in new_ids for i in lake_ids]
    kinds = [("split" if i in split_children else "new") if n else steps.get(i) for i, n in zip(lake_ids, new)]
    lakes = [observed[p][0] for p in order]
    columns = {
        "p": order,
        "lake": lake_ids,
        "new": new,
        "fast": [n or i in steps for i, n in zip(lake_ids, new)],
        "opens": [_OPENS.index(k) + 1 if k else 0 for k in kinds],
        **{k: [getattr(o, k) for o in lakes] for k in ATTRIBUTES},
    }
    wkb = shapely.to_wkb(np.asarray([observed[p][1] for p in order], dtype=object), byte_order=1).tolist()
    with _driver(conn).cursor() as cur, cur.copy("COPY _merge_obs FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(_pgcopy(columns, wkb))


# PostgreSQL's binary COPY format, built column-wise with numpy (a Python call per field would
# cost more than the server's work on the rows): a signature, then per row a field count and
# each field as its length and big-endian bytes (length -1: NULL), then a trailer.
_PGCOPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_PGCOPY_TRAILER = b"\xff\xff"
_ROW = np.dtype(
    [("fields", ">i2")]
    + [
        (f"{name}{part}", t)
        for name, typ in (("p", ">i4"), ("lake", ">i8"), ("new", "u1"), ("fast", "u1"), ("opens", ">i2"))
        + tuple((k, ">f8") for k in ATTRIBUTES)
        for part, t in (("_n", ">i4"), ("", typ))
    ]
    + [("geom_n", ">i4")]
)
"""Every field of a ``_merge_obs`` row but the outline's bytes, which follow it."""


def _pgcopy(columns: Mapping[str, Sequence[Any]], wkb: Sequence[bytes]) -> bytes:
    """``_merge_obs`` rows in binary COPY format (attributes may be None: NULL; the outline is WKB,
    which the typed column's receive function reads and gives the column's SRID)."""
    n = len(wkb)
    rows = np.empty(n, _ROW)
    rows["fields"] = len(columns) + 1
    for name, values in columns.items():
        rows[f"{name}_n"], rows[name] = np.dtype(_ROW[name]).itemsize, values  # None → NaN, fixed below
    rows["geom_n"] = np.fromiter(map(len, wkb), dtype=np.int64, count=n)
    blob, size = rows.tobytes(), _ROW.itemsize
    parts: list[bytes | None] = [None] * (2 * n)
    parts[0::2] = [blob[i : i + size] for i in range(0, len(blob), size)]
    parts[1::2] = wkb
    maybe_null = np.zeros(n, dtype=bool)
    for k in ATTRIBUTES:
        maybe_null |= np.isnan(rows[k])
    for i in np.flatnonzero(maybe_null).tolist():
        if any(columns[k][i] is None for k in ATTRIBUTES):
            parts[2 * i] = _pgcopy_row_with_nulls(rows[i], columns, i)
    return b"".join((_PGCOPY_SIGNATURE, *parts, _PGCOPY_TRAILER))  # type: ignore[arg-type]


def _pgcopy_row_with_nulls(row: np.void, columns: Mapping[str, Sequence[Any]], i: int) -> bytes:
    raw = row.tobytes()  # the record's own (big-endian) bytes
    out = bytearray(raw[: _ROW.fields[f"{ATTRIBUTES[0]}_n"][1]])
    for k in ATTRIBUTES:
        value = columns[k][i]
        out += b"\xff\xff\xff\xff" if value is None else struct.pack(">id", 8, value)
    return bytes(out + raw[-4:])  # the outline's length


def _mark_rebuilt(conn: Connection, ids: Collection[int]) -> None:
    """Hand staged lakes over to the full rebuild (new lakes that got absent rows from older scenes)."""
    conn.execute(text("UPDATE _merge_obs SET fast = false WHERE lake_id = ANY(:ids)"), {"ids": sorted(ids)})


def _allocate_lake_ids(conn: Connection, n: int) -> list[int]:
    """``n`` new lake ids from the identity sequence, ascending."""
    if n == 0:
        return []
    sql = text(f"SELECT nextval(pg_get_serial_sequence('{SCHEMA}.lake', 'lake_id')) FROM generate_series(1, :n)")
    return sorted(int(i) for i in conn.execute(sql, {"n": n}).scalars())


def _insert_scene(conn: Connection, result: SceneResult, aoi_id: int, footprint: MultiPolygon | None) -> int:
    row = {
        "scene_key": result.scene_key,
        "aoi_id": aoi_id,
        "sensing_time": result.sensing_time,
        "s2_product_id": result.s2_product_id,
        "s1_product_id": result.s1_product_id,
        "dem_id": result.dem_id,
        "inputs": dict(result.inputs),
        "model_version": result.model_version,
        "params_hash": result.params_hash,
        "cloud_fraction": result.cloud_fraction,
        "valid_fraction": result.valid_fraction,
        "wkb": footprint.wkb if footprint is not None else None,
    }
    stmt = insert(scene).values(valid_footprint=_geom()).returning(scene.c.scene_id)
    return int(conn.execute(stmt, row).scalar_one())


def _insert_lakes(conn: Connection, aoi_id: int, when: datetime) -> None:
    """Lake rows of the staged new lakes, with the state of a lake seen once (a rebuild may refine it)."""
    names = ", ".join(ATTRIBUTES)
    state = {"status": "'active'", "geom": "s.geom", **{k: f"s.{k}" for k in ATTRIBUTES}}
    state |= {"first_seen": ":t", "last_seen": ":t", "last_observed": ":t", "n_observations": "1"}
    sql = f"""
        INSERT INTO {SCHEMA}.lake (lake_id, aoi_id, status, geom, {names}, first_seen, last_seen, last_observed,
                                   n_observations, row_hash)
        SELECT s.lake_id, :aoi, 'active', s.geom, {", ".join(f"s.{k}" for k in ATTRIBUTES)}, :t, :t, :t, 1,
               {_row_hash_sql(state)}
        FROM _merge_obs AS s WHERE s.is_new
    """
    conn.execute(text(sql).bindparams(bindparam("t", type_=DateTime(timezone=True))), {"aoi": aoi_id, "t": when})


def _insert_lineage(conn: Connection, scene_id: int, when: datetime, links: Sequence[tuple[int, int, str]]) -> None:
    """Lineage rows (parent, child, kind); a pair linked before keeps the earliest sensing time."""
    if not links:
        return
    stmt = pg_insert(_lin)
    stmt = stmt.on_conflict_do_update(
        index_elements=[_lin.c.parent_lake_id, _lin.c.child_lake_id],
        set_={"sensing_time": stmt.excluded.sensing_time, "scene_id": stmt.excluded.scene_id},
        where=stmt.excluded.sensing_time < _lin.c.sensing_time,
    )
    keys = ("parent_lake_id", "child_lake_id", "kind")
    conn.execute(
        stmt, [{**dict(zip(keys, link, strict=True)), "scene_id": scene_id, "sensing_time": when} for link in links]
    )


def _backfill_absent(
    conn: Connection,
    scene_id: int,
    when: datetime,
    epsg: int,
    new_ids: Sequence[int],
    split_children: set[int],
    config: MergeConfig,
) -> list[tuple[int, int, datetime]]:
    """(lake, scene, time) absent rows for new lakes in scenes merged before that saw their place dry.

    A scene qualifies when its valid footprint covers the lake (``min_footprint_cover``) and none of
    its water overlaps the lake (``match_overlap``): the same test a lake known then would have met.
    A split child only gets rows from scenes after its split.
    """
    if not new_ids:
        return []
    s, lk = scene, lake
    others = select(s.c.scene_id).where(
        s.c.aoi_id == select(lk.c.aoi_id).where(lk.c.lake_id == new_ids[0]).scalar_subquery(),
        s.c.scene_id != scene_id,
        s.c.valid_footprint.isnot(None),
    )
    if conn.execute(others.limit(1)).first() is None:  # the AOI's first scene: nothing to look back at
        return []
    pairs = conn.execute(
        select(
            lk.c.lake_id,
            s.c.scene_id,
            s.c.sensing_time,
            func.ST_AsBinary(lk.c.geom),
            func.ST_AsBinary(func.ST_Intersection(s.c.valid_footprint, func.ST_Envelope(lk.c.geom))),
        )
        .join_from(lk, s, (s.c.aoi_id == lk.c.aoi_id) & s.c.valid_footprint.op("&&")(lk.c.geom))
        .where(_in(lk.c.lake_id, new_ids), s.c.scene_id != scene_id)
    ).all()
    pairs = [p for p in pairs if p[0] not in split_children or p[2] > when]
    if not pairs:
        return []
    wet: dict[tuple[int, int], list[BaseGeometry]] = {}
    for lake_id, sid, wkb in conn.execute(
        select(lk.c.lake_id, _obs.c.scene_id, func.ST_AsBinary(_obs.c.geom))
        .join_from(lk, _obs, _obs.c.geom.op("&&")(lk.c.geom))
        .where(_in(lk.c.lake_id, new_ids), _obs.c.present, _in(_obs.c.scene_id, {p[1] for p in pairs}))
    ):
        wet.setdefault((lake_id, sid), []).append(shapely.from_wkb(bytes(wkb)))
    out = []
    for lake_id, sid, t, lake_wkb, fp_wkb in pairs:
        lake_m, fp_m = project([shapely.from_wkb(bytes(lake_wkb)), shapely.from_wkb(bytes(fp_wkb))], epsg)
        if not absent_lakes({lake_id: lake_m}, fp_m, config.min_footprint_cover):
            continue
        water = dict(enumerate(project(wet.get((lake_id, sid), []), epsg)))
        if not match_polygons([lake_m], water, config.match_overlap).matched_lakes:
            out.append((lake_id, sid, t))
    return out


def _insert_observations(
    conn: Connection,
    scene_id: int,
    when: datetime,
    absent: Sequence[int],
    late_absent: Sequence[tuple[int, int, datetime]] = (),
) -> None:
    """This scene's present rows (from ``_merge_obs``), then its absent rows, then backfilled absent rows."""
    names = ", ".join(ATTRIBUTES)
    conn.execute(
        text(
            f"INSERT INTO {SCHEMA}.lake_observation (scene_id, lake_id, sensing_time, present, geom, {names}) "
            f"SELECT :sid, s.lake_id, :t, true, s.geom, {', '.join(f's.{k}' for k in ATTRIBUTES)} "
            "FROM _merge_obs AS s"
        ),
        {"sid": scene_id, "t": when},
    )
    dry = [(i, scene_id, when) for i in absent] + list(late_absent)
    if dry:
        lake_ids, scene_ids, times = (list(col) for col in zip(*dry, strict=True))
        conn.execute(
            text(
                f"INSERT INTO {SCHEMA}.lake_observation (scene_id, lake_id, sensing_time, present) "
                "SELECT d.s, d.l, d.t, false FROM unnest(CAST(:l AS bigint[]), CAST(:s AS bigint[]), "
                "CAST(:t AS timestamptz[])) WITH ORDINALITY AS d(l, s, t, n) ORDER BY d.n"
            ),
            {"l": lake_ids, "s": scene_ids, "t": times},
        )


@dataclass(frozen=True)
class _FastPath:
    """The histories a merge extends from their tips (the others are rebuilt)."""

    opened: Mapping[int, tuple[float, float]]
    """Existing lakes seen wet that open a version: lake id → (current area, new area), m²."""
    dry: Sequence[int]
    """Existing lakes seen dry whose current version continues."""
    wet: bool
    """Some existing lake seen wet is extended (staged with ``fast``)."""
    first_versions: bool
    """Some new lake gets its first version (staged with ``fast``)."""


def _extend_histories(
    conn: Connection, scene_id: int, model_version: str, when: datetime, fast: _FastPath
) -> dict[str, int]:
    """Write the histories extended from their tips: the staged ``fast`` rows, and the dry lakes.

    Staged new lakes get their first version (``new`` or ``split``); an existing lake whose
    observation opens a version has the current one closed at ``when`` and a new one opened; the
    lake rows move on. Returns the report's change counts.
    """
    t = {"t": when}
    opened, dry = fast.opened, fast.dry
    change: dict[int, tuple[float | None, float | None]] = {}
    if opened:
        closed = conn.execute(
            text(
                f"UPDATE {SCHEMA}.lake_version AS v SET valid = tstzrange(lower(v.valid), :t, '[)') "
                "WHERE v.lake_id = ANY(:ids) AND upper_inf(v.valid) RETURNING v.lake_id, lower(v.valid)"
            ),
            {**t, "ids": sorted(opened)},
        ).all()
        for lake_id, valid_from in closed:
            change[lake_id] = area_change(*opened[lake_id], valid_from, when)
        if len(change) != len(opened):  # never expected: the merge keeps one open version per lake
            raise RuntimeError(f"lakes without a current version: {sorted(set(opened) - set(change))}")
    ids = sorted(change)
    rows = 0
    if ids or fast.first_versions:
        rows = conn.execute(
            text(
                f"INSERT INTO {SCHEMA}.lake_version (lake_id, valid, change_kind, status, geom, "
                f"{', '.join(ATTRIBUTES)}, area_change_m2, growth_rate_m2_per_year, scene_id, model_version) "
                f"SELECT s.lake_id, tstzrange(:t, NULL, '[)'), {_KIND}, 'active', s.geom, "
                f"{', '.join(f's.{k}' for k in ATTRIBUTES)}, c.change, c.rate, :sid, :model "
                "FROM _merge_obs AS s LEFT JOIN unnest(CAST(:ids AS bigint[]), CAST(:change AS float8[]), "
                "CAST(:rate AS float8[])) AS c(lake_id, change, rate) ON c.lake_id = s.lake_id "
                "WHERE s.fast AND s.opens > 0"
            ),
            {
                **t,
                "sid": scene_id,
                "model": model_version,
                "ids": ids,
                "change": [change[i][0] for i in ids],
                "rate": [change[i][1] for i in ids],
            },
        ).rowcount

    # Lake rows: a new outline where a version opened; the time stamps and count move on.
    opens = "s.opens > 0"
    state = {
        "status": "l.status",
        "geom": f"CASE WHEN {opens} THEN s.geom ELSE l.geom END",
        **{k: f"CASE WHEN {opens} THEN s.{k} ELSE l.{k} END" for k in ATTRIBUTES},
        "first_seen": "l.first_seen",
        "last_seen": ":t",
        "last_observed": ":t",
        "n_observations": "l.n_observations + 1",
    }
    assign = ", ".join(f"{k} = {v}" for k, v in state.items() if k not in ("status", "first_seen"))
    if fast.wet:
        conn.execute(
            text(
                f"UPDATE {SCHEMA}.lake AS l SET {assign}, updated_at = now(), row_hash = {_row_hash_sql(state)} "
                "FROM _merge_obs AS s WHERE s.fast AND NOT s.is_new AND l.lake_id = s.lake_id"
            ).bindparams(bindparam("t", type_=DateTime(timezone=True))),
            t,
        )
    if dry:
        state = {k: f"l.{k}" for k in ("status", "geom", *ATTRIBUTES, "first_seen", "last_seen")}
        state |= {"last_observed": ":t", "n_observations": "l.n_observations + 1"}
        conn.execute(
            text(
                f"UPDATE {SCHEMA}.lake AS l SET last_observed = :t, n_observations = l.n_observations + 1, "
                f"updated_at = now(), row_hash = {_row_hash_sql(state)} WHERE l.lake_id = ANY(:ids)"
            ).bindparams(bindparam("t", type_=DateTime(timezone=True))),
            {**t, "ids": dry},
        )
    return {"changed_lakes": len(ids), "disappeared": 0, "reappeared": 0, "versions_added": rows}


def _key(v: Version) -> tuple[Any, ...]:
    """A version as stored: (from, to, kind, status, area, Δarea, rate, scene); pins its outline too."""
    return (
        v.valid_from,
        v.valid_to,
        v.change_kind,
        v.status,
        v.source.area_m2,
        v.area_change_m2,
        v.growth_rate_m2_per_year,
        v.scene_id,
    )


def _current(keys: Sequence[tuple[Any, ...]]) -> tuple[Any, ...] | None:
    """The part of the current version's key that a change of the lake alters (from, kind, status, area)."""
    return (keys[-1][0], *keys[-1][2:5]) if keys else None


def _load(conn: Connection, ids: Sequence[int], config: MergeConfig) -> tuple[dict[int, LakeHistory], dict[int, list]]:
    """Derive the lakes' histories from all their observations; also return their stored version keys."""
    observations: dict[int, list[Observation]] = {i: [] for i in ids}
    names = ("observation_id", "sensing_time", "present", "area_m2", "perimeter_m", "scene_id", *EXTRA_ATTRIBUTES)
    query = select(_obs.c.lake_id, *[_obs.c[k] for k in names], scene.c.scene_key, scene.c.model_version)
    for r in conn.execute(query.join(scene, scene.c.scene_id == _obs.c.scene_id).where(_in(_obs.c.lake_id, ids))):
        m = r._mapping
        observations[r.lake_id].append(
            Observation(
                **{k: m[k] for k in names if k not in EXTRA_ATTRIBUTES},
                attributes={k: m[k] for k in EXTRA_ATTRIBUTES},
                order_key=r.scene_key,
                model_version=r.model_version,
            )
        )
    events: dict[int, list[LineageEvent]] = {i: [] for i in ids}
    links = select(_lin.c.parent_lake_id, _lin.c.child_lake_id, _lin.c.kind, _lin.c.sensing_time, _lin.c.scene_id)
    for parent, child, kind, t, sid in conn.execute(
        links.where(_in(_lin.c.parent_lake_id, ids) | _in(_lin.c.child_lake_id, ids))
    ):
        roles = [(child, BORN_BY_SPLIT)] if kind == "split" else [(parent, ABSORBED_INTO), (child, ABSORBED_OTHERS)]
        for lake_id, role in roles:
            if lake_id in events:
                events[lake_id].append(LineageEvent(t, role, sid))
    stored: dict[int, list] = {i: [] for i in ids}
    lower, upper = func.lower(_ver.c.valid), func.upper(_ver.c.valid)
    key_columns = [_ver.c[k] for k in ("change_kind", "status", "area_m2", "area_change_m2", "growth_rate_m2_per_year")]
    query = select(_ver.c.lake_id, lower, upper, *key_columns, _ver.c.scene_id).where(_in(_ver.c.lake_id, ids))
    for r in conn.execute(query.order_by(_ver.c.lake_id, lower)):
        stored[r[0]].append(tuple(r[1:]))
    return {i: derive_history(observations[i], events[i], config) for i in ids}, stored


def _rebuild_history(
    conn: Connection, ids: Sequence[int], status_before: Mapping[int, str], config: MergeConfig
) -> dict[str, int]:
    """Re-derive the touched lakes' versions and lake rows; return the report's change counts."""
    if not ids:
        return {"changed_lakes": 0, "disappeared": 0, "reappeared": 0, "versions_added": 0}
    histories, stored = _load(conn, ids, config)
    derived = {i: [_key(v) for v in histories[i].versions] for i in ids}
    rewrite = [i for i in ids if derived[i] != stored[i]]  # unchanged histories keep their rows (and ids)
    if rewrite:
        conn.execute(delete(_ver).where(_in(_ver.c.lake_id, rewrite)))
        rows = [
            {
                "lake_id": i,
                "valid": Range(v.valid_from, v.valid_to, bounds="[)"),
                "change_kind": v.change_kind,
                "status": v.status,
                "area_change_m2": v.area_change_m2,
                "growth_rate_m2_per_year": v.growth_rate_m2_per_year,
                "scene_id": v.scene_id,
                "model_version": v.model_version,
                "src": v.source.observation_id,
                **_attrs(v.source),
            }
            for i in rewrite
            for v in histories[i].versions
        ]
        if rows:
            outline = select(_obs.c.geom).where(_obs.c.observation_id == bindparam("src")).scalar_subquery()
            conn.execute(insert(_ver).values(geom=outline), rows)

    states = {i: h.state for i, h in histories.items() if h.state is not None}
    if states:
        columns = ("status", "first_seen", "last_seen", "last_observed", "n_observations", *ATTRIBUTES)
        outline = select(_obs.c.geom).where(_obs.c.observation_id == bindparam("b_src")).scalar_subquery()
        stmt = (
            update(lake)
            .where(lake.c.lake_id == bindparam("b_id"))
            .values(geom=outline, updated_at=func.now(), **{c: bindparam(f"b_{c}") for c in columns})
        )
        conn.execute(
            stmt,
            [
                {
                    "b_id": i,
                    "b_src": s.source.observation_id,
                    **{f"b_{c}": getattr(s, c) for c in columns[:5]},
                    **{f"b_{k}": val for k, val in _attrs(s.source).items()},
                }
                for i, s in states.items()
            ],
        )
        conn.execute(
            text(f"UPDATE {SCHEMA}.lake SET row_hash = {_ROW_HASH} WHERE lake_id = ANY(:ids)"), {"ids": sorted(states)}
        )

    kind_now = {i: (derived[i][-1][2] if derived[i] else None) for i in ids}
    return {
        "changed_lakes": sum(1 for i in status_before if _current(derived[i]) != _current(stored[i])),
        "disappeared": sum(1 for i, s in status_before.items() if s == ACTIVE and kind_now[i] == DISAPPEARED),
        "reappeared": sum(1 for i, s in status_before.items() if s == DISAPPEARED and kind_now[i] == "reappeared"),
        "versions_added": sum(len(derived[i]) - len(stored[i]) for i in ids),
    }


def _row_hash_sql(value: Mapping[str, str]) -> str:
    """SQL of a lake row's content hash from the SQL expressions of its new column values.

    Status, outline (hex WKB), attributes, time stamps (epoch) and observation count, NULL as ''; the
    same text whichever statement writes the row. float8::text is exact and stable (PG ≥ 12).
    """
    parts = [value["status"], f"encode(ST_AsBinary({value['geom']}), 'hex')"]
    parts += [f"coalesce(CAST({value[k]} AS TEXT), '')" for k in ATTRIBUTES]
    parts += [
        f"coalesce(CAST(EXTRACT(epoch FROM CAST({value[k]} AS timestamptz)) AS TEXT), '')"
        for k in ("first_seen", "last_seen", "last_observed")
    ]
    parts.append(f"coalesce(CAST({value['n_observations']} AS TEXT), '')")
    return f"md5(concat_ws('|', {', '.join(parts)}))"


# The hash of the row as it stands (the rebuild writes the state first, then the hash).
_ROW_HASH = _row_hash_sql(
    {k: k for k in ("status", "geom", *ATTRIBUTES, "first_seen", "last_seen", "last_observed", "n_observations")}
)
