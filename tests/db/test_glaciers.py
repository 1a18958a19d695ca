"""Glacier outlines per AOI and the lakes' glacier context (revision 0012, :mod:`db.glaciers`).

Synthetic layouts drawn in UTM 45N metres check the rule's distances and types against values
known by construction; the real RGI 6 Everest outlines check the import of a real file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from shapely.geometry import MultiPolygon, Polygon, box

from db import queries
from db.glaciers import (
    GlacierFileError,
    context_settings,
    import_glaciers,
    read_glaciers,
    set_context_settings,
)
from db.merge import ensure_aoi, merge_scene
from db.schema import SCHEMA
from flows.cli import main
from tests import helpers as h

pytestmark = pytest.mark.db

RGI6_EVEREST = ("geoutils_glacier_samples", "15_rgi60_glacier_outlines.gpkg")
"""Real RGI 6.0 outlines around Everest (86 polygons), under the ``realdata`` fixture's folder."""
EVEREST_LAKES = ("icimod_glacial_lakes_2015", "GL_3basins_2015_everest_subset.geojson")
KARAKORAM = ("oggm_glacier_dem_samples", "RGI60-14.03439.shp")
BALTORO = ("oggm_glacier_dem_samples", "baltoro_wgs84.shp")
GLACIER = box(h.X0 - 4_000, h.Y0 - 1_000, h.X0 - 1_000, h.Y0 + 1_000)
"""The synthetic glacier, UTM 45N metres: its east edge is 1 km west of the scenario origin."""
# name → (outline in UTM metres, distance to GLACIER by construction in UTM metres, expected type)
LAYOUT = {
    "supra": (h.ellipse(-2_500, 0, 100, 100), 0.0, "supraglacial"),
    "contact": (h.ellipse(-895, 0, 100, 100), 5.0, "proglacial_contact"),
    "near": (h.ellipse(500, 0, 100, 100), 1_400.0, "unconnected_glacial"),
    "far": (h.ellipse(3_000, 3_000, 100, 100), ((4_000**2 + 2_000**2) ** 0.5) - 100, "non_glacial"),
}


def _glacier_file(path: Path, polygons: Sequence[Polygon], crs: str | None = "EPSG:32645", **fields: list) -> Path:
    frame = gpd.GeoDataFrame(fields, geometry=list(polygons), crs=crs)
    drivers = {".gpkg": "GPKG", ".shp": "ESRI Shapefile", ".geojson": "GeoJSON"}
    frame.to_file(path, driver=drivers[path.suffix])
    return path


def _seed(engine: sa.Engine, aoi: str = "khumbu") -> dict[str, int]:
    """The layout's lakes merged into ``aoi``; name → lake id."""
    ensure_aoi(engine, aoi, h.footprint(-6_000, -6_000, 6_000, 6_000), h.UTM)
    lakes = [h.observed(outline) for outline, _, _ in LAYOUT.values()]
    merge_scene(engine, h.scene("k1", 0, lakes, aoi=aoi, valid=h.footprint(-6_000, -6_000, 6_000, 6_000)))
    ids = {}
    with engine.connect() as conn:
        for name, (outline, _, _) in LAYOUT.items():
            ids[name] = conn.execute(
                sa.text(f"SELECT lake_id FROM {SCHEMA}.lake WHERE ST_Intersects(geom, ST_GeomFromText(:p, 4326))"),
                {"p": h.lonlat(outline.centroid).wkt},
            ).scalar_one()
    return ids


def _context(engine: sa.Engine) -> dict[int, tuple]:
    sql = f"SELECT lake_id, rgi_id, glacier_distance_m, glacier_contact, lake_type FROM {SCHEMA}.lake_glacier_context"
    with engine.connect() as conn:
        return {int(r[0]): tuple(r[1:]) for r in conn.execute(sa.text(sql))}


def test_context_distances_and_types_follow_the_rule(engine: sa.Engine, tmp_path: Path) -> None:
    ids = _seed(engine)
    before = _context(engine)
    path = _glacier_file(tmp_path / "rgi7.gpkg", [GLACIER], rgi_id=["RGI2000-v7.0-G-15-00001"], glac_name=["Test"])
    report = import_glaciers(engine, path, aoi_name="khumbu")
    after = _context(engine)

    assert set(before.values()) == {(None, None, None, "unknown")}  # no glaciers: never non-glacial
    assert (report.scheme, report.glaciers, report.replaced, report.source) == ("RGI70", 1, 0, "RGI70:rgi7.gpkg")
    for name, (_, distance, lake_type) in LAYOUT.items():
        rgi_id, got, contact, typed = after[ids[name]]
        # Geodesic metres against UTM metres: the UTM scale factor here is within 0.1 % of 1.
        assert got == pytest.approx(distance, rel=2e-3, abs=0.05), name
        assert (rgi_id, typed, contact) == ("RGI2000-v7.0-G-15-00001", lake_type, distance <= 10.0), name
    with engine.connect() as conn:
        name = conn.execute(sa.text(f"SELECT name FROM {SCHEMA}.glacier")).scalar_one()
        current = conn.execute(
            sa.text(f"SELECT lake_id, lake_type, glacier_distance_m FROM {SCHEMA}.current_lakes ORDER BY lake_id")
        ).all()
    assert name == "Test"
    assert {int(r[0]): (r[1], r[2]) for r in current} == {k: (v[3], v[1]) for k, v in after.items()}
    exported = queries.lakes_as_of(engine, None)
    as_of = queries.lakes_as_of(engine, h.T0)
    for frame in (exported, as_of):
        assert dict(zip(frame.lake_id, frame.lake_type, strict=True)) == {k: v[3] for k, v in after.items()}


