"""Inventory tables (schema ``inventory``) as SQLAlchemy Core metadata.

The Alembic revisions in ``migrations/`` create this DDL (plus views, functions, roles and
constraints that Core cannot express, such as the exclusion constraint on ``lake_version``).
Geometries are ``MultiPolygon`` in EPSG:4326; every area and length column is in metres
(or m²), computed in a local UTM CRS by the pipeline, never from degrees. Times are UTC
``timestamptz``: sensing time of the Sentinel-2 acquisition a scene was built from. The lake
attribute columns derive from :data:`db.attributes.LAKE_ATTRIBUTES`.
"""

from __future__ import annotations

from typing import Any

from geoalchemy2 import Geometry
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, TSTZRANGE
from sqlalchemy.types import TypeEngine

from db.attributes import LAKE_ATTRIBUTES
from db.geometry import LONLAT_EPSG

SCHEMA = "inventory"
SRID = LONLAT_EPSG

metadata = MetaData(schema=SCHEMA)


def _geom(geometry_type: str = "MULTIPOLYGON", nullable: bool = True) -> Column:  # type: ignore[type-arg]
    # spatial_index=False: the revisions create the GiST indexes explicitly, so the DDL
    # and the metadata never disagree about index names.
    return Column(
        "geom",
        Geometry(geometry_type, srid=SRID, spatial_index=False),
        nullable=nullable,
    )


