"""Scene ledger: acquisitions found per AOI, their outcome, and which scenes each AOI has merged.

The ``ingest_run`` rows (one per flow run) are :mod:`db.runs`.

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
from sqlalchemy import Connection, Engine, func, literal, select, text, update
from sqlalchemy.dialects.postgresql import JSONB, insert

from core.errors import AoiError, InputError
from db.geometry import as_multipolygon
from db.schema import SCHEMA, SRID, acquisition, scene

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
    """Insert found products for one AOI; products it knows keep their status (a rerun never forgets an outcome).

    Per AOI: a product another AOI found gets a row of its own here, with its own status.
    """
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
    stmt = insert(acquisition).on_conflict_do_nothing(index_elements=["aoi_id", "product_id"])
    with engine.begin() as conn:
        result = conn.execute(stmt, values)
    return int(result.rowcount or 0)


ACQUISITION_STATUSES = ("found", "processed", "skipped", "failed", "quarantined")
"""``quarantined``: the input itself is bad (corrupt file, wrong CRS); it fails the same way until replaced."""


QUARANTINED_KEYS = "quarantined_keys"
"""Key of ``acquisition.properties``: the scene keys (:func:`tasks.pairing.scene_key`) that failed on
a bad input. A key names the inputs' fingerprints, so a replaced input makes a new key and is tried
again; the same key is not (:func:`quarantined_scenes`)."""


def set_acquisition_status(
    engine: Engine,
    aoi_id: int,
    product_ids: Sequence[str],
    status: str,
    error: str | None = None,
    *,
    quarantined_keys: Sequence[str] = (),
) -> None:
    """Mark one AOI's products with an outcome (:data:`ACQUISITION_STATUSES`) and its reason.

    ``quarantined_keys``: with status ``quarantined``, the scene keys that failed on their input
    (stored under :data:`QUARANTINED_KEYS`; another status clears them).
    """
    if status not in ACQUISITION_STATUSES:
        raise ValueError(f"acquisition status {status!r}: not one of {ACQUISITION_STATUSES}")
    if quarantined_keys and status != "quarantined":
        raise ValueError(f"quarantined keys given with status {status!r}")
    if not product_ids:
        return
    properties = (
        acquisition.c.properties.op("||")(literal({QUARANTINED_KEYS: list(quarantined_keys)}, JSONB))
        if status == "quarantined"
        else acquisition.c.properties.op("-")(QUARANTINED_KEYS)
    )
    with engine.begin() as conn:
        conn.execute(
            update(acquisition)
            .where(acquisition.c.aoi_id == aoi_id, acquisition.c.product_id.in_(list(product_ids)))
            .values(status=status, error=error, updated_at=func.now(), properties=properties)
        )


_QUARANTINED = text(
    f"""
    SELECT a.properties -> '{QUARANTINED_KEYS}' AS keys, a.error
    FROM {SCHEMA}.acquisition a
    WHERE a.aoi_id = :aoi AND a.status = 'quarantined' AND a.properties -> '{QUARANTINED_KEYS}' ?| CAST(:keys AS text[])
    """
)


def quarantined_scenes(engine: Engine, aoi_id: int, keys: Sequence[str]) -> dict[str, str]:
    """Of ``keys``, the scenes this AOI quarantined with these very inputs: key → the recorded reason.

    Such a scene fails the same way again (its input is bad and unchanged), so a run skips it;
    replacing the input changes its key, and a rerun tries it regardless.
    """
    if not keys:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(_QUARANTINED, {"aoi": aoi_id, "keys": list(keys)}).all()
    wanted = set(keys)
    return {k: str(error or "bad input") for stored, error in rows for k in stored if k in wanted}


def committed_scene_keys(engine: Engine, aoi_id: int, keys: Sequence[str]) -> set[str]:
    """The subset of ``keys`` already merged into this AOI (the incremental-processing check).

    Per AOI: a scene another AOI merged is not "already processed" here.
    """
    if not keys:
        return set()
    with engine.connect() as conn:
        rows = conn.execute(
            select(scene.c.scene_key).where(scene.c.aoi_id == aoi_id, scene.c.scene_key.in_(list(keys)))
        )
        return {r[0] for r in rows}


def scene_keys_for_aoi(
    engine: Engine, aoi_id: int, candidates: Mapping[str, tuple[str, str]]
) -> tuple[dict[str, str], set[str]]:
    """Each scene's ledger key in this AOI, and the scenes this AOI already merged.

    ``candidates``: scene id → (AOI key, key without the AOI) (:func:`tasks.pairing.scene_key`
    with and without ``aoi``). Scenes merged before keys named their AOI keep their key: when the
    AOI holds the key without the AOI, that is the scene's key (so it reads "already processed",
    and a forced rerun's merge is still a no-op); else the AOI key is.
    """
    committed = committed_scene_keys(engine, aoi_id, [k for pair in candidates.values() for k in pair])
    keys = {
        sid: (legacy if legacy in committed and aoi_key not in committed else aoi_key)
        for sid, (aoi_key, legacy) in candidates.items()
    }
    return keys, {sid for sid, key in keys.items() if key in committed}


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


_CHANGES_OF_SCENES = text(
    f"""
    SELECT DISTINCT ON (v.lake_id) v.lake_id, v.change_kind, v.area_m2, v.area_change_m2,
           coalesce(v.geom, l.geom) AS geom
    FROM {SCHEMA}.lake_version v
    JOIN {SCHEMA}.scene s ON s.scene_id = v.scene_id
    JOIN {SCHEMA}.lake l ON l.lake_id = v.lake_id
    WHERE s.scene_key = ANY(:keys)
    ORDER BY v.lake_id, lower(v.valid) DESC, v.version_id DESC
    """
)


def lake_changes_of_scenes(engine: Engine, scene_keys: Sequence[str]) -> gpd.GeoDataFrame:
    """Lakes whose versions these scenes made: each lake's latest such version (EPSG:4326).

    Columns: ``lake_id``, ``change_kind`` (``lake_version.change_kind``), ``area_m2``,
    ``area_change_m2`` (m²), ``geom`` (the version's outline; the lake's for a disappeared one).
    """
    with engine.connect() as conn:
        return gpd.read_postgis(_CHANGES_OF_SCENES, conn, geom_col="geom", params={"keys": list(scene_keys)}, crs=SRID)


def scene_day(engine: Engine, product_id: str, aoi: str | None = None) -> tuple[str, datetime]:
    """The AOI that found S2 product ``product_id`` and its sensing time (UTC), from the ledger.

    ``aoi``: the AOI to look in; default: the one AOI that found it.

    Raises:
        core.errors.AoiError: no AOI (or not ``aoi``) found the product, or several did and
            ``aoi`` was not given (they are named).
    """
    query = text(
        f"""
        SELECT o.name, a.sensing_time FROM {SCHEMA}.acquisition a JOIN {SCHEMA}.aoi o ON o.aoi_id = a.aoi_id
        WHERE a.product_id = :p AND a.kind = 'S2L2A' AND (CAST(:aoi AS text) IS NULL OR o.name = :aoi)
        ORDER BY o.name
        """
    )
    with engine.connect() as conn:
        rows = conn.execute(query, {"p": product_id, "aoi": aoi}).all()
    where = f" in AOI {aoi!r}" if aoi else ""
    if not rows:
        raise AoiError(f"--scene {product_id!r}: no S2 acquisition of that id{where} in the inventory's ledger")
    if len(rows) > 1:
        names = ", ".join(str(r[0]) for r in rows)
        raise AoiError(f"--scene {product_id!r}: found by several AOIs ({names}); name one with --aoi")
    return str(rows[0][0]), rows[0][1]
