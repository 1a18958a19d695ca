"""ONNX Runtime backend: export equals torch, the cache is reused, failures name the setting, selection by setting."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import InferenceBackendError, SettingsError
from models.checkpoint import LoadedModel
from models.inference import InferenceParams, TerraMindSegmenter
from models.normalisation import load_stats
from models.onnx_runtime import OnnxForward, export_key, load_onnx_forward, onnx_path
from models.runtime import BACKEND_SETTING, InferenceRuntime
from models.terramind import ModelConfig, build_model, forward_binary_logits

STATS = load_stats()
ROOT = Path(__file__).resolve().parents[2]
WINDOW = 224  # TerraMind's patch grid needs a multiple of 16; 224 is what scenes run at


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    torch.manual_seed(0)
    config = ModelConfig("tiny", "light", 1)
    return LoadedModel(build_model(config).eval(), config, STATS, "a" * 64, "tiny-random.pt")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def exported(loaded: LoadedModel, cache: Path) -> OnnxForward:
    """The module's one export (about 10 s on a 2-core machine)."""
    return load_onnx_forward(loaded, WINDOW, cache, threads=1)


@pytest.fixture
def full_fp32() -> Iterator[None]:
    """Torch's reference in full float32 matmul precision, whatever another test left."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(before)


def _scene(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    s2 = rng.uniform(0, 4000, (12, h, w))  # reflectance × 10 000
    s1 = rng.uniform(-25, -5, (2, h, w))  # dB
    dem = rng.uniform(3000, 5000, (1, h, w))  # m
    return np.concatenate([s2, s1, dem]).astype(np.float32)


@pytest.mark.slow
@pytest.mark.usefixtures("full_fp32")
def test_exported_graph_equals_torch_on_other_batch_sizes(exported: OnnxForward, loaded: LoadedModel) -> None:
    """One graph for any batch (the probe was 2): 1 and 3 windows agree with torch within 1e-4 (logits)."""
    assert exported.exported and exported.path.is_file()
    for b in (1, 3):
        x = torch.randn(b, 15, WINDOW, WINDOW, generator=torch.Generator().manual_seed(b))
        with torch.inference_mode():
            want = forward_binary_logits(loaded.model, x, 1)
        got = exported(x)
        assert got.shape == want.shape == (b, WINDOW, WINDOW) and got.dtype == torch.float32
        assert float((got - want).abs().max()) <= 1e-4
        assert float(want.std()) > 1e-3  # a constant output would agree trivially


@pytest.mark.slow
@pytest.mark.usefixtures("full_fp32")
@pytest.mark.parametrize("tta", [False, True])
def test_segmenter_on_onnx_gives_torchs_probabilities(
    exported: OnnxForward, loaded: LoadedModel, cache: Path, tta: bool
) -> None:
    """A 224×260 scene (2 windows, nodata) on ONNX Runtime and on torch: |Δp| ≤ 1e-4, TTA on and off."""
    params = InferenceParams(device="cpu", tta=tta)
    onnx = TerraMindSegmenter(loaded, params, InferenceRuntime("onnxruntime", cache))
    eager = TerraMindSegmenter(loaded, params, InferenceRuntime("torch"))
    assert (onnx.backend, eager.backend) == ("onnxruntime", "torch")
    assert onnx.version == eager.version  # the backend is not part of the model version
    stack = _scene(224, 260, seed=5)
    valid = np.ones((224, 260), bool)
    valid[:, :20] = False
    got, want = onnx.predict(stack, valid), eager.predict(stack, valid)
    assert np.isnan(got[:, :20]).all() and np.isfinite(got[:, 20:]).all()
    assert float(np.abs(got[:, 20:] - want[:, 20:]).max()) <= 1e-4


@pytest.mark.slow
def test_second_load_reuses_the_cached_graph(exported: OnnxForward, loaded: LoadedModel, cache: Path) -> None:
    """The same model and window again: no export (flag and file time unchanged), one file, no temporaries."""
    before = exported.path.stat().st_mtime_ns
    again = load_onnx_forward(loaded, WINDOW, cache, threads=1)
    assert not again.exported and again.path == exported.path
    assert exported.path.stat().st_mtime_ns == before
    assert sorted(p.name for p in cache.iterdir()) == [exported.path.name]


def test_cache_key_tracks_weights_and_window(loaded: LoadedModel, tmp_path: Path) -> None:
    other = LoadedModel(loaded.model, loaded.config, STATS, "b" * 64, "other.pt")
    assert export_key(loaded, 224) == export_key(loaded, 224)
    assert len({export_key(loaded, 224), export_key(loaded, 256), export_key(other, 224)}) == 3
    assert onnx_path(loaded, 224, tmp_path).parent == tmp_path
    assert onnx_path(loaded, 224, tmp_path).name.startswith("terramind-tiny-")


class Unexportable(torch.nn.Module):
    """Python control flow on a tensor's value: torch.export cannot trace it."""

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        s2 = x["S2L2A"]
        return s2[:, 0] if float(s2.sum()) > 0 else -s2[:, 0]


