"""Settings bounds (issue 9, finding 3): out-of-range values are refused naming the variable.

The variables and the CLI options share one set of ranges (``tasks.defaults``); a value one
refuses the other refuses too. Prefect's home and result storage are private (finding 5).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from flows.cli import main
from flows.cli_support import BadInput, BoundedFloat
from flows.settings import Settings, prepare_prefect_environment
from tasks.defaults import MAX_PAIR_DAYS_BOUND, MIN_LAKE_AREA_M2_BOUND, WATER_THRESHOLD_BOUND


def _db_status(tmp_path: Path, **env: str) -> tuple[int, str]:
    """``db status`` with DATABASE_URL set: it reads every setting and starts nothing."""
    base = {"GLACIAL_LAKES_HOME": str(tmp_path / "home"), "DATABASE_URL": "postgresql://u@127.0.0.1:1/x"}
    result = CliRunner().invoke(main, ["db", "status"], env=base | env)
    return result.exit_code, result.output.strip()


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("GLACIAL_LAKES_THRESHOLD", "2", "in (0, 1)"),
        ("GLACIAL_LAKES_THRESHOLD", "nan", "finite"),
        ("GLACIAL_LAKES_THRESHOLD", "inf", "finite"),
        ("GLACIAL_LAKES_THRESHOLD", "0", "in (0, 1)"),
        ("GLACIAL_LAKES_THRESHOLD", "1", "in (0, 1)"),
        ("GLACIAL_LAKES_MIN_AREA_M2", "-5", "> 0"),
        ("GLACIAL_LAKES_MIN_AREA_M2", "0", "> 0"),
        ("GLACIAL_LAKES_MIN_AREA_M2", "nan", "finite"),
        ("GLACIAL_LAKES_MAX_PAIR_DAYS", "-1", "> 0"),
        ("GLACIAL_LAKES_MAX_PAIR_DAYS", "nan", "finite"),
        ("GLACIAL_LAKES_PG_PORT", "80", "in [1024, 65535]"),
        ("GLACIAL_LAKES_PG_PORT", "70000", "in [1024, 65535]"),
        ("GLACIAL_LAKES_MODEL", "   ", "must name a model"),
    ],
)
def test_out_of_range_setting_is_exit_2_naming_the_variable(
    variable: str, value: str, reason: str, tmp_path: Path
) -> None:
    """S6: each value used to be accepted with exit 0 (and threshold 2 retired every lake)."""
    code, out = _db_status(tmp_path, **{variable: value})
    assert code == 2, out
    assert out.startswith(f"Error: {variable}={value!r}: "), out
    assert reason in out and len(out.splitlines()) == 1


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GLACIAL_LAKES_THRESHOLD", "0.3"),
        ("GLACIAL_LAKES_MIN_AREA_M2", "1"),
        ("GLACIAL_LAKES_MAX_PAIR_DAYS", "0.5"),
        ("GLACIAL_LAKES_PG_PORT", "1024"),
    ],
)
def test_in_range_setting_is_accepted(variable: str, value: str, tmp_path: Path) -> None:
    code, out = _db_status(tmp_path, **{variable: value})
    assert code == 0, out


def test_long_bad_value_is_shown_cut_to_one_short_line(tmp_path: Path) -> None:
    code, out = _db_status(tmp_path, GLACIAL_LAKES_THRESHOLD="9" * 5000)
    assert code == 2 and len(out) < 200 and "GLACIAL_LAKES_THRESHOLD=" in out


@pytest.mark.parametrize(
    ("field", "bound"),
    [
        ("threshold", WATER_THRESHOLD_BOUND),
        ("min_area_m2", MIN_LAKE_AREA_M2_BOUND),
        ("max_pair_days", MAX_PAIR_DAYS_BOUND),
    ],
)
@pytest.mark.parametrize("value", ["nan", "-inf", "-1", "0", "1e-9", "0.5", "1", "2", "5000", "1e300"])
def test_settings_and_cli_options_refuse_the_same_values(field: str, bound: object, value: str) -> None:
    """One definition of each range: the Settings validator and the click option type agree."""
    try:
        Settings(**{field: float(value)})
        settings_ok = True
    except ValueError:
        settings_ok = False
    try:
        BoundedFloat(bound).convert(value, None, None)  # type: ignore[arg-type]
        option_ok = True
    except BadInput:
        option_ok = False
    assert settings_ok == option_ok


def test_segment_threshold_uses_the_same_bound(tmp_path: Path) -> None:
    """``segment --threshold`` refuses 0, 1, 2 and nan on one line naming the option (nan slipped through before)."""
    files = []
    for name in ("s2.tif", "s1.tif", "dem.tif"):
        (tmp_path / name).write_bytes(b"")
        files.append(str(tmp_path / name))
    env = {"GLACIAL_LAKES_HOME": str(tmp_path / "home")}
    for value in ("0", "1", "2", "nan"):
        args = ["segment", "--s2", files[0], "--s1", files[1], "--dem", files[2], "--out", str(tmp_path / "p.tif")]
        result = CliRunner().invoke(main, [*args, "--threshold", value], env=env)
        line = result.output.strip()
        assert result.exit_code == 2, result.output
        assert line.startswith(f"Error: --threshold {value!r}:") and len(line.splitlines()) == 1


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_prefect_home_and_result_storage_are_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 5: the Prefect home was 0755 and persisted failures 0644; now 0700 and nothing persisted by default."""
    for variable in ("PREFECT_HOME", "PREFECT_LOCAL_STORAGE_PATH", "PREFECT_RESULTS_PERSIST_BY_DEFAULT"):
        monkeypatch.delenv(variable, raising=False)
    home = tmp_path / "home"
    (home / "prefect").mkdir(parents=True, mode=0o755)  # an older run left it open
    (home / "prefect").chmod(0o755)
    old = os.umask(0o022)
    try:
        prepare_prefect_environment(Settings(home=home))
    finally:
        os.umask(old)
    storage = Path(os.environ["PREFECT_LOCAL_STORAGE_PATH"])
    assert Path(os.environ["PREFECT_HOME"]) == home / "prefect"
    assert storage == home / "prefect" / "storage"
    assert _mode(home / "prefect") == 0o700 and _mode(storage) == 0o700
    assert os.environ["PREFECT_RESULTS_PERSIST_BY_DEFAULT"] == "false"


