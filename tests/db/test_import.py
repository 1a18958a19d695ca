"""Importing an existing inventory as a baseline epoch (:mod:`db.importer`)."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from shapely.geometry import MultiPolygon, Polygon, box

from db import queries
from db.geometry import utm_epsg_for
from db.importer import import_inventory, json_safe, read_inventory
from db.merge import merge_scene
from db.records import ObservedLake
from db.schema import SCHEMA
from tests import helpers as h

pytestmark = pytest.mark.db

ICIMOD = ("icimod_glacial_lakes_2015", "GL_3basins_2015.geojson")
"""The real ICIMOD 2015 inventory, under the ``realdata`` fixture's folder."""
ICIMOD_FEATURES, ICIMOD_NULL_GEOMETRIES = 3624, 15  # documented in the data folder's README
WHEN = datetime(2015, 10, 1, tzinfo=UTC)
UTM44 = 32644  # western Nepal
X0, Y0 = 500_000.0, 3_300_000.0


def _scalar(engine: sa.Engine, sql: str, **params: object) -> object:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


def _utm_total_area(frame: gpd.GeoDataFrame) -> float:
    """Independent figure: geopandas areas, each lake in the UTM zone of its representative point."""
    points = frame.geometry.representative_point()
    zones = [utm_epsg_for(x, y) for x, y in zip(points.x, points.y, strict=True)]
    return float(sum(frame[np.array(zones) == z].to_crs(z).area.sum() for z in sorted(set(zones))))


def test_icimod_2015_imports_every_lake_once(engine: sa.Engine, realdata: Path) -> None:
    """3,624 features, 15 without geometry: 3,609 lakes; areas as geopandas measures them in UTM;
    a re-import is a no-op; nothing exists the day before; the source attributes are kept.
    """
    icimod = realdata.joinpath(*ICIMOD)
    started = time.monotonic()
    report = import_inventory(engine, icimod, aoi_name="icimod-2015", when=WHEN)
    import_s = time.monotonic() - started
    counts = h.row_counts(engine)
    started = time.monotonic()
    again = import_inventory(engine, icimod, aoi_name="icimod-2015", when=WHEN)
    reimport_s = time.monotonic() - started

    source = gpd.read_file(icimod)
    with_geometry = source[source.geometry.notna() & ~source.geometry.is_empty]
    expected_area = _utm_total_area(with_geometry)
    stored_area = float(_scalar(engine, f"SELECT sum(area_m2) FROM {SCHEMA}.lake"))  # type: ignore[arg-type]
    laea = with_geometry.to_crs("+proj=laea +lat_0=29 +lon_0=84.5 +datum=WGS84").area.sum()
    before = queries.lakes_as_of(engine, WHEN - timedelta(days=1), aoi="icimod-2015")
    on_date = queries.lakes_as_of(engine, WHEN, aoi="icimod-2015")
    gl_ids = _scalar(engine, f"SELECT array_agg(attributes->>'GL_ID') FROM {SCHEMA}.lake_observation")
    figures = {
        "features": report.features,
        "lakes": report.lakes,
        "skipped_empty": report.skipped_empty,
        "skipped_small": report.skipped_small,
        "total_area_km2": round(report.total_area_m2 / 1e6, 4),
        "area_rel_diff_vs_geopandas_utm": abs(stored_area - expected_area) / expected_area,
        "area_rel_diff_vs_equal_area": abs(stored_area - laea) / laea,
        "import_seconds": round(import_s, 2),
        "reimport_seconds": round(reimport_s, 2),
        "reimport_rows_changed": sum(abs(h.row_counts(engine)[t] - counts[t]) for t in counts)
        + again.attributes_written,
        "lakes_as_of_day_before": len(before),
    }
    h.write_report("import", {"icimod_2015": figures})

    assert (report.features, report.skipped_empty) == (ICIMOD_FEATURES, ICIMOD_NULL_GEOMETRIES)
    assert report.lakes == ICIMOD_FEATURES - ICIMOD_NULL_GEOMETRIES == report.merge.new_lakes
    assert counts["lake"] == counts["lake_observation"] == counts["lake_version"] == report.lakes
    assert report.aoi_created and report.attributes_written == report.lakes
    assert figures["area_rel_diff_vs_geopandas_utm"] < 1e-3
    assert report.total_area_m2 == pytest.approx(stored_area, rel=1e-9)
    assert figures["area_rel_diff_vs_equal_area"] < 3e-3  # UTM scale error stays small
    assert again.noop and not again.aoi_created and figures["reimport_rows_changed"] == 0
    assert again.scene_key == report.scene_key
    assert len(before) == 0 and len(on_date) == report.lakes
    assert sorted(gl_ids) == sorted(with_geometry["GL_ID"])  # type: ignore[arg-type]
    assert _scalar(engine, f"SELECT s2_product_id FROM {SCHEMA}.scene") == f"import:{icimod.name}"
    assert _scalar(engine, f"SELECT bool_and(ST_IsValid(geom)) FROM {SCHEMA}.lake") is True


