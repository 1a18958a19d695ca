"""The README's SQL cookbook and the GLOF screening, against the demo inventory.

One module fixture: the 256 px demo catalog through ``update_inventory``, the demo's glacier
outlines imported and a small baseline inventory (two truth lakes, one year earlier) imported, as
the README's cookbook says; the GLOF rules keep their published defaults.
Every ```sql block of the README whose first line is ``-- cookbook: NAME`` runs as written and
its rows are checked against figures computed here from the generator's truth or the inventory's
tables; a block without a check (or a check without a block) fails.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import geopandas as gpd
import pytest
import sqlalchemy as sa

from core.errors import InputError
from db import glof
from db.engine import make_engine
from db.importer import import_inventory
from demo.synthetic import DemoCatalog, generate_demo_catalog, load_truth
from flows.demo import import_demo_glaciers
from tests import helpers as h
from tests.helpers.flow_runs import demo_window

pytestmark = [pytest.mark.db, pytest.mark.flow, pytest.mark.slow]

BASELINE_LAKES = ("stable-1", "clouded")
BASELINE_DATE = datetime(2023, 9, 15, tzinfo=UTC)
README = Path(__file__).resolve().parents[2] / "README.md"
UTM = 32643
"""The demo's CRS (EPSG:32643), metres."""

Demo = tuple[sa.Engine, DemoCatalog]


@pytest.fixture(scope="module")
def demo(
    tmp_path_factory: pytest.TempPathFactory, pg_url_base: str, template_db: str, prefect_backend: None
) -> Iterator[tuple[sa.Engine, DemoCatalog]]:
    from flows.update_inventory import update_inventory

    root = tmp_path_factory.mktemp("cookbook")
    catalog = generate_demo_catalog(root / "catalog", size_px=256, seed=0)
    truth = load_truth(catalog.truth_path)
    first = truth[truth.lake.isin(BASELINE_LAKES) & (truth.date == truth.date.min())]
    baseline = root / "baseline.geojson"
    first[["lake", "geometry"]].to_file(baseline, driver="GeoJSON")
    with h.fresh_database(pg_url_base, template_db) as url, pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATABASE_URL", url)
        mp.setenv("GLACIAL_LAKES_HOME", str(root / "home"))
        engine = make_engine(url)
        try:
            window = demo_window(catalog)
            report = update_inventory(**window)
            assert report.failed == 0, report.markdown()
            import_demo_glaciers(engine, catalog.root / "glaciers.geojson", window["aoi"].name)
            import_inventory(engine, baseline, aoi_name=window["aoi"].name, when=BASELINE_DATE)
            yield engine, catalog
        finally:
            engine.dispose()


def cookbook_blocks() -> dict[str, str]:
    """``name`` → SQL of every README ```sql block that starts with ``-- cookbook: name``."""
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```sql\n(.*?)```", text, re.S)
    named = {}
    for block in blocks:
        first = block.splitlines()[0]
        if match := re.fullmatch(r"-- cookbook: ([a-z0-9-]+)", first.strip()):
            assert match.group(1) not in named, f"two cookbook blocks named {match.group(1)}"
            named[match.group(1)] = block
    section = text.split("## SQL cookbook", 1)[1].split("\n## ", 1)[0]
    assert len(re.findall(r"```sql\n", section)) == len(named), "a cookbook block without a '-- cookbook:' name"
    return named


def _rows(engine: sa.Engine, sql: str) -> list[dict[str, object]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.text(sql))]


def _truth(catalog: DemoCatalog) -> gpd.GeoDataFrame:
    """The truth in metres, dates as ISO 8601 text."""
    truth = load_truth(catalog.truth_path).to_crs(UTM)
    truth["date"] = truth["date"].astype(str)
    return truth


