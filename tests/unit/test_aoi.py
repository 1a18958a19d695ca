"""AOI validation at the edge: hostile or malformed input is refused with a reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from flows.aoi import AoiSpec, load_aoi

SQUARE = {"type": "Polygon", "coordinates": [[[77, 43], [77.1, 43], [77.1, 43.1], [77, 43.1], [77, 43]]]}


def test_feature_file_loads_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "a.geojson"
    path.write_text(json.dumps({"type": "Feature", "properties": {"name": "tien-shan"}, "geometry": SQUARE}))
    aoi = load_aoi(path)
    assert aoi.name == "tien-shan"
    assert aoi.shape.bounds == (77.0, 43.0, 77.1, 43.1)


@pytest.mark.parametrize(
    ("geometry", "message"),
    [
        ({"type": "Point", "coordinates": [77, 43]}, "Polygon or MultiPolygon"),
        (
            {
                "type": "Polygon",
                "coordinates": [[[500000, 4700000], [500100, 4700000], [500100, 4700100], [500000, 4700000]]],
            },
            "not lon/lat",
        ),
        ({"type": "Polygon", "coordinates": [[[0, 0], [40, 0], [40, 40], [0, 40], [0, 0]]]}, "area"),
        ({"type": "Polygon", "coordinates": "'; DROP TABLE inventory.lake; --"}, "GeoJSON"),
    ],
)
def test_bad_geometry_is_refused(geometry: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AoiSpec(name="x", geometry=geometry)


@pytest.mark.parametrize("name", ["", "a b", "x'; DROP TABLE lake; --", "../etc", "a" * 80])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(ValidationError, match="AOI name"):
        AoiSpec(name=name, geometry=SQUARE)


def test_bow_tie_is_repaired_not_refused() -> None:
    bow = {"type": "Polygon", "coordinates": [[[77, 43], [77.1, 43.1], [77.1, 43], [77, 43.1], [77, 43]]]}
    aoi = AoiSpec(name="bow", geometry=bow)
    assert aoi.shape.is_valid and aoi.shape.area > 0


def test_unreadable_file_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.geojson"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read AOI"):
        load_aoi(path)
