"""What the tests share: inventory scenes, content digests, throw-away databases, reports, real data, processes.

One module a concept (``scenes``, ``digests``, ``database``, ``reports``, ``realdata``, ``processes``); this
package re-exports their names so a test module can ``from tests import helpers as h``.
May import: the product packages and the test libraries; never a test module.
"""

from __future__ import annotations

from tests.helpers import realdata
from tests.helpers.database import admin_sql, free_port, fresh_database
from tests.helpers.digests import TABLES, content, row_counts
from tests.helpers.processes import alive, children, is_prefect_server
from tests.helpers.reports import REPORTS, write_report
from tests.helpers.scenes import (
    T0,
    UTM,
    X0,
    Y0,
    disc,
    east_footprint,
    ellipse,
    footprint,
    lonlat,
    observed,
    overlapping,
    scenario,
    scene,
    utm,
)

__all__ = [
    "REPORTS",
    "T0",
    "TABLES",
    "UTM",
    "X0",
    "Y0",
    "admin_sql",
    "alive",
    "children",
    "content",
    "disc",
    "east_footprint",
    "ellipse",
    "footprint",
    "free_port",
    "fresh_database",
    "is_prefect_server",
    "lonlat",
    "observed",
    "overlapping",
    "realdata",
    "row_counts",
    "scenario",
    "scene",
    "utm",
    "write_report",
]
