"""Run ledger: acquisitions found, their outcome, and one ``ingest_run`` row per flow run.

Pure SQL helpers; the caller passes the engine. Geometries are EPSG:4326.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import geopandas as gpd
from geoalchemy2.shape import from_shape
from shapely.geometry.base import BaseGeometry
from sqlalchemy import Connection, Engine, func, select, text, update
from sqlalchemy.dialects.postgresql import insert

from core.errors import InputError
from db.geometry import as_multipolygon
from db.schema import SCHEMA, SRID, acquisition, ingest_run, scene

PARAMS_INPUT = "params"
"""Key of ``scene.inputs`` holding the processing parameters (sorted-key JSON) a scene was made with."""


class ParameterMismatchError(InputError):
    """A scene made with other processing parameters than the AOI's committed scenes.

    Merging it would let one lake read present under one threshold and absent under another at
    the same instant; a rerun that supersedes the old scenes is the way to change parameters.
    """


@dataclass(frozen=True)
class AcquisitionRow:
    """What the ledger keeps of one found product."""

    product_id: str
    platform: str
    kind: str
    sensing_time: datetime
    footprint: BaseGeometry | None
    """Product footprint, EPSG:4326; stored repaired (:func:`db.geometry.as_multipolygon`), NULL if empty."""
    source: str
    href: str | None
    properties: Mapping[str, object]


def record_acquisitions(engine: Engine, aoi_id: int, rows: Iterable[AcquisitionRow]) -> int:
    """Insert found products; known products keep their status (a rerun never forgets an outcome)."""
    values = [
        {
            "product_id": r.product_id,
            "aoi_id": aoi_id,
            "platform": r.platform,
            "kind": r.kind,
            "sensing_time": r.sensing_time,
            "footprint": (from_shape(fp, srid=SRID) if (fp := as_multipolygon(r.footprint)) is not None else None),
            "source": r.source,
            "href": r.href,
            "properties": dict(r.properties),
        }
        for r in rows
    ]
    if not values:
        return 0
    stmt = insert(acquisition).on_conflict_do_nothing(index_elements=["product_id"])
    with engine.begin() as conn:
        result = conn.execute(stmt, values)
    return int(result.rowcount or 0)


def set_acquisition_status(engine: Engine, product_ids: Sequence[str], status: str, error: str | None = None) -> None:
    """Mark products ``processed`` / ``skipped`` / ``failed`` with the reason."""
    if not product_ids:
        return
    with engine.begin() as conn:
        conn.execute(
            update(acquisition)
            .where(acquisition.c.product_id.in_(list(product_ids)))
            .values(status=status, error=error, updated_at=func.now())
        )


def committed_scene_keys(engine: Engine, keys: Sequence[str]) -> set[str]:
    """The subset of ``keys`` already merged (the incremental-processing check)."""
    if not keys:
        return set()
    with engine.connect() as conn:
        rows = conn.execute(select(scene.c.scene_key).where(scene.c.scene_key.in_(list(keys))))
        return {r[0] for r in rows}


_COMMITTED_PARAMS = text(
    f"""
    SELECT DISTINCT s.params_hash, s.inputs ->> '{PARAMS_INPUT}' AS params
    FROM {SCHEMA}.scene s
    WHERE s.aoi_id = :aoi AND s.inputs ? '{PARAMS_INPUT}' AND s.superseded_by IS NULL
    ORDER BY s.params_hash
    """
)


def committed_params(conn: Connection | Engine, aoi_id: int) -> dict[str, dict[str, object]]:
    """Parameter sets of the AOI's current (not superseded) scenes that state theirs: hash → parameters."""
    if isinstance(conn, Engine):
        with conn.connect() as c:
            return committed_params(c, aoi_id)
    return {str(h): json.loads(p) for h, p in conn.execute(_COMMITTED_PARAMS, {"aoi": aoi_id})}


