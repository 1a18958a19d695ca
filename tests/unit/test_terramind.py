"""TerraMind factory, configuration hashing, statistics as data and the CryoSentinel input protocol."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import ModelLoadError
from models.checkpoint import infer_config
from models.normalisation import STATS_DIR, NormStats, load_stats, prepare_stack
from models.terramind import VARIANTS, ModelConfig, binary_logits, build_model, forward_binary_logits

SPEC = Path(__file__).resolve().parents[3] / "shared" / "reference" / "cryosentinel-spec.md"


def test_config_hash_is_stable_and_tracks_every_field() -> None:
    """Equal configs hash equal (across processes: pure JSON); any field change changes the hash."""
    base = ModelConfig("tiny", "light", 1)
    assert base.config_hash == ModelConfig("tiny", "light", 1).config_hash
    assert re.fullmatch(r"[0-9a-f]{12}", base.config_hash)
    others = [ModelConfig("small", "light", 1), ModelConfig("tiny", "heavy", 1), ModelConfig("tiny", "light", 2)]
    assert len({base.config_hash, *(c.config_hash for c in others)}) == 4
    assert ModelConfig.from_dict(json.loads(json.dumps(base.to_dict()))) == base


@pytest.mark.parametrize("bad", [{"variant": "huge"}, {"layout": "medium"}, {"num_classes": 3}])
def test_config_rejects_unknown_values(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ModelConfig(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(("layout", "classes"), [("heavy", 1), ("light", 2)])
def test_factory_builds_layouts_and_config_is_read_back_from_shapes(layout: str, classes: int) -> None:
    """Both layouts and head styles build offline; variant/layout/head come back from tensor shapes."""
    config = ModelConfig("tiny", layout, classes)
    sd = build_model(config).state_dict()
    assert infer_config(sd) == config
    assert any(k.startswith("decoder.fpn1.") for k in sd) == (layout == "heavy")
    assert any(k.startswith("neck.2.fpn1.") for k in sd)  # LearnedInterpolateToPyramidal in both


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_is_inferred_from_width_and_depth(variant: str) -> None:
    """Shape-only state dicts (no model built): width and block count name the variant."""
    spec = VARIANTS[variant]
    sd = {f"encoder.encoder.{i}.norm1.weight": torch.zeros(spec.dim) for i in range(spec.depth)}
    sd |= {
        "encoder.encoder_norm.weight": torch.zeros(spec.dim),
        "decoder.fpn_bottleneck.conv.weight": torch.zeros(256, 1024, 3, 3),
        "head.head.2.weight": torch.zeros(2, 256, 1, 1),
    }
    config = infer_config(sd)
    assert (config.variant, config.layout, config.num_classes) == (variant, "light", 2)


def test_unknown_shapes_are_refused() -> None:
    sd = {"encoder.encoder_norm.weight": torch.zeros(100), "encoder.encoder.0.x": torch.zeros(1)}
    with pytest.raises(ModelLoadError, match="width 100"):
        infer_config(sd)


def test_two_class_head_gives_the_softmax_water_logit() -> None:
    """sigmoid(binary logit) equals softmax[:, 1]; a 1-class output passes through."""
    z = torch.randn(2, 2, 5, 5)
    assert torch.allclose(torch.sigmoid(binary_logits(z, 2)), torch.softmax(z, dim=1)[:, 1], atol=1e-6)
    one = torch.randn(2, 5, 5)
    assert torch.equal(binary_logits(one, 1), one)


def test_light_tiny_forward_gives_one_logit_per_pixel() -> None:
    model = build_model(ModelConfig("tiny", "light", 1)).eval()
    with torch.inference_mode():
        z = forward_binary_logits(model, torch.randn(1, 15, 224, 224), 1)
    assert z.shape == (1, 224, 224) and torch.isfinite(z).all()


def _spec_table() -> dict[str, tuple[float, float]]:
    """The per-band table of spec §1.5, parsed from the reference document itself."""
    text = SPEC.read_text(encoding="utf-8").split("### 1.5", 1)[1].split("###", 1)[0]
    rows = re.findall(r"^\| (B\w+|VV \(dB\)|VH \(dB\)|DEM \(m\)) \| ([−\-\d.]+) \| ([\d.]+) \|", text, re.M)
    return {name.split()[0]: (float(m.replace("−", "-")), float(s)) for name, m, s in rows}


@pytest.mark.skipif(not SPEC.exists(), reason="reference spec not present")
def test_cryosentinel_statistics_are_the_published_numbers() -> None:
    """models/stats/cryosentinel.json holds exactly the spec's §1.5 table, in stack order."""
    table = _spec_table()
    stats = load_stats("cryosentinel")
    order = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12", "VV", "VH", "DEM"]
    assert len(table) == 15
    assert stats.means == tuple(table[b][0] for b in order)
    assert stats.stds == tuple(table[b][1] for b in order)
    assert stats.s2_dn_offset == 0


