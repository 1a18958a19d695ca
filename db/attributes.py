"""The lake attributes: one declaration that every list of attribute columns derives from.

LAKE ATTRIBUTE SYNC CONTRACT. :data:`LAKE_ATTRIBUTES` is the one list of the measured attributes
that ``lake``, ``lake_observation`` and ``lake_version`` share. These derive from it, in its order:

* :data:`ATTRIBUTES` / :data:`EXTRA_ATTRIBUTES` (the names the merge and the history read);
* the attribute columns of :mod:`db.schema` (``_attribute_columns``);
* the merge's staging table and its binary COPY layout (:mod:`db.merge.staging`);
* the attribute argument of the row-hash function (:func:`db.merge.sql.row_hash`);
* the query and export columns (:data:`db.queries.LAKE_COLUMNS`).

Two places cannot derive and must change with it: the measured fields of
:class:`db.records.ObservedLake` (typed fields; checked against this list when ``db.records`` is
imported) and the Alembic revisions, which are frozen history with literal columns. Adding an
attribute is one line here, a field of ``ObservedLake``, the code that measures it, and a
migration adding the column to the three tables (and to the views that list them) that also
rehashes the ``lake`` rows (the row hash covers every attribute: :mod:`db.merge.sql`); PostgreSQL
appends an added column after the table's others, so the declared order is the tables' column
order, not one block. Enforced by
``tests/db/test_attributes.py``: the declaration equals ``information_schema.columns`` of a
migrated database, and the record's fields equal the declaration.

Pure (no I/O); imports nothing of the project.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LakeAttribute:
    """One measured attribute of a lake outline (a nullable column of the three lake tables)."""

    name: str
    """Column and record field name."""
    sql_type: str
    """PostgreSQL type as ``information_schema.columns.data_type`` spells it."""
    unit: str
    """Unit of the values (``"1"`` for a dimensionless ratio)."""
    description: str
    """One line: what is measured, in which CRS; stored as the column comment."""


LAKE_ATTRIBUTES: tuple[LakeAttribute, ...] = (
    LakeAttribute("area_m2", "double precision", "m²", "area in m², local UTM"),
    LakeAttribute("perimeter_m", "double precision", "m", "perimeter in m, local UTM"),
    LakeAttribute("centroid_lon", "double precision", "degree", "centroid longitude, degrees (EPSG:4326)"),
    LakeAttribute("centroid_lat", "double precision", "degree", "centroid latitude, degrees (EPSG:4326)"),
    LakeAttribute("elevation_m", "double precision", "m", "median DEM elevation inside the lake, m"),
    LakeAttribute("mean_probability", "double precision", "1", "mean water probability inside the lake, 0–1"),
    LakeAttribute(
        "perimeter_smoothed_m",
        "double precision",
        "m",
        "perimeter in m of the outline smoothed by corner cutting (edge midpoints, at most 1 pixel "
        "from a corner), local UTM; perimeter_m is the pixel staircase",
    ),
    LakeAttribute(
        "area_uncertainty_m2",
        "double precision",
        "m²",
        "area uncertainty ± m²: 0.5 pixel × pixel size × perimeter_m (half the boundary pixels)",
    ),
    LakeAttribute(
        "surrounding_slope_deg",
        "double precision",
        "degree",
        "mean DEM slope in degrees in the ring 0–200 m outside the outline",
    ),
    LakeAttribute(
        "probability_entropy",
        "double precision",
        "1",
        "mean binary entropy of the water probability inside the lake, bits 0–1 (model uncertainty)",
    ),
    LakeAttribute(
        "volume_m3",
        "double precision",
        "m³",
        "volume in m³, V = 0.1697 · A^1.3778 (A = area_m2 in m², Cook & Quincey 2015)",
    ),
    LakeAttribute(
        "volume_uncertainty_m3",
        "double precision",
        "m³",
        "volume uncertainty ± m³: area uncertainty through the power law and, in quadrature, "
        "the difference to Huggel et al. 2002 (V = 0.104 · A^1.42)",
    ),
)
"""Every measured lake attribute, in column order. Values may be NULL (None) where unknown."""

ATTRIBUTES: tuple[str, ...] = tuple(a.name for a in LAKE_ATTRIBUTES)
"""The attribute column names, in order."""

GEOMETRY_ATTRIBUTES: tuple[str, ...] = ("area_m2", "perimeter_m")
"""Attributes the history reads by name (area decides a change); the rest travel as a mapping."""

EXTRA_ATTRIBUTES: tuple[str, ...] = tuple(k for k in ATTRIBUTES if k not in GEOMETRY_ATTRIBUTES)
"""Attributes carried by :class:`db.history.Observation` in its ``attributes`` mapping."""
