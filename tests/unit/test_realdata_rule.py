"""The real-data rule: missing data skips on a developer's machine and fails under CI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import realdata


def test_missing_real_data_skips_outside_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(realdata.ENV, str(tmp_path / "absent"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="real sample data missing"):
        realdata.require("icimod_glacial_lakes_2015")


def test_missing_real_data_fails_under_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(realdata.ENV, str(tmp_path / "absent"))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="real sample data missing"):
        realdata.require()


def test_the_location_is_configurable_and_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "icimod").mkdir()
    monkeypatch.setenv(realdata.ENV, str(tmp_path))
    assert realdata.require("icimod") == tmp_path / "icimod"
    monkeypatch.delenv(realdata.ENV)
    assert realdata.root().parts[-2:] == ("shared", "realdata")