def test_settings_change_the_types(engine: sa.Engine, tmp_path: Path) -> None:
    ids = _seed(engine)
    import_glaciers(engine, _glacier_file(tmp_path / "g.geojson", [GLACIER], glac_id=["G1"]), aoi_name="khumbu")
    assert context_settings(engine).contact_tolerance_m == 10.0
    set_context_settings(engine, {"contact_tolerance_m": 2.0, "unconnected_max_distance_m": 5_000.0})
    typed = {k: v[3] for k, v in _context(engine).items()}
    assert typed[ids["contact"]] == "unconnected_glacial" and typed[ids["far"]] == "unconnected_glacial"
    with pytest.raises(Exception, match="unknown"):
        set_context_settings(engine, {"tolerance": 1.0})
    with pytest.raises(Exception, match="fraction"):
        set_context_settings(engine, {"supraglacial_min_fraction": 0.0})


def test_coverage_extent_leaves_lakes_beyond_the_file_unknown(engine: sa.Engine, tmp_path: Path) -> None:
    ids = _seed(engine)
    path = _glacier_file(tmp_path / "part.geojson", [GLACIER], glac_id=["G1"])
    import_glaciers(engine, path, aoi_name="khumbu", coverage="extent")
    typed = {k: v[3] for k, v in _context(engine).items()}
    # The file's extent is the glacier's box: the lakes inside or touching it are typed, the rest unknown.
    assert typed[ids["supra"]] == "supraglacial" and typed[ids["contact"]] == "unknown"
    assert typed[ids["near"]] == typed[ids["far"]] == "unknown"


def test_reimport_replaces_the_source_and_other_sources_stay(engine: sa.Engine, tmp_path: Path) -> None:
    ids = _seed(engine)
    first = _glacier_file(tmp_path / "g.geojson", [GLACIER], glac_id=["G1"])
    import_glaciers(engine, first, aoi_name="khumbu")
    # The same file name, now with the glacier moved 3 km east (over the "near" lake) and a second one.
    moved = [
        Polygon(box(h.X0 + 400, h.Y0 - 200, h.X0 + 700, h.Y0 + 200)),
        box(h.X0 + 5_000, h.Y0, h.X0 + 5_500, h.Y0 + 50),
    ]
    again = import_glaciers(engine, _glacier_file(first, moved, glac_id=["G2", "G3"]), aoi_name="khumbu")
    other = import_glaciers(
        engine, _glacier_file(tmp_path / "other.gpkg", [GLACIER], glac_id=["OTHER"]), aoi_name="khumbu"
    )
    with engine.connect() as conn:
        stored = conn.execute(sa.text(f"SELECT source, rgi_id FROM {SCHEMA}.glacier ORDER BY rgi_id")).all()
    assert (again.replaced, again.glaciers, other.replaced) == (1, 2, 0)
    assert [tuple(r) for r in stored] == [
        ("other:g.geojson", "G2"),
        ("other:g.geojson", "G3"),
        ("other:other.gpkg", "OTHER"),
    ]
    typed = dict(_context(engine).items())
    assert typed[ids["near"]][0] == "G2" and typed[ids["near"]][3] == "supraglacial"


def test_real_rgi6_everest_with_the_icimod_subset(engine: sa.Engine, realdata: Path) -> None:
    """The real RGI 6 file: ids, names and scheme mapped; every ICIMOD Khumbu lake typed."""
    from datetime import UTC, datetime

    from db.importer import import_inventory

    import_inventory(
        engine, realdata.joinpath(*EVEREST_LAKES), aoi_name="everest", when=datetime(2015, 10, 1, tzinfo=UTC)
    )
    read = read_glaciers(realdata.joinpath(*RGI6_EVEREST))
    report = import_glaciers(engine, realdata.joinpath(*RGI6_EVEREST), aoi_name="everest")
    with engine.connect() as conn:
        ids = conn.execute(sa.text(f"SELECT rgi_id FROM {SCHEMA}.glacier")).scalars().all()
        valid = conn.execute(sa.text(f"SELECT bool_and(ST_IsValid(geom)) FROM {SCHEMA}.glacier")).scalar_one()
        types = dict(
            conn.execute(
                sa.text(f"SELECT lake_type, count(*) FROM {SCHEMA}.lake_glacier_context GROUP BY lake_type")
            ).all()
        )
        distances = conn.execute(
            sa.text(f"SELECT count(glacier_distance_m), max(glacier_distance_m) FROM {SCHEMA}.lake_glacier_context")
        ).one()
    h.write_report("glaciers", {"everest_subset_types": types, "rgi6_outlines": report.glaciers})
    assert read.scheme == report.scheme == "RGI60" and len(read.outlines) == 86
    assert 0 < report.glaciers <= 86 and all(i.startswith("RGI60-15.") for i in ids) and valid
    assert sum(types.values()) == 42 and "unknown" not in types
    assert distances[0] == 42 and distances[1] < 10_000  # every Khumbu lake lies within 10 km of a glacier
    assert types.get("proglacial_contact", 0) + types.get("supraglacial", 0) > 0


