"""``glacial-lakes map``: the HTML map in headless Chromium, the static PNG, growth colours, bad input.

The inventory is real PostGIS: the first four scenes of the shared scenario (a growing lake, one
that drains and is gone by then, a lake born in scene 2, a steady one, one hidden by cloud once).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from PIL import Image
from shapely.geometry import Point

from db.engine import make_engine
from db.importer import import_inventory
from db.merge import ensure_aoi, merge_scene
from db.queries import lakes_as_of
from db.schema import SCHEMA
from flows.cli import main
from flows.map_style import CHANGE_COLOURS
from tests import helpers as h
from tests.helpers.chromium import browser, chromium_binary

pytestmark = pytest.mark.db

AOI = "khumbu"


@pytest.fixture(scope="module")
def inventory(pg_url_base: str, template_db: str) -> Iterator[str]:
    """URL of a database holding the scenario's first four scenes (read only by the tests)."""
    with h.fresh_database(pg_url_base, template_db) as url:
        engine = make_engine(url)
        try:
            ensure_aoi(engine, AOI, h.footprint(), h.UTM)
            for s in h.scenario(AOI)[:4]:
                merge_scene(engine, s)
        finally:
            engine.dispose()
        yield url


def _draw(url: str, tmp_path: Path, *args: str) -> tuple[int, str]:
    env = {"DATABASE_URL": url, "GLACIAL_LAKES_HOME": str(tmp_path / "home")}
    result = CliRunner().invoke(main, ["map", *args], env=env)
    return result.exit_code, result.output


def _count(url: str, sql: str, **params: object) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(sql), params).scalar_one())
    finally:
        engine.dispose()


def _lake_at(url: str, dx: float, dy: float) -> int:
    point = h.lonlat(Point(h.X0 + dx, h.Y0 + dy))
    sql = f"SELECT lake_id FROM {SCHEMA}.lake WHERE ST_Intersects(geom, ST_GeomFromText(:p, 4326))"
    return _count(url, sql, p=point.wkt)


def _map_data(path: Path) -> dict:  # type: ignore[type-arg]
    text = path.read_text()
    found = re.search(r"<script type='application/json' id='map-data'>(.*?)</script>", text, re.S)
    assert found is not None
    return json.loads(found.group(1))  # type: ignore[no-any-return]


