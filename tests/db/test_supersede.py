"""Reruns supersede: a new model's scenes replace the old ones; the old model's extra lake is gone
from the current inventory and from every as-of date, and its observations stay, as superseded.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
import sqlalchemy as sa

from db import queries
from db.engine import make_engine
from db.merge import ensure_aoi, merge_scene, stale_histories
from db.records import SceneResult
from tests import helpers as h

pytestmark = pytest.mark.db

AOI = "khumbu"
DAYS = (0, 20, 40)


def _scenes(model: str, with_false_lake: bool, *, supersede: bool = False) -> list[SceneResult]:
    """Three dates: a growing lake and a steady one; the old model also sees a lake that is not there."""
    out = []
    for i, day in enumerate(DAYS):
        lakes = [h.disc(0, 0, 200 + 40 * i), h.disc(2_000, 0, 150)]
        if with_false_lake:
            lakes.append(h.disc(-2_000, 2_000, 120))  # e.g. a shadow the old model took for water
        s = h.scene(f"{model}:{day}", day, lakes, aoi=AOI)
        out.append(replace(s, model_version=model, supersede=supersede))
    return out


def _history(engine: sa.Engine) -> list[tuple[object, ...]]:
    """Every lake's versions by place (rounded centroid): (lon, lat, from, to, kind, status, area)."""
    sql = sa.text(
        "SELECT round(l.centroid_lon::numeric, 4), round(l.centroid_lat::numeric, 4), lower(v.valid), "
        "upper(v.valid), v.change_kind, v.status, v.area_m2 FROM inventory.lake_version v "
        "JOIN inventory.lake l USING (lake_id) ORDER BY 1, 2, 3"
    )
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sql)]


def test_a_rerun_with_a_new_model_supersedes_the_old_results(
    engine: sa.Engine, pg_url_base: str, template_db: str
) -> None:
    ensure_aoi(engine, AOI, h.footprint(), h.UTM)
    for s in _scenes("model-a", with_false_lake=True):
        merge_scene(engine, s)
    before = queries.lakes_as_of(engine, None)
    reports = [merge_scene(engine, s) for s in _scenes("model-b", with_false_lake=False, supersede=True)]
    now = queries.lakes_as_of(engine, None)
    past = [queries.lakes_as_of(engine, h.T0 + timedelta(days=d, hours=1)) for d in DAYS]
    with engine.connect() as conn:
        statuses = dict(conn.execute(sa.text("SELECT status, count(*) FROM inventory.lake GROUP BY status")).all())
        kept = conn.execute(
            sa.text("SELECT count(*), count(DISTINCT superseded_by) FROM inventory.superseded_observations")
        ).one()
        series = conn.execute(
            sa.text(
                "SELECT count(*) FROM inventory.lake_area_series("
                "(SELECT min(lake_id) FROM inventory.lake WHERE status = 'active'))"
            )
        ).scalar_one()
    with h.fresh_database(pg_url_base, template_db) as url:
        clean = make_engine(url)
        try:
            ensure_aoi(clean, AOI, h.footprint(), h.UTM)
            for s in _scenes("model-b", with_false_lake=False):
                merge_scene(clean, s)
            expected, expected_now = _history(clean), queries.lakes_as_of(clean, None)
        finally:
            clean.dispose()

    h.write_report("supersede", {"lakes_before": len(before), "lakes_after": len(now), "kept_observations": kept[0]})
    assert len(before) == 3 and len(now) == 2 and all(len(f) == 2 for f in past)
    assert statuses == {"active": 2, "superseded": 1}
    assert kept == (9, 3)  # the old model's nine observations, replaced by the three rerun scenes
    assert series == 3  # one current observation per date (the superseded ones no longer count)
    assert _history(engine) == expected and sorted(now["area_m2"]) == sorted(expected_now["area_m2"])
    assert all(not r.noop for r in reports) and stale_histories(engine, AOI) == []


def test_a_second_rerun_of_the_same_scenes_is_a_no_op(engine: sa.Engine) -> None:
    ensure_aoi(engine, AOI, h.footprint(), h.UTM)
    for s in _scenes("model-a", with_false_lake=True):
        merge_scene(engine, s)
    for s in _scenes("model-b", with_false_lake=False, supersede=True):
        merge_scene(engine, s)
    content = h.content(engine)
    again = [merge_scene(engine, s) for s in _scenes("model-b", with_false_lake=False, supersede=True)]
    assert all(r.noop for r in again) and h.content(engine) == content


def test_a_zone_parts_scene_supersedes_that_parts_only(engine: sa.Engine) -> None:
    """An AOI across zones gets one scene per part of one S2 product: a rerun's parts do not
    supersede each other, each replaces its own part's earlier scene.
    """
    ensure_aoi(engine, AOI, h.footprint(), h.UTM)

    def part(s: SceneResult, name: str, model: str, supersede: bool) -> SceneResult:
        return replace(
            s,
            scene_key=f"{model}:{name}",
            model_version=model,
            inputs={**s.inputs, "zone_part": name},
            supersede=supersede,
        )

    west, east = h.scene("w", 0, [h.disc(-2_000, 0, 150)], aoi=AOI), h.scene("e", 0, [h.disc(2_000, 0, 150)], aoi=AOI)
    for s, name in ((west, "32644"), (east, "32645")):
        merge_scene(engine, part(s, name, "model-a", False))
    for s, name in ((west, "32644"), (east, "32645")):
        merge_scene(engine, part(s, name, "model-b", True))
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT s.scene_key, n.scene_key FROM inventory.scene s "
                "LEFT JOIN inventory.scene n ON n.scene_id = s.superseded_by ORDER BY s.scene_key"
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("model-a:32644", "model-b:32644"),
        ("model-a:32645", "model-b:32645"),
        ("model-b:32644", None),
        ("model-b:32645", None),
    ]
