"""Initial inventory schema: tables, constraints, indexes, roles, views, as-of function.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

Creates the ``postgis`` and ``btree_gist`` extensions (if missing), the group roles
``lake_owner`` / ``lake_writer`` / ``lake_reader`` (if missing: roles are cluster-wide), schema
``inventory`` owned by ``lake_owner`` and, as ``lake_owner``, every table of ``db.schema``
(a frozen copy: later schema changes belong in later revisions), the geometry CHECKs, the
history exclusion constraint, GiST and btree indexes, the QGIS views and
``inventory.lakes_as_of(timestamptz)``.

Must run as a superuser, or as a member of ``lake_owner`` with CREATE on the database once
the extensions and roles exist. The downgrade drops the schema and the extensions when
nothing else uses them; roles are kept (other databases of the cluster may use them).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry
from sqlalchemy.dialects.postgresql import JSONB, TSTZRANGE

from db.schema import OWNER_ROLE, READER_ROLE, SCHEMA, SRID, WRITER_ROLE

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EXTENSIONS = ("postgis", "btree_gist")
GEOMETRY_COLUMNS = (
    ("aoi", "geom"),
    ("acquisition", "footprint"),
    ("scene", "valid_footprint"),
    ("lake", "geom"),
    ("lake_observation", "geom"),
    ("lake_version", "geom"),
)
VALID_GEOMETRY_TABLES = ("lake", "lake_version", "lake_observation")
BTREE_INDEXES = (
    ("lake_observation", ("lake_id", "sensing_time")),
    ("lake_observation", ("scene_id",)),  # ON DELETE CASCADE from scene
    ("lake_version", ("lake_id",)),
    ("lake", ("aoi_id",)),
    ("lake_lineage", ("child_lake_id",)),
    ("scene", ("aoi_id", "sensing_time")),
    ("acquisition", ("aoi_id", "sensing_time")),
)
# History recomputation deletes and rewrites these; every other table is append/update only.
WRITER_DELETE_TABLES = ("lake_version", "lake_lineage", "lake_observation")
VIEWS = ("growing_lakes", "lake_changes", "current_lakes")  # drop order


def _multipolygon() -> Geometry:
    return Geometry(geometry_type="MULTIPOLYGON", srid=SRID, dimension=2, spatial_index=False)


def _attribute_columns() -> list[sa.Column]:  # type: ignore[type-arg]
    return [
        sa.Column("area_m2", sa.Float(), nullable=True, comment="area in m², local UTM"),
        sa.Column("perimeter_m", sa.Float(), nullable=True, comment="perimeter in m, local UTM"),
        sa.Column("centroid_lon", sa.Float(), nullable=True, comment="centroid longitude, degrees (EPSG:4326)"),
        sa.Column("centroid_lat", sa.Float(), nullable=True, comment="centroid latitude, degrees (EPSG:4326)"),
        sa.Column("elevation_m", sa.Float(), nullable=True, comment="median DEM elevation inside the lake, m"),
        sa.Column("mean_probability", sa.Float(), nullable=True, comment="mean water probability inside the lake, 0–1"),
    ]


def _create_role(name: str) -> str:
    # Several databases (test clones) may migrate at once: tolerate a concurrent CREATE ROLE.
    return f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{name}') THEN
                CREATE ROLE {name} NOLOGIN;
            END IF;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END $$
    """