aoi = Table(
    "aoi",
    metadata,
    Column("aoi_id", Integer, Identity(), primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    _geom(nullable=False),
    Column("utm_epsg", Integer, nullable=False, comment="EPSG code of the scene grid (UTM, 10 m)"),
    Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
)

acquisition = Table(
    "acquisition",
    metadata,
    Column("acquisition_id", BigInteger, Identity(), primary_key=True),
    Column("product_id", Text, nullable=False),
    Column("aoi_id", Integer, ForeignKey("inventory.aoi.aoi_id"), nullable=False),
    Column("platform", Text, nullable=False, comment="sentinel-2a, sentinel-1a, cop-dem …"),
    Column("kind", Text, nullable=False, comment="S2L2A | S1GRD | S1RTC | DEM"),
    Column("sensing_time", DateTime(timezone=True), nullable=False),
    Column(
        "footprint",
        Geometry("MULTIPOLYGON", srid=SRID, spatial_index=False),
        nullable=True,
    ),
    Column("source", Text, nullable=False, comment="local:… | stac:… | dhus:…"),
    Column("href", Text, nullable=True),
    Column("checksum", Text, nullable=True),
    Column(
        "status",
        Text,
        nullable=False,
        server_default="found",
        comment="found | processed | skipped | failed | quarantined",
    ),
    Column("error", Text, nullable=True, comment="skip reason or failure message"),
    Column("properties", JSONB, nullable=False, server_default="{}"),
    Column("updated_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    # Per AOI: two AOIs that find one product each keep their own outcome (0008).
    UniqueConstraint("aoi_id", "product_id", name="acquisition_aoi_id_product_id_key"),
)

ingest_run = Table(
    "ingest_run",
    metadata,
    Column("run_id", BigInteger, Identity(), primary_key=True),
    # What was asked (AOI, window, source, model): repeated by reruns, so not unique (0008).
    Column("run_key", Text, nullable=False),
    Column("aoi_id", Integer, ForeignKey("inventory.aoi.aoi_id"), nullable=True),
    Column("flow_run_id", Text, nullable=True, unique=True),
    Column("status", Text, nullable=False, comment="running | committed | partial | failed | crashed"),
    Column("started_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("counts", JSONB, nullable=False, server_default="{}"),
    Column("failures", JSONB, nullable=False, server_default="[]"),
    Column(
        "request",
        JSONB,
        nullable=False,
        server_default="{}",
        comment="what was asked: window (UTC days), source (no query string), model",
    ),
)

scene = Table(
    "scene",
    metadata,
    Column("scene_id", BigInteger, Identity(), primary_key=True),
    Column(
        "scene_key",
        Text,
        nullable=False,
        unique=True,
        comment="sha256 of (input product ids, model version, parameters): the ledger key",
    ),
    Column("aoi_id", Integer, ForeignKey("inventory.aoi.aoi_id"), nullable=False),
    Column("sensing_time", DateTime(timezone=True), nullable=False),
    Column("s2_product_id", Text, nullable=False),
    Column("s1_product_id", Text, nullable=True),
    Column("dem_id", Text, nullable=True),
    Column("inputs", JSONB, nullable=False, server_default="{}"),
    Column("model_version", Text, nullable=False),
    Column("params_hash", Text, nullable=False),
    Column(
        "valid_footprint",
        Geometry("MULTIPOLYGON", srid=SRID, spatial_index=False),
        nullable=True,
        comment="where S2 was clear and S1 and DEM valid; NULL when nothing was valid",
    ),
    Column("cloud_fraction", Float, nullable=True),
    Column("valid_fraction", Float, nullable=True),
    Column("run_id", BigInteger, ForeignKey("inventory.ingest_run.run_id"), nullable=True),
    Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    Column(
        "superseded_by",
        BigInteger,
        ForeignKey("inventory.scene.scene_id"),
        nullable=True,
        comment="the rerun scene that replaced this one; its observations no longer count (NULL: current)",
    ),
    Column("superseded_at", DateTime(timezone=True), nullable=True),
)

_SQL_TYPES: dict[str, type[TypeEngine[Any]]] = {"double precision": Float}
"""SQLAlchemy type of each SQL type a lake attribute may have (:class:`db.attributes.LakeAttribute`)."""


def _attribute_columns() -> list[Column]:  # type: ignore[type-arg]
    """The attribute columns shared by ``lake``, ``lake_observation`` and ``lake_version``.

    Derived from :data:`db.attributes.LAKE_ATTRIBUTES`; nullable, since unknown values are NULL.
    """
    return [Column(a.name, _SQL_TYPES[a.sql_type], nullable=True, comment=a.description) for a in LAKE_ATTRIBUTES]


lake = Table(
    "lake",
    metadata,
    Column("lake_id", BigInteger, Identity(), primary_key=True),
    # No aoi_id: identity is spatial (an AOI is a unit of processing, not an owner of lakes);
    # the AOIs of a lake are those whose outline its outline intersects (views' ``aoi_names``).
    Column(
        "status",
        Text,
        nullable=False,
        server_default="active",
        comment="active | disappeared | superseded (only superseded scenes saw it)",
    ),
    _geom(nullable=False),
    *_attribute_columns(),
    Column("first_seen", DateTime(timezone=True), nullable=False),
    Column("last_seen", DateTime(timezone=True), nullable=False, comment="last time water was observed"),
    Column(
        "last_observed", DateTime(timezone=True), nullable=False, comment="last time the place was seen, wet or dry"
    ),
    Column("n_observations", Integer, nullable=False, server_default="0"),
    Column("row_hash", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    Column("updated_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
)

lake_observation = Table(
    "lake_observation",
    metadata,
    Column("observation_id", BigInteger, Identity(), primary_key=True),
    Column("scene_id", BigInteger, ForeignKey("inventory.scene.scene_id", ondelete="CASCADE"), nullable=False),
    Column("lake_id", BigInteger, ForeignKey("inventory.lake.lake_id"), nullable=False),
    Column("sensing_time", DateTime(timezone=True), nullable=False),
    Column("present", Boolean, nullable=False, comment="false: the place was clearly seen and dry"),
    _geom(nullable=True),
    *_attribute_columns(),
    Column("attributes", JSONB, nullable=False, server_default="{}"),
)

lake_version = Table(
    "lake_version",
    metadata,
    Column("version_id", BigInteger, Identity(), primary_key=True),
    Column("lake_id", BigInteger, ForeignKey("inventory.lake.lake_id"), nullable=False),
    Column("valid", TSTZRANGE, nullable=False, comment="[from, to) in sensing time; open upper bound = current"),
    Column(
        "change_kind",
        Text,
        nullable=False,
        comment="new | grown | shrunk | reshaped | split | merged | disappeared | reappeared",
    ),
    Column("status", Text, nullable=False, comment="active | disappeared"),
    _geom(nullable=True),
    *_attribute_columns(),
    Column("area_change_m2", Float, nullable=True, comment="area minus the previous version's, m²"),
    Column("growth_rate_m2_per_year", Float, nullable=True),
    Column("scene_id", BigInteger, ForeignKey("inventory.scene.scene_id"), nullable=True),
    Column("model_version", Text, nullable=True),
)

lake_lineage = Table(
    "lake_lineage",
    metadata,
    Column("parent_lake_id", BigInteger, ForeignKey("inventory.lake.lake_id"), primary_key=True),
    Column("child_lake_id", BigInteger, ForeignKey("inventory.lake.lake_id"), primary_key=True),
    Column("kind", Text, nullable=False, comment="split | merged"),
    Column("scene_id", BigInteger, ForeignKey("inventory.scene.scene_id"), nullable=True),
    Column("sensing_time", DateTime(timezone=True), nullable=False),
    UniqueConstraint("parent_lake_id", "child_lake_id", "kind"),
)

lake_rebuild_queue = Table(
    "lake_rebuild_queue",
    metadata,
    Column("lake_id", BigInteger, ForeignKey("inventory.lake.lake_id", ondelete="CASCADE"), primary_key=True),
    Column("queued_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    comment="Lakes whose history a migration changed the facts of: derived again by the upgrade once it reaches head.",
)

# Role names (group roles, NOLOGIN); login roles are granted one of them.
OWNER_ROLE = "lake_owner"
WRITER_ROLE = "lake_writer"
READER_ROLE = "lake_reader"

# Glacier outlines configured per AOI (0012): the glacier context of lakes (db/glaciers.py).
glacier_source = Table(
    "glacier_source",
    metadata,
    Column("source_id", Integer, Identity(), primary_key=True),
    Column("aoi_id", Integer, ForeignKey("inventory.aoi.aoi_id"), nullable=False),
    Column("source", Text, nullable=False, comment="outline scheme and file name, e.g. RGI60:15_rgi60.gpkg"),
    Column("scheme", Text, nullable=False, comment="RGI50 | RGI60 | RGI70 | other (from the id field)"),
    Column("sha256", Text, nullable=False, comment="sha256 of the file (all parts of a shapefile)"),
    Column("source_crs", Text, nullable=False),
    Column("n_glaciers", Integer, nullable=False),
    Column(
        "coverage",
        Geometry("MULTIPOLYGON", srid=SRID, spatial_index=False),
        nullable=False,
        comment="where the outlines are taken as complete: the AOI outline within the file's extent",
    ),
    Column("imported_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    UniqueConstraint("aoi_id", "source", name="glacier_source_aoi_id_source_key"),
    comment="One imported glacier outline file per AOI and source; re-importing a source replaces it.",
)

glacier = Table(
    "glacier",
    metadata,
    Column("glacier_id", BigInteger, Identity(), primary_key=True),
    Column("aoi_id", Integer, ForeignKey("inventory.aoi.aoi_id"), nullable=False),
    Column("source_id", Integer, ForeignKey("inventory.glacier_source.source_id", ondelete="CASCADE"), nullable=False),
    Column("source", Text, nullable=False, comment="glacier_source.source of the file it came from"),
    Column("rgi_id", Text, nullable=False, comment="RGIId (RGI 6), rgi_id (RGI 7) or glac_id"),
    Column("name", Text, nullable=True, comment="glacier name where the file gives one"),
    _geom(nullable=False),
    Column(
        "centre",
        Geometry("POINT", srid=SRID, spatial_index=False),
        nullable=False,
        comment="a point of reference for the distance bound (the outline's centroid in degrees)",
    ),
    Column(
        "reach_m",
        Float,
        nullable=False,
        comment="geodesic distance from centre to the farthest vertex of the outline, m (plus 1 m)",
    ),
    comment="Glacier outlines (EPSG:4326, valid) of the AOIs they were imported for.",
)

glacier_context_settings = Table(
    "glacier_context_settings",
    metadata,
    Column("singleton", Boolean, primary_key=True, server_default="true"),
    Column(
        "contact_tolerance_m",
        Float,
        nullable=False,
        server_default="10",
        comment="a lake within this geodesic distance of a glacier is in contact, m",
    ),
    Column(
        "unconnected_max_distance_m",
        Float,
        nullable=False,
        server_default="2000",
        comment="a lake not in contact but within this distance is unconnected glacial, m",
    ),
    Column(
        "supraglacial_min_fraction",
        Float,
        nullable=False,
        server_default="0.5",
        comment="share of the lake area inside glacier outlines from which it is supraglacial, 0–1",
    ),
    comment="The thresholds of the lake_type rule (one row).",
)

# GLOF screening rules (0013): thresholds read by the views glof_screening / glof_flagged_lakes (db/glof.py).
glof_rule = Table(
    "glof_rule",
    metadata,
    Column("rule", Text, primary_key=True, comment="contact_growth | steep_surroundings"),
    Column("enabled", Boolean, nullable=False, server_default="true"),
    Column("description", Text, nullable=False),
    Column(
        "max_glacier_distance_m",
        Float,
        nullable=False,
        comment="a lake farther than this geodesic distance from every glacier outline is not screened, m",
    ),
    Column("min_area_m2", Float, nullable=False, comment="smallest current lake area screened, m²"),
    Column(
        "min_observations",
        Integer,
        nullable=True,
        comment="contact_growth: fewest present observations (one per sensing time) of the growth series",
    ),
    Column(
        "min_growth_pct_per_year",
        Float,
        nullable=True,
        comment="contact_growth: smallest Theil-Sen growth rate, % of the current area per year (and its 95 % "
        "interval above zero)",
    ),
    Column(
        "min_surrounding_slope_deg",
        Float,
        nullable=True,
        comment="steep_surroundings: smallest mean DEM slope of the 0-200 m ring around the lake, degrees",
    ),
    comment="GLOF screening rules and their thresholds (screening, not a hazard assessment); read by "
    "glof_screening whenever it is queried.",
)
