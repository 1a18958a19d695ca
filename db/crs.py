"""Coordinate-reference helpers shared by the database layer and the pipeline (pure)."""

from __future__ import annotations

import math


def utm_epsg_for(lon: float, lat: float) -> int:
    """EPSG code of the WGS 84 UTM zone containing a point.

    Standard 6° zones; the Norway/Svalbard exceptions of MGRS are not applied, so a grid is
    always the plain zone of its longitude. ``lon`` = 180 falls in zone 60.

    Args:
        lon: Longitude, degrees (EPSG:4326).
        lat: Latitude, degrees; ≥ 0 gives the northern zone (326xx), < 0 the southern (327xx).

    Raises:
        ValueError: the point is not finite lon/lat.
    """
    if not (math.isfinite(lon) and math.isfinite(lat)) or abs(lat) > 90 or abs(lon) > 180:
        raise ValueError(f"not a lon/lat point: ({lon}, {lat})")
    zone = min(int((lon + 180.0) // 6.0) + 1, 60)
    return (32600 if lat >= 0 else 32700) + zone
