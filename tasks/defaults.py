"""Pipeline parameter defaults and their admissible ranges: the one definition of each.

``flows.settings.Settings`` (the documented ``GLACIAL_LAKES_*`` defaults and their validators),
the CLI options (their click types) and the stage functions' keyword defaults all read these
names, so a default or a bound is changed here only. A test (``tests/unit/test_settings.py``)
checks that the settings and the CLI refuse the same values.

This module is a leaf: it imports nothing of the project.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "MAX_PAIR_DAYS",
    "MAX_PAIR_DAYS_BOUND",
    "MIN_LAKE_AREA_M2",
    "MIN_LAKE_AREA_M2_BOUND",
    "PG_PORT_BOUND",
    "WATER_THRESHOLD",
    "WATER_THRESHOLD_BOUND",
    "ZONE_MARGIN_M",
    "ZONE_MARGIN_M_BOUND",
    "Bound",
]


@dataclass(frozen=True)
class Bound:
    """A finite number in an interval; ``None`` leaves that side open-ended.

    ``low_open`` / ``high_open`` exclude the limit itself (``(0, 1)`` rather than ``[0, 1]``).
    NaN and ±inf are never admissible: a comparison with NaN is always false, so an unchecked
    NaN would pass every range test and silently change what a threshold means.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        """The range in interval notation, e.g. ``in (0, 1)`` or ``> 0``."""
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return "finite"

    def reason(self, value: float) -> str | None:
        """Why ``value`` is refused (one short phrase), or None when it is admissible."""
        if not math.isfinite(value):
            return f"must be a finite number {self.describe()}"
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        above = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        return f"must be {self.describe()}" if below or above else None


WATER_THRESHOLD = 0.5
"""Water probability at or above which a pixel is mapped as water (0–1)."""
WATER_THRESHOLD_BOUND = Bound(0.0, 1.0, low_open=True, high_open=True)
"""0 maps every valid pixel as water and 1 none: both would rewrite the inventory, not update it."""

MIN_LAKE_AREA_M2 = 5000.0
"""Smallest mapped lake, m² in the scene's UTM CRS (0.5 ha: 50 pixels of 10 m)."""
MIN_LAKE_AREA_M2_BOUND = Bound(0.0, low_open=True)
"""m²; zero or negative would keep single-pixel noise as lakes."""

MAX_PAIR_DAYS = 7.0
"""Largest gap between a Sentinel-2 scene and its Sentinel-1 partner, days."""
MAX_PAIR_DAYS_BOUND = Bound(0.0, low_open=True)
"""Days; zero or negative pairs nothing, so every scene would run without its radar partner."""

PG_PORT_BOUND = Bound(1024, 65535)
"""TCP port of the local cluster: unprivileged ports only (the cluster never runs as root)."""

ZONE_MARGIN_M = 1000.0
"""How far each UTM zone part's grid of an AOI across zones reaches beyond a seam, metres in the
part's UTM CRS (``tasks.zones``; 1 km: a lake up to 1 km across the seam is seen whole; glacial
lakes longer than 2 km are few)."""
ZONE_MARGIN_M_BOUND = Bound(100.0, 20_000.0)
"""Metres: under 10 pixels a seam would cut nearly every lake on it; 20 km of margin on a 134 km
tall grid already adds 27 M px per seam."""