def test_cli_import_and_its_one_line_errors(db_url: str, engine: sa.Engine, tmp_path: Path, realdata: Path) -> None:
    _seed(engine)
    env = {"DATABASE_URL": db_url, "GLACIAL_LAKES_HOME": str(tmp_path / "home")}
    runner = CliRunner()
    rgi = realdata.joinpath(*RGI6_EVEREST)
    no_crs = _glacier_file(tmp_path / "nocrs.shp", [h.lonlat(GLACIER)], crs=None, glac_id=["G1"])  # no .prj
    karakoram = realdata.joinpath(*KARAKORAM)
    ok = runner.invoke(
        main,
        [
            "glaciers",
            "import",
            str(_glacier_file(tmp_path / "g.gpkg", [GLACIER], RGIId=["RGI60-15.99999"])),
            "--aoi",
            "khumbu",
        ],
        env=env,
    )
    cases = {
        "missing": runner.invoke(main, ["glaciers", "import", str(tmp_path / "nope.gpkg"), "--aoi", "khumbu"], env=env),
        "unknown aoi": runner.invoke(main, ["glaciers", "import", str(rgi), "--aoi", "atlantis"], env=env),
        "outside": runner.invoke(main, ["glaciers", "import", str(karakoram), "--aoi", "khumbu"], env=env),
        "no crs": runner.invoke(main, ["glaciers", "import", str(no_crs), "--aoi", "khumbu"], env=env),
    }
    settings = runner.invoke(main, ["glaciers", "settings", "--contact-tolerance-m", "20"], env=env)
    bad_settings = runner.invoke(main, ["glaciers", "settings", "--contact-tolerance-m", "-1"], env=env)

    assert ok.exit_code == 0, ok.output
    assert "1 of 1 glacier outlines" in ok.output and "RGI60:g.gpkg" in ok.output
    expected = {"missing": "no such file", "unknown aoi": "atlantis", "outside": "lies in AOI", "no crs": "no CRS"}
    for case, result in cases.items():
        assert result.exit_code == 2, (case, result.output)
        assert len(result.output.strip().splitlines()) == 1 and expected[case] in result.output, case
    assert settings.exit_code == 0 and "contact_tolerance_m = 20" in settings.output
    assert bad_settings.exit_code == 2 and len(bad_settings.output.strip().splitlines()) == 1
    with engine.connect() as conn:
        assert (
            conn.execute(sa.text(f"SELECT count(*) FROM {SCHEMA}.glacier")).scalar_one() == 1
        )  # errors stored nothing


def test_read_refuses_a_file_without_an_id_field(tmp_path: Path) -> None:
    path = _glacier_file(tmp_path / "anon.geojson", [GLACIER], area=[1.0])
    with pytest.raises(GlacierFileError, match="no glacier id field"):
        read_glaciers(path)
    multi = _glacier_file(tmp_path / "multi.geojson", [MultiPolygon([GLACIER])], glac_id=[None])
    assert read_glaciers(multi).ids == ("multi#0",)


def test_read_maps_the_fields_of_the_real_outline_files(realdata: Path) -> None:
    """RGI 5 and 6 shapefiles (RGIId, Name) and an older one spelling its field RGIID; EPSG:4326 kept."""
    oetztal = read_glaciers(realdata / "oggm_glacier_dem_samples" / "rgi_oetztal.shp")
    baltoro = read_glaciers(realdata.joinpath(*BALTORO))
    karakoram = read_glaciers(realdata.joinpath(*KARAKORAM))
    assert oetztal.scheme == "RGI50" and len(oetztal.ids) == 20 and all(i.startswith("RGI50-11.") for i in oetztal.ids)
    assert any(n for n in oetztal.names) and all(g.is_valid for g in oetztal.outlines)
    assert (baltoro.scheme, baltoro.ids) == ("other", ("BALTORO",))
    assert (karakoram.scheme, karakoram.ids) == ("RGI60", ("RGI60-14.03439",))
    assert 74.9 < karakoram.extent[0] < karakoram.extent[2] < 75.01
