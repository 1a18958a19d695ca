"""Checkpoint loading: strict keys, release layout, hf:// through an offline cache, backbones, versions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from core.errors import ModelLoadError
from flows.settings import Settings
from models.checkpoint import (
    file_sha256,
    load_backbone,
    load_model,
    parse_checkpoint,
    save_checkpoint,
    write_release_checkpoint,
)
from models.hub import HubCache
from models.normalisation import load_stats
from models.registry import load_segmenter
from models.terramind import ModelConfig, build_model


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init tiny checkpoint in the CryoSentinel release layout (heavy, 1 class)."""
    return write_release_checkpoint(tmp_path_factory.mktemp("rel") / "soup.ckpt", "tiny", seed=1)


def _tampered(release: Path, tmp_path: Path, change: str) -> Path:
    ckpt = torch.load(release, weights_only=True)
    sd = ckpt["state_dict"]
    if change == "missing":
        del sd["model.decoder.fpn_bottleneck.conv.weight"]
    elif change == "extra":
        sd["model.decoder.extra_branch.weight"] = torch.zeros(3)
    elif change == "shape":
        sd["model.head.head.2.bias"] = torch.zeros(3)
    elif change == "outside":
        sd["ema.shadow.weight"] = torch.zeros(1)
    path = tmp_path / f"{change}.ckpt"
    torch.save(ckpt, path)
    return path


