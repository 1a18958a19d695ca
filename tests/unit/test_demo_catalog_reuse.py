"""A second demo keeps an identical catalog's files, so the scene keys (size + mtime) do not change."""

from __future__ import annotations

from pathlib import Path

from demo.synthetic import refresh_demo_catalog


def _stamps(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_identical_catalog_is_left_untouched_and_a_changed_one_replaced(tmp_path: Path) -> None:
    root = tmp_path / "catalog"
    first = refresh_demo_catalog(root, size_px=256, aoi_name="demo-a")
    before = _stamps(root)
    again = refresh_demo_catalog(root, size_px=256, aoi_name="demo-a")
    assert again == first and _stamps(root) == before and len(before) > 20
    assert [p.name for p in tmp_path.iterdir()] == ["catalog"]
    other = refresh_demo_catalog(root, size_px=256, aoi_name="demo-b")
    assert other.catalog_path == root / "catalog.json" and other.catalog_path.exists()
    assert "demo-b" in other.aoi_path.read_text()
