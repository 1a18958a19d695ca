"""``glacial-lakes demo``: the whole product on embedded defaults, with a summary scored against truth."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import SettingsError
from flows.settings import Settings

if TYPE_CHECKING:  # the CLI imports this module at start: no database library then
    from sqlalchemy import Engine

Echo = Callable[[str], None]

DEMO_MAX_SIZE_PX = 4096
"""Largest demo scene, pixels per side (41 km at 10 m): a few minutes and under 1 GB on a CPU,
enough to exercise the streaming pipeline; larger is a benchmark, not a demo."""


def check_size(size_px: int) -> None:
    """Refuse a demo scene size outside [``demo.synthetic.terrain.MIN_SIZE_PX``, :data:`DEMO_MAX_SIZE_PX`] px.

    Raises:
        core.errors.SettingsError: one line naming ``--size`` and the range.
    """
    from demo.synthetic.terrain import MIN_SIZE_PX  # its one definition (the terrain needs it)

    if not MIN_SIZE_PX <= size_px <= DEMO_MAX_SIZE_PX:
        raise SettingsError(f"--size {size_px}: must be in [{MIN_SIZE_PX}, {DEMO_MAX_SIZE_PX}] pixels")


def import_demo_glaciers(engine: Engine, glaciers_path: Path, aoi_name: str) -> dict[str, int]:
    """Import the demo's ``glaciers.geojson`` for its AOI (replacing an earlier import); lakes per type.

    Returns:
        ``lake_type`` → number of current lakes of the AOI (view ``inventory.lake_glacier_context``).
    """
    from sqlalchemy import text

    from db.glaciers import import_glaciers
    from db.queries import in_aoi

    import_glaciers(engine, glaciers_path, aoi_name=aoi_name)
    sql = (
        "SELECT c.lake_type, count(*) FROM inventory.lake_glacier_context AS c "
        f"WHERE {in_aoi('c.geom')} GROUP BY c.lake_type ORDER BY c.lake_type"
    )
    with engine.connect() as conn:
        return {str(t): int(n) for t, n in conn.execute(text(sql), {"aoi": aoi_name})}


def run_demo(settings: Settings, *, size_px: int, echo: Echo, progress: Echo) -> dict[str, object]:
    """Local PostGIS → schema → demo catalog → ``update_inventory`` → summary. Returns the figures.

    Raises:
        core.errors.SettingsError: ``size_px`` outside [``demo.synthetic.terrain.MIN_SIZE_PX``,
            :data:`DEMO_MAX_SIZE_PX`] (checked before anything is started or written).
    """
    check_size(size_px)
    from db.glof import flagged_lakes
    from db.ledger import present_observations, scene_table
    from db.queries import inventory_summary
    from demo.score import score_frames
    from demo.synthetic import load_truth, refresh_demo_catalog
    from flows.aoi import load_aoi
    from flows.database import database_url, ready_engine
    from flows.outcomes import report_of
    from flows.progress import terminal_progress
    from flows.update_inventory import update_inventory
    from tasks.grid import utm_epsg_for

    where = "DATABASE_URL" if settings.database_url else f"local PostGIS under {settings.cluster_root}"
    progress(f"[1/4] inventory database: {where}")
    engine = ready_engine(settings)

    root = settings.home / "demo" / f"catalog-{size_px}px"
    progress(f"[2/4] demo catalog: {root}")
    # One AOI per scene size: catalogs of different sizes cover different ground, and one
    # inventory must never mix them (a 256 px demo after a 512 px one would score both).
    # An unchanged catalog keeps its files (and so its scene keys): a second demo is a no-op.
    catalog = refresh_demo_catalog(root, size_px=size_px, aoi_name=f"demo-tienshan-{size_px}px")
    aoi = load_aoi(catalog.aoi_path)

    progress(f"[3/4] update_inventory over {len(catalog.dates)} Sentinel-2 dates (model: {settings.model})")
    # return_state: a run with failed scenes ends Failed, and its report is still the summary.
    with terminal_progress():
        state = update_inventory(
            aoi=aoi,
            start=min(catalog.dates) - timedelta(days=1),
            end=max(catalog.dates) + timedelta(days=1),
            source=f"local:{catalog.root}",
            return_state=True,
        )
    report = report_of(state)
    # The demo's glacier outlines: every lake gets its glacier context (lake_type) at once.
    lake_types = import_demo_glaciers(engine, catalog.root / "glaciers.geojson", aoi.name)

    progress("[4/4] summary")
    scenes = scene_table(engine, aoi.name)
    mapped = present_observations(engine, aoi.name)
    summary = inventory_summary(engine, aoi.name)
    days = [s["sensing_time"].date() for s in scenes]  # type: ignore[attr-defined]  # a datetime column
    epsg = utm_epsg_for(aoi.shape.centroid.x, aoi.shape.centroid.y)
    agreement = score_frames(load_truth(catalog.truth_path), mapped, days, epsg, settings.min_area_m2)

    echo(report.markdown())
    echo("")
    echo(f"Segmenter: {report.model}")
    echo("Lakes per date:")
    for s in scenes:
        n = int((mapped["sensing_time"] == s["sensing_time"]).sum()) if len(mapped) else 0
        cloud = "unknown" if s["cloud_fraction"] is None else f"{s['cloud_fraction']:.0%}"  # NULL: no SCL
        cover = f"cloud {cloud}, valid {s['valid_fraction']:.0%}"
        echo(f"  {s['sensing_time']:%Y-%m-%d}  {n:3d} lakes  ({cover})")
    echo(f"Inventory: {summary}")
    echo(f"Lake types (glaciers.geojson): {lake_types}")
    flagged = flagged_lakes(engine, aoi.name)
    listed = ", ".join(f"lake {r.lake_id} ({r.rules}, {r.area_m2 / 1e4:.1f} ha)" for r in flagged.itertuples())
    echo(f"GLOF screening (rules: inventory.glof_rule; not a hazard assessment): {len(flagged)} flagged {listed}")
    echo(
        f"Agreement with truth (lakes ≥ {settings.min_area_m2 / 1e4:g} ha, visible): "
        f"recall {agreement.recall:.3f}, precision {agreement.precision:.3f}, "
        f"median area error {agreement.median_area_error:.1%} "
        f"({agreement.found}/{agreement.truth_lakes} truth lakes found, "
        f"{agreement.correct}/{agreement.mapped_lakes} mapped correct)"
    )
    if settings.database_url is None:  # never echo a configured URL: it may hold a password
        url = database_url(settings, start_local=False).replace("postgresql+psycopg://", "postgresql://")
        echo(f"Query it: psql {url} -c 'SELECT * FROM inventory.current_lakes'")
    return {
        "recall": agreement.recall,
        "precision": agreement.precision,
        "median_area_error": agreement.median_area_error,
        "summary": summary,
        "lake_types": lake_types,
        "glof_flagged": [int(i) for i in flagged.lake_id],
        "report": report.totals(),
    }
