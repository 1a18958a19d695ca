"""GLOF screening: the rules (table ``glof_rule``, revision 0013) and the lakes they flag.

**Screening, not a hazard assessment.** A flag says that a lake meets a first-pass criterion of
the kind published screenings apply before any field or modelling work (large, at or near a
glacier, growing; steep surroundings); it says nothing about the dam, the outburst probability
or what lies downstream.

The rules live in the database, not in the flow settings: the views ``glof_screening`` and
``glof_flagged_lakes`` compute the flags from the current figures whenever they are read (the
glacier context of revision 0012 and the Theil–Sen growth of revision 0011), so a SQL or QGIS
user, a re-import of glacier outlines and a change of a threshold all see the same, current
answer without a refresh step. :func:`set_rule` changes a threshold, within the bounds the
table's CHECKs also enforce.

Rules (defaults from the migration, after published first-pass screenings: lakes ≥ 0.1 km²
(Allen et al. 2019), within 500 m of their glacier and growing by ≥ 10 % a decade):

* ``contact_growth``: geodesic distance to the nearest glacier outline ≤ ``max_glacier_distance_m``
  (500 m; contact and supraglacial lakes are at 0–10 m), current area ≥ ``min_area_m2``
  (100 000 m² = 0.1 km²), ≥ ``min_observations`` present observations (4), and a Theil–Sen growth
  rate whose 95 % interval lies above zero and which is ≥ ``min_growth_pct_per_year`` (1 %) of the
  current area per year.
* ``steep_surroundings``: distance ≤ 500 m, area ≥ 100 000 m² (0.1 km²), mean DEM slope of the
  0–200 m ring around the lake ≥ ``min_surrounding_slope_deg`` (30°): slopes from which ice or
  rock can fall into the lake.

A lake without glacier coverage (``lake_type`` ``unknown``: distance NULL) is never flagged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import geopandas as gpd
from sqlalchemy import Engine, text

from core.errors import InputError
from db.queries import in_aoi
from db.schema import SCHEMA

__all__ = ["RULES", "GlofRule", "GlofRuleError", "flagged_lakes", "read_rules", "set_rule"]

RULES: Final = ("contact_growth", "steep_surroundings")
"""The rule names the views know (one row each in ``glof_rule``)."""

BOUNDS: Final[dict[str, tuple[float, float]]] = {
    "max_glacier_distance_m": (0.0, 10_000.0),
    "min_area_m2": (0.0, math.inf),
    "min_observations": (3.0, 1000.0),
    "min_growth_pct_per_year": (0.0, 1000.0),
    "min_surrounding_slope_deg": (0.0, 90.0),
}
"""Allowed range of each threshold, inclusive (the table's CHECKs; 3 observations are the fewest
for which a 95 % Theil–Sen interval can exclude zero)."""

_APPLIES: Final[dict[str, frozenset[str]]] = {
    "contact_growth": frozenset(
        {"max_glacier_distance_m", "min_area_m2", "min_observations", "min_growth_pct_per_year"}
    ),
    "steep_surroundings": frozenset({"max_glacier_distance_m", "min_area_m2", "min_surrounding_slope_deg"}),
}


class GlofRuleError(InputError):
    """An unknown GLOF rule, a threshold it does not use, or a value out of its bounds."""


@dataclass(frozen=True)
class GlofRule:
    """One row of ``glof_rule``; thresholds a rule does not use are None."""

    rule: str
    enabled: bool
    description: str
    max_glacier_distance_m: float
    min_area_m2: float
    min_observations: int | None
    min_growth_pct_per_year: float | None
    min_surrounding_slope_deg: float | None


def read_rules(engine: Engine) -> dict[str, GlofRule]:
    """The rules by name, as stored."""
    sql = (
        "SELECT rule, enabled, description, max_glacier_distance_m, min_area_m2, min_observations, "
        f"min_growth_pct_per_year, min_surrounding_slope_deg FROM {SCHEMA}.glof_rule ORDER BY rule"
    )
    with engine.connect() as conn:
        return {row[0]: GlofRule(*row) for row in conn.execute(text(sql))}


def set_rule(engine: Engine, rule: str, *, enabled: bool | None = None, **thresholds: float) -> GlofRule:
    """Change a rule's thresholds (units as the column names) and/or switch it on or off.

    Raises:
        GlofRuleError: unknown ``rule``, a threshold the rule does not use, or a value outside
            :data:`BOUNDS` (or not finite); nothing is written then.
    """
    if rule not in RULES:
        raise GlofRuleError(f"GLOF rule {rule!r}: unknown (known: {', '.join(RULES)})")
    for name, value in thresholds.items():
        if name not in _APPLIES[rule]:
            raise GlofRuleError(
                f"GLOF rule {rule!r}: no threshold {name!r} (it uses {', '.join(sorted(_APPLIES[rule]))})"
            )
        low, high = BOUNDS[name]
        if not (math.isfinite(value) and low <= value <= high):
            raise GlofRuleError(f"GLOF rule {rule!r}: {name} = {value} is outside [{low:g}, {high:g}]")
        if name == "min_observations" and value != int(value):
            raise GlofRuleError(f"GLOF rule {rule!r}: min_observations = {value} is not a whole number")
    values: dict[str, object] = {k: (int(v) if k == "min_observations" else float(v)) for k, v in thresholds.items()}
    if enabled is not None:
        values["enabled"] = enabled
    if values:
        assignments = ", ".join(f"{k} = :{k}" for k in values)  # names checked against _APPLIES above
        with engine.begin() as conn:
            conn.execute(
                text(f"UPDATE {SCHEMA}.glof_rule SET {assignments} WHERE rule = :rule"), {**values, "rule": rule}
            )
    return read_rules(engine)[rule]


def flagged_lakes(engine: Engine, aoi: str | None = None) -> gpd.GeoDataFrame:
    """The view ``glof_flagged_lakes``: one row per flagged lake, ordered by ``lake_id``.

    Columns: ``lake_id``, ``aoi_names``, ``rules`` (sorted, comma-separated), ``inputs`` (dict:
    rule → the figures it read and the thresholds it applied), ``model_version``, ``area_m2``
    (m²) and ``geom`` (current outline, EPSG:4326). ``aoi``: only the lakes of that AOI
    (:func:`db.queries.in_aoi`); None: every flagged lake.
    """
    sql = (
        "SELECT lake_id, aoi_names, rules, inputs, model_version, area_m2, geom "
        f"FROM {SCHEMA}.glof_flagged_lakes WHERE {in_aoi('geom')} ORDER BY lake_id"
    )
    with engine.connect() as conn:
        return gpd.read_postgis(text(sql), conn, geom_col="geom", params={"aoi": aoi})
