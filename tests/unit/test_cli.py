"""CLI contract: bad input exits 2 with one line naming the input (no database needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from flows.cli import main

SQUARE = {"type": "Polygon", "coordinates": [[[77, 43], [77.1, 43], [77.1, 43.1], [77, 43.1], [77, 43]]]}


@pytest.fixture
def aoi_file(tmp_path: Path) -> Path:
    path = tmp_path / "aoi.geojson"
    path.write_text(json.dumps({"type": "Feature", "properties": {"name": "t"}, "geometry": SQUARE}))
    return path


@pytest.fixture
def catalog_dir(tmp_path: Path) -> Path:
    """An empty but real local STAC catalog (the source is checked before the model)."""
    root = tmp_path / "catalog"
    root.mkdir()
    doc = {"type": "Catalog", "stac_version": "1.0.0", "id": "empty", "description": "no items", "links": []}
    (root / "catalog.json").write_text(json.dumps(doc))
    return root


def _run(args: list[str], tmp_path: Path) -> tuple[int, str]:
    env = {"GLACIAL_LAKES_HOME": str(tmp_path / "home"), "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    result = CliRunner().invoke(main, args, env=env)
    return result.exit_code, result.output.strip()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--source", "ftp://x"], "--source 'ftp://x'"),
        (["--source", "local:DIR", "--start", "2024-02-30"], "--start '2024-02-30'"),
        (["--source", "local:DIR", "--end", "2023-01-01"], "before --start"),
        (["--source", "local:DIR", "--model", "weights.ckpt"], "weights.ckpt"),
    ],
)
def test_run_rejects_bad_input_with_exit_2(
    args: list[str], needle: str, aoi_file: Path, catalog_dir: Path, tmp_path: Path
) -> None:
    base = {"--aoi": str(aoi_file), "--start": "2024-07-01", "--end": "2024-08-01", "--source": "local:DIR"}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    base["--source"] = base["--source"].replace("local:DIR", f"local:{catalog_dir}")
    code, out = _run(["run", *[x for kv in base.items() for x in kv]], tmp_path)
    assert code == 2, out
    assert needle in out and len(out.splitlines()) == 1


def test_missing_aoi_file_is_exit_2(tmp_path: Path) -> None:
    code, out = _run(
        [
            "run",
            "--aoi",
            str(tmp_path / "nope.geojson"),
            "--start",
            "2024-01-01",
            "--end",
            "2024-01-02",
            "--source",
            "local:x",
        ],
        tmp_path,
    )
    assert code == 2 and "nope.geojson" in out


def test_export_rejects_unknown_format_and_bad_date(tmp_path: Path) -> None:
    assert _run(["export", "--out", str(tmp_path / "x.shp")], tmp_path)[0] == 2
    code, out = _run(["export", "--out", str(tmp_path / "x.gpkg"), "--as-of", "yesterday"], tmp_path)
    assert code == 2 and "--as-of" in out


def test_unreachable_database_is_exit_1_not_2(aoi_file: Path, tmp_path: Path) -> None:
    """A server that is down is not the user's input error."""
    code, out = _run(["db", "upgrade"], tmp_path)
    assert code == 1, out
    assert out.startswith("Error: OperationalError") and len(out.splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--scene", "S2A_X", "--start", "2024-07-01"], "--scene names one scene"),
        (["--aoi", "a", "--start", "2024-07-01"], "give --aoi with --start and --end, or --scene"),
        ([], "give --aoi with --start and --end, or --scene"),
        (["--aoi", "a", "--start", "2024-07-02", "--end", "2024-07-01"], "before --start"),
    ],
)
def test_rerun_needs_a_window_or_one_scene(args: list[str], needle: str, tmp_path: Path) -> None:
    code, out = _run(["rerun", "--source", "local:x", *args], tmp_path)
    assert code == 2 and needle in out and len(out.splitlines()) == 1, out


def test_run_without_a_window_is_rolling(aoi_file: Path, catalog_dir: Path, tmp_path: Path) -> None:
    """No --start/--end: not a usage error; the command goes on to its next check (here, the model)."""
    code, out = _run(
        ["run", "--aoi", str(aoi_file), "--source", f"local:{catalog_dir}", "--model", "nope.ckpt"], tmp_path
    )
    assert code == 2 and "nope.ckpt" in out, out
    code, out = _run(["run", "--aoi", str(aoi_file), "--source", f"local:{catalog_dir}", "--days", "0"], tmp_path)
    assert code == 2 and "--days" in out, out
