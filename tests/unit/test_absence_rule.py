"""The absence rule: a lake is seen dry only where the scene saw all of it (db.identity.absent_lakes).

The footprint's edge is forgiven up to ``min_cover``; its holes (cloud, snow or ice, water below
the mapping unit with its ring) are not: a lake any part of which was hidden is not seen dry.
"""

from __future__ import annotations

from shapely.geometry import MultiPolygon, box

from db.identity import absent_lakes

SCENE = box(0, 0, 10_000, 10_000)  # UTM metres


def test_a_lake_inside_the_footprint_is_seen_dry() -> None:
    assert absent_lakes({1: box(100, 100, 400, 400)}, SCENE, 0.95) == [1]


def test_the_edge_of_the_scene_is_forgiven_up_to_min_cover() -> None:
    lakes = {1: box(9_700, 100, 10_010, 400), 2: box(9_800, 100, 10_200, 400)}  # 3 % / 50 % beyond the edge
    assert absent_lakes(lakes, SCENE, 0.95) == [1]


def test_a_hole_reaching_into_a_lake_keeps_it_from_being_seen_dry() -> None:
    """Two 10 m pixels of water left in a 300 m lake (0.07 % of it) with their ring: not dry."""
    trace = box(200, 200, 230, 220)  # the water pixels and their one-pixel ring
    footprint = SCENE.difference(trace)
    lakes = {1: box(100, 100, 400, 400), 2: box(1_000, 1_000, 1_300, 1_300)}
    assert absent_lakes(lakes, footprint, 0.95) == [2]


def test_a_hole_that_only_touches_a_lake_does_not_hide_it() -> None:
    footprint = MultiPolygon([SCENE.difference(box(400, 200, 430, 220))])
    assert absent_lakes({1: box(100, 100, 400, 400)}, footprint, 0.95) == [1]
