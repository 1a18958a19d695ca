"""The merge's fast path: histories extended from each lake's tip, in a few bulk statements.

In the common case, a scene newer than every observation of a lake, the lake row's tip decides
(:func:`db.history.extend_histories`): a version opens only where the area changed beyond
tolerance, closing the previous one; the lake row moves on. Everything else (backfills, repeated
sensing times, disappearance runs, splits and merges) goes to :mod:`db.merge.rebuild`.

Part of the HISTORY RULE SYNC CONTRACT (see :mod:`db.history`): what is written here must equal
what :func:`db.history.derive_history` derives; enforced by
``tests/db/test_merge_scale.py::test_random_batch_fast_path_equals_the_pure_derivation``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import Connection, DateTime, bindparam, text

from db.attributes import ATTRIBUTES
from db.history import area_change, extend_histories
from db.merge.candidates import Candidates
from db.merge.sql import array_literal, row_hash
from db.merge.staging import OPENS_KIND_SQL
from db.records import MergeConfig
from db.schema import SCHEMA


@dataclass(frozen=True)
class FastPath:
    """The histories a merge extends from their tips (the others are rebuilt)."""

    opened: Mapping[int, tuple[float, float]]
    """Existing lakes seen wet that open a version: lake id → (current area, new area), m²."""
    dry: Sequence[int]
    """Existing lakes seen dry whose current version continues."""
    wet: bool
    """Some existing lake seen wet is extended (staged with ``fast``)."""
    first_versions: bool
    """Some new lake gets its first version (staged with ``fast``)."""


def steps(
    cand: Candidates,
    lake_of: Mapping[int, int],
    areas: Sequence[float],
    absent: Sequence[int],
    rebuild: Collection[int],
    when: datetime,
    config: MergeConfig,
) -> dict[int, str]:
    """Existing lakes whose history this scene extends from the tip.

    Lake id → kind of the version opened, or ``""`` when the current one continues (see
    :func:`db.history.extend_histories`).

    ``areas`` are the scene's polygons' areas (m², UTM) by polygon index; ``lake_of`` maps polygon
    index → lake id; ``absent`` are the lakes seen dry; ``rebuild`` those rebuilt in full anyway.
    """
    wet = [(lake_id, p) for p, lake_id in lake_of.items() if lake_id in cand.position and lake_id not in rebuild]
    ids = [lake_id for lake_id, _ in wet] + [i for i in absent if i not in rebuild]
    if not ids:
        return {}
    index = np.asarray([cand.position[i] for i in ids], dtype=np.int64)
    tips = cand.tips.take(index)
    present = np.arange(len(ids)) < len(wet)
    area = np.full(len(ids), np.nan)
    area[: len(wet)] = [areas[p] for _, p in wet]
    kinds = extend_histories(tips, when, present, area, config)
    return {i: k for i, k in zip(ids, kinds.tolist(), strict=True) if k is not None}


_NAMES = ", ".join(ATTRIBUTES)
_STAGED = ", ".join(f"s.{k}" for k in ATTRIBUTES)

CLOSE_CURRENT_SQL = text(
    f"UPDATE {SCHEMA}.lake_version AS v SET valid = tstzrange(lower(v.valid), :t, '[)') "
    "WHERE v.lake_id = ANY(CAST(:ids AS bigint[])) AND upper_inf(v.valid) RETURNING v.lake_id, lower(v.valid)"
)
"""Close the current versions of lakes ``ids`` at ``t``; returns (lake, start of the closed version)."""

OPEN_VERSIONS_SQL = text(
    f"INSERT INTO {SCHEMA}.lake_version (lake_id, valid, change_kind, status, geom, "
    f"{_NAMES}, area_change_m2, growth_rate_m2_per_year, scene_id, model_version) "
    f"SELECT s.lake_id, tstzrange(:t, NULL, '[)'), {OPENS_KIND_SQL}, 'active', s.geom, "
    f"{_STAGED}, c.change, c.rate, :sid, :model "
    "FROM _merge_obs AS s LEFT JOIN unnest(CAST(:ids AS bigint[]), CAST(:change AS float8[]), "
    "CAST(:rate AS float8[])) AS c(lake_id, change, rate) ON c.lake_id = s.lake_id "
    "WHERE s.fast AND s.opens > 0"
)
"""The versions the staged ``fast`` rows open, with (Δarea m², rate m²/year) per existing lake."""

# Lake rows of lakes seen wet: a new outline where a version opened; the time stamps and count move on.
_OPENS = "s.opens > 0"
_WET_STATE = {
    "status": "l.status",
    "geom": f"CASE WHEN {_OPENS} THEN s.geom ELSE l.geom END",
    **{k: f"CASE WHEN {_OPENS} THEN s.{k} ELSE l.{k} END" for k in ATTRIBUTES},
    "first_seen": "l.first_seen",
    "last_seen": ":t",
    "last_observed": ":t",
    "n_observations": "l.n_observations + 1",
}
_WET_ASSIGN = ", ".join(f"{k} = {v}" for k, v in _WET_STATE.items() if k not in ("status", "first_seen"))
MOVE_WET_SQL = text(
    f"UPDATE {SCHEMA}.lake AS l SET {_WET_ASSIGN}, updated_at = now(), row_hash = {row_hash(_WET_STATE)} "
    "FROM _merge_obs AS s WHERE s.fast AND NOT s.is_new AND l.lake_id = s.lake_id"
).bindparams(bindparam("t", type_=DateTime(timezone=True)))
"""Move on the lake rows of the staged existing lakes extended here."""

# Lake rows of lakes seen dry whose version continues: only the observation time and count move.
_DRY_STATE = {k: f"l.{k}" for k in ("status", "geom", *ATTRIBUTES, "first_seen", "last_seen")}
_DRY_STATE |= {"last_observed": ":t", "n_observations": "l.n_observations + 1"}
MOVE_DRY_SQL = text(
    f"UPDATE {SCHEMA}.lake AS l SET last_observed = :t, n_observations = l.n_observations + 1, "
    f"updated_at = now(), row_hash = {row_hash(_DRY_STATE)} WHERE l.lake_id = ANY(CAST(:ids AS bigint[]))"
).bindparams(bindparam("t", type_=DateTime(timezone=True)))
"""Move on the lake rows of lakes ``ids`` seen dry at ``t``."""


def write(conn: Connection, scene_id: int, model_version: str, when: datetime, fast: FastPath) -> dict[str, int]:
    """Write the histories extended from their tips: the staged ``fast`` rows, and the dry lakes.

    Staged new lakes get their first version (``new`` or ``split``); an existing lake whose
    observation opens a version has the current one closed at ``when`` and a new one opened; the
    lake rows move on. Returns the report's change counts.
    """
    t = {"t": when}
    opened, dry = fast.opened, fast.dry
    change: dict[int, tuple[float | None, float | None]] = {}
    if opened:
        closed = conn.execute(CLOSE_CURRENT_SQL, {**t, "ids": array_literal(sorted(opened))}).all()
        for lake_id, valid_from in closed:
            change[lake_id] = area_change(*opened[lake_id], valid_from, when)
        if len(change) != len(opened):  # never expected: the merge keeps one open version per lake
            raise RuntimeError(f"lakes without a current version: {sorted(set(opened) - set(change))}")
    ids = sorted(change)
    rows = 0
    if ids or fast.first_versions:
        params = {
            **t,
            "sid": scene_id,
            "model": model_version,
            "ids": array_literal(ids),
            "change": array_literal(change[i][0] for i in ids),
            "rate": array_literal(change[i][1] for i in ids),
        }
        rows = conn.execute(OPEN_VERSIONS_SQL, params).rowcount
    if fast.wet:
        conn.execute(MOVE_WET_SQL, t)
    if dry:
        conn.execute(MOVE_DRY_SQL, {**t, "ids": array_literal(dry)})
    return {"changed_lakes": len(ids), "disappeared": 0, "reappeared": 0, "versions_added": rows}
