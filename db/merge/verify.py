"""Verification: the lakes whose stored history differs from the derivation of their facts."""

from __future__ import annotations

from sqlalchemy import Engine, bindparam, func, literal_column, select, text

from db.attributes import ATTRIBUTES
from db.merge.rebuild import attributes_of, load, version_key
from db.merge.sql import ROW_HASH_OF_ROW, in_ids
from db.queries import in_aoi
from db.records import MergeConfig
from db.schema import SCHEMA, lake, lake_observation, lake_version


def stale_histories(engine: Engine, aoi_name: str, config: MergeConfig = MergeConfig()) -> list[int]:
    """Lakes of ``aoi_name`` (:func:`db.queries.in_aoi`) whose stored history differs from their facts'.

    The reference is :func:`db.history.derive_history` of the lake's observations and lineage.

    Compares every version (validity, kind, status, area, Δarea, rate, scene, outline) and the lake
    row (status, outline, attributes, time stamps, observation count, content hash) with what the
    lake's observations and lineage derive. The merge keeps this list empty, whichever path wrote
    a history; a non-empty one names lakes to rebuild.
    """
    obs, ver = lake_observation, lake_version
    with engine.connect() as conn:
        members = text(f"SELECT l.lake_id FROM {SCHEMA}.lake AS l WHERE {in_aoi('l.geom')}")
        ids = sorted(conn.execute(members.bindparams(bindparam("aoi", aoi_name))).scalars())
        if not ids:
            return []
        histories, stored = load(conn, ids, config)
        digest = func.md5(func.ST_AsBinary(lake.c.geom))
        state = (lake.c.status, lake.c.first_seen, lake.c.last_seen, lake.c.last_observed, lake.c.n_observations)
        hash_ok = lake.c.row_hash == literal_column(ROW_HASH_OF_ROW)
        lake_rows = select(lake.c.lake_id, *state, *[lake.c[k] for k in ATTRIBUTES], digest, hash_ok)
        rows = {r[0]: tuple(r[1:]) for r in conn.execute(lake_rows.where(in_ids(lake.c.lake_id, ids)))}
        version_outlines: dict[int, list[str]] = {i: [] for i in ids}
        versions = select(ver.c.lake_id, func.md5(func.ST_AsBinary(ver.c.geom))).where(in_ids(ver.c.lake_id, ids))
        for lake_id, md5 in conn.execute(versions.order_by(ver.c.lake_id, func.lower(ver.c.valid))):
            version_outlines[int(lake_id)].append(str(md5))
        sources = {
            v.source.observation_id
            for h in histories.values()
            for v in h.versions
            if v.source.observation_id is not None
        }
        observations = select(obs.c.observation_id, func.md5(func.ST_AsBinary(obs.c.geom)))
        outline: dict[int | None, str] = {
            int(i): str(md5) for i, md5 in conn.execute(observations.where(in_ids(obs.c.observation_id, sources)))
        }
    stale = []
    for i in ids:
        history = histories[i]
        ok = [version_key(v) for v in history.versions] == stored[i]
        ok = ok and [outline.get(v.source.observation_id) for v in history.versions] == version_outlines[i]
        s = history.state
        if s is not None:
            expected: tuple[object, ...] = (s.status, s.first_seen, s.last_seen, s.last_observed, s.n_observations)
            expected += (*attributes_of(s.source).values(), outline.get(s.source.observation_id), True)
            ok = ok and rows[i] == expected
        if not ok:
            stale.append(i)
    return stale
