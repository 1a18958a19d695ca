"""The merge's staging table ``_merge_obs``: the scene's outlines, COPYed in binary, one row per lake.

STAGING LAYOUT. :data:`STAGE_COLUMNS` is the one list of the staging table's columns: the DDL
(:data:`STAGE_DDL`) and the binary COPY layout (:func:`stage`) both derive from it, and the
attribute columns from :data:`db.attributes.ATTRIBUTES`. The outline comes last (its WKB is the
COPY row's variable-length field) and is stored in EPSG:4326: the scene's UTM outlines are
projected once, before staging (:func:`db.geometry.to_lonlat`). Enforced by
``tests/db/test_attributes.py::test_staging_layout_follows_the_declaration``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon
from sqlalchemy import Connection, text

from db.attributes import ATTRIBUTES
from db.merge.candidates import driver
from db.merge.pgcopy import encode as copy_rows
from db.records import ObservedLake
from db.schema import SRID

STAGE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("p", "integer", ">i4"),
    ("lake_id", "bigint", ">i8"),
    ("is_new", "boolean", "u1"),
    ("fast", "boolean", "u1"),
    ("opens", "smallint", ">i2"),
    *((k, "double precision", ">f8") for k in ATTRIBUTES),
)
"""(column, SQL type, numpy big-endian COPY type) of every fixed-size staging column, in order:
the polygon's index in the scene, its lake, whether the lake is new, whether its history is
extended here (``fast``), the version it opens (:data:`OPENS`), its attributes."""

STAGE_DDL = (
    "CREATE TEMPORARY TABLE _merge_obs ("
    + "".join(f"{name} {sql_type}, " for name, sql_type, _ in STAGE_COLUMNS)
    + f"geom geometry(MultiPolygon, {SRID})) ON COMMIT DROP"
)

OPENS = ("new", "split", "grown", "shrunk")
"""Version kinds by staged ``opens`` code (1-based; 0: the observation opens no version)."""
OPENS_KIND_SQL = f"(ARRAY{list(OPENS)})[s.opens]"
"""SQL of the kind of version a staged row ``s`` opens."""

_MARK_REBUILT = text("UPDATE _merge_obs SET fast = false WHERE lake_id = ANY(:ids)")


def stage(
    conn: Connection,
    observed: Sequence[tuple[ObservedLake, MultiPolygon]],
    lake_of: Mapping[int, int],
    new_ids: Collection[int],
    split_children: Collection[int],
    steps: Mapping[int, str],
) -> None:
    """COPY the scene's outlines into ``_merge_obs`` (temporary, dropped at commit).

    Args:
        conn: the merge's connection (inside its transaction).
        observed: per polygon, the observed lake (its attributes are staged) and its outline in
            EPSG:4326.
        lake_of: polygon index → lake id it is an observation of.
        new_ids: lakes created by this scene.
        split_children: new lakes born by a split.
        steps: existing lakes extended from their tip → kind of version opened (``""``: none).
    """
    conn.execute(text(STAGE_DDL))
    if not lake_of:
        return
    order = sorted(lake_of)
    lake_ids = [lake_of[p] for p in order]
    new = [i in new_ids for i in lake_ids]
    kinds = [
        ("split" if i in split_children else "new") if n else steps.get(i) for i, n in zip(lake_ids, new, strict=True)
    ]
    lakes = [observed[p][0] for p in order]
    columns: dict[str, Sequence[Any]] = {
        "p": order,
        "lake_id": lake_ids,
        "is_new": new,
        "fast": [n or i in steps for i, n in zip(lake_ids, new, strict=True)],
        "opens": [OPENS.index(k) + 1 if k else 0 for k in kinds],
        **{k: [getattr(o, k) for o in lakes] for k in ATTRIBUTES},
    }
    wkb = shapely.to_wkb(np.asarray([observed[p][1] for p in order], dtype=object), byte_order=1).tolist()
    fixed = [(name, copy_type) for name, _, copy_type in STAGE_COLUMNS]
    with driver(conn).cursor() as cur, cur.copy("COPY _merge_obs FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(copy_rows(fixed, columns, wkb, nullable=ATTRIBUTES))


def mark_rebuilt(conn: Connection, ids: Collection[int]) -> None:
    """Hand staged lakes over to the full rebuild (new lakes that got absent rows from older scenes)."""
    conn.execute(_MARK_REBUILT, {"ids": sorted(ids)})