def params_conflict(
    committed: Mapping[str, Mapping[str, object]], params_hash: str, params: Mapping[str, object]
) -> str | None:
    """Why a scene made with ``params`` may not join the committed scenes, or None when it may.

    The reason names both hashes and the parameters that differ (old → new).
    """
    others = {h: p for h, p in committed.items() if h != params_hash}
    if not others:
        return None
    old_hash, old = sorted(others.items())[0]
    changed = [
        f"{k} {old.get(k)!r} → {params.get(k)!r}" for k in sorted({*old, *params}) if old.get(k) != params.get(k)
    ]
    return (
        f"parameters {params_hash} differ from the AOI's committed scenes' {old_hash} "
        f"({'; '.join(changed) or 'same values, other encoding'}); a rerun that supersedes them is needed"
    )


def check_params(conn: Connection, aoi_id: int, params_hash: str, inputs: Mapping[str, str]) -> None:
    """Refuses (ParameterMismatchError) a scene whose stated parameters differ from the AOI's committed ones.

    Scenes that state no parameters (``inputs`` without :data:`PARAMS_INPUT`: imported inventories)
    are neither checked nor checked against.
    """
    if PARAMS_INPUT not in inputs:
        return
    reason = params_conflict(committed_params(conn, aoi_id), params_hash, json.loads(inputs[PARAMS_INPUT]))
    if reason is not None:
        raise ParameterMismatchError(reason)


def start_run(engine: Engine, run_key: str, aoi_id: int | None, flow_run_id: str | None) -> int:
    """Open (or reopen) the ledger row of one flow run; returns its id."""
    stmt = (
        insert(ingest_run)
        .values(run_key=run_key, aoi_id=aoi_id, flow_run_id=flow_run_id, status="running")
        .on_conflict_do_update(
            index_elements=["run_key"],
            set_={"status": "running", "flow_run_id": flow_run_id, "finished_at": None},
        )
        .returning(ingest_run.c.run_id)
    )
    with engine.begin() as conn:
        return int(conn.execute(stmt).scalar_one())


def finish_run(
    engine: Engine,
    run_id: int,
    status: str,
    counts: Mapping[str, object],
    failures: Sequence[Mapping[str, object]],
) -> None:
    """Close a run with its counts and failures."""
    with engine.begin() as conn:
        conn.execute(
            update(ingest_run)
            .where(ingest_run.c.run_id == run_id)
            .values(
                status=status,
                counts=dict(counts),
                failures=[dict(f) for f in failures],
                finished_at=func.now(),
            )
        )


_PRESENT_OBSERVATIONS = text(
    f"""
    SELECT o.observation_id, o.lake_id, o.sensing_time, o.area_m2, o.mean_probability,
           s.s2_product_id, o.geom
    FROM {SCHEMA}.lake_observation o
    JOIN {SCHEMA}.scene s USING (scene_id)
    JOIN {SCHEMA}.aoi a ON a.aoi_id = s.aoi_id
    WHERE o.present AND a.name = :aoi
    ORDER BY o.sensing_time, o.lake_id
    """
)
_SCENES = text(
    f"""
    SELECT s.scene_id, s.s2_product_id, s.s1_product_id, s.sensing_time, s.model_version,
           s.cloud_fraction, s.valid_fraction
    FROM {SCHEMA}.scene s JOIN {SCHEMA}.aoi a USING (aoi_id)
    WHERE a.name = :aoi ORDER BY s.sensing_time
    """
)


def present_observations(engine: Engine, aoi_name: str) -> gpd.GeoDataFrame:
    """Every present observation of an AOI with its scene's sensing time (EPSG:4326)."""
    with engine.connect() as conn:
        return gpd.read_postgis(_PRESENT_OBSERVATIONS, conn, geom_col="geom", params={"aoi": aoi_name}, crs=SRID)


def scene_table(engine: Engine, aoi_name: str) -> list[dict[str, object]]:
    """Scenes of an AOI in sensing order, with their footprint statistics."""
    sql = _SCENES
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sql, {"aoi": aoi_name})]
