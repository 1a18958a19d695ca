"""A quick-look PNG map of one run: the AOI outline and the lakes this run changed, coloured by change.

Drawn in the AOI's UTM CRS (metres on both axes, so shapes are not stretched) with matplotlib's
Agg canvas (no display, no pyplot state: safe in a worker thread).
"""

from __future__ import annotations

import io

import geopandas as gpd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from shapely.geometry.base import BaseGeometry

from flows.report import CHANGE_KINDS

COLOURS = {
    "new": "#1f77b4",
    "grown": "#2ca02c",
    "shrunk": "#ff7f0e",
    "reshaped": "#9467bd",
    "split": "#8c564b",
    "merged": "#e377c2",
    "disappeared": "#d62728",
    "reappeared": "#17becf",
}
"""Fill colour of each change kind (:data:`flows.report.CHANGE_KINDS`)."""
if set(COLOURS) != set(CHANGE_KINDS):  # a kind without a colour would be drawn in matplotlib's default
    raise ImportError(f"quick-look colours {sorted(COLOURS)} differ from the change kinds {sorted(CHANGE_KINDS)}")


def quicklook_png(aoi: BaseGeometry, changes: gpd.GeoDataFrame, epsg: int, title: str) -> bytes:
    """The map as PNG bytes.

    Args:
        aoi: the AOI, EPSG:4326.
        changes: :func:`db.ledger.lake_changes_of_scenes` (EPSG:4326, ``change_kind``, ``geom``).
        epsg: the UTM CRS to draw in.
        title: shown above the map.
    """
    fig = Figure(figsize=(6, 6), dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    outline = gpd.GeoSeries([aoi], crs=4326).to_crs(epsg)
    outline.boundary.plot(ax=ax, color="black", linewidth=1)
    handles = []
    if len(changes):
        lakes = changes.to_crs(epsg)
        for kind in CHANGE_KINDS:
            subset = lakes[lakes["change_kind"] == kind]
            if len(subset):
                subset.plot(ax=ax, color=COLOURS[kind], edgecolor="black", linewidth=0.3)
                handles.append(Patch(facecolor=COLOURS[kind], label=f"{kind} ({len(subset)})"))
    if handles:
        ax.legend(handles=handles, loc="lower left", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no lake changed", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(f"easting (m, EPSG:{epsg})", fontsize=8)
    ax.set_ylabel("northing (m)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_aspect("equal")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