def _lake_of(engine: sa.Engine, catalog: DemoCatalog) -> dict[str, int]:
    """Truth lake name → inventory lake id (the lake whose current or last outline overlaps it most)."""
    truth = _truth(catalog)
    with engine.connect() as conn:
        lakes = gpd.read_postgis("SELECT lake_id, geom FROM inventory.lake", conn, geom_col="geom").to_crs(UTM)
    out = {}
    for name, outlines in truth.groupby("lake"):
        union = outlines.geometry.union_all()
        overlap = lakes.geometry.intersection(union).area
        if overlap.max() > 0:
            out[str(name)] = int(lakes.lake_id[overlap.idxmax()])
    return out


def _glacier_distance(catalog: DemoCatalog, name: str) -> float:
    truth = _truth(catalog)
    glaciers = gpd.read_file(catalog.root / "glaciers.geojson").to_crs(UTM)
    last = truth[truth.lake == name].sort_values("date").geometry.iloc[-1]
    return float(glaciers.distance(last).min())


def _truth_area(catalog: DemoCatalog, name: str, day: str) -> float:
    truth = _truth(catalog)
    return float(truth[(truth.lake == name) & (truth.date == day)].area_m2.iloc[0])


def check_grown_near_glacier(engine: sa.Engine, catalog: DemoCatalog, rows: list[dict[str, object]]) -> None:
    ids = _lake_of(engine, catalog)
    truth = _truth(catalog)
    current = _rows(engine, "SELECT lake_id FROM inventory.lake WHERE status = 'active'")
    active = {r["lake_id"] for r in current}
    expected = set()
    for name, group in truth.groupby("lake"):
        group = group.sort_values("date")
        mapped = group[group.min_mappable]
        if str(name) not in ids or ids[str(name)] not in active or len(mapped) == 0:
            continue
        # The version valid on 10 July is the 4 July scene's; the current one the last date's.
        then = mapped[mapped.date <= "2024-07-10"]
        if len(then) and mapped.area_m2.iloc[-1] > 1.2 * then.area_m2.iloc[-1] * 1.1:
            if _glacier_distance(catalog, str(name)) <= 1000:
                expected.add(ids[str(name)])
    assert expected == {ids["growing"]}
    assert [r["lake_id"] for r in rows] == [ids["growing"]]
    pct = 100.0 * (_truth_area(catalog, "growing", "2024-09-22") / _truth_area(catalog, "growing", "2024-07-04") - 1)
    assert float(rows[0]["growth_pct"]) == pytest.approx(pct, rel=0.1)  # type: ignore[arg-type]
    assert float(rows[0]["glacier_distance_m"]) == pytest.approx(_glacier_distance(catalog, "growing"), abs=15)  # type: ignore[arg-type]


def check_as_of(engine: sa.Engine, catalog: DemoCatalog, rows: list[dict[str, object]]) -> None:
    ids = _lake_of(engine, catalog)
    truth = _truth(catalog)
    # The last processed scene before 1 August is 24 July's: the lakes mappable then (a lake
    # hidden by cloud that day keeps its version).
    on = truth[(truth.date == "2024-07-24") & truth.min_mappable]
    assert sorted(r["lake_id"] for r in rows) == sorted(ids[n] for n in on.lake)
    for r in rows:
        # A version keeps the area of the scene that opened it (small changes open none); the
        # baseline lakes' outlines are the truth of 4 July, dated a year earlier.
        name = next(n for n, i in ids.items() if i == r["lake_id"])
        day = str(r["valid_from"])[:10]
        assert day in ("2024-07-04", "2024-07-24") or (name in BASELINE_LAKES and day == str(BASELINE_DATE.date()))
        assert float(r["area_m2"]) == pytest.approx(_truth_area(catalog, name, max(day, "2024-07-04")), rel=0.1)  # type: ignore[arg-type]


