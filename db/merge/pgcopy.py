"""PostgreSQL's binary COPY format, encoded column-wise with numpy (pure, no I/O).

A Python call per field would cost more than the server's work on the rows, so every fixed-size
field of every row is laid out in one structured numpy array and the rows' variable-length last
field (an outline's WKB) is spliced in between them. The format: a signature, then per row a
field count and each field as its length and big-endian bytes (length -1: NULL), then a trailer.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
"""Signature, flags (none) and header-extension length (0)."""
TRAILER = b"\xff\xff"
_NULL = b"\xff\xff\xff\xff"


def row_dtype(fixed: Sequence[tuple[str, str]]) -> np.dtype:
    """Record of one row but its last field's bytes.

    Field count, then (length, value) per fixed field (``(name, numpy big-endian type)``), then
    the last field's length.
    """
    fields: list[tuple[str, str]] = [("fields", ">i2")]
    for name, typ in fixed:
        fields += [(f"{name}_n", ">i4"), (name, typ)]
    return np.dtype([*fields, ("last_n", ">i4")])


def encode(
    fixed: Sequence[tuple[str, str]],
    columns: Mapping[str, Sequence[Any]],
    last: Sequence[bytes],
    nullable: Collection[str] = (),
) -> bytes:
    """Rows in binary COPY format: the ``fixed`` fields from ``columns`` then the ``last`` bytes.

    Args:
        fixed: ``(column name, numpy big-endian type)`` of each fixed-size field, in table order.
        columns: values per column name, all of one length (``len(last)``).
        last: the last field of each row (e.g. WKB, which a typed geometry column's receive
            function reads, giving the column's SRID); never NULL.
        nullable: float8 columns (``>f8``) whose None values are written as NULL.
    """
    layout = row_dtype(fixed)
    n = len(last)
    rows = np.empty(n, layout)
    rows["fields"] = len(fixed) + 1
    for name, _ in fixed:
        rows[f"{name}_n"], rows[name] = np.dtype(layout[name]).itemsize, columns[name]  # None → NaN, fixed below
    rows["last_n"] = np.fromiter(map(len, last), dtype=np.int64, count=n)
    blob, size = rows.tobytes(), layout.itemsize
    parts: list[bytes | None] = [None] * (2 * n)
    parts[0::2] = [blob[i : i + size] for i in range(0, len(blob), size)]
    parts[1::2] = last
    maybe_null = np.zeros(n, dtype=bool)
    for k in nullable:
        maybe_null |= np.isnan(rows[k])
    for i in np.flatnonzero(maybe_null).tolist():
        if any(columns[k][i] is None for k in nullable):
            parts[2 * i] = _row_with_nulls(rows[i], layout, fixed, columns, nullable, i)
    return b"".join((SIGNATURE, *parts, TRAILER))  # type: ignore[arg-type]


def _row_with_nulls(
    row: np.void,
    layout: np.dtype,
    fixed: Sequence[tuple[str, str]],
    columns: Mapping[str, Sequence[Any]],
    nullable: Collection[str],
    i: int,
) -> bytes:
    """One row's fixed part again, field by field, with NULL where a nullable value is None."""
    raw = row.tobytes()  # the record's own (big-endian) bytes
    out = bytearray(raw[:2])
    for name, _ in fixed:
        if name in nullable and columns[name][i] is None:
            out += _NULL
            continue
        offsets = layout.fields
        assert offsets is not None  # a structured dtype
        start = offsets[f"{name}_n"][1]
        end = offsets[name][1] + layout[name].itemsize
        out += raw[start:end]
    return bytes(out + raw[-4:])  # the last field's length
