"""The run report as Prefect artifacts: summary, scenes, lake changes and a quick-look map.

Artifact keys (lower-case, ``-`` for anything else in the AOI name; Prefect keeps the history
of each key): ``inventory-update-<aoi>`` (Markdown summary: counts, change counts, timings,
model), ``scene-outcomes-<aoi>`` (table: one row per acquisition with its outcome, reason, cloud
fraction and stage timings), ``lake-changes-<aoi>`` (table: one row per lake this run changed),
``quick-look-<aoi>`` (Markdown with the PNG map inline, also written to ``png_path``).
"""

from __future__ import annotations

import base64
from pathlib import Path

import geopandas as gpd
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from shapely.geometry.base import BaseGeometry

from flows.quicklook import quicklook_png
from flows.report import RunReport

__all__ = ["artifact_slug", "publish_report"]


def artifact_slug(aoi_name: str) -> str:
    """The AOI's part of an artifact key (Prefect keys allow lower-case letters, digits and dashes)."""
    return "".join(c if c.isalnum() else "-" for c in aoi_name.lower())


def publish_report(
    report: RunReport, aoi: BaseGeometry, changes: gpd.GeoDataFrame, epsg: int, png_path: Path
) -> dict[str, str]:
    """Create the artifacts in the current flow run; returns artifact key → its id.

    ``aoi`` is EPSG:4326, ``changes`` :func:`db.ledger.lake_changes_of_scenes`, ``epsg`` the
    AOI's UTM CRS (the map's).
    """
    slug = artifact_slug(report.aoi)
    png = quicklook_png(aoi, changes, epsg, f"{report.aoi}: lakes changed by this run")
    png_path.parent.mkdir(parents=True, exist_ok=True)
    png_path.write_bytes(png)
    inline = base64.b64encode(png).decode()
    counts = report.change_counts()
    ids = {
        f"inventory-update-{slug}": create_markdown_artifact(
            report.markdown(), key=f"inventory-update-{slug}", description="what the run found, did and changed"
        ),
        f"scene-outcomes-{slug}": create_table_artifact(
            report.table_rows(), key=f"scene-outcomes-{slug}", description="one row per acquisition"
        ),
        f"lake-changes-{slug}": create_table_artifact(
            report.change_rows(), key=f"lake-changes-{slug}", description="lakes this run changed"
        ),
        f"quick-look-{slug}": create_markdown_artifact(
            f"# {report.aoi}: quick look\n\n"
            + ", ".join(f"{k} {n}" for k, n in counts.items() if n)
            + f"\n\n![quick look](data:image/png;base64,{inline})\n\nFile: `{png_path.name}`",
            key=f"quick-look-{slug}",
            description="AOI and this run's lakes coloured by change",
        ),
    }
    return {k: str(v) for k, v in ids.items()}