def test_users_own_prefect_folders_are_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o755)
    mine.chmod(0o755)
    monkeypatch.setenv("PREFECT_HOME", str(mine))
    monkeypatch.setenv("PREFECT_LOCAL_STORAGE_PATH", str(mine / "results"))
    monkeypatch.setenv("PREFECT_RESULTS_PERSIST_BY_DEFAULT", "true")
    prepare_prefect_environment(Settings(home=tmp_path / "home"))
    assert _mode(mine) == 0o755 and not (mine / "results").exists()
    assert os.environ["PREFECT_RESULTS_PERSIST_BY_DEFAULT"] == "true"
    assert not (tmp_path / "home" / "prefect").exists()


def _readable_by_others(path: Path, home: Path) -> bool:
    """Another user can read ``path``: o+r on it and o+x on every folder from ``home`` down."""
    if not _mode(path) & stat.S_IROTH:
        return False
    return all(_mode(folder) & stat.S_IXOTH for folder in [home, *path.relative_to(home).parents][:-1] if folder)


def test_private_source_file_does_not_become_readable(tmp_path: Path) -> None:
    """Finding 5: a 0600 file given as --source leaked its contents into world-readable Prefect storage."""
    secret = tmp_path / "private.json"
    secret.write_text('{"token": "S3CRET-contents"}')
    secret.chmod(0o600)
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text('{"type": "Polygon", "coordinates": [[[77, 43], [77.1, 43], [77.1, 43.1], [77, 43.1], [77, 43]]]}')
    home = tmp_path / "home"
    env = {
        "GLACIAL_LAKES_HOME": str(home),
        "DATABASE_URL": "postgresql://u@127.0.0.1:1/x",
        "PREFECT_HOME": None,  # an earlier test of this process may have set them
        "PREFECT_LOCAL_STORAGE_PATH": None,
    }
    args = ["run", "--aoi", str(aoi), "--start", "2024-07-01", "--end", "2024-07-02", "--source", f"local:{secret}"]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 2, result.output
    assert "S3CRET" not in result.output
    leaked = [
        p for p in home.rglob("*") if p.is_file() and b"S3CRET" in p.read_bytes() and _readable_by_others(p, home)
    ]
    assert not leaked
    assert _mode(home / "prefect") == 0o700
