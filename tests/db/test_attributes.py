"""The change-together contracts of the database layer: lake attributes, staging layout, row hash.

Each test names the contract header it enforces (db/attributes.py, db/merge/staging.py,
db/merge/sql.py): a list written in one place must agree with every place that cannot derive it.
"""

from __future__ import annotations

import re
import struct
from dataclasses import fields

import numpy as np
import pytest
import sqlalchemy as sa

from db import queries, schema
from db.attributes import ATTRIBUTES, EXTRA_ATTRIBUTES, GEOMETRY_ATTRIBUTES, LAKE_ATTRIBUTES
from db.history import Observation
from db.merge import ensure_aoi, merge_scene, pgcopy, stale_histories
from db.merge.sql import ROW_HASH_FUNCTION, ROW_HASH_OF_ROW
from db.merge.staging import STAGE_COLUMNS, STAGE_DDL
from db.records import MEASURED_FIELDS, ObservedLake
from tests import helpers as h

LAKE_TABLES = ("lake", "lake_observation", "lake_version")
FIRST_ATTRIBUTES = ("area_m2", "perimeter_m", "centroid_lon", "centroid_lat", "elevation_m", "mean_probability")
"""The attributes the tables were created with (0001): one block; later ones are added at the end."""
NOT_ATTRIBUTES = {"lake_version": {"area_change_m2", "growth_rate_m2_per_year"}}
"""Float columns of the lake tables that are not measured attributes (derived by the history)."""


@pytest.mark.db
def test_declared_attributes_are_the_migrated_columns(engine: sa.Engine) -> None:
    """LAKE ATTRIBUTE SYNC CONTRACT: in each lake table of a database migrated to head, the
    attribute columns are exactly the declaration's, in its order, with its type, NULL allowed and
    its description as comment; a column added by a migration but not declared fails here too.
    The declared order is the order of the columns in each table; they form one block in the
    tables created with them and follow the table's other columns where a later revision added them
    (PostgreSQL appends added columns), so only the first attributes must be one block.
    """
    sql = sa.text(
        "SELECT column_name, data_type, is_nullable, "
        "col_description(CAST(:s || '.' || table_name AS regclass), ordinal_position) "
        "FROM information_schema.columns WHERE table_schema = :s AND table_name = :t ORDER BY ordinal_position"
    )
    declared = [(a.name, a.sql_type, "YES", a.description) for a in LAKE_ATTRIBUTES]
    types = {a.sql_type for a in LAKE_ATTRIBUTES}
    with engine.connect() as conn:
        for table in LAKE_TABLES:
            rows = [tuple(r) for r in conn.execute(sql, {"s": schema.SCHEMA, "t": table})]
            skip = NOT_ATTRIBUTES.get(table, set())
            found = [r for r in rows if r[1] in types and r[0] not in skip]
            assert found == declared, table
            positions = [k for k, r in enumerate(rows) if r in declared]
            first = positions[: len(FIRST_ATTRIBUTES)]
            assert positions == sorted(positions), table  # declared order
            assert first == list(range(first[0], first[0] + len(FIRST_ATTRIBUTES))), table  # one block


def test_every_attribute_list_derives_from_the_declaration() -> None:
    """LAKE ATTRIBUTE SYNC CONTRACT: the record's measured fields (checked at import), the names the
    history reads, the schema's columns, the staging table and the query columns follow the
    declaration; the units are stated.
    """
    assert MEASURED_FIELDS == ATTRIBUTES == tuple(a.name for a in LAKE_ATTRIBUTES)
    assert [f.name for f in fields(ObservedLake)][1 : 1 + len(ATTRIBUTES)] == list(ATTRIBUTES)
    assert (*GEOMETRY_ATTRIBUTES, *EXTRA_ATTRIBUTES) == ATTRIBUTES
    assert {"area_m2", "perimeter_m"} == {f.name for f in fields(Observation)} & set(ATTRIBUTES)
    for table in LAKE_TABLES:
        columns = [c.name for c in schema.metadata.tables[f"{schema.SCHEMA}.{table}"].columns]
        assert [c for c in columns if c in ATTRIBUTES] == list(ATTRIBUTES)
    assert [name for name, _, _ in STAGE_COLUMNS if name in ATTRIBUTES] == list(ATTRIBUTES)
    assert [k for k in queries.LAKE_COLUMNS if k in ATTRIBUTES] == list(ATTRIBUTES)
    assert all(a.unit and a.description and a.sql_type == "double precision" for a in LAKE_ATTRIBUTES)