def test_failing_export_stops_naming_the_reason_and_the_setting(tmp_path: Path) -> None:
    """No silent switch to torch: the segmenter refuses to build, and no file lands in the cache."""
    bad = LoadedModel(Unexportable(), ModelConfig(), STATS, "c" * 64, "bad.pt")
    runtime = InferenceRuntime("onnxruntime", tmp_path / "onnx")
    with pytest.raises(InferenceBackendError) as info:
        TerraMindSegmenter(bad, InferenceParams(device="cpu", tta=False), runtime)
    msg = str(info.value)
    assert "bad.pt" in msg and "export failed" in msg and "data-dependent" in msg
    assert f"{BACKEND_SETTING}=torch" in msg and "\n" not in msg
    assert not any((tmp_path / "onnx").glob("*")) if (tmp_path / "onnx").exists() else True
    # The same model on torch runs (the remedy the message names works).
    seg = TerraMindSegmenter(bad, InferenceParams(device="cpu", tta=False), InferenceRuntime("torch"))
    assert seg.backend == "torch"


def test_damaged_cached_graph_is_refused_not_reexported(loaded: LoadedModel, tmp_path: Path) -> None:
    path = onnx_path(loaded, WINDOW, tmp_path)
    path.write_bytes(b"not an onnx graph")
    with pytest.raises(InferenceBackendError, match=r"does not open.*delete it"):
        load_onnx_forward(loaded, WINDOW, tmp_path)
    assert path.read_bytes() == b"not an onnx graph"


def test_runtime_resolves_auto_by_device_and_refuses_bad_values(tmp_path: Path) -> None:
    auto = InferenceRuntime("auto", tmp_path)
    assert (auto.resolve("cpu"), auto.resolve("cuda")) == ("onnxruntime", "torch")
    assert InferenceRuntime("onnxruntime", tmp_path).resolve("cpu") == "onnxruntime"
    assert InferenceRuntime("torch").resolve("cpu") == "torch"
    with pytest.raises(ValueError, match="unknown inference backend"):
        InferenceRuntime("openvino", tmp_path)
    with pytest.raises(ValueError, match="cache folder"):
        InferenceRuntime("onnxruntime")


def test_torch_backend_by_setting_builds_no_graph(
    loaded: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GLACIAL_LAKES_INFERENCE_BACKEND=torch reaches the segmenter: eager forward, nothing exported."""
    from flows.settings import load_settings

    monkeypatch.setenv("GLACIAL_LAKES_HOME", str(tmp_path))
    monkeypatch.setenv(BACKEND_SETTING, "torch")
    monkeypatch.delenv("GLACIAL_LAKES_ONNX_CACHE", raising=False)  # the default: under the home
    runtime = load_settings().inference_runtime
    assert runtime == InferenceRuntime("torch", tmp_path.resolve() / "models" / "onnx")
    monkeypatch.setenv("GLACIAL_LAKES_ONNX_CACHE", str(tmp_path / "shared"))  # one folder for several homes
    assert load_settings().inference_runtime.cache_dir == tmp_path / "shared"
    seg = TerraMindSegmenter(loaded, InferenceParams(device="cpu", tta=False), runtime)
    assert seg.backend == "torch" and not isinstance(seg.forward, OnnxForward)
    assert not (tmp_path / "models").exists()


def test_backend_setting_defaults_to_auto_and_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.settings import load_settings

    monkeypatch.setenv("GLACIAL_LAKES_HOME", str(tmp_path))
    monkeypatch.delenv(BACKEND_SETTING, raising=False)
    assert load_settings().inference_runtime.backend == "auto"
    monkeypatch.setenv(BACKEND_SETTING, "openvino")
    with pytest.raises(SettingsError, match=BACKEND_SETTING):
        load_settings()


@pytest.mark.slow
def test_registry_passes_the_runtime_and_tta_reuses_one_graph(tmp_path: Path) -> None:
    """load_segmenter(…, runtime=onnxruntime) of a checkpoint: TTA on and off share one exported file."""
    from models.checkpoint import save_checkpoint
    from models.registry import load_segmenter

    torch.manual_seed(1)
    config = ModelConfig("tiny", "light", 2)
    ckpt = save_checkpoint(tmp_path / "m.ckpt", build_model(config), config, STATS)
    runtime = InferenceRuntime("onnxruntime", tmp_path / "onnx")
    with_tta, without = (
        load_segmenter(str(ckpt), True, runtime=runtime),
        load_segmenter(str(ckpt), False, runtime=runtime),
    )
    assert isinstance(with_tta, TerraMindSegmenter) and isinstance(without, TerraMindSegmenter)
    assert with_tta.backend == without.backend == "onnxruntime"
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 1


@pytest.mark.slow
def test_building_a_model_keeps_torchs_matmul_precision() -> None:
    """Importing terratorch lowers float32 matmul precision process-wide; build_model puts it back."""
    code = (
        "import torch\n"
        "from models.terramind import ModelConfig, build_model\n"
        "build_model(ModelConfig())\n"
        "print(torch.get_float32_matmul_precision())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "highest"
