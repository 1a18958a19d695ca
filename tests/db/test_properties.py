"""I5: merge properties over generated scene batches (hypothesis).

Each example: 1–4 lake sites, 2–5 scenes on distinct days; per scene and site the lake is seen
(an ellipse or rectangle around the site, semi-axes 0.7–1.4 × the site's radius, so consecutive
outlines always overlap enough to be one lake, while the area changes enough to make versions),
seen dry, or hidden by cloud (a hole in the valid footprint). Properties, compared on content
(ids and creation stamps excluded):

* merging the batch twice equals merging it once;
* merging it in any order equals merging it in sensing order.

Examples share the test's database; each uses its own AOIs (lakes never cross AOIs).
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely import affinity
from shapely.geometry import MultiPolygon, Point, box

from db.engine import make_engine
from db.merge import ensure_aoi, merge_scene
from db.records import SceneResult
from tests import helpers as h

pytestmark = pytest.mark.db

SPACING = 2_000.0  # m between sites: lakes (≤ 1.4 × 250 m) never touch
SEEN, DRY, CLOUD = "seen", "dry", "cloud"

_outline = st.tuples(
    st.sampled_from(("ellipse", "rect")),
    st.floats(0.7, 1.4),  # semi-axis x / site radius
    st.floats(0.7, 1.4),  # semi-axis y / site radius
    st.floats(-0.05, 0.05),  # centre shift / site radius
    st.floats(-0.05, 0.05),
)
_state = st.one_of(st.just((DRY,)), st.just((CLOUD,)), _outline.map(lambda o: (SEEN, *o)))


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[float], list[int], list[list[tuple]]]:  # type: ignore[type-arg]
    """(site radii m, scene days, per scene a state per site)."""
    radii = draw(st.lists(st.floats(60.0, 250.0), min_size=1, max_size=4))
    days = draw(st.lists(st.integers(0, 400), min_size=2, max_size=5, unique=True))
    states = [draw(st.lists(_state, min_size=len(radii), max_size=len(radii))) for _ in days]
    return radii, days, states


def _site(i: int) -> tuple[float, float]:
    return (i % 2) * SPACING - SPACING / 2, (i // 2) * SPACING - SPACING / 2


State = tuple  # (SEEN, kind, ax, ay, sx, sy) | (DRY,) | (CLOUD,)


def build(aoi: str, radii: list[float], days: list[int], states: list[list[State]]) -> list[SceneResult]:
    """The batch as scenes of ``aoi`` (keys prefixed by it), in the order of ``days``."""
    scenes = []
    for day, row in zip(days, states, strict=True):
        lakes, holes = [], []
        for i, (r, state) in enumerate(zip(radii, row, strict=True)):
            x, y = _site(i)
            if state[0] == SEEN:
                kind, ax, ay, sx, sy = state[1:]
                centre = Point(h.X0 + x + sx * r, h.Y0 + y + sy * r)
                shape = centre.buffer(1.0, quad_segs=16) if kind == "ellipse" else box(*centre.buffer(1.0).bounds)
                lakes.append(h.observed(affinity.scale(shape, ax * r, ay * r)))
            elif state[0] == CLOUD:
                half = 1.5 * r + 50.0
                holes.append(box(h.X0 + x - half, h.Y0 + y - half, h.X0 + x + half, h.Y0 + y + half))
        outline = box(h.X0 - 5_000, h.Y0 - 5_000, h.X0 + 5_000, h.Y0 + 5_000)
        for hole in holes:
            outline = outline.difference(hole)
        valid = MultiPolygon([h.lonlat(outline)])
        scenes.append(h.scene(f"{aoi}:{day}", day, lakes, aoi=aoi, valid=valid))
    return scenes


def test_merging_twice_or_out_of_order_equals_merging_once_in_order(pg_url_base: str, template_db: str) -> None:
    """Each example in two fresh databases (in order, then shuffled): identity is spatial, so the
    two arrival orders must not meet each other's lakes.
    """
    counter = itertools.count()
    figures = {"examples": 0, "scenes_merged": 0, "rows_differing_1x_vs_2x": 0, "out_of_order_mismatches": 0}

    @settings(
        max_examples=25,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(batch=batches(), data=st.data())
    def check(batch: tuple, data: st.DataObject) -> None:  # type: ignore[type-arg]
        radii, days, states = batch
        n = next(counter)
        in_order, shuffled = f"p{n}-a", f"p{n}-b"
        order = sorted(range(len(days)), key=lambda k: days[k])
        reference = build(in_order, radii, [days[k] for k in order], [states[k] for k in order])
        permutation = data.draw(st.permutations(range(len(days))), label="arrival order")
        with h.fresh_database(pg_url_base, template_db) as url_a, h.fresh_database(pg_url_base, template_db) as url_b:
            engine, other = make_engine(url_a), make_engine(url_b)
            try:
                ensure_aoi(engine, in_order, h.footprint(), h.UTM)
                for s in reference:
                    merge_scene(engine, s)
                once, counts_once = h.content(engine), h.row_counts(engine)
                again = [merge_scene(engine, s) for s in reference]
                twice, counts_twice = h.content(engine), h.row_counts(engine)

                ensure_aoi(other, shuffled, h.footprint(), h.UTM)
                for s in build(shuffled, radii, [days[k] for k in permutation], [states[k] for k in permutation]):
                    merge_scene(other, s)
                arrived = h.content(other)
            finally:
                engine.dispose()
                other.dispose()

        figures["examples"] += 1
        figures["scenes_merged"] += 3 * len(days)
        figures["rows_differing_1x_vs_2x"] += sum(abs(counts_twice[t] - counts_once[t]) for t in counts_once)
        figures["out_of_order_mismatches"] += arrived != once
        assert all(r.noop for r in again)
        assert twice == once and counts_twice == counts_once
        assert arrived == once, {t: (arrived[t], once[t]) for t in once if arrived[t] != once[t]}

    check()
    h.write_report("properties", figures)
    assert figures["examples"] >= 20
    assert figures["rows_differing_1x_vs_2x"] == figures["out_of_order_mismatches"] == 0
