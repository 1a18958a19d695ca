"""``glacial-lakes``: the command-line contract (design §10).

Exit status: 0 success, 2 bad input (one line naming the input), 1 anything else.
Prefect is imported lazily, after its environment defaults are set.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, date, datetime, time
from pathlib import Path

import click

from flows.cli_support import BadInput, BoundedFloat, exit_on_sigterm, guarded, progress
from flows.demo import DEMO_MAX_SIZE_PX
from flows.settings import Settings, load_settings, prepare_prefect_environment
from flows.window import DEFAULT_DAYS, MAX_DAYS
from tasks.defaults import MIN_LAKE_AREA_M2_BOUND


def _settings() -> Settings:
    settings = load_settings()
    prepare_prefect_environment(settings)
    return settings


LAZY_COMMANDS = ("glaciers", "glof", "map", "runs", "segment", "serve", "train", "worker")
"""Commands imported only when called (or listed by ``--help``): ``run`` does not pay for their imports."""


def _lazy_command(name: str) -> click.Command:
    """One of :data:`LAZY_COMMANDS`, imported now (plain imports, so the import graph shows them)."""
    if name == "glaciers":
        from flows.glaciers_cli import glaciers_command

        return glaciers_command
    if name == "glof":
        from flows.glof_cli import glof_command

        return glof_command
    if name == "map":
        from flows.map_cli import map_command

        return map_command
    if name == "runs":
        from flows.runs_cli import runs_command

        return runs_command
    if name == "segment":
        from flows.segment_cli import segment_command

        return segment_command
    if name == "train":
        from flows.train_cli import train_command

        return train_command
    from flows.serve_cli import serve_command, worker_command

    return serve_command if name == "serve" else worker_command


class _LazyGroup(click.Group):
    """A group whose :data:`LAZY_COMMANDS` are imported on first use (click's lazy-loading pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS:
            return _lazy_command(cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Keep a PostGIS glacial-lake inventory current from Sentinel-1, Sentinel-2 and the Copernicus DEM."""
    exit_on_sigterm()  # every command: SIGTERM unwinds (child processes stopped), exit 143


@main.group()
def db() -> None:
    """The inventory database (DATABASE_URL, or the project's own local PostGIS)."""


@db.command("upgrade")
@guarded
def db_upgrade() -> None:
    """Migrate to the newest schema: DATABASE_URL as its user (the owner), else the local PostGIS.

    Other commands never migrate a DATABASE_URL database: they refuse one that is behind.
    """
    from db.migrate import current
    from flows.database import upgrade_database

    click.echo(f"inventory schema at revision {current(upgrade_database(_settings()))}")


@db.command("start")
@guarded
def db_start() -> None:
    """Start the local PostGIS cluster (installing PostGIS, creating the cluster and database if needed).

    With DATABASE_URL set the local cluster is not used: the command says so and does nothing.
    """
    from flows.database import database_url

    settings = _settings()
    if settings.database_url is not None:
        click.echo("DATABASE_URL is set: the local cluster is not used")
        return
    database_url(settings)
    click.echo(f"local PostGIS running: {_psql_url(database_url(settings, start_local=False))}")


@db.command("stop")
@guarded
def db_stop() -> None:
    """Stop the local PostGIS cluster (no effect on a DATABASE_URL server)."""
    from flows.database import stop_local

    stopped = stop_local(_settings())
    click.echo("local PostGIS stopped" if stopped else "local PostGIS was not running")


@db.command("status")
@guarded
def db_status() -> None:
    """Say which database the inventory uses and whether the local cluster is running (starts nothing)."""
    from flows.database import local_cluster

    settings = _settings()
    if settings.database_url is not None:
        click.echo("DATABASE_URL is set: the inventory is on that server; the local cluster is not used")
        return
    cluster = local_cluster(settings)
    if cluster.is_running():
        click.echo(f"local PostGIS running on 127.0.0.1:{cluster.port} (data: {cluster.data_dir})")
    else:
        click.echo(f"local PostGIS not running (data: {cluster.data_dir}); `glacial-lakes db start` starts it")


@db.command("url")
@click.option("--show-password", is_flag=True, help="put the password in the URL instead of naming the passfile")
@guarded
def db_url(show_password: bool) -> None:
    """Print a psql-compatible URL of the inventory (starts the local cluster if needed).

    The local cluster's URL is the writer login's and names its passfile (psql and psycopg read
    the password from it); a DATABASE_URL is printed with its password masked unless asked.
    """
    from sqlalchemy.engine import make_url

    from flows.database import database_url

    settings = _settings()
    url = database_url(settings)
    if show_password:
        click.echo(_psql_url(url))
    elif settings.database_url is not None:
        click.echo(_psql_url(make_url(url).render_as_string(hide_password=True)))
    else:
        click.echo(_psql_url(database_url(settings, start_local=False)))


@db.command("create-user")
@click.argument("name")
@click.option("--role", type=click.Choice(["reader", "writer", "owner"]), required=True, help="group to join")
@click.option(
    "--password-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="file whose first line is the password (mode 600); default: prompt (hidden)",
)
@guarded
def db_create_user(name: str, role: str, password_file: Path | None) -> None:
    """Create (or re-password) login NAME in lake_reader, lake_writer or lake_owner.

    On the local cluster as its superuser; on DATABASE_URL as that URL's user, which needs CREATEROLE.
    """
    import psycopg

    from db import access
    from db.engine import connect_kwargs
    from flows.database import database_url, local_cluster

    access.validate_role_name(name)
    if password_file is not None:
        password = access.read_secret(password_file)
    else:
        password = click.prompt(f"password for {name}", hide_input=True, confirmation_prompt=True)
    if len(password) < 12:
        raise BadInput(f"password for {name}: use at least 12 characters")
    settings = _settings()
    url = database_url(settings)
    if settings.database_url is None:
        url = local_cluster(settings).admin_url(settings.pg_database)
    with psycopg.connect(**connect_kwargs(url), autocommit=True, connect_timeout=10) as conn:
        created = access.ensure_login(conn, name, access.role_groups()[role], password)
    click.echo(f"login {name} {'created' if created else 'updated'} in {access.role_groups()[role]}")


def _psql_url(url: str) -> str:
    """``url`` without SQLAlchemy's driver suffix, as ``psql`` and QGIS take it."""
    return url.replace("postgresql+psycopg://", "postgresql://")


def _parse_day(value: str | None, name: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise BadInput(f"{name} {value!r} is not a date (YYYY-MM-DD)") from exc


def _window(start: str | None, end: str | None) -> tuple[date | None, date | None]:
    """``--start`` / ``--end`` as days (either may be absent: the flow's rolling default); exit 2 if reversed."""
    first, last = _parse_day(start, "--start"), _parse_day(end, "--end")
    if first is not None and last is not None and last < first:
        raise BadInput(f"--end {end} is before --start {start}")
    return first, last


@main.command()
@click.option("--aoi", "aoi_path", required=True, type=click.Path(path_type=Path), help="AOI GeoJSON (EPSG:4326)")
@click.option(
    "--start",
    default=None,
    help="first sensing date, YYYY-MM-DD (default: rolling: the day of the AOI's last processed "
    "acquisition, or --days before --end for a new AOI)",
)
@click.option("--end", default=None, help="last sensing date, YYYY-MM-DD (default: today, UTC)")
@click.option(
    "--days",
    default=DEFAULT_DAYS,
    show_default=True,
    type=click.IntRange(1, MAX_DAYS),
    help="look-back of a new AOI's rolling window, days (with no --start)",
)
@click.option("--source", required=True, help="local:DIR, stac:URL, dhus:URL or safe:DIR")
@click.option(
    "--model", default=None, help="segmenter: default | baseline | PATH | hf://… (default GLACIAL_LAKES_MODEL)"
)
@click.option("--name", default=None, help="AOI name (default: the feature's name or the file stem)")
@guarded
def run(
    aoi_path: Path, start: str | None, end: str | None, days: int, source: str, model: str | None, name: str | None
) -> None:
    """Update the inventory of one AOI over a sensing-date window (default: rolling, as the schedule runs)."""
    from flows.aoi import load_aoi
    from models.registry import load_segmenter, resolve_spec
    from tasks.sources import source_from_uri

    # Cheapest checks first: every bad input fails here, with exit 2, before any flow starts.
    first, last = _window(start, end)
    settings = _settings()
    aoi = load_aoi(aoi_path, name)
    source_from_uri(source, options=settings.stac_options, dhus=settings.dhus_options(source))
    resolve_spec(model or settings.model)  # a default model missing from the install fails here
    from flows.database import prepare_engine
    from flows.prefect_server import prefect_api

    # Start-up overlaps: the Prefect server starts while the database starts (a thread), the
    # model loads (TerraMind: torch, seconds) and the flow's modules import. A checkpoint that
    # exists but does not load stops the just-launched server on its way out (still exit 2).
    with prefect_api(progress) as ready:
        database = prepare_engine(settings)
        load_segmenter(model or settings.model, settings.tta, settings.hub, settings.inference_runtime)  # cached
        del settings  # read again inside the flow; constructed here to fail early on bad env
        from flows.outcomes import report_of
        from flows.progress import terminal_progress
        from flows.update_inventory import update_inventory

        database.result()
        ready()
        # return_state: a run with failed scenes ends Failed in Prefect, and its report is still printed.
        with terminal_progress():
            state = update_inventory(
                aoi=aoi, start=first, end=last, days=days, source=source, model=model, return_state=True
            )
        report = report_of(state)
    click.echo(report.markdown())
    if report.failed:
        sys.exit(1)


@main.command("rerun")
@click.option("--aoi", default=None, help="name of an AOI of the inventory (with --scene: default its one AOI)")
@click.option("--start", default=None, help="first sensing date, YYYY-MM-DD (with --aoi)")
@click.option("--end", default=None, help="last sensing date, YYYY-MM-DD (with --aoi)")
@click.option("--scene", default=None, help="one S2 product id instead of a window (as `glacial-lakes runs` shows it)")
@click.option("--source", required=True, help="local:DIR, stac:URL, dhus:URL or safe:DIR")
@click.option(
    "--model", default=None, help="segmenter: default | baseline | PATH | hf://… (default GLACIAL_LAKES_MODEL)"
)
@guarded
def rerun_command(
    aoi: str | None, start: str | None, end: str | None, scene: str | None, source: str, model: str | None
) -> None:
    """Process an AOI's window, or one scene, again: the new results supersede the old ones (kept, as superseded)."""
    from db.ledger import scene_day
    from db.queries import check_aoi_known
    from flows.database import ready_engine
    from models.registry import load_segmenter
    from tasks.sources import source_from_uri

    first, last = _window(start, end)
    if scene is not None and (first is not None or last is not None):
        raise BadInput("--scene names one scene: give it without --start/--end")
    if scene is None and (aoi is None or first is None or last is None):
        raise BadInput("give --aoi with --start and --end, or --scene")
    settings = _settings()
    engine = ready_engine(settings)
    if aoi is not None:
        check_aoi_known(engine, aoi)
    if scene is not None:
        scene_day(engine, scene, aoi)  # exit 2 here, naming the scene, when the ledger has no such scene
    source_from_uri(source, options=settings.stac_options, dhus=settings.dhus_options(source))
    load_segmenter(model or settings.model, settings.tta, settings.hub, settings.inference_runtime)
    del settings
    from flows.prefect_server import prefect_api

    with prefect_api(progress) as ready:
        from flows.outcomes import report_of
        from flows.rerun import rerun

        ready()
        # return_state: a rerun with failed scenes ends Failed in Prefect, and its report is still printed.
        state = rerun(aoi=aoi, start=first, end=last, source=source, model=model, scene=scene, return_state=True)
        report = report_of(state)
    click.echo(report.markdown())
    if report.failed:
        sys.exit(1)


@main.command()
@click.option("--out", required=True, type=click.Path(path_type=Path), help="FILE.gpkg or FILE.geojson")
@click.option("--as-of", "as_of", default=None, help="inventory as it stood at this date (default: now)")
@click.option("--aoi", default=None, help="only this AOI (name)")
@guarded
def export(out: Path, as_of: str | None, aoi: str | None) -> None:
    """Write the inventory (current, or as of a date) to a GeoPackage or GeoJSON file."""
    from db.queries import check_aoi_known, lakes_as_of
    from flows.database import ready_engine

    drivers = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON"}
    driver = drivers.get(out.suffix.lower())
    if driver is None:
        raise BadInput(f"--out {out}: use a .gpkg or .geojson file name")
    day = _parse_day(as_of, "--as-of")
    when = datetime.combine(day, time.max, tzinfo=UTC) if day else None
    engine = ready_engine(_settings())
    if aoi is not None:
        check_aoi_known(engine, aoi)  # an empty file would read as "no lakes there"
    gdf = lakes_as_of(engine, when, aoi)
    out.parent.mkdir(parents=True, exist_ok=True)
    gdf.to_file(out, driver=driver, layer="lakes" if driver == "GPKG" else None)
    click.echo(f"{len(gdf)} lakes written to {out}")


@main.command("import-inventory")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--date", "on", required=True, help="epoch of the inventory, YYYY-MM-DD (UTC)")
@click.option("--aoi", default=None, help="AOI name (default: the file stem); created from the lakes' extent if new")
@click.option("--layer", default=None, help="layer of a multi-layer file (default: the first)")
@click.option("--utm-epsg", type=int, default=None, help="metric CRS for areas (default: each lake's UTM zone)")
@click.option(
    "--footprint",
    type=click.Choice(["lakes", "hull"]),
    default="lakes",
    show_default=True,
    help="what the inventory 'saw': its lakes only, or their convex hull (absences inside it count)",
)
@click.option(
    "--min-area",
    type=BoundedFloat(MIN_LAKE_AREA_M2_BOUND),
    default=1.0,
    show_default=True,
    help="drop polygons under this, m²",
)
@click.option(
    "--extend-aoi",
    "extend_aoi",
    is_flag=True,
    help="grow an existing AOI to take in lakes outside its outline (default: refuse them)",
)
@guarded
def import_inventory(
    file: Path,
    on: str,
    aoi: str | None,
    layer: str | None,
    utm_epsg: int | None,
    footprint: str,
    min_area: float,
    extend_aoi: bool,
) -> None:
    """Import an existing inventory (GeoJSON, GeoPackage, shapefile) as a baseline epoch.

    The AOI name follows the rule of ``run``. Into an existing AOI, a lake whose point on surface
    lies outside the AOI's outline is refused (the whole file: exit 2), unless ``--extend-aoi``.
    """
    from db.importer import import_inventory as run_import
    from flows.database import ready_engine

    day = _parse_day(on, "--date")
    assert day is not None
    if not file.exists():
        raise BadInput(f"{file}: no such file")
    report = run_import(
        ready_engine(_settings()),
        file,
        aoi_name=aoi or file.stem,
        when=datetime.combine(day, time.min, tzinfo=UTC),
        utm_epsg=utm_epsg,
        layer=layer,
        min_area_m2=min_area,
        footprint=footprint,  # type: ignore[arg-type]
        extend_aoi=extend_aoi,
    )
    if report.aoi_extended:
        progress(f"AOI {report.aoi_name} extended to take in the file's lakes")
    if report.noop:
        click.echo(f"{file.name}: already imported for {day} into {report.aoi_name}: nothing changed")
        return
    click.echo(
        f"{file.name} → {report.aoi_name} as of {day}: {report.lakes} lakes "
        f"({report.total_area_m2 / 1e6:.2f} km², source CRS {report.source_crs}); "
        f"skipped {report.skipped_empty} empty, {report.skipped_small} under {min_area:g} m²"
    )


@main.command()
@click.option("--home", type=click.Path(path_type=Path), default=None, help="override GLACIAL_LAKES_HOME")
@click.option(
    "--size",
    default=512,
    show_default=True,
    type=int,
    help=f"demo scene size, pixels (10 m), at most {DEMO_MAX_SIZE_PX}",
)
@guarded
def demo(home: Path | None, size: int) -> None:
    """Everything on a fresh machine: local PostGIS, schema, demo catalog, the update flow, a summary."""
    from flows.demo import check_size, run_demo

    check_size(size)  # before anything is created under the home
    if home is not None:
        os.environ["GLACIAL_LAKES_HOME"] = str(home)

    settings = _settings()
    from flows.prefect_server import prefect_api

    with prefect_api(progress) as ready:
        ready()
        run_demo(settings, size_px=size, echo=click.echo, progress=progress)


if __name__ == "__main__":
    main()
