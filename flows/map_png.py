"""Static PNG maps of lakes: AOI outlines, lakes coloured by a :class:`flows.map_style.Legend`, a scale bar.

Drawn in a UTM CRS (metres on both axes, so shapes are not stretched and the scale bar holds
everywhere on the map) with matplotlib's Agg canvas (no display, no pyplot state: safe in a
worker thread). The run's quick look (:mod:`flows.quicklook`) and ``glacial-lakes map --out
FILE.png`` both draw through :func:`map_png`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import geopandas as gpd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from shapely.geometry.base import BaseGeometry

from flows.map_style import Legend

__all__ = ["map_png", "scale_bar_length_m"]


def scale_bar_length_m(width_m: float) -> float:
    """A round scale-bar length (1, 2 or 5 × 10ⁿ m) near a fifth of a map ``width_m`` metres wide."""
    target = max(width_m / 5.0, 1e-3)
    power = 10.0 ** math.floor(math.log10(target))
    return max(m * power for m in (1.0, 2.0, 5.0) if m * power <= target)


def _scale_bar(ax: Axes) -> None:
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    length = scale_bar_length_m(x1 - x0)
    left, bottom, height = x1 - (x1 - x0) * 0.05 - length, y0 + (y1 - y0) * 0.04, (y1 - y0) * 0.018
    ax.add_patch(Rectangle((left, bottom), length, height, facecolor="black", edgecolor="black", zorder=5))
    label = f"{length / 1000:g} km"
    ax.text(left + length / 2, bottom + height * 1.8, label, ha="center", va="bottom", fontsize=8, zorder=5)


def map_png(
    outlines: Sequence[BaseGeometry],
    lakes: gpd.GeoDataFrame,
    legend: Legend,
    epsg: int,
    title: str,
    *,
    size_in: float = 6.0,
    dpi: int = 80,
    empty_text: str = "no lakes",
) -> bytes:
    """The map as PNG bytes.

    Args:
        outlines: AOI outlines, EPSG:4326, drawn as black lines.
        lakes: lake outlines (any CRS set on the frame), one row per lake, in the order of
            ``legend.classes``.
        legend: the colouring (:func:`flows.map_style.classify` of ``lakes``).
        epsg: the UTM CRS to draw in (metres).
        title: shown above the map.
        size_in: figure width and height, inches.
        dpi: pixels per inch.
        empty_text: shown in the middle when there is no lake.
    """
    fig = Figure(figsize=(size_in, size_in), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if outlines:
        gpd.GeoSeries(list(outlines), crs=4326).to_crs(epsg).boundary.plot(ax=ax, color="black", linewidth=1)
    handles = []
    if len(lakes):
        projected = lakes.to_crs(epsg)
        classes = list(legend.classes)
        for entry in legend.entries:
            subset = projected[[k == entry.key for k in classes]]
            subset.plot(ax=ax, color=entry.colour, edgecolor="black", linewidth=0.3)
            handles.append(Patch(facecolor=entry.colour, edgecolor="black", label=f"{entry.label} ({entry.count})"))
    if handles:
        ax.legend(handles=handles, loc="lower left", fontsize=8, title=legend.title, title_fontsize=8)
    else:
        ax.text(0.5, 0.5, empty_text, ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(f"easting (m, EPSG:{epsg})", fontsize=8)
    ax.set_ylabel("northing (m)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.ticklabel_format(style="plain", useOffset=False)  # whole metres, not "1e6" offsets
    ax.set_aspect("equal")
    if outlines or handles:
        _scale_bar(ax)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