def _create_tables() -> None:
    op.create_table(
        "aoi",
        sa.Column("aoi_id", sa.Integer(), sa.Identity(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("geom", _multipolygon(), nullable=False),
        sa.Column("utm_epsg", sa.Integer(), nullable=False, comment="EPSG code of the scene grid (UTM, 10 m)"),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("aoi_id"),
        sa.UniqueConstraint("name"),
        schema=SCHEMA,
    )
    op.create_table(
        "acquisition",
        sa.Column("acquisition_id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("product_id", sa.Text(), nullable=False),
        sa.Column("aoi_id", sa.Integer(), nullable=False),
        sa.Column("platform", sa.Text(), nullable=False, comment="sentinel-2a, sentinel-1a, cop-dem …"),
        sa.Column("kind", sa.Text(), nullable=False, comment="S2L2A | S1GRD | S1RTC | DEM"),
        sa.Column("sensing_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("footprint", _multipolygon(), nullable=True),
        sa.Column("source", sa.Text(), nullable=False, comment="local:… | stac:… | dhus:…"),
        sa.Column("href", sa.Text(), nullable=True),
        sa.Column("checksum", sa.Text(), nullable=True),
        sa.Column(
            "status", sa.Text(), server_default="found", nullable=False, comment="found | processed | skipped | failed"
        ),
        sa.Column("error", sa.Text(), nullable=True, comment="skip reason or failure message"),
        sa.Column("properties", JSONB(), server_default="{}", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["aoi_id"], [f"{SCHEMA}.aoi.aoi_id"]),
        sa.PrimaryKeyConstraint("acquisition_id"),
        sa.UniqueConstraint("product_id"),
        schema=SCHEMA,
    )
    op.create_table(
        "ingest_run",
        sa.Column("run_id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("run_key", sa.Text(), nullable=False),
        sa.Column("aoi_id", sa.Integer(), nullable=True),
        sa.Column("flow_run_id", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False, comment="running | committed | failed"),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("counts", JSONB(), server_default="{}", nullable=False),
        sa.Column("failures", JSONB(), server_default="[]", nullable=False),
        sa.ForeignKeyConstraint(["aoi_id"], [f"{SCHEMA}.aoi.aoi_id"]),
        sa.PrimaryKeyConstraint("run_id"),
        sa.UniqueConstraint("run_key"),
        schema=SCHEMA,
    )
    op.create_table(
        "scene",
        sa.Column("scene_id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column(
            "scene_key",
            sa.Text(),
            nullable=False,
            comment="sha256 of (input product ids, model version, parameters): the ledger key",
        ),
        sa.Column("aoi_id", sa.Integer(), nullable=False),
        sa.Column("sensing_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("s2_product_id", sa.Text(), nullable=False),
        sa.Column("s1_product_id", sa.Text(), nullable=True),
        sa.Column("dem_id", sa.Text(), nullable=True),
        sa.Column("inputs", JSONB(), server_default="{}", nullable=False),
        sa.Column("model_version", sa.Text(), nullable=False),
        sa.Column("params_hash", sa.Text(), nullable=False),
        sa.Column(
            "valid_footprint",
            _multipolygon(),
            nullable=True,
            comment="where S2 was clear and S1 and DEM valid; NULL when nothing was valid",
        ),
        sa.Column("cloud_fraction", sa.Float(), nullable=True),
        sa.Column("valid_fraction", sa.Float(), nullable=True),
        sa.Column("run_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["aoi_id"], [f"{SCHEMA}.aoi.aoi_id"]),
        sa.ForeignKeyConstraint(["run_id"], [f"{SCHEMA}.ingest_run.run_id"]),
        sa.PrimaryKeyConstraint("scene_id"),
        sa.UniqueConstraint("scene_key"),
        schema=SCHEMA,
    )
    op.create_table(
        "lake",
        sa.Column("lake_id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("aoi_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.Text(), server_default="active", nullable=False, comment="active | disappeared"),
        sa.Column("geom", _multipolygon(), nullable=False),
        *_attribute_columns(),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False, comment="last time water was observed"),
        sa.Column(
            "last_observed",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="last time the place was seen, wet or dry",
        ),
        sa.Column("n_observations", sa.Integer(), server_default="0", nullable=False),
        sa.Column("row_hash", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["aoi_id"], [f"{SCHEMA}.aoi.aoi_id"]),
        sa.PrimaryKeyConstraint("lake_id"),
        schema=SCHEMA,
    )
    op.create_table(
        "lake_observation",
        sa.Column("observation_id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("scene_id", sa.BigInteger(), nullable=False),
        sa.Column("lake_id", sa.BigInteger(), nullable=False),
        sa.Column("sensing_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("present", sa.Boolean(), nullable=False, comment="false: the place was clearly seen and dry"),
        sa.Column("geom", _multipolygon(), nullable=True),
        *_attribute_columns(),
        sa.Column("attributes", JSONB(), server_default="{}", nullable=False),
        sa.ForeignKeyConstraint(["lake_id"], [f"{SCHEMA}.lake.lake_id"]),
        sa.ForeignKeyConstraint(["scene_id"], [f"{SCHEMA}.scene.scene_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("observation_id"),
        schema=SCHEMA,
    )
    op.create_table(
        "lake_version",
        sa.Column("version_id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("lake_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "valid",
            TSTZRANGE(),
            nullable=False,
            comment="[from, to) in sensing time; open upper bound = current",
        ),
        sa.Column(
            "change_kind",
            sa.Text(),
            nullable=False,
            comment="new | grown | shrunk | reshaped | split | merged | disappeared | reappeared",
        ),
        sa.Column("status", sa.Text(), nullable=False, comment="active | disappeared"),
        sa.Column("geom", _multipolygon(), nullable=True),
        *_attribute_columns(),
        sa.Column("area_change_m2", sa.Float(), nullable=True, comment="area minus the previous version's, m²"),
        sa.Column("growth_rate_m2_per_year", sa.Float(), nullable=True),
        sa.Column("scene_id", sa.BigInteger(), nullable=True),
        sa.Column("model_version", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["lake_id"], [f"{SCHEMA}.lake.lake_id"]),
        sa.ForeignKeyConstraint(["scene_id"], [f"{SCHEMA}.scene.scene_id"]),
        sa.PrimaryKeyConstraint("version_id"),
        schema=SCHEMA,
    )
    op.create_table(
        "lake_lineage",
        sa.Column("parent_lake_id", sa.BigInteger(), nullable=False),
        sa.Column("child_lake_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False, comment="split | merged"),
        sa.Column("scene_id", sa.BigInteger(), nullable=True),
        sa.Column("sensing_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["child_lake_id"], [f"{SCHEMA}.lake.lake_id"]),
        sa.ForeignKeyConstraint(["parent_lake_id"], [f"{SCHEMA}.lake.lake_id"]),
        sa.ForeignKeyConstraint(["scene_id"], [f"{SCHEMA}.scene.scene_id"]),
        sa.PrimaryKeyConstraint("parent_lake_id", "child_lake_id"),
        sa.UniqueConstraint("parent_lake_id", "child_lake_id", "kind"),
        schema=SCHEMA,
    )


def _create_constraints_and_indexes() -> None:
    for table in VALID_GEOMETRY_TABLES:
        op.create_check_constraint(f"ck_{table}_geom_valid", table, "ST_IsValid(geom)", schema=SCHEMA)
    # One version per lake at any instant. DEFERRABLE so a history rewrite may shift
    # boundaries in any order inside its transaction (SET CONSTRAINTS ... DEFERRED).
    op.execute(
        f"ALTER TABLE {SCHEMA}.lake_version ADD CONSTRAINT lake_version_no_overlap "
        "EXCLUDE USING gist (lake_id WITH =, valid WITH &&) DEFERRABLE INITIALLY IMMEDIATE"
    )
    op.create_check_constraint(
        "ck_lake_version_valid_from", "lake_version", "NOT isempty(valid) AND NOT lower_inf(valid)", schema=SCHEMA
    )
    for table, column in GEOMETRY_COLUMNS:
        op.create_index(f"idx_{table}_{column}", table, [column], schema=SCHEMA, postgresql_using="gist")
    for table, columns in BTREE_INDEXES:
        op.create_index(f"ix_{table}_{'_'.join(columns)}", table, list(columns), schema=SCHEMA)


_CURRENT_LAKES = f"""
CREATE VIEW {SCHEMA}.current_lakes AS
SELECT l.lake_id, l.aoi_id, a.name AS aoi_name, l.status, lv.change_kind, lv.valid_from,
       l.area_m2, l.perimeter_m, l.centroid_lon, l.centroid_lat, l.elevation_m, l.mean_probability,
       lv.area_change_m2, lv.growth_rate_m2_per_year,
       l.first_seen, l.last_seen, l.last_observed, l.n_observations, l.geom
FROM {SCHEMA}.lake AS l
JOIN {SCHEMA}.aoi AS a ON a.aoi_id = l.aoi_id
LEFT JOIN LATERAL (
    SELECT v.change_kind, lower(v.valid) AS valid_from, v.area_change_m2, v.growth_rate_m2_per_year
    FROM {SCHEMA}.lake_version AS v
    WHERE v.lake_id = l.lake_id
    ORDER BY lower(v.valid) DESC
    LIMIT 1
) AS lv ON true
WHERE l.status = 'active'
"""

_LAKE_CHANGES = f"""
CREATE VIEW {SCHEMA}.lake_changes AS
SELECT v.version_id, v.lake_id, l.aoi_id, lower(v.valid) AS valid_from, upper(v.valid) AS valid_to,
       v.change_kind, v.status, v.area_m2, v.area_change_m2, v.growth_rate_m2_per_year,
       v.scene_id, v.model_version, v.geom
FROM {SCHEMA}.lake_version AS v
JOIN {SCHEMA}.lake AS l ON l.lake_id = v.lake_id
"""

_GROWING_LAKES = f"""
CREATE VIEW {SCHEMA}.growing_lakes AS
SELECT c.lake_id, c.aoi_id, c.aoi_name, c.change_kind, c.valid_from,
       f.valid_from AS first_valid_from, f.area_m2 AS first_area_m2, c.area_m2,
       c.area_m2 - f.area_m2 AS growth_m2,
       100.0 * (c.area_m2 - f.area_m2) / NULLIF(f.area_m2, 0) AS growth_pct,
       c.growth_rate_m2_per_year, c.geom
FROM {SCHEMA}.current_lakes AS c
LEFT JOIN LATERAL (
    SELECT lower(v.valid) AS valid_from, v.area_m2
    FROM {SCHEMA}.lake_version AS v
    WHERE v.lake_id = c.lake_id
    ORDER BY lower(v.valid)
    LIMIT 1
) AS f ON true
WHERE c.change_kind = 'grown' OR c.area_m2 > f.area_m2
"""

# search_path pinned (the body names every object by schema) so callers cannot shadow
# the operators; RETURNS TABLE drops the geometry typmod, so it is spelled for readers only.
_LAKES_AS_OF = f"""
CREATE FUNCTION {SCHEMA}.lakes_as_of(ts timestamptz)
RETURNS TABLE (
    lake_id bigint, aoi_id integer, status text, change_kind text, valid_from timestamptz,
    area_m2 double precision, perimeter_m double precision,
    centroid_lon double precision, centroid_lat double precision,
    elevation_m double precision, mean_probability double precision,
    geom geometry(MultiPolygon, {SRID})
)
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT v.lake_id, l.aoi_id, v.status, v.change_kind, lower(v.valid),
           v.area_m2, v.perimeter_m, v.centroid_lon, v.centroid_lat, v.elevation_m, v.mean_probability,
           v.geom
    FROM {SCHEMA}.lake_version AS v
    JOIN {SCHEMA}.lake AS l ON l.lake_id = v.lake_id
    WHERE v.valid @> ts AND v.status = 'active'
    ORDER BY v.lake_id
$$
"""

_COMMENTS = {
    "VIEW current_lakes": "Active lakes with their current geometry and the change kind of their latest version.",
    "VIEW lake_changes": "One row per lake version: validity [valid_from, valid_to), change kind, area change (m²).",
    "VIEW growing_lakes": "Current lakes whose latest version grew or whose area exceeds their first version's.",
    "FUNCTION lakes_as_of(timestamptz)": "Active lake versions valid at the given instant (sensing time).",
}


def upgrade() -> None:
    for extension in EXTENSIONS:
        op.execute(f"CREATE EXTENSION IF NOT EXISTS {extension}")
    for role in (OWNER_ROLE, WRITER_ROLE, READER_ROLE):
        op.execute(_create_role(role))
    op.execute(f"CREATE SCHEMA {SCHEMA} AUTHORIZATION {OWNER_ROLE}")
    # Objects below are owned by lake_owner, whoever runs the migration. RESET before the
    # end: Alembic then writes public.alembic_version as the session user.
    op.execute(f"SET ROLE {OWNER_ROLE}")
    # Default privileges first, so every table, sequence, view and function created now or
    # by a later revision (as lake_owner) is granted without repeating the list.
    default = f"ALTER DEFAULT PRIVILEGES FOR ROLE {OWNER_ROLE} IN SCHEMA {SCHEMA}"
    op.execute(f"{default} GRANT SELECT ON TABLES TO {READER_ROLE}, {WRITER_ROLE}")
    op.execute(f"{default} GRANT INSERT, UPDATE ON TABLES TO {WRITER_ROLE}")
    op.execute(f"{default} GRANT USAGE ON SEQUENCES TO {WRITER_ROLE}")
    op.execute(f"{default} GRANT EXECUTE ON FUNCTIONS TO {READER_ROLE}, {WRITER_ROLE}")
    op.execute(f"GRANT USAGE ON SCHEMA {SCHEMA} TO {READER_ROLE}, {WRITER_ROLE}")

    _create_tables()
    _create_constraints_and_indexes()
    op.execute(_CURRENT_LAKES)
    op.execute(_LAKE_CHANGES)
    op.execute(_GROWING_LAKES)
    op.execute(_LAKES_AS_OF)
    for target, text in _COMMENTS.items():
        kind, name = target.split(" ", 1)
        quoted = text.replace("'", "''")
        op.execute(f"COMMENT ON {kind} {SCHEMA}.{name} IS '{quoted}'")

    for table in WRITER_DELETE_TABLES:
        op.execute(f"GRANT DELETE ON {SCHEMA}.{table} TO {WRITER_ROLE}")
    # Views are read-only for everyone (the default privileges above also gave INSERT/UPDATE).
    op.execute(f"REVOKE INSERT, UPDATE ON {', '.join(f'{SCHEMA}.{v}' for v in VIEWS)} FROM {WRITER_ROLE}")
    op.execute(f"REVOKE EXECUTE ON FUNCTION {SCHEMA}.lakes_as_of(timestamptz) FROM PUBLIC")
    op.execute("RESET ROLE")


def downgrade() -> None:
    # CASCADE takes the tables, views, function, grants and schema default privileges.
    op.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
    for extension in reversed(EXTENSIONS):
        # Keep an extension something else in the database still uses.
        op.execute(
            f"""
            DO $$
            BEGIN
                DROP EXTENSION IF EXISTS {extension};
            EXCEPTION WHEN dependent_objects_still_exist THEN
                RAISE NOTICE 'extension {extension} kept: other objects use it';
            END $$
            """
        )
