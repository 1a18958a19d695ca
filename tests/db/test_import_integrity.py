"""``import-inventory`` and ``export`` integrity on a real PostGIS (issue 9, findings 8 and 9).

The ICIMOD Everest subset (42 real lakes in Nepal) merged into a Tien Shan AOI 2,000 km away:
now refused, naming the AOI and the count, unless ``--extend-aoi``. Names follow ``run``'s rule;
files GDAL cannot read and unknown layers are bad input (exit 2), as is ``export --aoi nosuch``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import geopandas as gpd
import pytest
from click.testing import CliRunner
from shapely.geometry import box
from sqlalchemy import Engine, text

from core.errors import AoiError
from db.importer import import_inventory
from db.merge import ensure_aoi
from flows.cli import main

pytestmark = pytest.mark.db

SUBSET = ("icimod_glacial_lakes_2015", "GL_3basins_2015_everest_subset.geojson")
TIEN_SHAN = box(77.0, 43.0, 77.1, 43.1)


def _cli(db_url: str, tmp_path: Path, *args: str) -> tuple[int, str]:
    env = {"DATABASE_URL": db_url, "GLACIAL_LAKES_HOME": str(tmp_path / "home")}
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.output.strip()


def _count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM inventory.{table}")).scalar_one())


def _lakes_file(tmp_path: Path, boxes: list[tuple[float, float]], name: str = "lakes.gpkg") -> Path:
    """Square lakes of ~100 m at the given lon/lat corners (EPSG:4326), one layer ``lakes``."""
    frame = gpd.GeoDataFrame({"n": list(range(len(boxes)))}, geometry=[box(x, y, x + 1e-3, y + 1e-3) for x, y in boxes])
    path = tmp_path / name
    frame.set_crs(4326).to_file(path, layer="lakes")
    return path


def test_nepal_lakes_are_refused_by_a_tien_shan_aoi_unless_extended(
    db_url: str, engine: Engine, tmp_path: Path, realdata: Path
) -> None:
    subset = realdata.joinpath(*SUBSET)
    ensure_aoi(engine, "tienshan", TIEN_SHAN, 32643)
    code, out = _cli(db_url, tmp_path, "import-inventory", str(subset), "--date", "2015-10-01", "--aoi", "tienshan")
    assert code == 2, out
    assert "42 of 42 lakes lie outside AOI 'tienshan'" in out and "--extend-aoi" in out
    assert len(out.splitlines()) == 1
    assert _count(engine, "lake") == 0 and _count(engine, "scene") == 0

    code, out = _cli(
        db_url, tmp_path, "import-inventory", str(subset), "--date", "2015-10-01", "--aoi", "tienshan", "--extend-aoi"
    )
    assert code == 0, out
    assert "42 lakes" in out and "extended" in out
    with engine.connect() as conn:
        covered = conn.execute(
            text(
                "SELECT count(*) FROM inventory.lake AS l JOIN inventory.aoi AS a "
                "ON a.name = 'tienshan' AND ST_Covers(a.geom, ST_PointOnSurface(l.geom))"
            )
        ).scalar_one()
    assert covered == 42 and _count(engine, "aoi") == 1


def test_a_partly_outside_file_is_refused_whole(db_url: str, engine: Engine, tmp_path: Path) -> None:
    inside = [(77.01, 43.01), (77.03, 43.02), (77.05, 43.05)]
    path = _lakes_file(tmp_path, [*inside, (77.5, 43.5)])
    ensure_aoi(engine, "tienshan", TIEN_SHAN, 32643)
    code, out = _cli(db_url, tmp_path, "import-inventory", str(path), "--date", "2020-08-01", "--aoi", "tienshan")
    assert code == 2 and "1 of 4 lakes lie outside AOI 'tienshan'" in out
    assert _count(engine, "lake") == 0
    inside_only = _lakes_file(tmp_path, inside, "inside.gpkg")
    code, out = _cli(
        db_url, tmp_path, "import-inventory", str(inside_only), "--date", "2020-08-01", "--aoi", "tienshan"
    )
    assert code == 0 and _count(engine, "lake") == 3, out


@pytest.mark.parametrize("name", ["../etc", "a b", ".hidden", "x" * 64])
def test_aoi_names_follow_runs_rule(name: str, db_url: str, engine: Engine, tmp_path: Path) -> None:
    """``import-inventory`` accepted names ``run`` refuses (the file stem by default)."""
    path = _lakes_file(tmp_path, [(77.01, 43.01)])
    code, out = _cli(db_url, tmp_path, "import-inventory", str(path), "--date", "2020-08-01", "--aoi", name)
    assert code == 2 and "AOI name must be" in out and len(out.splitlines()) == 1
    assert _count(engine, "aoi") == 0
    with pytest.raises(AoiError, match="AOI name must be"):
        import_inventory(engine, path, aoi_name=name, when=datetime(2020, 8, 1, tzinfo=UTC))


def test_a_file_stem_that_breaks_the_rule_is_refused(db_url: str, engine: Engine, tmp_path: Path) -> None:
    path = _lakes_file(tmp_path, [(77.01, 43.01)], "my lakes.gpkg")
    code, out = _cli(db_url, tmp_path, "import-inventory", str(path), "--date", "2020-08-01")
    assert code == 2 and "'my lakes'" in out and _count(engine, "aoi") == 0


@pytest.mark.parametrize(
    ("name", "content"), [("notes.geojson", b"just text, no vectors"), ("image.gpkg", b"\x89PNG\r\n\x1a\n" + bytes(64))]
)
def test_a_file_gdal_cannot_read_is_exit_2_naming_it(
    name: str, content: bytes, db_url: str, engine: Engine, tmp_path: Path
) -> None:
    """These exited 1 with pyogrio's DataSourceError before."""
    path = tmp_path / name
    path.write_bytes(content)
    code, out = _cli(db_url, tmp_path, "import-inventory", str(path), "--date", "2020-08-01", "--aoi", "x")
    assert code == 2, out
    assert f"{name}: not a vector file" in out and len(out.splitlines()) == 1 and len(out) < 400


def test_an_unknown_layer_is_exit_2_listing_the_layers(db_url: str, engine: Engine, tmp_path: Path) -> None:
    path = _lakes_file(tmp_path, [(77.01, 43.01)])
    code, out = _cli(
        db_url, tmp_path, "import-inventory", str(path), "--date", "2020-08-01", "--aoi", "x", "--layer", "nosuch"
    )
    assert code == 2, out
    assert "lakes.gpkg: no layer 'nosuch' (layers: lakes)" in out and len(out.splitlines()) == 1
    assert _count(engine, "aoi") == 0


def test_export_of_an_unknown_aoi_is_exit_2_listing_known_ones(db_url: str, engine: Engine, tmp_path: Path) -> None:
    """``export --aoi nosuch`` exited 0 with an empty file, read as "no lakes there"."""
    for k in range(7):
        ensure_aoi(engine, f"aoi-{k}", TIEN_SHAN, 32643)
    out_file = tmp_path / "out.gpkg"
    code, out = _cli(db_url, tmp_path, "export", "--out", str(out_file), "--aoi", "nosuch")
    assert code == 2, out
    assert "--aoi 'nosuch': no such AOI" in out and "aoi-0, aoi-1" in out and "(7 in all)" in out
    assert len(out.splitlines()) == 1 and not out_file.exists()
    code, out = _cli(db_url, tmp_path, "export", "--out", str(out_file), "--aoi", "aoi-3")
    assert code == 0 and out.startswith("0 lakes"), out
