"""A quick-look PNG map of one run: the AOI outline and the lakes this run changed, coloured by change.

Drawn by :func:`flows.map_png.map_png` (UTM, Agg canvas, scale bar) with the change-kind colours
of :mod:`flows.map_style`, the same as ``glacial-lakes map``'s.
"""

from __future__ import annotations

import geopandas as gpd
from shapely.geometry.base import BaseGeometry

from flows.map_png import map_png
from flows.map_style import CHANGE_COLOURS, classify

COLOURS = CHANGE_COLOURS
"""Fill colour of each change kind (:data:`flows.map_style.CHANGE_COLOURS`)."""


def quicklook_png(aoi: BaseGeometry, changes: gpd.GeoDataFrame, epsg: int, title: str) -> bytes:
    """The map as PNG bytes.

    Args:
        aoi: the AOI, EPSG:4326.
        changes: :func:`db.ledger.lake_changes_of_scenes` (EPSG:4326, ``change_kind``, ``geom``).
        epsg: the UTM CRS to draw in.
        title: shown above the map.
    """
    legend = classify(changes, "status")
    return map_png([aoi], changes, legend, epsg, title, empty_text="no lake changed")