def check_lake_history(engine: sa.Engine, catalog: DemoCatalog, rows: list[dict[str, object]]) -> None:
    scenes = [d.isoformat() for d in sorted(catalog.dates)]
    processed = sorted(
        str(r["day"])
        for r in _rows(
            engine,
            "SELECT DISTINCT sensing_time::date AS day FROM inventory.scene WHERE s2_product_id NOT LIKE 'import:%'",
        )
    )
    assert set(processed) <= set(scenes)
    assert [r["change_kind"] for r in rows] == ["new"] + ["grown"] * (len(processed) - 1)
    for r, day in zip(rows, processed, strict=True):
        assert str(r["valid_from"])[:10] == day
        assert float(r["area_m2"]) == pytest.approx(_truth_area(catalog, "growing", day), rel=0.1)  # type: ignore[arg-type]
    assert rows[-1]["valid_to"] is None and all(float(r["area_change_pct"]) > 0 for r in rows[1:])  # type: ignore[arg-type]


def check_new_this_season(engine: sa.Engine, catalog: DemoCatalog, rows: list[dict[str, object]]) -> None:
    ids = _lake_of(engine, catalog)
    truth = _truth(catalog)
    mappable = set(truth[truth.min_mappable].lake)
    gone = {n for n in mappable if truth[(truth.lake == n)].date.max() < "2024-09-22"}
    expected = {ids[n] for n in mappable - set(BASELINE_LAKES) - gone}
    assert {r["lake_id"] for r in rows} == expected and ids["appearing"] in expected
    appearing = next(r for r in rows if r["lake_id"] == ids["appearing"])
    assert str(appearing["first_seen"])[:10] == truth[truth.lake == "appearing"].date.min()


def check_disappeared(engine: sa.Engine, catalog: DemoCatalog, rows: list[dict[str, object]]) -> None:
    ids = _lake_of(engine, catalog)
    truth = _truth(catalog)
    draining = truth[truth.lake == "draining"]
    assert [r["lake_id"] for r in rows] == [ids["draining"]]
    assert str(rows[0]["last_seen"])[:10] == draining.date.max()
    assert float(rows[0]["last_area_m2"]) == pytest.approx(
        float(draining.sort_values("date").area_m2.iloc[-1]), rel=0.15
    )  # type: ignore[arg-type]


def check_flagged(engine: sa.Engine, catalog: DemoCatalog, rows: list[dict[str, object]]) -> None:
    ids = _lake_of(engine, catalog)
    assert [(r["lake_id"], r["rules"]) for r in rows] == [(ids["growing"], "contact_growth")]
    growth = _rows(
        engine, f"SELECT growth_rate_m2_per_year, area_m2 FROM inventory.lake_growth WHERE lake_id = {ids['growing']}"
    )[0]
    assert float(rows[0]["growth_pct_per_year"]) == pytest.approx(  # type: ignore[arg-type]
        100.0 * float(growth["growth_rate_m2_per_year"]) / float(growth["area_m2"])  # type: ignore[arg-type]
    )