def _lake(dx: float, dy: float, w: float, hgt: float) -> Polygon:
    return box(X0 + dx, Y0 + dy, X0 + dx + w, Y0 + dy + hgt)


def _fixture_frame() -> gpd.GeoDataFrame:
    """Six features in UTM 44N: a plain lake, a two-part lake, a bow-tie, no geometry, a sliver,
    and a lake with missing values.
    """
    bow_tie = Polygon([(X0, Y0 + 2_000), (X0 + 400, Y0 + 2_400), (X0 + 400, Y0 + 2_000), (X0, Y0 + 2_400)])
    geometries = [
        _lake(0, 0, 300, 200),
        MultiPolygon([_lake(1_000, 0, 100, 100), _lake(1_500, 0, 200, 100)]),
        bow_tie,
        None,
        _lake(3_000, 0, 0.5, 0.5),  # 0.25 m²: below the default minimum
        _lake(0, 1_000, 150, 150),
    ]
    return gpd.GeoDataFrame(
        {
            "name": ["plain", "two-part", "bow-tie", "no-geometry", "sliver", "gaps"],
            "surveyed": pd.to_datetime(["2020-08-01", "2020-08-02", "2020-08-03", None, "2020-08-05", None]),
            "depth_m": [12.5, 3.0, 1.0, 2.0, 0.1, math.nan],
            "code": np.arange(6, dtype=np.int64),
        },
        geometry=geometries,
        crs=UTM44,
    )


def test_geometries_are_reprojected_repaired_exploded_and_measured_in_utm(tmp_path: Path) -> None:
    path = tmp_path / "lakes.gpkg"
    _fixture_frame().to_file(path, layer="lakes")
    read = read_inventory(path)
    names = [lake.attributes["name"] for lake in read.lakes]
    assert (read.features, read.skipped_empty, read.skipped_small) == (6, 1, 1)
    assert names == ["plain", "two-part", "two-part", "bow-tie", "bow-tie", "gaps"]
    assert [lake.attributes.get("_part") for lake in read.lakes] == [None, 0, 1, 0, 1, None]
    expected = [60_000.0, 10_000.0, 20_000.0, 40_000.0, 40_000.0, 22_500.0]  # bow-tie: two triangles
    assert [lake.area_m2 for lake in read.lakes] == pytest.approx(expected, rel=1e-6)
    assert read.lakes[0].perimeter_m == pytest.approx(1_000.0, rel=1e-6)
    assert all(isinstance(lake.geometry, MultiPolygon) and lake.geometry.is_valid for lake in read.lakes)
    lon, lat = read.lakes[0].centroid_lon, read.lakes[0].centroid_lat
    assert 80.9 < lon < 81.1 and 29.7 < lat < 29.9 and utm_epsg_for(lon, lat) == UTM44  # EPSG:4326 now
    plain, gaps = read.lakes[0].attributes, read.lakes[-1].attributes
    assert plain == {"name": "plain", "surveyed": "2020-08-01T00:00:00", "depth_m": 12.5, "code": 0, "_fid": 0}
    assert gaps["depth_m"] is None and gaps["surveyed"] is None and gaps["_fid"] == 5
    assert read.source_crs.endswith("32644")
    # One CRS for every lake when asked (a zone away: areas scale by ~k²).
    other = read_inventory(path, utm_epsg=32645)
    assert other.lakes[0].area_m2 != pytest.approx(read.lakes[0].area_m2, rel=1e-4)
    assert other.lakes[0].area_m2 == pytest.approx(read.lakes[0].area_m2, rel=1e-2)


def test_inputs_without_crs_or_polygons_are_refused(engine: sa.Engine, tmp_path: Path) -> None:
    frame = _fixture_frame()
    frame.iloc[:1].drop(columns="surveyed").to_file(tmp_path / "nocrs.shp")  # no datetime in .dbf
    (tmp_path / "nocrs.prj").unlink()
    with pytest.raises(ValueError, match="no CRS") as raised:
        import_inventory(engine, tmp_path / "nocrs.shp", aoi_name="x", when=WHEN)
    assert "\n" not in str(raised.value)
    frame.iloc[[3]].to_file(tmp_path / "empty.gpkg")
    with pytest.raises(ValueError, match="no polygon"):
        import_inventory(engine, tmp_path / "empty.gpkg", aoi_name="x", when=WHEN)
    with pytest.raises(FileNotFoundError):
        import_inventory(engine, tmp_path / "missing.geojson", aoi_name="x", when=WHEN)
    with pytest.raises(ValueError, match="metres"):
        read_inventory(tmp_path / "empty.gpkg", utm_epsg=4326)
    assert h.row_counts(engine)["aoi"] == 0 and h.row_counts(engine)["scene"] == 0