@pytest.mark.slow
def test_the_html_map_renders_in_headless_chromium(inventory: str, tmp_path: Path) -> None:
    if chromium_binary() is None:
        pytest.skip("no chromium binary (Debian package 'chromium'; CI installs it)")
    out = tmp_path / "map.html"
    code, output = _draw(inventory, tmp_path, "--out", str(out), "--aoi", AOI)
    assert code == 0, output
    lakes = _count(inventory, f"SELECT count(*) FROM {SCHEMA}.lake")
    gone = _count(inventory, f"SELECT count(*) FROM {SCHEMA}.lake WHERE status <> 'active'")
    assert lakes == 5 and gone == 1  # the drained lake is drawn too
    assert output.startswith(f"{lakes} lakes drawn to ")
    text = out.read_text()
    assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:|//)""", text), "the page must not load anything"

    grown = _lake_at(inventory, 0, 0)
    series_sql = f"SELECT count(*) FROM {SCHEMA}.lake_area_timeseries WHERE lake_id = :l"
    observations = _count(inventory, series_sql, l=grown)
    with browser() as page:
        page.send("Network.enable")
        page.open(out)
        assert page.errors() == []
        requests = [e["params"]["request"]["url"] for e in page.events if e["method"] == "Network.requestWillBeSent"]
        assert all(u.startswith(("file:", "data:")) for u in requests), requests
        assert page.evaluate("document.documentElement.getAttribute('data-lakes-drawn')") == str(lakes)
        assert page.evaluate("document.querySelectorAll('svg#map path.lake').length") == lakes

        image = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB")).astype(int)
        background = np.array([0xFB, 0xFB, 0xF8])
        assert (np.abs(image - background).sum(axis=2) > 30).mean() > 0.002, "screenshot is (nearly) blank"
        new_colour = np.array([int(CHANGE_COLOURS["new"][i : i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(image - new_colour).sum(axis=2) < 12).sum() > 20, "no lake drawn in the 'new' colour"

        # A real click on the growing lake: its popup names it and charts its series.
        box = page.evaluate(
            f"(() => {{ const r = document.querySelector('path.lake[data-lake-id=\"{grown}\"]')"
            ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        hit = page.evaluate(f"document.elementFromPoint({box[0]}, {box[1]}).getAttribute('data-lake-id')")
        assert hit == str(grown)
        assert page.evaluate("getComputedStyle(document.getElementById('popup')).display") == "none"
        page.click(*box)
        assert page.evaluate("getComputedStyle(document.getElementById('popup')).display") == "block"
        popup = page.evaluate("document.getElementById('popup').textContent")
        assert f"lake {grown}" in popup
        keys = page.evaluate("[...document.querySelectorAll('#popup td.k')].map(e => e.textContent)")
        export_columns = [c for c in lakes_as_of_columns(inventory) if c != "geom"]
        assert keys == export_columns
        assert page.evaluate("document.querySelectorAll('#popup svg.series circle.obs').length") == observations
        assert page.errors() == []

        # The wheel zooms in about the pointer: the view gets narrower.
        width = "+document.getElementById('map').getAttribute('viewBox').split(' ')[2]"
        before = page.evaluate(width)
        page.send("Input.dispatchMouseEvent", type="mouseWheel", x=500, y=375, deltaX=0, deltaY=-300)
        assert page.evaluate(width) < before * 0.8

        # The error check itself sees a failing page.
        broken = tmp_path / "broken.html"
        broken.write_text("<html><body><script>console.error('x'); undefined_name();</script></body></html>")
        page.open(broken)
        assert len(page.errors()) == 2


def lakes_as_of_columns(url: str) -> list[str]:
    engine = make_engine(url)
    try:
        return list(lakes_as_of(engine, None, AOI).columns)
    finally:
        engine.dispose()


def test_the_png_map_has_the_lakes_in_their_colours(inventory: str, tmp_path: Path) -> None:
    out = tmp_path / "map.png"
    code, output = _draw(inventory, tmp_path, "--out", str(out))
    assert code == 0, output
    image = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert image.shape == (800, 800, 3)
    for kind in ("new", "grown", "disappeared"):
        colour = np.array([int(CHANGE_COLOURS[kind][i : i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(image - colour).sum(axis=2) < 9).sum() > 20, kind
    shrunk = np.array([int(CHANGE_COLOURS["shrunk"][i : i + 2], 16) for i in (1, 3, 5)])
    assert not (np.abs(image - shrunk).sum(axis=2) < 9).any()


def test_growth_colours_the_growing_lake_up_and_the_drained_one_down(inventory: str, tmp_path: Path) -> None:
    out = tmp_path / "growth.html"
    code, output = _draw(inventory, tmp_path, "--out", str(out), "--colour", "growth")
    assert code == 0, output
    data = _map_data(out)
    by_id = {lake["id"]: lake for lake in data["lakes"]}
    assert by_id[_lake_at(inventory, 0, 0)]["cls"] == "≥ +20 %"
    assert by_id[_lake_at(inventory, 2_000, 0)]["cls"] == "≤ −20 %"
    steady = by_id[_lake_at(inventory, -2_000, 1_000)]["cls"]
    if "previous version" in data["legend"]["title"]:  # the inventory's figure: one version, none before it
        assert steady == "unknown"
    else:  # from the series: boundary noise only
        assert steady == "−5 … +5 %" and "lake_area_timeseries" in data["legend"]["title"]
    assert sum(e["count"] for e in data["legend"]["entries"]) == len(data["lakes"]) == 5


def test_as_of_draws_the_inventory_of_that_date(inventory: str, tmp_path: Path) -> None:
    out = tmp_path / "early.html"
    day = (h.T0).date().isoformat()  # scene 0 only: four lakes, the one born in scene 2 not yet
    code, output = _draw(inventory, tmp_path, "--out", str(out), "--as-of", day)
    assert code == 0, output
    data = _map_data(out)
    assert len(data["lakes"]) == 4
    assert _lake_at(inventory, 0, 2_500) not in {lake["id"] for lake in data["lakes"]}
    assert all(len(lake["series"]) == 1 for lake in data["lakes"])  # observations up to that day only

    later = tmp_path / "later.html"  # scene 2 saw the drained lake dry: it is drawn as disappeared
    day = (h.T0 + timedelta(days=30)).date().isoformat()
    code, output = _draw(inventory, tmp_path, "--out", str(later), "--as-of", day)
    assert code == 0, output
    data = _map_data(later)
    status = data["columns"].index("status")
    drained = next(lake for lake in data["lakes"] if lake["id"] == _lake_at(inventory, 2_000, 0))
    assert drained["attrs"][status] == "disappeared" and drained["cls"] == "disappeared"
    assert len(data["lakes"]) == 5


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--aoi", "nowhere"], "--aoi 'nowhere'"),
        (["--as-of", "2023-13-01"], "--as-of"),
        (["--colour", "rainbow"], "--colour"),
    ],
)
def test_bad_input_exits_2_with_one_line(inventory: str, tmp_path: Path, args: list[str], names: str) -> None:
    code, output = _draw(inventory, tmp_path, "--out", str(tmp_path / "m.html"), *args)
    assert code == 2 and names in output and len(output.strip().splitlines()) == 1, output
    assert not (tmp_path / "m.html").exists()


def test_bad_out_exits_2_with_one_line(inventory: str, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for out in (tmp_path / "m.svg", blocker / "m.html"):
        code, output = _draw(inventory, tmp_path, "--out", str(out))
        assert code == 2 and "--out" in output and len(output.strip().splitlines()) == 1, output


MAX_BYTES_PER_LAKE = 450
"""Size budget of the HTML map per lake (ICIMOD 2015: about 410 B a lake, page included, with the twelve
attributes and the five glacier-context columns of every export row; 30 B of those are the context of a
lake no glacier outlines cover)."""


@pytest.mark.slow
def test_the_icimod_inventory_fits_one_small_page(
    db_url: str, engine: sa.Engine, tmp_path: Path, realdata: Path
) -> None:
    """3,609 real lakes (ICIMOD 2015, three basins, 855 km across) imported as a baseline: all drawn
    in Chromium, the file within the size budget.
    """
    import_inventory(
        engine,
        realdata / "icimod_glacial_lakes_2015" / "GL_3basins_2015.geojson",
        aoi_name="icimod-2015",
        when=datetime(2015, 10, 1, tzinfo=UTC),
    )
    lakes = _count(db_url, f"SELECT count(*) FROM {SCHEMA}.lake")
    assert lakes == 3609
    out = tmp_path / "icimod.html"
    code, output = _draw(db_url, tmp_path, "--out", str(out))
    assert code == 0, output
    assert out.stat().st_size < MAX_BYTES_PER_LAKE * lakes, out.stat().st_size
    if chromium_binary() is None:
        pytest.skip("no chromium binary (Debian package 'chromium'; CI installs it)")
    with browser() as page:
        page.open(out)
        assert page.evaluate("document.querySelectorAll('svg#map path.lake').length") == lakes
        assert page.errors() == []


def test_growth_reads_the_lake_growth_view_where_the_schema_has_one(
    db_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    """The current map takes the inventory's own figure (``lake_growth.area_change_pct``) over the
    series: a schema without that view gets a stand-in whose figures the series would not give.
    """
    ensure_aoi(engine, AOI, h.footprint(), h.UTM)
    for s in h.scenario(AOI)[:4]:
        merge_scene(engine, s)
    with engine.begin() as conn:
        stand_in = conn.execute(sa.text(f"SELECT to_regclass('{SCHEMA}.lake_growth')")).scalar_one() is None
        if stand_in:
            conn.execute(
                sa.text(
                    f"CREATE VIEW {SCHEMA}.lake_growth AS SELECT lake_id, "
                    f"CASE WHEN status = 'active' THEN 7.5 END AS area_change_pct FROM {SCHEMA}.lake"
                )
            )
    out = tmp_path / "growth.html"
    code, output = _draw(db_url, tmp_path, "--out", str(out), "--colour", "growth")
    assert code == 0, output
    data = _map_data(out)
    assert data["legend"]["title"].startswith("area change vs previous version (%")
    by_id = {lake["id"]: lake["cls"] for lake in data["lakes"]}
    grown, drained = _lake_at(db_url, 0, 0), _lake_at(db_url, 2_000, 0)
    if stand_in:
        assert by_id[grown] == "+5 … +20 %" and by_id[drained] == "unknown"
    else:  # the real view: 290 m after 260 m radius is +24 %; the drained lake lost its water
        assert by_id[grown] == "≥ +20 %" and by_id[drained] == "≤ −20 %"
