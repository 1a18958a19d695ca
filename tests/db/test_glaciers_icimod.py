"""The real ICIMOD 2015 inventory (3,609 lakes) as a baseline, with the real RGI 6 Everest outlines.

The outlines cover only the Khumbu (the sample's extent), so they are imported with coverage
``extent``: the lakes there get distances and types, every other lake is ``unknown`` (the
outlines say nothing about their glaciers). A second import claiming the whole AOI measures the
rule on every lake. The shares of each type and the query times go to the test report.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from db.glaciers import LAKE_TYPES, import_glaciers
from db.importer import import_inventory
from db.lake_types import mapping_for
from db.schema import SCHEMA
from tests import helpers as h

pytestmark = [pytest.mark.db, pytest.mark.slow]

ICIMOD = ("icimod_glacial_lakes_2015", "GL_3basins_2015.geojson")
RGI6_EVEREST = ("geoutils_glacier_samples", "15_rgi60_glacier_outlines.gpkg")
_SHARES = f"""
SELECT c.lake_type, count(*), count(c.glacier_distance_m), avg(c.glacier_distance_m)
FROM {SCHEMA}.lake_glacier_context AS c GROUP BY c.lake_type ORDER BY c.lake_type
"""
_CROSS = f"""
SELECT o.attributes ->> 'Type', c.lake_type, count(*)
FROM {SCHEMA}.lake_glacier_context AS c
JOIN {SCHEMA}.lake_observation AS o ON o.lake_id = c.lake_id
WHERE c.lake_type <> 'unknown'
GROUP BY 1, 2 ORDER BY 1, 2
"""


def _shares(engine: sa.Engine) -> tuple[dict[str, dict[str, float]], float]:
    started = time.monotonic()
    with engine.connect() as conn:
        rows = conn.execute(sa.text(_SHARES)).all()
    took = time.monotonic() - started
    total = sum(int(r[1]) for r in rows)
    shares = {
        str(t): {"lakes": int(n), "share": round(int(n) / total, 4), "with_distance": int(d), "mean_m": m and round(m)}
        for t, n, d, m in rows
    }
    return shares, round(took, 2)


def test_icimod_2015_lakes_all_typed_with_the_rgi6_outlines(engine: sa.Engine, realdata: Path) -> None:
    report = import_inventory(
        engine, realdata.joinpath(*ICIMOD), aoi_name="icimod-2015", when=datetime(2015, 10, 1, tzinfo=UTC)
    )
    rgi = realdata.joinpath(*RGI6_EVEREST)
    partial = import_glaciers(engine, rgi, aoi_name="icimod-2015", coverage="extent")
    extent_shares, extent_s = _shares(engine)
    with engine.connect() as conn:
        cross = [(t, lt, int(n)) for t, lt, n in conn.execute(sa.text(_CROSS))]
        current = conn.execute(sa.text(f"SELECT count(*), count(lake_type) FROM {SCHEMA}.current_lakes")).one()
    covered = sum(n for _, _, n in cross)
    agree = sum(n for code, lake_type, n in cross if code in mapping_for(lake_type, "icimod").classes)
    whole = import_glaciers(engine, rgi, aoi_name="icimod-2015", coverage="aoi")  # same source: replaces
    aoi_shares, aoi_s = _shares(engine)
    figures = {
        "lakes": report.lakes,
        "rgi6_outlines_in_aoi": partial.glaciers,
        "coverage_extent": {"shares": extent_shares, "query_s": extent_s},
        "coverage_extent_icimod_type_vs_lake_type": cross,
        "coverage_extent_icimod_code_within_mapping": {"lakes": covered, "agree": agree},
        "coverage_aoi": {"shares": aoi_shares, "query_s": aoi_s},
    }
    h.write_report("glaciers_icimod", figures)
    for label, shares in (("coverage extent", extent_shares), ("coverage aoi", aoi_shares)):
        print(label, {t: f"{s['lakes']} ({s['share']:.1%})" for t, s in shares.items()})  # pytest -s shows it

    assert report.lakes == 3609 == current[0] == current[1]  # every lake has a type
    assert sum(s["lakes"] for s in extent_shares.values()) == 3609 and set(extent_shares) <= set(LAKE_TYPES)
    assert covered == sum(s["lakes"] for t, s in extent_shares.items() if t != "unknown")
    assert covered >= 42 and all(s["with_distance"] == s["lakes"] for t, s in extent_shares.items() if t != "unknown")
    assert extent_shares["unknown"]["with_distance"] == 0
    # Most of ICIMOD's own supraglacial lakes (I(s)) in the covered part lie on, or touch, an RGI 6
    # outline (the rest: outlines of ~2000 against lakes of 2015, and the outlines' generalisation).
    supra = {lt: n for t, lt, n in cross if t == "I(s)"}
    assert supra.get("supraglacial", 0) + supra.get("proglacial_contact", 0) > 0.6 * sum(supra.values())
    # The mapping table holds for most covered lakes (the rest: RGI outlines of ~2000, lakes of 2015).
    assert agree >= 0.75 * covered
    assert whole.replaced == partial.glaciers and "unknown" not in aoi_shares
    assert all(s["with_distance"] == s["lakes"] for s in aoi_shares.values())