def test_staging_layout_follows_the_declaration() -> None:
    """STAGING LAYOUT: the DDL and the binary COPY rows list the same columns in the same order,
    the outline last; NULL attributes are encoded as length -1, the others as big-endian float8.
    """
    types = "integer|bigint|boolean|smallint|double precision|geometry"
    ddl_columns = re.findall(rf"[(,] ?(\w+) (?:{types})\b", STAGE_DDL)
    assert ddl_columns[:-1] == [name for name, _, _ in STAGE_COLUMNS] and ddl_columns[-1] == "geom"
    fixed = [(name, copy_type) for name, _, copy_type in STAGE_COLUMNS]
    columns = {name: [1, 2] for name, _ in fixed} | {"is_new": [True, False], "fast": [False, True]}
    columns |= {k: [1.5, None] for k in ATTRIBUTES}
    blob = pgcopy.encode(fixed, columns, [b"AB", b"CDE"], nullable=ATTRIBUTES)
    assert blob.startswith(pgcopy.SIGNATURE) and blob.endswith(pgcopy.TRAILER)
    rows = blob[len(pgcopy.SIGNATURE) : -len(pgcopy.TRAILER)]
    decoded = []
    offset = 0
    for _ in range(2):
        (count,) = struct.unpack_from(">h", rows, offset)
        offset += 2
        assert count == len(STAGE_COLUMNS) + 1
        values = []
        for _, copy_type in [*fixed, ("last", "")]:
            (length,) = struct.unpack_from(">i", rows, offset)
            offset += 4
            raw = b"" if length < 0 else rows[offset : offset + length]
            offset += max(length, 0)
            values.append(None if length < 0 else (np.frombuffer(raw, copy_type)[0] if copy_type else raw))
        decoded.append(values)
    assert offset == len(rows)
    attribute_at = [k for k, (name, _) in enumerate(fixed) if name in ATTRIBUTES]
    assert [decoded[0][k] for k in attribute_at] == [1.5] * len(ATTRIBUTES)
    assert [decoded[1][k] for k in attribute_at] == [None] * len(ATTRIBUTES)
    assert (decoded[0][-1], decoded[1][-1]) == (b"AB", b"CDE")


@pytest.mark.db
def test_row_hash_function_is_the_hash_spelled_out_and_inlined(engine: sa.Engine) -> None:
    """ROW HASH SYNC CONTRACT: after merges through both paths, every lake row's hash equals the
    function over the row, which equals the md5 spelled out column by column (so rows hashed before
    0004 keep their hash); and the planner inlines the function (no per-row call in bulk updates).
    """
    ensure_aoi(engine, "hash", h.footprint(-6_000, -6_000, 6_000, 6_000), h.UTM)
    for s in h.scenario("hash"):
        merge_scene(engine, s)
    text = [f"coalesce(CAST(l.{k} AS TEXT), '')" for k in ATTRIBUTES]
    times = ("first_seen", "last_seen", "last_observed")
    epochs = [f"coalesce(CAST(EXTRACT(epoch FROM l.{k}) AS TEXT), '')" for k in times]
    spelled = (
        "md5(concat_ws('|', l.status, encode(ST_AsBinary(l.geom), 'hex'), "
        f"{', '.join(text)}, {', '.join(epochs)}, coalesce(CAST(l.n_observations AS TEXT), '')))"
    )
    with engine.connect() as conn:
        n, stored_ok, spelled_ok = conn.execute(
            sa.text(
                f"SELECT count(*), count(*) FILTER (WHERE l.row_hash = {ROW_HASH_OF_ROW}), "
                f"count(*) FILTER (WHERE l.row_hash = {spelled}) FROM {schema.SCHEMA}.lake AS l"
            )
        ).one()
        plan = "\n".join(
            conn.execute(sa.text(f"EXPLAIN (VERBOSE) SELECT {ROW_HASH_OF_ROW} FROM {schema.SCHEMA}.lake")).scalars()
        )
    assert n > 0 and stored_ok == spelled_ok == n
    assert ROW_HASH_FUNCTION.split(".")[1] not in plan and "md5" in plan
    assert stale_histories(engine, "hash") == []