def test_terramind_statistics_match_terratorch() -> None:
    """The pretraining fallback equals terratorch's v1 numbers (DEM mean 670.665 m)."""
    from terratorch.models.backbones.terramind.model.terramind_register import v1_pretraining_mean as m
    from terratorch.models.backbones.terramind.model.terramind_register import v1_pretraining_std as s

    stats = load_stats("terramind_pretrain")
    keys = ("untok_sen2l2a@224", "untok_sen1grd@224", "untok_dem@224")
    assert stats.means == tuple(v for k in keys for v in m[k])
    assert stats.stds == tuple(v for k in keys for v in s[k])


def test_statistics_round_trip_and_malformed_files_are_refused(tmp_path: Path) -> None:
    stats = load_stats()
    assert NormStats.from_dict(stats.to_dict()) == stats
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"S2L2A": {"means": [0] * 12, "stds": [1] * 12}}))
    with pytest.raises(ValueError, match=r"bad\.json"):
        load_stats(bad)
    assert {p.name for p in STATS_DIR.glob("*.json")} >= {"cryosentinel.json", "terramind_pretrain.json"}


def test_prepare_stack_fills_nodata_as_cryosentinel_then_standardises() -> None:
    """S2 NaN → 0, S1 NaN/±Inf → −25/5/−30 dB, DEM NaN → −500 m, clips, then (x − mean)/std."""
    stats = load_stats()
    x = np.full((15, 1, 6), 1000.0, np.float32)
    x[:12, 0, 0] = np.nan
    x[:12, 0, 1] = 20_000
    x[12, 0, 2], x[12, 0, 3], x[12, 0, 4] = np.nan, np.inf, -np.inf
    x[14, 0, 5] = np.nan
    x[14, 0, 4] = 12_000
    out = prepare_stack(x, stats)
    raw = out * np.array(stats.stds, np.float32)[:, None, None] + np.array(stats.means, np.float32)[:, None, None]
    assert np.isfinite(out).all()
    np.testing.assert_allclose(raw[:12, 0, 0], 0, atol=1e-2)
    np.testing.assert_allclose(raw[:12, 0, 1], 16_000, rtol=1e-5)
    np.testing.assert_allclose(raw[12, 0, 2:5], [-25, 5, -30], atol=1e-4)
    np.testing.assert_allclose(raw[14, 0, [4, 5]], [9000, -500], rtol=1e-5)
    assert np.isnan(x[:12, 0, 0]).all()  # the input is not modified


def test_s2_offset_is_applied_in_one_place() -> None:
    """Statistics over un-harmonised data (offset 1000) see our harmonised S2 shifted by 1000 DN."""
    base = load_stats()
    shifted = NormStats(base.name, base.means, base.stds, s2_dn_offset=1000)
    x = np.full((15, 2, 2), 500.0, np.float32)
    delta = prepare_stack(x, shifted)[:12] - prepare_stack(x, base)[:12]
    expected = np.broadcast_to(1000 / np.array(base.stds[:12])[:, None, None], delta.shape)
    np.testing.assert_allclose(delta, expected, rtol=1e-5)
