"""GLOF screening on the real ICIMOD 2015 inventory (3,609 lakes) with the RGI 6 Everest outlines.

One epoch: no lake has a growth series (one observation each) and an imported inventory has no
slope, so no rule may fire; the candidates that pass the area and distance filters are counted
to show that the growth criterion is what holds them back. The time of one full read of the views
goes to the test report (the cost of computing the flags when read).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from db.glaciers import import_glaciers
from db.importer import import_inventory
from db.schema import SCHEMA
from tests import helpers as h

pytestmark = [pytest.mark.db, pytest.mark.slow]

ICIMOD = ("icimod_glacial_lakes_2015", "GL_3basins_2015.geojson")
RGI6_EVEREST = ("geoutils_glacier_samples", "15_rgi60_glacier_outlines.gpkg")
_CANDIDATES = f"""
SELECT count(*) FROM {SCHEMA}.lake_glacier_context AS c JOIN {SCHEMA}.lake AS l USING (lake_id)
WHERE l.area_m2 >= 100000 AND c.glacier_distance_m <= 500
"""


def test_one_epoch_flags_nothing_and_reads_fast(engine: sa.Engine, realdata: Path) -> None:
    import_inventory(engine, realdata.joinpath(*ICIMOD), aoi_name="icimod-2015", when=datetime(2015, 10, 1, tzinfo=UTC))
    import_glaciers(engine, realdata.joinpath(*RGI6_EVEREST), aoi_name="icimod-2015", coverage="extent")
    with engine.connect() as conn:
        candidates = int(conn.execute(sa.text(_CANDIDATES)).scalar_one())
        started = time.monotonic()
        screened = int(conn.execute(sa.text(f"SELECT count(*) FROM {SCHEMA}.glof_screening")).scalar_one())
        screening_s = time.monotonic() - started
        started = time.monotonic()
        flagged = conn.execute(sa.text(f"SELECT lake_id, rules FROM {SCHEMA}.glof_flagged_lakes")).all()
        flagged_s = time.monotonic() - started
    # Worst case of the glacier search: the outlines claimed for the whole AOI (every lake typed,
    # most 100-400 km away); only the lakes passing the area filter are searched.
    import_glaciers(engine, realdata.joinpath(*RGI6_EVEREST), aoi_name="icimod-2015", coverage="aoi")
    with engine.connect() as conn:
        started = time.monotonic()
        screened_aoi = int(conn.execute(sa.text(f"SELECT count(*) FROM {SCHEMA}.glof_screening")).scalar_one())
        screening_aoi_s = time.monotonic() - started
    h.write_report(
        "glof_icimod",
        {
            "lakes": 3609,
            "candidates_area_and_distance": candidates,
            "screening_rows": screened,
            "read_glof_screening_s": round(screening_s, 2),
            "read_glof_flagged_lakes_s": round(flagged_s, 2),
            "coverage_aoi_read_glof_screening_s": round(screening_aoi_s, 2),
        },
    )
    assert candidates > 0  # large lakes near the Khumbu glaciers exist …
    assert (
        screened == screened_aoi == 0 and flagged == []
    )  # … but one epoch is no growth series, and imports carry no slope
