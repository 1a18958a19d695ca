"""The shipped default model: loads offline as ``default``, finds water, leaves snow alone."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import ModelLoadError
from demo.synthetic.chips import IGNORE, Scenario, make_training_chips
from flows.settings import Settings
from models import registry
from models.inference import TerraMindSegmenter
from models.registry import (
    DEFAULT_WEIGHTS,
    load_segmenter,
    resolve_spec,
)

SEED = 2024  # not the training recipe's seed; the test split is its own random stream


@pytest.fixture(scope="module")
def default() -> TerraMindSegmenter:
    seg = load_segmenter("default")
    assert isinstance(seg, TerraMindSegmenter)
    return seg


def test_default_is_what_runs_when_nothing_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GLACIAL_LAKES_MODEL", raising=False)
    assert Settings().model == "default"
    assert resolve_spec("default") == str(DEFAULT_WEIGHTS)
    assert resolve_spec("baseline") == "baseline"


def test_shipped_file_is_a_small_fp16_terramind_tiny(default: TerraMindSegmenter) -> None:
    assert DEFAULT_WEIGHTS.stat().st_size <= 30e6
    blob = torch.load(DEFAULT_WEIGHTS, map_location="cpu", weights_only=True)
    floats = [t for t in blob["state_dict"].values() if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float16 for t in floats)
    assert default.name == "terramind-tiny"
    sha = hashlib.sha256(DEFAULT_WEIGHTS.read_bytes()).hexdigest()
    assert sha[:16] in default.version, "the scene's model_version names the file"
    assert default.harmonised_s2, "trained on harmonised reflectance: one-off inputs get the offset test"


def test_missing_weights_are_refused_not_replaced(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(registry, "DEFAULT_WEIGHTS", tmp_path / "gone.pt")
    with pytest.raises(ModelLoadError, match="missing"):
        resolve_spec("default")


def _iou_and_false_water(seg: TerraMindSegmenter, scenario: Scenario, n: int) -> tuple[float, float]:
    chips = make_training_chips(n, seed=SEED, split="test", scenario=scenario)
    tp = fp = fn = land = 0
    for stack, valid, label in zip(chips.stack, chips.valid, chips.label, strict=True):
        prob = seg.predict(stack, valid)
        assert np.isnan(prob[~valid]).all(), "nodata stays nodata"
        pred, known = np.nan_to_num(prob) >= 0.5, label != IGNORE
        truth = label == 1
        tp += int((pred & truth).sum())
        fp += int((pred & ~truth & known).sum())
        fn += int((~pred & truth).sum())
        land += int((~truth & known).sum())
    return tp / max(tp + fp + fn, 1), fp / max(land, 1)


def test_finds_lakes_and_rivers_on_unseen_synthetic_chips(default: TerraMindSegmenter) -> None:
    iou, false_water = _iou_and_false_water(default, Scenario(clouds=False), 6)
    assert iou >= 0.6, f"water IoU {iou:.3f}"
    assert false_water <= 0.02, f"false water on land {false_water:.3%}"


def test_snow_covered_ground_is_not_water(default: TerraMindSegmenter) -> None:
    _, false_water = _iou_and_false_water(default, Scenario(kind="alpine", water=False, snow_cover=0.95), 3)
    assert false_water <= 0.05, f"{false_water:.2%} of snow called water"


def test_segment_cli_on_the_real_chip_as_distributed(
    default: TerraMindSegmenter, tmp_path: Path, realdata: Path
) -> None:
    """The real L2A chip still carries +1000 DN: auto removes it, and the CLI equals the in-memory model."""
    import rasterio
    from click.testing import CliRunner

    from flows.segment_cli import segment_command
    from tasks.preprocess import harmonise_s2_dn

    files = {k: realdata / "terramesh_sample" / f"433D_629L_3_1_{k}.tif" for k in ("S2L2A", "S1RTC", "DEM")}
    out = tmp_path / "prob.tif"
    args = ["--s2", files["S2L2A"], "--s1", files["S1RTC"], "--dem", files["DEM"], "--out", out]
    env = {"GLACIAL_LAKES_HOME": str(tmp_path / "home")}
    result = CliRunner().invoke(segment_command, [str(a) for a in args], env=env)
    assert result.exit_code == 0, result.output
    assert "1000 removed" in result.output and "terramind-tiny" in result.output
    with rasterio.open(out) as ds:
        cli = ds.read(1)
    bands = []
    for key in ("S2L2A", "S1RTC", "DEM"):
        with rasterio.open(files[key]) as ds:
            bands.append(ds.read().astype(np.float32))
    stack = np.concatenate([harmonise_s2_dn(bands[0], "04.00"), bands[1], bands[2]])
    direct = default.predict(stack, np.isfinite(stack).all(axis=0))
    np.testing.assert_allclose(cli, direct, atol=1e-5)
