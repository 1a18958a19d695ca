"""SQL text shared by the merge's statements: the row-hash call, id-list and WKB parameters.

ROW HASH SYNC CONTRACT. A lake row's content hash is computed by one SQL function,
``inventory.lake_row_hash`` (created by ``migrations/versions/0004_row_hash_function.py``); every
statement that writes a lake row calls it through :func:`row_hash`, with the row's *new* values,
and :func:`db.merge.stale_histories` recomputes it from the row as stored (:data:`ROW_HASH_OF_ROW`).
The function takes the attributes as one array in :data:`db.attributes.ATTRIBUTES` order, so
adding an attribute does not change its signature; changing the hash text means a new migration
that replaces the function (and rehashes the rows). Enforced by ``tests/db/test_attributes.py``
(the function's value equals the hash spelled out column by column) and by every merge test that
asserts ``stale_histories(...) == []``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from sqlalchemy import BigInteger, LargeBinary, any_, bindparam, func, literal
from sqlalchemy.dialects.postgresql import ARRAY

from db.attributes import ATTRIBUTES
from db.schema import SCHEMA, SRID

ROW_HASH_FUNCTION = f"{SCHEMA}.lake_row_hash"
"""``lake_row_hash(status, outline wkb, attributes float8[], first_seen, last_seen, last_observed,
n_observations) → md5 text``."""

ROW_STATE = ("status", "geom", *ATTRIBUTES, "first_seen", "last_seen", "last_observed", "n_observations")
"""The lake row's columns the hash covers (the keys of :func:`row_hash`'s mapping)."""


def row_hash(value: Mapping[str, str]) -> str:
    """SQL of a lake row's content hash from the SQL expressions of its new column values (:data:`ROW_STATE`)."""
    attributes = ", ".join(value[k] for k in ATTRIBUTES)
    return (
        f"{ROW_HASH_FUNCTION}({value['status']}, ST_AsBinary({value['geom']}), "
        f"CAST(ARRAY[{attributes}] AS double precision[]), {value['first_seen']}, {value['last_seen']}, "
        f"{value['last_observed']}, {value['n_observations']})"
    )


ROW_HASH_OF_ROW = row_hash({k: k for k in ROW_STATE})
"""The hash of a lake row as it stands (unqualified column names)."""


def in_ids(column: Any, ids: Collection[int]) -> Any:
    """``column = ANY(:ids)``: one array parameter, however many ids (no 65 535-parameter limit)."""
    return column == any_(literal(sorted(ids), ARRAY(BigInteger)))


def geom_param(name: str = "wkb") -> Any:
    """``ST_GeomFromWKB(:name, 4326)``: a bound WKB parameter as a geometry in the storage CRS."""
    return func.ST_GeomFromWKB(bindparam(name, type_=LargeBinary), SRID)


MICROS = "CAST(EXTRACT(epoch FROM {}) * 1000000 AS bigint)"
"""Exact microseconds since the epoch of a timestamptz expression (EXTRACT gives numeric)."""


def array_literal(values: Iterable[int | float | None]) -> str:
    """A PostgreSQL array literal (``'{1,2.5,NULL}'``) of numbers, for ``CAST(:p AS bigint[] | float8[])``.

    Faster than the driver's element-by-element array adaptation at tens of thousands of values,
    and exact: ``repr`` of a float is the shortest text that reads back as the same double.
    """
    return "{" + ",".join("NULL" if v is None else repr(v) for v in values) + "}"
