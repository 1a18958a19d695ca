"""``glacial-lakes map``: the inventory on a map, as one self-contained HTML file or a static PNG.

``--out FILE.html``: interactive (:mod:`flows.map_html`: pan, zoom, a popup with every attribute
and the lake's area series on click; opens offline in any browser). ``--out FILE.png``: static
(:mod:`flows.map_png`, the run report's drawing: AOI outline, legend, scale bar in km). Both draw
every lake of :func:`db.map_layers.map_lakes` (active and gone) in the AOI's UTM CRS (without
``--aoi``: the only AOI's, else the UTM zone of the lakes' extent), coloured by
:mod:`flows.map_style`.

Exit status: 0 success, 2 bad input (one line naming the input: an unknown ``--aoi``, an
``--out`` that is neither ``.html`` nor ``.png`` or lies in a folder that cannot be written, a
bad ``--as-of`` or ``--colour``), 1 anything else.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from core.files import atomic_path
from flows.cli_support import BadInput, guarded
from flows.settings import load_settings

if TYPE_CHECKING:
    import geopandas as gpd

    from db.map_layers import AoiOutline

__all__ = ["COLOUR_BY", "map_command", "parse_day", "writable_target"]

COLOUR_BY = ("status", "growth")
SUFFIXES = (".html", ".png")


def parse_day(value: str | None, option: str) -> date | None:
    """``YYYY-MM-DD`` as a date (None stays None); else :class:`BadInput` naming ``option``."""
    if value is None:
        return None
    try:
        if len(value) != 10:
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise BadInput(f"{option} {value!r}: not a date (YYYY-MM-DD)") from None


def writable_target(out: Path) -> None:
    """Refuse (:class:`BadInput`) an ``--out`` of another suffix, or whose folder cannot be written.

    The folder may not exist yet (it is created): then its nearest existing parent must be a
    writable folder.
    """
    if out.suffix.lower() not in SUFFIXES:
        raise BadInput(f"--out {out}: use a .html (interactive) or .png (static) file name")
    if out.is_dir():
        raise BadInput(f"--out {out}: is a folder")
    folder = out.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise BadInput(f"--out {out}: folder {folder} cannot be written")


@click.command("map")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="FILE.html (interactive) or FILE.png")
@click.option("--aoi", default=None, help="only this AOI (name)")
@click.option("--as-of", "as_of", default=None, help="the inventory as it stood at this date, YYYY-MM-DD (UTC)")
@click.option("--colour", default="status", show_default=True, help="colour lakes by: status | growth")
@guarded
def map_command(out: Path, aoi: str | None, as_of: str | None, colour: str) -> None:
    """Draw the inventory (current, or as of a date) as an interactive HTML map or a static PNG."""
    writable_target(out)
    day = parse_day(as_of, "--as-of")
    if colour not in COLOUR_BY:
        raise BadInput(f"--colour {colour!r}: use one of {', '.join(COLOUR_BY)}")

    from db.map_layers import aoi_outlines, area_series, current_growth, map_lakes
    from flows.database import ready_engine
    from flows.map_html import map_html
    from flows.map_png import map_png
    from flows.map_style import GROWTH_COLUMN, classify

    when = datetime.combine(day, time.max, tzinfo=UTC) if day else None
    engine = ready_engine(load_settings())
    lakes = map_lakes(engine, when, aoi)  # refuses an unknown AOI first
    outlines = aoi_outlines(engine, aoi)
    html = out.suffix.lower() == ".html"
    ids = [int(i) for i in lakes["lake_id"]]
    growth = None  # a growth figure the inventory keeps, where the row lacks one (see flows.map_style)
    if colour == "growth" and GROWTH_COLUMN not in lakes.columns and when is None:
        growth = current_growth(engine, ids)
    needs_series = html or (colour == "growth" and GROWTH_COLUMN not in lakes.columns and growth is None)
    series = area_series(engine, ids, when) if needs_series else {}
    legend = classify(lakes, colour, series, growth)
    epsg = _display_epsg(outlines, lakes, aoi)
    title = f"{aoi or 'all AOIs'}: {len(lakes)} lakes, {f'as of {day}' if day else 'current'}, by {colour}"
    if html:
        payload = map_html([(o.name, o.geometry) for o in outlines], lakes, legend, series, epsg, title).encode()
    else:
        payload = map_png([o.geometry for o in outlines], lakes, legend, epsg, title, size_in=8.0, dpi=100)
    try:
        with atomic_path(out) as tmp:  # never a half-written map under the final name
            tmp.write_bytes(payload)
            tmp.chmod(0o644)  # mkstemp makes it 0600: a map is for sharing
    except PermissionError as exc:
        raise BadInput(f"--out {out}: cannot be written ({exc.strerror})") from exc
    click.echo(f"{len(lakes)} lakes drawn to {out} ({len(payload)} bytes, EPSG:{epsg})")


def _display_epsg(outlines: Sequence[AoiOutline], lakes: gpd.GeoDataFrame, aoi: str | None) -> int:
    """The UTM CRS to draw in: the AOI's (or the only AOI's) scene grid, else the lakes' UTM zone."""
    import geopandas as gpd

    if len(outlines) == 1 or (aoi is not None and outlines):
        return int(outlines[0].utm_epsg)
    shapes: gpd.GeoDataFrame | gpd.GeoSeries | None = lakes if len(lakes) else None
    if shapes is None and outlines:
        shapes = gpd.GeoSeries([o.geometry for o in outlines], crs=4326)
    if shapes is None:
        return 3857  # nothing to draw: any metric CRS will do
    epsg = shapes.estimate_utm_crs().to_epsg()
    return int(epsg) if epsg is not None else 3857