def test_shapefile_layer_and_attributes_in_the_database(engine: sa.Engine, tmp_path: Path) -> None:
    """A shapefile in Web Mercator and the second layer of a GeoPackage import alike; attributes
    reach ``lake_observation.attributes``; the key follows the content (and the date).
    """
    frame = _fixture_frame().iloc[[0, 5]].drop(columns="surveyed")  # no datetime in .dbf
    frame.to_crs(3857).to_file(tmp_path / "lakes.shp")
    frame.iloc[:1].to_file(tmp_path / "two.gpkg", layer="first")
    frame.iloc[1:].to_file(tmp_path / "two.gpkg", layer="second")
    shp = import_inventory(engine, tmp_path / "lakes.shp", aoi_name="west", when=datetime(2020, 8, 1))
    layer = import_inventory(engine, tmp_path / "two.gpkg", aoi_name="west", when=WHEN, layer="second")
    later = import_inventory(engine, tmp_path / "lakes.shp", aoi_name="west", when=datetime(2020, 8, 2))
    assert (shp.lakes, layer.lakes, later.lakes) == (2, 1, 2)
    assert len({shp.scene_key, layer.scene_key, later.scene_key}) == 3 and not later.noop
    assert shp.total_area_m2 == pytest.approx(60_000 + 22_500, rel=1e-6)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                f"SELECT s.sensing_time, o.attributes->>'name', o.attributes->>'code' FROM {SCHEMA}.lake_observation o "
                f"JOIN {SCHEMA}.scene s USING (scene_id) WHERE o.present ORDER BY s.sensing_time, o.attributes->>'name'"
            )
        ).all()
        utm = conn.execute(sa.text(f"SELECT utm_epsg FROM {SCHEMA}.aoi WHERE name = 'west'")).scalar_one()
    assert [r[1:] for r in rows] == [("gaps", "5"), ("gaps", "5"), ("plain", "0"), ("gaps", "5"), ("plain", "0")]
    assert rows[0][0] == WHEN and rows[1][0] == datetime(2020, 8, 1, tzinfo=UTC)  # naive date read as UTC
    assert utm == UTM44
    # Same lakes re-observed: they continue (two lakes in all), no new version (same areas).
    assert later.merge.new_lakes == 0 and h.row_counts(engine)["lake"] == 2


@pytest.mark.parametrize("mode, extra_rows", [("lakes", 0), ("hull", 1)])
def test_footprint_decides_where_the_baseline_counts_as_seen(
    engine: sa.Engine, tmp_path: Path, mode: str, extra_rows: int
) -> None:
    """A later scene finds a lake between two inventory lakes, and one inventory lake grew.
    ``lakes``: the baseline says nothing about the new lake's place; ``hull``: it saw it dry.
    """
    frame = gpd.GeoDataFrame(
        {"name": ["west", "east"]}, geometry=[_lake(0, 0, 200, 200), _lake(3_000, 0, 200, 200)], crs=UTM44
    )
    frame.to_file(tmp_path / "base.geojson")
    base = import_inventory(engine, tmp_path / "base.geojson", aoi_name="pair", when=WHEN, footprint=mode)
    to_ll = gpd.GeoSeries([_lake(1_500, 0, 150, 150), _lake(0, 0, 300, 300)], crs=UTM44).to_crs(4326)
    utm = [_lake(1_500, 0, 150, 150), _lake(0, 0, 300, 300)]
    seen = [
        ObservedLake(MultiPolygon([u]), u.area, u.length, g.centroid.x, g.centroid.y, None, 0.9, utm_epsg=UTM44)
        for g, u in zip(to_ll, utm, strict=True)
    ]
    valid = MultiPolygon([gpd.GeoSeries([box(X0 - 500, Y0 - 500, X0 + 2_000, Y0 + 500)], crs=UTM44).to_crs(4326)[0]])
    later = replace(h.scene("sat-1", 0, seen, aoi="pair", valid=valid), sensing_time=WHEN + timedelta(days=365))
    report = merge_scene(engine, later)
    with engine.connect() as conn:
        new_obs = conn.execute(
            sa.text(
                f"SELECT count(*), count(*) FILTER (WHERE NOT present) FROM {SCHEMA}.lake_observation "
                f"WHERE lake_id = (SELECT max(lake_id) FROM {SCHEMA}.lake)"
            )
        ).one()
        kinds = (
            conn.execute(
                sa.text(
                    f"SELECT v.change_kind FROM {SCHEMA}.lake_version v JOIN {SCHEMA}.lake_observation o "
                    f"ON o.lake_id = v.lake_id AND o.attributes->>'name' = 'west' ORDER BY lower(v.valid)"
                )
            )
            .scalars()
            .all()
        )
    assert base.merge.absent == 0 and (report.new_lakes, report.observations) == (1, 2)
    assert tuple(new_obs) == (1 + extra_rows, extra_rows)  # the baseline's dry row, or none
    assert kinds == ["new", "grown"]  # the baseline epoch is the lake's first version


def test_json_safe_values() -> None:
    assert json_safe(np.float32(1.5)) == 1.5 and json_safe(np.int64(3)) == 3 and json_safe(np.bool_(True)) is True
    assert json_safe(float("nan")) is None and json_safe(pd.NaT) is None and json_safe(None) is None
    assert json_safe(datetime(2020, 1, 2, 3, 4, tzinfo=UTC)) == "2020-01-02T03:04:00+00:00"
    assert json_safe(b"\x01\xff") == "01ff" and json_safe({"a": [np.int16(1), math.inf]}) == {"a": [1, None]}