def test_release_layout_loads_strictly_with_cryosentinel_defaults(release: Path) -> None:
    """Every key of the release layout matches: heavy tiny, sigmoid head, CryoSentinel stats."""
    loaded = load_model(str(release))
    assert (loaded.config.variant, loaded.config.layout, loaded.config.num_classes) == ("tiny", "heavy", 1)
    assert loaded.stats.name == "cryosentinel-v3"
    assert loaded.version == f"{file_sha256(release)[:16]}+{loaded.config.config_hash}"
    ref = torch.load(release, weights_only=True)["state_dict"]["model.head.head.2.weight"]
    assert torch.equal(loaded.model.state_dict()["head.head.2.weight"], ref)
    assert not loaded.model.training


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ("missing", "missing keys: decoder.fpn_bottleneck.conv.weight"),
        ("extra", "unexpected keys: decoder.extra_branch.weight"),
        ("shape", "wrong shapes: head.head.2.bias"),
        ("outside", "outside 'model.': ema.shadow.weight"),
    ],
)
def test_tampered_checkpoints_are_refused_naming_keys(release: Path, tmp_path: Path, change: str, needle: str) -> None:
    path = _tampered(release, tmp_path, change)
    with pytest.raises(ModelLoadError, match=needle.replace(".", r"\.")) as err:
        load_model(str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_bare_and_compiled_state_dicts_load(release: Path, tmp_path: Path) -> None:
    """A bare state dict and a torch.compile-prefixed one load into the same weights."""
    sd = torch.load(release, weights_only=True)["state_dict"]
    bare = tmp_path / "bare.pt"
    torch.save({k.removeprefix("model."): v for k, v in sd.items()}, bare)
    compiled = tmp_path / "compiled.ckpt"
    torch.save({"state_dict": {k.replace("model.", "model._orig_mod.", 1): v for k, v in sd.items()}}, compiled)
    for path in (bare, compiled):
        loaded = load_model(str(path))
        assert loaded.config.layout == "heavy" and loaded.kind in {"state_dict", "lightning"}


def test_not_a_checkpoint_is_bad_input(tmp_path: Path) -> None:
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a pickle")
    with pytest.raises(ModelLoadError, match=r"junk\.ckpt"):
        load_model(str(junk))
    with pytest.raises(ModelLoadError, match="no such checkpoint"):
        load_model(str(tmp_path / "absent.ckpt"))


def _fill_hf_cache(cache: Path, repo: str, filename: str, src: Path, extra: dict[str, str] | None = None) -> None:
    """The documented cache layout: models--org--name/{refs/main, snapshots/<rev>/<path>}."""
    rev = "0123456789abcdef0123456789abcdef01234567"
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(rev)
    target = root / "snapshots" / rev / filename
    target.parent.mkdir(parents=True)
    shutil.copyfile(src, target)
    for name, text in (extra or {}).items():
        (root / "snapshots" / rev / name).write_text(text)


def test_hf_spec_loads_offline_from_a_prefilled_cache(
    release: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hf://org/repo/path resolves through the HF cache with HF_HUB_OFFLINE=1; sibling stats are used.

    The variables are read at the edge (``Settings``) and passed down explicitly as a ``HubCache``.
    """
    cache = tmp_path / "hub"
    stats = load_stats("terramind_pretrain").to_dict()
    sibling = {"ckpt/soup.ckpt.stats.json": json.dumps(stats)}
    _fill_hf_cache(cache, "glacial/cryo-test", "ckpt/soup.ckpt", release, sibling)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    settings = Settings()
    hub = settings.hub
    loaded = load_model("hf://glacial/cryo-test/ckpt/soup.ckpt", hub=hub)
    assert loaded.weights_sha256 == file_sha256(release)
    assert loaded.stats.name == "terramind-v1-pretrain"
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE"):
        load_model("hf://glacial/cryo-test/ckpt/other.ckpt", hub=hub)
    with pytest.raises(ModelLoadError, match="hf://<org>"):
        load_model("hf://just-a-name", hub=hub)
    seg = load_segmenter("hf://glacial/cryo-test/ckpt/soup.ckpt", hub=hub)  # the registry passes the hub on
    assert file_sha256(release)[:16] in seg.version


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, HubCache(None, False)),
        ({"HF_HOME": "/x/hf"}, HubCache(Path("/x/hf/hub"), False)),
        ({"HF_HOME": "/x/hf", "HF_HUB_CACHE": "/y/cache"}, HubCache(Path("/y/cache"), False)),
        ({"HF_HUB_OFFLINE": "0"}, HubCache(None, False)),
        ({"HF_HUB_OFFLINE": "1"}, HubCache(None, True)),
        ({"HF_HUB_OFFLINE": "true"}, HubCache(None, True)),
        ({"HF_HUB_OFFLINE": "on"}, HubCache(None, True)),
    ],
)
def test_the_hugging_face_variables_reach_the_hub_cache(
    env: dict[str, str], expected: HubCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HF_HUB_CACHE wins over HF_HOME/hub; HF_HUB_OFFLINE is 1/true/on: read by Settings, passed as a HubCache."""
    for name in ("HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.hub == expected


def test_our_checkpoint_carries_config_and_stats(tmp_path: Path) -> None:
    """save_checkpoint embeds config and stats; the registry wraps it as a versioned segmenter."""
    torch.manual_seed(0)
    config = ModelConfig("tiny", "light", 2)
    stats = load_stats("terramind_pretrain")
    path = save_checkpoint(tmp_path / "ours.ckpt", build_model(config), config, stats, epoch=3)
    parsed = parse_checkpoint(torch.load(path, weights_only=True))
    assert parsed.config == config and parsed.stats is not None
    seg = load_segmenter(str(path))
    assert seg.name == "terramind-tiny"
    assert seg.version.startswith(f"terramind-tiny:{file_sha256(path)[:16]}+{config.config_hash}+")


def test_backbone_checkpoint_loads_into_the_encoder_only(tmp_path: Path) -> None:
    """A TerraMind pretraining file (encoder + parts we do not use) fills the encoder strictly."""
    torch.manual_seed(0)
    donor = build_model(ModelConfig("tiny", "light", 1)).encoder.state_dict()
    path = tmp_path / "TerraMind_v1_tiny.pt"
    unused = {
        "decoder.0.attn.qkv.weight": torch.zeros(3),  # TerraMind's own decoder
        "encoder_embeddings.untok_sen1rtc@224.proj.weight": torch.zeros(2),  # another modality
    }
    torch.save({**donor, **unused}, path)
    torch.manual_seed(1)
    model = build_model(ModelConfig("tiny", "light", 1))
    head_before = model.head.state_dict()["head.2.weight"].clone()
    load_backbone(model, path)
    key = "encoder.0.attn.qkv.weight"
    assert torch.equal(model.encoder.state_dict()[key], donor[key])
    assert torch.equal(model.head.state_dict()["head.2.weight"], head_before)
    with pytest.raises(ModelLoadError, match="backbone"):
        load_model(str(path))  # no decoder: not a segmenter
    broken = {k: v for k, v in donor.items() if k != key}
    broken["encoder_embeddings.untok_sen2l2a@224.junk"] = torch.zeros(1)
    torch.save(broken, path)
    with pytest.raises(ModelLoadError, match=r"missing keys: encoder\.0\.attn\.qkv\.weight.*unexpected keys"):
        load_backbone(model, path)
