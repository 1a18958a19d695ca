"""Fine-tuning: the CryoSentinel block split, and a 2-epoch run whose checkpoint loads strictly."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from pyproj import Transformer

from flows.train_cli import train_command
from models.checkpoint import load_model
from models.train import BlockSplit, TrainConfig
from tasks.grid import GridSpec
from tasks.stack import write_stack

EPSG = 32643
SIZE = 336  # 2 × 2 chips of 224 px at stride 112


def test_block_split_is_cryosentinels_hash() -> None:
    """sha1("salt|lat_idx|lon_idx")[:8] mod 100 → 80/10/10; buffer chips dropped; year-independent."""
    split = BlockSplit(0.15, 0.02)
    lat, lon = 43.2 + 0.075, 77.1 + 0.075  # a block centre
    key = f"cryosentinel-blocks-v1|{math.floor(lat / 0.15)}|{math.floor(lon / 0.15)}"
    bucket = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) % 100
    assert split.split_for(lat, lon) == ("train" if bucket < 80 else "val" if bucket < 90 else "test")
    assert split.split_for(lat + 0.04, lon - 0.04) == split.split_for(lat, lon)  # same block
    assert split.split_for(math.floor(lat / 0.15) * 0.15 + 0.01, lon) == "BUFFER"
    rng = np.random.default_rng(0)
    points = zip(rng.uniform(27, 45, 4000), rng.uniform(68, 104, 4000), strict=True)
    got = [split.split_for(float(a), float(b)) for a, b in points]
    kept = [g for g in got if g != "BUFFER"]
    assert 0.74 < kept.count("train") / len(kept) < 0.86
    assert abs(got.count("BUFFER") / len(got) - (1 - (1 - 0.04 / 0.15) ** 2)) < 0.04


def test_batch_of_one_is_refused() -> None:
    with pytest.raises(ValueError, match="BatchNorm"):
        TrainConfig(batch_size=1)


def _chip_splits(origin: tuple[float, float], split: BlockSplit) -> list[str]:
    to_ll = Transformer.from_crs(EPSG, 4326, always_xy=True)
    out = []
    for r in (0, 112):
        for c in (0, 112):
            lon, lat = to_ll.transform(origin[0] + (c + 112) * 10, origin[1] - (r + 112) * 10)
            out.append(split.split_for(lat, lon))
    return out


def _scene(tmp_path: Path, split: BlockSplit) -> tuple[Path, Path]:
    """A 336 px stack whose four chips fall in ≥ 2 train and ≥ 1 val blocks, and lake polygons."""

    def fits(x: int) -> bool:
        s = _chip_splits((x, 4_800_000), split)
        return s.count("train") >= 2 and "val" in s

    x0 = next(x for x in range(600_000, 700_000, 1130) if fits(x))
    grid = GridSpec(EPSG, (10.0, 0.0, float(x0), 0.0, -10.0, 4_800_000.0), SIZE, SIZE)
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    lakes = [(90, 100, 35), (220, 230, 45), (100, 250, 25)]
    water = np.zeros((SIZE, SIZE), bool)
    for cy, cx, r in lakes:
        water |= (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
    s2 = np.where(water, 600, 2500)[None] + rng.normal(0, 150, (12, SIZE, SIZE))
    s1 = np.where(water, -22, -10)[None] + rng.normal(0, 1.5, (2, SIZE, SIZE))
    dem = 4000 + rng.normal(0, 5, (1, SIZE, SIZE))
    stack = np.concatenate([s2, s1, dem]).astype(np.float32)
    info = write_stack(stack, np.ones((SIZE, SIZE), bool), grid, tmp_path, "scene")
    to_ll = Transformer.from_crs(EPSG, 4326, always_xy=True)
    feats = []
    for cy, cx, r in lakes:
        ring = [
            to_ll.transform(x0 + (cx + r * math.cos(t)) * 10, 4_800_000 - (cy + r * math.sin(t)) * 10)
            for t in np.linspace(0, 2 * math.pi, 33)
        ]
        feats.append({"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}})
    labels = tmp_path / "lakes.geojson"
    labels.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return info.path, labels


def test_two_epochs_write_a_checkpoint_the_loader_accepts_strictly(tmp_path: Path) -> None:
    split = BlockSplit(0.003, 0.0)
    stack, labels = _scene(tmp_path, split)
    out = tmp_path / "model" / "lakes.ckpt"
    args = [
        *("--stack", str(stack), "--labels", str(labels), "--out", str(out)),
        *("--epochs", "2", "--batch-size", "2", "--patience", "5"),
        *("--block-size", "0.003", "--buffer", "0", "--stats", "terramind_pretrain"),
    ]
    result = CliRunner().invoke(train_command, args, env={"GLACIAL_LAKES_HOME": str(tmp_path / "home")})
    assert result.exit_code == 0, result.output
    assert "epoch 1/2" in result.output and "epoch 2/2" in result.output
    loaded = load_model(str(out))  # strict: every key present, nothing extra
    assert (loaded.config.variant, loaded.config.layout, loaded.config.num_classes) == ("tiny", "light", 1)
    assert loaded.stats.name == "terramind-v1-pretrain"  # the statistics travel with the weights
    meta = torch.load(out, weights_only=True)["glacial_lakes"]
    assert meta["epoch"] in (1, 2) and 0.0 <= meta["metrics"]["val_iou"] <= 1.0
    assert meta["split"]["train"] >= 2 and meta["split"]["val"] >= 1


def test_train_cli_bad_input_exits_2(tmp_path: Path) -> None:
    env = {"GLACIAL_LAKES_HOME": str(tmp_path / "home")}
    labels = tmp_path / "l.geojson"
    labels.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    common = ["--labels", str(labels), "--out", str(tmp_path / "m.ckpt")]
    cases = [
        (["--stack", str(tmp_path / "none.tif"), *common], "none.tif"),
        ([*common, "--batch-size", "1"], "batch size"),
        (["--triplet", "a.tif,b.tif", *common], "--triplet"),
    ]
    for args, needle in cases:
        result = CliRunner().invoke(train_command, args, env=env)
        assert result.exit_code == 2 and needle in result.output.strip().splitlines()[-1], result.output