def check_elevation_bands(engine: sa.Engine, catalog: DemoCatalog, rows: list[dict[str, object]]) -> None:
    lakes = _rows(engine, "SELECT elevation_m, area_m2 FROM inventory.lake WHERE status = 'active'")
    bands: dict[float | None, tuple[int, float]] = {}
    for lake in lakes:
        e = lake["elevation_m"]
        band = None if e is None else 100.0 * (float(e) // 100)  # type: ignore[arg-type]
        n, a = bands.get(band, (0, 0.0))
        bands[band] = (n + 1, a + float(lake["area_m2"]))  # type: ignore[arg-type]
    got = {(None if r["band_m"] is None else float(r["band_m"])): (r["lakes"], r["area_m2"]) for r in rows}  # type: ignore[arg-type]
    assert set(got) == set(bands) and None in got  # the imported lakes have no elevation
    for band, (n, area) in bands.items():
        assert got[band][0] == n and float(got[band][1]) == pytest.approx(area)  # type: ignore[arg-type]


def check_baseline_comparison(engine: sa.Engine, catalog: DemoCatalog, rows: list[dict[str, object]]) -> None:
    ids = _lake_of(engine, catalog)
    assert [r["lake_id"] for r in rows] == sorted(ids[n] for n in BASELINE_LAKES)
    for r in rows:
        name = next(n for n, i in ids.items() if i == r["lake_id"])
        assert str(r["baseline_date"])[:10] == BASELINE_DATE.date().isoformat() and r["status"] == "active"
        assert float(r["baseline_area_m2"]) == pytest.approx(_truth_area(catalog, name, "2024-07-04"), rel=0.01)  # type: ignore[arg-type]
        assert abs(float(r["change_pct"])) < 10  # type: ignore[arg-type]  # a stable lake


CHECKS: dict[str, Callable[[sa.Engine, DemoCatalog, list[dict[str, object]]], None]] = {
    "grown-near-glacier": check_grown_near_glacier,
    "as-of": check_as_of,
    "lake-history": check_lake_history,
    "new-this-season": check_new_this_season,
    "disappeared": check_disappeared,
    "flagged": check_flagged,
    "elevation-bands": check_elevation_bands,
    "baseline-comparison": check_baseline_comparison,
}


def test_every_cookbook_block_has_a_check() -> None:
    blocks = cookbook_blocks()
    assert set(blocks) == set(CHECKS) and len(blocks) >= 8


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_cookbook_query(demo: Demo, name: str) -> None:
    engine, catalog = demo
    sql = cookbook_blocks()[name]
    rows = _rows(engine, sql)
    assert rows, f"cookbook {name}: no rows on the demo inventory"
    CHECKS[name](engine, catalog, rows)


DEFAULTS = {
    "contact_growth": {
        "max_glacier_distance_m": 500.0,
        "min_area_m2": 100_000.0,
        "min_observations": 4,
        "min_growth_pct_per_year": 1.0,
    },
    "steep_surroundings": {
        "max_glacier_distance_m": 500.0,
        "min_area_m2": 100_000.0,
        "min_surrounding_slope_deg": 30.0,
    },
}


@pytest.fixture
def rules(demo: Demo) -> Iterator[sa.Engine]:
    """The demo's engine; the rules' defaults are restored afterwards."""
    engine, _ = demo
    try:
        yield engine
    finally:
        for rule, thresholds in DEFAULTS.items():
            glof.set_rule(engine, rule, enabled=True, **thresholds)


def test_default_rules_flag_the_growing_lake_and_not_the_stable_ones(demo: Demo) -> None:
    engine, catalog = demo
    ids = _lake_of(engine, catalog)
    stored = glof.read_rules(engine)
    flagged = glof.flagged_lakes(engine)
    screening = _rows(engine, "SELECT lake_id, rule, inputs, model_version FROM inventory.glof_screening")
    growth = _rows(engine, f"SELECT * FROM inventory.lake_growth WHERE lake_id = {ids['growing']}")[0]
    context = _rows(engine, f"SELECT * FROM inventory.lake_glacier_context WHERE lake_id = {ids['growing']}")[0]

    assert {r: {k: getattr(stored[r], k) for k in t} for r, t in DEFAULTS.items()} == DEFAULTS
    assert list(flagged.lake_id) == [ids["growing"]] and list(flagged.rules) == ["contact_growth"]
    assert flagged.crs.to_epsg() == 4326 and flagged.geometry.iloc[0].geom_type == "MultiPolygon"
    stable = {ids[n] for n in ("stable-1", "stable-2", "clouded", "contact") if n in ids}
    assert len(stable) >= 3 and not stable & set(flagged.lake_id)
    [aoi] = [r["name"] for r in _rows(engine, "SELECT name FROM inventory.aoi")]
    assert list(glof.flagged_lakes(engine, aoi).lake_id) == [ids["growing"]]  # the AOI's own, via db.queries.in_aoi
    assert len(glof.flagged_lakes(engine, "elsewhere")) == 0
    [row] = screening
    inputs = row["inputs"]
    current = _rows(engine, f"SELECT model_version FROM inventory.current_lakes WHERE lake_id = {ids['growing']}")
    assert isinstance(inputs, dict) and row["model_version"] == current[0]["model_version"] is not None
    assert inputs["n_obs"] == growth["n_obs"] >= 4 and inputs["lake_type"] == context["lake_type"]
    assert inputs["glacier_distance_m"] == pytest.approx(context["glacier_distance_m"]) and inputs["rgi_id"]
    assert inputs["growth_rate_ci_low"] == pytest.approx(growth["growth_rate_ci_low"])
    assert float(inputs["growth_rate_ci_low"]) > 0
    assert inputs["min_area_m2"] == 100_000 and float(inputs["area_m2"]) >= 100_000
    assert float(inputs["area_m2"]) == pytest.approx(_truth_area(catalog, "growing", "2024-09-22"), rel=0.1)
    assert inputs["max_glacier_distance_m"] == 500
    assert inputs["min_growth_pct_per_year"] == 1 and float(inputs["growth_pct_per_year"]) >= 1
    assert flagged.inputs.iloc[0] == {"contact_growth": inputs}
    # The growing lake is not in contact: the distance rule (≤ 500 m) is what lets it fire.
    assert 10 < float(inputs["glacier_distance_m"]) <= 500


def test_thresholds_are_configuration_read_at_query_time(demo: Demo, rules: sa.Engine) -> None:
    engine, catalog = demo
    ids = _lake_of(engine, catalog)
    growing = float(_rows(engine, f"SELECT area_m2 FROM inventory.lake WHERE lake_id = {ids['growing']}")[0]["area_m2"])  # type: ignore[arg-type]
    glof.set_rule(engine, "contact_growth", min_area_m2=growing + 1)
    above = list(glof.flagged_lakes(engine).lake_id)
    glof.set_rule(engine, "contact_growth", min_area_m2=100_000.0, max_glacier_distance_m=10.0)  # contact only
    contact_only = list(glof.flagged_lakes(engine).lake_id)
    glof.set_rule(engine, "contact_growth", max_glacier_distance_m=500.0, enabled=False)
    disabled = list(glof.flagged_lakes(engine).lake_id)
    slopes = _rows(engine, "SELECT lake_id, area_m2, surrounding_slope_deg FROM inventory.lake WHERE status = 'active'")
    steep = {
        r["lake_id"]
        for r in slopes
        if r["surrounding_slope_deg"] is not None and float(r["surrounding_slope_deg"]) >= 10.0  # type: ignore[arg-type]
    }
    near = {
        r["lake_id"]
        for r in _rows(engine, "SELECT lake_id FROM inventory.lake_glacier_context WHERE glacier_distance_m <= 2000")
    }
    glof.set_rule(
        engine, "steep_surroundings", min_area_m2=0.0, min_surrounding_slope_deg=10.0, max_glacier_distance_m=2000.0
    )
    steep_flagged = glof.flagged_lakes(engine)

    assert above == [] and contact_only == [] and disabled == []
    assert set(steep_flagged.lake_id) == steep & near and len(steep & near) >= 2
    assert set(steep_flagged.rules) == {"steep_surroundings"}


@pytest.mark.parametrize(
    ("rule", "change", "message"),
    [
        ("flood", {"min_area_m2": 1.0}, "unknown"),
        ("steep_surroundings", {"min_observations": 4.0}, "no threshold 'min_observations'"),
        ("contact_growth", {"min_observations": 2.0}, "outside [3, 1000]"),
        ("contact_growth", {"min_observations": 4.5}, "not a whole number"),
        ("steep_surroundings", {"min_surrounding_slope_deg": 95.0}, "outside [0, 90]"),
        ("contact_growth", {"min_area_m2": float("nan")}, "outside"),
    ],
)
def test_bad_thresholds_are_refused_with_one_line(
    rules: sa.Engine, rule: str, change: dict[str, float], message: str
) -> None:
    before = glof.read_rules(rules)
    with pytest.raises(InputError, match=re.escape(message)) as caught:
        glof.set_rule(rules, rule, **change)
    assert "\n" not in str(caught.value) and rule in str(caught.value)
    assert glof.read_rules(rules) == before


def test_the_table_checks_bound_a_direct_update(rules: sa.Engine) -> None:
    with pytest.raises(sa.exc.IntegrityError), rules.begin() as conn:
        conn.execute(
            sa.text("UPDATE inventory.glof_rule SET min_surrounding_slope_deg = 120 WHERE rule = 'steep_surroundings'")
        )
    with pytest.raises(sa.exc.IntegrityError), rules.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO inventory.glof_rule (rule, description, max_glacier_distance_m, min_area_m2) "
                "VALUES ('other', 'x', 1, 1)"
            )
        )


