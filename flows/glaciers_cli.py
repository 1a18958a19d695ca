"""``glacial-lakes glaciers``: glacier outlines per AOI and the thresholds of the lake-type rule.

* ``glaciers import FILE --aoi NAME``: store an RGI 6 / RGI 7 outline file's glaciers that
  intersect the AOI (:func:`db.glaciers.import_glaciers`); a re-import of the same source
  replaces them. The lakes' glacier context (view ``inventory.lake_glacier_context``) follows at
  once: it is computed in SQL.
* ``glaciers settings [--contact-tolerance-m M] [--unconnected-max-distance-m M]
  [--supraglacial-min-fraction F]``: show, or change, the thresholds.

Exit status: 0 success, 2 bad input (one line naming the input), 1 anything else.
"""

from __future__ import annotations

from pathlib import Path

import click

from flows.cli_support import guarded
from flows.settings import load_settings

__all__ = ["glaciers_command"]


@click.group("glaciers")
def glaciers_command() -> None:
    """Glacier outlines (RGI 6 / RGI 7) per AOI: the lakes' glacier distance, contact and type."""


@glaciers_command.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--aoi", required=True, help="name of an AOI of the inventory")
@click.option("--layer", default=None, help="layer of a multi-layer file (default: the first)")
@click.option(
    "--coverage",
    type=click.Choice(["aoi", "extent"]),
    default="aoi",
    show_default=True,
    help="where the file holds every glacier: the whole AOI, or only its part within the file's extent",
)
@guarded
def import_command(file: Path, aoi: str, layer: str | None, coverage: str) -> None:
    """Import the glacier outlines of FILE (any CRS) that intersect AOI's outline.

    Lakes outside the coverage get lake type ``unknown``; a re-import of the same source
    (scheme and file name) for the AOI replaces its glaciers.
    """
    from db.glaciers import import_glaciers
    from flows.database import ready_engine

    report = import_glaciers(
        ready_engine(load_settings()),
        file,
        aoi_name=aoi,
        layer=layer,
        coverage=coverage,  # type: ignore[arg-type]  # click.Choice
    )
    replaced = f", replacing {report.replaced}" if report.replaced else ""
    click.echo(
        f"{file.name} → {report.aoi_name}: {report.glaciers} of {report.in_file} glacier outlines "
        f"(source {report.source}, CRS {report.source_crs}, coverage {report.coverage}){replaced}"
    )


@glaciers_command.command("settings")
@click.option("--contact-tolerance-m", type=float, default=None, help="contact within this distance, m")
@click.option("--unconnected-max-distance-m", type=float, default=None, help="unconnected glacial up to this, m")
@click.option("--supraglacial-min-fraction", type=float, default=None, help="share of the lake on a glacier, 0–1")
@guarded
def settings_command(
    contact_tolerance_m: float | None, unconnected_max_distance_m: float | None, supraglacial_min_fraction: float | None
) -> None:
    """Show the lake-type thresholds, or change those given."""
    from db.glaciers import context_settings, set_context_settings
    from flows.database import ready_engine

    engine = ready_engine(load_settings())
    given = {
        "contact_tolerance_m": contact_tolerance_m,
        "unconnected_max_distance_m": unconnected_max_distance_m,
        "supraglacial_min_fraction": supraglacial_min_fraction,
    }
    changes = {k: v for k, v in given.items() if v is not None}
    current = set_context_settings(engine, changes) if changes else context_settings(engine)
    for key, value in current.__dict__.items():
        click.echo(f"{key} = {value:g}")
