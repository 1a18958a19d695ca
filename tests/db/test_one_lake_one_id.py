"""One lake, one id: overlapping AOIs see and update the same lakes, and exports list each once.

Two AOIs over one ground: ``khumbu`` (the scenario's 10 km square, five lake sites) and
``khumbu-east`` (its east part, three of the sites), both processing the same acquisitions
(:func:`tests.helpers.overlapping`). Also the migration of an inventory written before identity
was spatial (each AOI with its own copy of the shared lakes).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from db import migrate, queries
from db.engine import make_engine
from db.merge import ensure_aoi, merge_scene, stale_histories
from db.records import SceneResult
from tests import helpers as h

pytestmark = pytest.mark.db

WEST, EAST = "khumbu", "khumbu-east"


def _interleaved() -> list[SceneResult]:
    """Both AOIs' scenes, by date (the west one first on each date)."""
    pairs = zip(h.scenario(WEST), h.overlapping(EAST), strict=True)
    return [s for pair in pairs for s in pair]


def _register(engine: sa.Engine, aois: Sequence[str] = (WEST, EAST)) -> None:
    outlines = {WEST: h.footprint(), EAST: h.east_footprint()}
    for name in aois:
        ensure_aoi(engine, name, outlines[name], h.UTM)


@contextmanager
def _database(pg_url_base: str, template: str | None) -> Iterator[sa.Engine]:
    with h.fresh_database(pg_url_base, template) as url:
        engine = make_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


def _current(engine: sa.Engine, aoi: str | None = None) -> list[tuple[object, ...]]:
    """Current lakes as (rounded centroid, change kind, valid from, area m², outline WKB), sorted."""
    frame = queries.lakes_as_of(engine, None, aoi=aoi)
    rows = zip(
        frame["centroid_lon"].round(5),
        frame["centroid_lat"].round(5),
        frame["change_kind"],
        frame["valid_from"],
        frame["area_m2"],
        frame.geometry.to_wkb(),
        strict=True,
    )
    return sorted(rows)


def test_overlapping_aois_share_their_lakes(engine: sa.Engine, pg_url_base: str, template_db: str) -> None:
    _register(engine)
    reports = [merge_scene(engine, s) for s in _interleaved()]
    east_new = sum(r.new_lakes for r in reports if r.scene_key.startswith("e"))
    with engine.connect() as conn:
        lakes = conn.execute(sa.text("SELECT count(*) FROM inventory.lake")).scalar_one()
        # Observations of each lake by AOI: the east sites are observed by the scenes of both.
        seen_by = dict(
            conn.execute(
                sa.text(
                    "SELECT o.lake_id, count(DISTINCT s.aoi_id) FROM inventory.lake_observation o "
                    "JOIN inventory.scene s USING (scene_id) GROUP BY o.lake_id"
                )
            ).all()
        )
    with _database(pg_url_base, template_db) as alone:
        _register(alone, (WEST,))
        for s in h.scenario(WEST):
            merge_scene(alone, s)
        reference = _current(alone)

    everything, west, east = _current(engine), _current(engine, WEST), _current(engine, EAST)
    assert lakes == 5 and east_new == 0  # the east AOI found no lake of its own: all five are shared
    assert sorted(seen_by.values()) == [1, 1, 2, 2, 2]
    assert everything == west == reference  # each lake once, with the history one AOI alone gives
    assert len(east) == 3 and set(east) <= set(everything)
    frame = queries.lakes_as_of(engine, None)
    assert frame["lake_id"].is_unique
    assert sorted(frame["aoi_names"].value_counts().items()) == [(WEST, 2), (f"{WEST},{EAST}", 3)]
    assert stale_histories(engine, WEST) == [] and stale_histories(engine, EAST) == []


def test_arrival_order_across_aois_does_not_matter(pg_url_base: str, template_db: str) -> None:
    scenes = _interleaved()
    contents = []
    for order in (scenes, scenes[::-1], sorted(scenes, key=lambda s: (s.aoi_name != EAST, s.sensing_time))):
        with _database(pg_url_base, template_db) as engine:
            _register(engine)
            for s in order:
                merge_scene(engine, s)
            contents.append(h.content(engine))
    assert contents[0] == contents[1] == contents[2]


# -- migration of per-AOI copies ----------------------------------------------------------------

_TABLES = ("aoi", "scene", "lake", "lake_observation", "lake_version", "lake_lineage")
_OFFSETS = {"aoi_id": 1_000, "scene_id": 1_000_000, "lake_id": 1_000_000, "observation_id": 10**8, "version_id": 10**8}
_ID_COLUMNS = {**{k: k for k in _OFFSETS}, "parent_lake_id": "lake_id", "child_lake_id": "lake_id"}


def _copy_into(source: sa.Engine, target: sa.Engine) -> None:
    """Every row of ``source``'s inventory into ``target``'s, ids shifted (both at 0005)."""
    meta = sa.MetaData(schema="inventory")
    meta.reflect(target, only=list(_TABLES))
    with source.connect() as src, target.begin() as dst:
        for name in _TABLES:
            table = meta.tables[f"inventory.{name}"]
            rows = [dict(r._mapping) for r in src.execute(sa.select(table))]
            for row in rows:
                for column, kind in _ID_COLUMNS.items():
                    if row.get(column) is not None:
                        row[column] += _OFFSETS[kind]
                if name == "aoi":
                    row["name"] = EAST
            if rows:
                dst.execute(sa.insert(table), rows)
        identities = (("aoi", "aoi_id"), ("scene", "scene_id"), ("lake", "lake_id"))
        for name, column in (*identities, ("lake_observation", "observation_id"), ("lake_version", "version_id")):
            dst.execute(
                sa.text(
                    f"SELECT setval(pg_get_serial_sequence('inventory.{name}', '{column}'), "
                    f"(SELECT max({column}) FROM inventory.{name}))"
                )
            )


def test_upgrade_merges_lakes_copied_per_aoi(pg_url_base: str) -> None:
    """Each AOI's copy written as the per-AOI identity did, then upgraded: one lake a site, and the
    inventory a fresh database gets from merging both AOIs' scenes today.
    """
    with _database(pg_url_base, None) as west, _database(pg_url_base, None) as east:
        for engine, name, scenes in ((west, WEST, h.scenario(WEST)), (east, EAST, h.overlapping(EAST))):
            migrate.upgrade(engine.url.render_as_string(hide_password=False), "head")
            _register(engine, (name,))
            for s in scenes:
                merge_scene(engine, s)
            migrate.downgrade(engine.url.render_as_string(hide_password=False), "0005_geometry_validity_triggers")
        _copy_into(east, west)
        with west.connect() as conn:
            before = conn.execute(sa.text("SELECT count(*) FROM inventory.lake")).scalar_one()
        migrate.upgrade(west.url.render_as_string(hide_password=False), "head")
        with west.connect() as conn:
            after = conn.execute(sa.text("SELECT count(*) FROM inventory.lake")).scalar_one()
        migrated = h.content(west)
        stale = stale_histories(west, WEST)

        with _database(pg_url_base, None) as clean:
            migrate.upgrade(clean.url.render_as_string(hide_password=False), "head")
            _register(clean)
            for s in _interleaved():
                merge_scene(clean, s)
            expected = h.content(clean)

    h.write_report("one_lake_one_id", {"migration": {"lakes_before": before, "lakes_after": after}})
    assert (before, after) == (5 + 3, 5) and stale == []
    assert migrated == expected, {t: (migrated[t], expected[t]) for t in expected if migrated[t] != expected[t]}