def test_flagged_lakes_are_a_qgis_layer(demo: Demo) -> None:
    """A unique integer key, a typed geometry with SRID, and a map-extent filter that reaches the lake GiST index."""
    engine, _ = demo
    with engine.begin() as conn:
        registered = conn.execute(
            sa.text(
                "SELECT type, srid, coord_dimension FROM geometry_columns "
                "WHERE f_table_schema = 'inventory' AND f_table_name = 'glof_flagged_lakes'"
            )
        ).all()
        key_type = conn.execute(
            sa.text(
                "SELECT data_type FROM information_schema.columns WHERE table_schema = 'inventory' "
                "AND table_name = 'glof_flagged_lakes' AND column_name = 'lake_id'"
            )
        ).scalar_one()
        rows, keys = conn.execute(
            sa.text("SELECT count(*), count(DISTINCT lake_id) FROM inventory.glof_flagged_lakes")
        ).one()
        conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(
            conn.execute(
                sa.text(
                    "EXPLAIN SELECT * FROM inventory.glof_flagged_lakes "
                    "WHERE geom && ST_MakeEnvelope(75, 42, 76, 43, 4326)"
                )
            ).scalars()
        )
    assert registered == [("MULTIPOLYGON", 4326, 2)] and key_type == "bigint"
    assert rows == keys == 1
    assert "idx_lake_geom" in plan, plan


