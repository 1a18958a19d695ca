"""Merge one processed scene into the inventory: identity, observations, derived history.

One scene is one transaction under an advisory lock per AOI: concurrent merges of an AOI
serialise, a crash leaves nothing half written, and a scene key already committed is a no-op.
Identity and history are decided in Python (:mod:`db.history`, geometries projected to the
AOI's UTM CRS for every area); SQL fetches candidates and writes in batches. Every geometry
written is a valid 2-D MultiPolygon in EPSG:4326.

A lake first found by a scene merged *after* newer scenes (backfill) also gets absent rows
for those newer scenes that saw its place dry (inside their valid footprint, no water matching
it), so the observations, and hence the history, do not depend on the order of arrival.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

import shapely
from shapely.geometry import MultiPolygon
from shapely.geometry.base import BaseGeometry
from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    LargeBinary,
    Text,
    any_,
    bindparam,
    cast,
    delete,
    func,
    insert,
    literal,
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
    LakeHistory,
    LineageEvent,
    Observation,
    Version,
    absent_lakes,
    as_multipolygon,
    derive_history,
    match_polygons,
    metric_transformer,
    project,
)
from db.records import MergeConfig, MergeReport, ObservedLake, SceneResult
from db.schema import SRID, aoi, lake, lake_lineage, lake_observation, lake_version, scene

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
    observed = [(o, g) for o in result.lakes if (g := as_multipolygon(o.geometry)) is not None]
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
        scene_id = _insert_scene(conn, result, aoi_id, footprint)

        extent = [g for _, g in observed] + ([footprint] if footprint is not None else [])
        candidates = _candidates(conn, aoi_id, when, tuple(shapely.total_bounds(extent))) if extent else {}
        cand_m = dict(zip(candidates, project([g for g, _ in candidates.values()], epsg), strict=True))
        plan = match_polygons(project([g for _, g in observed], epsg), cand_m, config.match_overlap)
        absent: list[int] = []
        if footprint is not None:
            unseen = {i: g for i, g in cand_m.items() if i not in plan.matched_lakes}
            absent = absent_lakes(unseen, project([footprint], epsg)[0], config.min_footprint_cover)

        new_ids = _insert_lakes(conn, aoi_id, when, [observed[p] for p in plan.new])
        lake_of = {**plan.continues, **dict(zip(plan.new, new_ids, strict=True))}
        links = [(a, c, "merged") for a, c in plan.merges] + [(par, lake_of[p], "split") for par, p in plan.splits]
        _insert_lineage(conn, scene_id, when, links)
        present = [(lake_of[p], *observed[p]) for p in sorted(lake_of)]
        split_children = {lake_of[p] for _, p in plan.splits}
        late = _backfill_absent(conn, scene_id, when, epsg, new_ids, split_children, config)
        _insert_observations(conn, scene_id, when, present, absent, late)

        touched = set(lake_of.values()) | set(absent) | {a for a, _ in plan.merges}
        status_before = {i: candidates[i][1] for i in touched if i in candidates}
        counts = _rebuild_history(conn, sorted(touched), status_before, config)
    return MergeReport(
        scene_key=result.scene_key,
        noop=False,
        observations=len(present),
        absent=len(absent),
        new_lakes=len(new_ids),
        **counts,
    )


def _candidates(
    conn: Connection, aoi_id: int, when: datetime, bounds: tuple[float, ...]
) -> dict[int, tuple[BaseGeometry, str]]:
    """Lakes of the AOI in the bbox that existed at ``when`` (not absorbed yet, not split off later)."""
    merged_away = select(_lin.c.parent_lake_id).where(_lin.c.kind == "merged", _lin.c.sensing_time <= when)
    split_later = select(_lin.c.child_lake_id).where(_lin.c.kind == "split", _lin.c.sensing_time > when)
    rows = conn.execute(
        select(lake.c.lake_id, func.ST_AsBinary(lake.c.geom), lake.c.status).where(
            lake.c.aoi_id == aoi_id,
            lake.c.geom.op("&&")(func.ST_MakeEnvelope(*bounds, SRID)),
            lake.c.lake_id.not_in(merged_away),
            lake.c.lake_id.not_in(split_later),
        )
    )
    return {int(i): (shapely.from_wkb(bytes(wkb)), status) for i, wkb, status in rows}


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


def _insert_lakes(
    conn: Connection, aoi_id: int, when: datetime, observed: Sequence[tuple[ObservedLake, MultiPolygon]]
) -> list[int]:
    """New lake rows (provisional state; :func:`_rebuild_history` writes the derived one), ids in order."""
    if not observed:
        return []
    stamps = {"first_seen": when, "last_seen": when, "last_observed": when}
    rows = [{"aoi_id": aoi_id, **stamps, "wkb": g.wkb, **_attrs(o)} for o, g in observed]
    stmt = insert(lake).values(geom=_geom()).returning(lake.c.lake_id, sort_by_parameter_order=True)
    return [int(r[0]) for r in conn.execute(stmt, rows)]


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
    present: Sequence[tuple[int, ObservedLake, MultiPolygon]],
    absent: Sequence[int],
    late_absent: Sequence[tuple[int, int, datetime]] = (),
) -> None:
    dry = {"present": False, "wkb": None, **_attrs(None)}
    rows = [
        {"scene_id": scene_id, "sensing_time": when, "lake_id": i, "present": True, "wkb": g.wkb, **_attrs(o)}
        for i, o, g in present
    ]
    rows += [{"scene_id": scene_id, "sensing_time": when, "lake_id": i, **dry} for i in absent]
    rows += [{"scene_id": sid, "sensing_time": t, "lake_id": i, **dry} for i, sid, t in late_absent]
    if rows:
        conn.execute(insert(_obs).values(geom=_geom()), rows)


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
        conn.execute(update(lake).where(_in(lake.c.lake_id, states)).values(row_hash=_ROW_HASH))

    kind_now = {i: (derived[i][-1][2] if derived[i] else None) for i in ids}
    return {
        "changed_lakes": sum(1 for i in status_before if _current(derived[i]) != _current(stored[i])),
        "disappeared": sum(1 for i, s in status_before.items() if s == ACTIVE and kind_now[i] == DISAPPEARED),
        "reappeared": sum(1 for i, s in status_before.items() if s == DISAPPEARED and kind_now[i] == "reappeared"),
        "versions_added": sum(len(derived[i]) - len(stored[i]) for i in ids),
    }


def _text(column: Any) -> Any:
    return func.coalesce(cast(column, Text), "")


# Content hash of a lake row (status, outline, attributes, time stamps), computed where the data lies
# so it is the same whichever process wrote the row; float8::text is exact and stable (PG ≥ 12).
_ROW_HASH = func.md5(
    func.concat_ws(
        "|",
        lake.c.status,
        func.encode(func.ST_AsBinary(lake.c.geom), "hex"),
        *[_text(lake.c[k]) for k in ATTRIBUTES],
        *[_text(func.extract("epoch", lake.c[k])) for k in ("first_seen", "last_seen", "last_observed")],
        _text(lake.c.n_observations),
    )
)
