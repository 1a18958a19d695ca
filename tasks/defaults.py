"""Pipeline parameter defaults: the one definition of each.

``flows.settings.Settings`` (the documented ``GLACIAL_LAKES_*`` defaults), the CLI options and
the stage functions' keyword defaults all read these names, so a default is changed here only.
A test (``tests/unit/test_settings.py``) checks that the settings and the stages agree.

This module is a leaf: it imports nothing.
"""

from __future__ import annotations

__all__ = ["MAX_PAIR_DAYS", "MIN_LAKE_AREA_M2", "WATER_THRESHOLD"]

WATER_THRESHOLD = 0.5
"""Water probability at or above which a pixel is mapped as water (0–1)."""

MIN_LAKE_AREA_M2 = 5000.0
"""Smallest mapped lake, m² in the scene's UTM CRS (0.5 ha: 50 pixels of 10 m)."""

MAX_PAIR_DAYS = 7.0
"""Largest gap between a Sentinel-2 scene and its Sentinel-1 partner, days."""