def test_cli_shows_and_changes_the_rules_with_one_line_errors(demo: Demo, rules: sa.Engine, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from flows.cli import main

    engine, catalog = demo
    ids = _lake_of(engine, catalog)
    env = {"DATABASE_URL": engine.url.render_as_string(hide_password=False), "GLACIAL_LAKES_HOME": str(tmp_path)}
    runner = CliRunner()
    shown = runner.invoke(main, ["glof", "rules"], env=env)
    flagged = runner.invoke(main, ["glof", "flagged"], env=env)
    changed = runner.invoke(main, ["glof", "rules", "contact_growth", "--min-area-m2", "1e6"], env=env)
    none = runner.invoke(main, ["glof", "flagged"], env=env)
    bad = {
        "range": runner.invoke(
            main, ["glof", "rules", "steep_surroundings", "--min-surrounding-slope-deg", "91"], env=env
        ),
        "unused": runner.invoke(main, ["glof", "rules", "steep_surroundings", "--min-observations", "5"], env=env),
        "unknown": runner.invoke(main, ["glof", "rules", "flood", "--disable"], env=env),
        "unnamed": runner.invoke(main, ["glof", "rules", "--min-area-m2", "5"], env=env),
    }

    assert shown.exit_code == 0, shown.output
    assert "contact_growth (on): max_glacier_distance_m = 500, min_area_m2 = 100000" in shown.output
    assert "steep_surroundings (on):" in shown.output and "min_surrounding_slope_deg = 30" in shown.output
    assert flagged.exit_code == 0 and f"lake {ids['growing']}: contact_growth" in flagged.output
    assert "1 lakes flagged (screening, not a hazard assessment)" in flagged.output
    assert changed.exit_code == 0 and "min_area_m2 = 1e+06" in changed.output
    assert none.exit_code == 0 and none.output.strip() == "0 lakes flagged (screening, not a hazard assessment)"
    for case, result in bad.items():
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, (case, result.output)
    assert glof.read_rules(engine)["steep_surroundings"].min_surrounding_slope_deg == 30
