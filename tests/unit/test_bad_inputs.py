"""Bad input of every class in issue 9's findings 7 and 8: exit 2, one short line naming the input.

Real files only (including ``/dev/zero`` and hard links); no database is reached: every refusal
comes before a connection.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from flows.aoi import MAX_AOI_BYTES, MAX_VERTICES, load_aoi
from flows.cli import main
from flows.demo import DEMO_MAX_SIZE_PX
from tasks.grid import MAX_GRID_PIXELS, grid_for_geometry

SQUARE = [[77, 43], [77.1, 43], [77.1, 43.1], [77, 43.1], [77, 43]]


def _cli(args: list[str], tmp_path: Path) -> tuple[int, str]:
    env = {
        "GLACIAL_LAKES_HOME": str(tmp_path / "home"),
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
        "PREFECT_HOME": None,
        "PREFECT_LOCAL_STORAGE_PATH": None,
    }
    result = CliRunner().invoke(main, args, env=env)
    return result.exit_code, result.output.strip()


def _run_aoi(aoi: Path, tmp_path: Path) -> tuple[int, str]:
    return _cli(
        ["run", "--aoi", str(aoi), "--start", "2024-07-01", "--end", "2024-07-02", "--source", "local:x"], tmp_path
    )


def _ring(n: int, cx: float, cy: float, r: float) -> list[list[float]]:
    pts = [[cx + r * math.cos(2 * math.pi * k / n), cy + r * math.sin(2 * math.pi * k / n)] for k in range(n)]
    return [*pts, pts[0]]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("[1, 2, 3]", "found a JSON array"),
        ('"just a string"', "found a JSON string"),
        ("null", "found a JSON null"),
        ("[" * 100_000 + "]" * 100_000, "nests deeper"),
        (json.dumps({"type": "Polygon", "coordinates": [[[[[[[[[[[[[[[[[[[0]]]]]]]]]]]]]]]]]]]}), "nests deeper"),
        (json.dumps({"type": "FeatureCollection", "features": {"a": 1}}), "exactly one feature"),
        (json.dumps({"type": "FeatureCollection", "features": ["x"]}), "the feature is a JSON string"),
        (json.dumps({"type": "Feature", "properties": "x", "geometry": [1]}), "must be JSON objects"),
        ("{not json", "not JSON"),
        (b"\xff\xfe\x00".decode("latin-1"), "not JSON"),
    ],
)
def test_aoi_json_of_the_wrong_shape_is_exit_2(content: str, needle: str, tmp_path: Path) -> None:
    """These exited 1 with a traceback class (RecursionError, KeyError …) before."""
    path = tmp_path / "aoi.geojson"
    path.write_text(content, encoding="latin-1")
    code, out = _run_aoi(path, tmp_path)
    assert code == 2, out
    assert needle in out and str(path) in out and len(out.splitlines()) == 1


def test_dev_zero_as_aoi_fails_fast(tmp_path: Path) -> None:
    """``--aoi /dev/zero`` read without bound; now at most MAX_AOI_BYTES + 1 bytes are read."""
    started = time.monotonic()
    code, out = _run_aoi(Path("/dev/zero"), tmp_path)
    assert code == 2 and "larger than" in out and len(out.splitlines()) == 1
    assert time.monotonic() - started < 5


def test_oversized_aoi_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.geojson"
    doc = json.dumps({"type": "Polygon", "coordinates": [SQUARE]})
    path.write_text(doc + " " * MAX_AOI_BYTES)
    code, out = _run_aoi(path, tmp_path)
    assert code == 2 and f"larger than {MAX_AOI_BYTES // 2**20} MiB" in out


def test_vertices_of_holes_count_and_the_error_stays_short(tmp_path: Path) -> None:
    """A 4-vertex shell with a 20 000-vertex hole passed the cap (exteriors only) and ended in an 8 MB line."""
    hole = _ring(2 * MAX_VERTICES, 77.05, 43.05, 0.02)
    path = tmp_path / "holey.geojson"
    path.write_text(json.dumps({"type": "Polygon", "coordinates": [SQUARE, hole]}))
    code, out = _run_aoi(path, tmp_path)
    assert code == 2, out[:500]
    assert f"{2 * MAX_VERTICES + 6} vertices, holes included" in out
    assert len(out) < 300 and len(out.splitlines()) == 1


def test_aoi_whose_grid_exceeds_the_memory_budget_is_refused(tmp_path: Path) -> None:
    """2°×2° at 45° N (~157 × 222 km: ~350 M px at 10 m) is under the 25 deg² cap but over the grid cap."""
    big = [[10, 44], [12, 44], [12, 46], [10, 46], [10, 44]]
    path = tmp_path / "wide.geojson"
    path.write_text(json.dumps({"type": "Polygon", "coordinates": [big]}))
    code, out = _run_aoi(path, tmp_path)
    assert code == 2 and "px grid" in out and "split it" in out and len(out.splitlines()) == 1
    # Just under the cap is accepted (a square of sqrt(MAX) px, less a margin for UTM curvature).
    side_km = math.sqrt(MAX_GRID_PIXELS) * 10 / 1000 * 0.95
    dlat = side_km / 111.2
    dlon = side_km / (111.2 * math.cos(math.radians(45)))
    ok = [[10, 45], [10 + dlon, 45], [10 + dlon, 45 + dlat], [10, 45 + dlat], [10, 45]]
    path.write_text(json.dumps({"type": "Polygon", "coordinates": [ok]}))
    aoi = load_aoi(path, "ok")
    grid = grid_for_geometry(aoi.shape)
    assert 0.8 * MAX_GRID_PIXELS < grid.width * grid.height <= MAX_GRID_PIXELS


@pytest.mark.parametrize("name", ["../etc", "a b", ".hidden", "x\n", "é"])
def test_bad_aoi_name_from_the_option_is_exit_2(name: str, tmp_path: Path) -> None:
    path = tmp_path / "aoi.geojson"
    path.write_text(json.dumps({"type": "Polygon", "coordinates": [SQUARE]}))
    code, out = _cli(
        ["run", "--aoi", str(path), "--name", name, "--start", "2024-07-01", "--end", "2024-07-02", "--source", "x"],
        tmp_path,
    )
    assert code == 2 and "AOI name must be" in out and len(out.splitlines()) == 1


@pytest.mark.parametrize("size", ["0", "100", str(DEMO_MAX_SIZE_PX + 1), "1000000"])
def test_demo_size_out_of_range_is_exit_2_before_anything_is_created(size: str, tmp_path: Path) -> None:
    code, out = _cli(["demo", "--home", str(tmp_path / "demo-home"), "--size", size], tmp_path)
    assert code == 2 and f"--size {size}: must be in [" in out and len(out.splitlines()) == 1
    assert not (tmp_path / "demo-home").exists()


def _scene(tmp_path: Path) -> dict[str, Path]:
    paths = {}
    for option in ("--s2", "--s1", "--dem"):
        path = tmp_path / f"{option[2:]}.tif"
        path.write_bytes(b"not read: the output check comes first")
        paths[option] = path
    return paths


def _segment(paths: dict[str, Path], tmp_path: Path, **outputs: Path) -> tuple[int, str]:
    args = ["segment", *[x for option, path in paths.items() for x in (option, str(path))]]
    args += [x for option, path in outputs.items() for x in (f"--{option.replace('_', '-')}", str(path))]
    return _cli(args, tmp_path)


@pytest.mark.parametrize("target", ["--s2", "--s1", "--dem"])
def test_segment_refuses_an_output_that_is_an_input(target: str, tmp_path: Path) -> None:
    """``segment --out`` equal to ``--s2`` overwrote the input; now refused, the input untouched."""
    paths = _scene(tmp_path)
    before = paths[target].read_bytes()
    same = tmp_path / "." / paths[target].name  # another spelling of the same path
    code, out = _segment(paths, tmp_path, out=same)
    assert code == 2 and f"is the {target} input" in out and len(out.splitlines()) == 1
    code, out = _segment(paths, tmp_path, out=tmp_path / "p.tif", mask_out=paths[target])
    assert code == 2 and out.startswith("Error: --mask-out") and f"is the {target} input" in out
    assert paths[target].read_bytes() == before


def test_segment_refuses_a_hard_link_to_an_input_and_mask_equal_to_out(tmp_path: Path) -> None:
    paths = _scene(tmp_path)
    link = tmp_path / "link.tif"
    link.hardlink_to(paths["--s2"])
    code, out = _segment(paths, tmp_path, out=link)
    assert code == 2 and "is the --s2 input" in out
    code, out = _segment(paths, tmp_path, out=tmp_path / "p.tif", mask_out=tmp_path / "p.tif")
    assert code == 2 and "is the --out file" in out


def test_import_inventory_min_area_out_of_range_is_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "lakes.geojson"
    path.write_text("{}")
    for value in ("-5", "nan", "0"):
        code, out = _cli(["import-inventory", str(path), "--date", "2015-10-01", "--min-area", value], tmp_path)
        assert code == 2 and out.startswith(f"Error: --min-area {value!r}:") and len(out.splitlines()) == 1


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--epochs", "0"),
        ("--lr", "nan"),
        ("--lr", "-1"),
        ("--patience", "0"),
        ("--block-size", "0"),
    ],
)
def test_train_options_out_of_range_are_exit_2(option: str, value: str, tmp_path: Path) -> None:
    labels = tmp_path / "labels.gpkg"
    labels.write_bytes(b"")
    args = ["train", "--stack", str(labels), "--labels", str(labels), "--out", str(tmp_path / "m.ckpt")]
    code, out = _cli([*args, option, value], tmp_path)
    assert code == 2 and out.startswith(f"Error: {option} {value!r}: ") and len(out.splitlines()) == 1


def test_train_refuses_an_out_that_is_an_input(tmp_path: Path) -> None:
    labels = tmp_path / "labels.gpkg"
    labels.write_bytes(b"keep me")
    code, out = _cli(["train", "--stack", str(labels), "--labels", str(labels), "--out", str(labels)], tmp_path)
    assert code == 2 and "is one of the inputs" in out and labels.read_bytes() == b"keep me"


def test_bad_source_fails_fast_on_one_line_before_any_flow(tmp_path: Path) -> None:
    """A bad --source took 62–68 s of retried tasks and up to 268 lines; now one line, before the flow.

    In-process (modules already imported) it must take under 2 s; a cold process adds Python's
    imports (about 1 s here), allowed up to 4 s on a loaded machine.
    """
    import subprocess
    import sys

    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(json.dumps({"type": "Polygon", "coordinates": [SQUARE]}))
    args = ["run", "--aoi", str(aoi), "--start", "2024-07-01", "--end", "2024-07-02"]
    started = time.monotonic()
    code, out = _cli([*args, "--source", f"local:{tmp_path / 'nowhere'}"], tmp_path)
    warm_s = time.monotonic() - started
    assert code == 2 and "nowhere" in out and len(out.splitlines()) == 1
    assert warm_s < 2.0, warm_s
    env = {
        "PATH": "/usr/bin:/bin",
        "GLACIAL_LAKES_HOME": str(tmp_path / "home"),
        "DATABASE_URL": "postgresql://u@127.0.0.1:1/x",
    }
    started = time.monotonic()
    cold = subprocess.run(
        [sys.executable, "-m", "flows.cli", *args, "--source", f"local:{tmp_path / 'nowhere'}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
    )
    cold_s = time.monotonic() - started
    assert cold.returncode == 2 and len((cold.stdout + cold.stderr).strip().splitlines()) == 1, cold.stderr
    assert cold_s < 4.0, cold_s
