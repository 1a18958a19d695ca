"""Sliding-window inference: hand-computed blending, flip TTA, padding, nodata, bounded memory."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from models.checkpoint import LoadedModel
from models.inference import (
    InferenceParams,
    TerraMindSegmenter,
    flip_tta,
    gaussian_weights,
    iter_logit_rows,
    predict_logits,
    window_starts,
)
from models.normalisation import load_stats, prepare_stack
from models.segmenter import ArraySource
from models.terramind import ModelConfig, build_model, forward_binary_logits
from tasks.stack import StackReader

STATS = load_stats()
NO_TTA = InferenceParams(tta=False)


class FakeModel:
    """A fixed random 3×3 conv plus the window mean: not translation- or flip-equivariant."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(15, 1, 3, padding=1)
        self.calls = 0
        self.windows = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.windows += x.shape[0]
        with torch.no_grad():
            ramp = torch.linspace(0, 1, x.shape[-1])
            return self.conv(x)[:, 0] + x.mean(dim=(1, 2, 3))[:, None, None] + ramp


def _scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    s2 = rng.uniform(0, 4000, (12, h, w))  # reflectance x 10 000
    s1 = rng.uniform(-25, -5, (2, h, w))  # dB
    dem = rng.uniform(3000, 5000, (1, h, w))  # m
    return np.concatenate([s2, s1, dem]).astype(np.float32)


def test_window_starts_cover_the_far_edge() -> None:
    assert window_starts(224, 224, 112) == [0]
    assert window_starts(100, 224, 112) == [0]
    assert window_starts(336, 224, 112) == [0, 112]
    assert window_starts(300, 224, 112) == [0, 76]
    assert window_starts(500, 224, 112) == [0, 112, 224, 276]


def test_gaussian_weights_peak_one_at_centre_with_sigma_56() -> None:
    g = gaussian_weights(224, 56.0)
    assert g.max() == pytest.approx(1.0) and g[111, 111] == g[112, 112]
    e = np.exp(-((np.arange(224) - 111.5) ** 2) / (2 * 56**2))
    np.testing.assert_allclose(g, np.outer(e, e) / np.outer(e, e).max(), rtol=1e-5)


def test_two_by_two_windows_blend_like_a_hand_computed_reference() -> None:
    """336×300 px → windows at rows {0,112} × cols {0,76}; blend = Σ z·g / Σ g, computed by hand."""
    stack = _scene(336, 300)
    valid = np.ones((336, 300), bool)
    valid[0, 0] = False
    fake = FakeModel()
    got = predict_logits(fake, ArraySource(stack, valid), STATS, NO_TTA)
    g = gaussian_weights(224, 56.0).astype(np.float64)
    num, den = np.zeros((336, 300)), np.zeros((336, 300))
    at_pixel = []  # the four windows' logits at pixel (120, 90), inside all of them
    for y in (0, 112):
        for x in (0, 76):
            window = prepare_stack(stack[:, y : y + 224, x : x + 224], STATS)
            z = fake(torch.from_numpy(window[None]))[0].numpy()
            num[y : y + 224, x : x + 224] += z * g
            den[y : y + 224, x : x + 224] += g
            at_pixel.append(z[120 - y, 90 - x])
    expected = num / den
    assert fake.windows == 8  # 4 windows, each run twice (once by the code, once here)
    assert np.isnan(got[0, 0])
    np.testing.assert_allclose(got[1:], expected[1:], rtol=1e-5, atol=1e-5)
    # the Gaussian weights matter: the blend is not the plain mean of the four windows
    assert abs(got[120, 90] - np.mean(at_pixel)) > 1e-2


def test_flip_tta_is_the_mean_of_four_unflipped_passes() -> None:
    fake = FakeModel()
    x = torch.randn(2, 15, 32, 40)
    passes = [fake(x), fake(x.flip(-1)).flip(-1), fake(x.flip(-2)).flip(-2), fake(x.flip((-2, -1))).flip((-2, -1))]
    torch.testing.assert_close(flip_tta(fake)(x), torch.stack(passes).mean(0), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(passes[0], passes[1])  # the fake is not flip-equivariant


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One intra-op torch thread for the test.

    The segmenter batches the four flips, the reference runs them one by one; with several threads
    the two reduction orders can differ by more than the tolerance on a busy machine.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("one_torch_thread")
def test_segmenter_tta_on_a_real_tiny_model_matches_manual_passes() -> None:
    """TerraMindSegmenter (tiny, light, TTA) equals sigmoid(mean of the 4 flipped model passes)."""
    torch.manual_seed(0)
    config = ModelConfig("tiny", "light", 1)
    model = build_model(config).eval()
    seg = TerraMindSegmenter(LoadedModel(model, config, STATS, "0" * 64, "test"), InferenceParams(device="cpu"))
    stack = _scene(224, 224, seed=3)
    valid = np.ones((224, 224), bool)
    valid[:5] = False
    got = seg.predict(stack, valid)
    x = torch.from_numpy(prepare_stack(stack, STATS)[None])
    with torch.inference_mode():
        zs = [forward_binary_logits(model, x.flip(d) if d else x, 1)[0] for d in ((), (-1,), (-2,), (-2, -1))]
        z = sum(zi.flip(dims) if dims else zi for zi, dims in zip(zs, ((), (-1,), (-2,), (-2, -1)), strict=True)) / 4
    expected = torch.sigmoid(z).numpy()
    assert np.isnan(got[:5]).all() and np.isfinite(got[5:]).all()
    np.testing.assert_allclose(got[5:], expected[5:], atol=1e-5)


def test_small_scene_is_reflect_padded_and_cropped_back() -> None:
    stack = _scene(100, 150)
    valid = np.ones((100, 150), bool)
    fake = FakeModel()
    got = predict_logits(fake, ArraySource(stack, valid), STATS, NO_TTA)
    padded = np.pad(prepare_stack(stack, STATS), ((0, 0), (0, 124), (0, 74)), mode="reflect")
    expected = fake(torch.from_numpy(padded[None]))[0].numpy()[:100, :150]
    assert got.shape == (100, 150)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_invalid_pixels_stay_nan_and_empty_windows_are_not_run() -> None:
    """Windows with no valid pixel are skipped; NaN inputs inside valid areas still give numbers."""
    stack = _scene(224, 448)
    stack[:, 10:20, 10:20] = np.nan  # nodata values, but declared valid: filled, not propagated
    valid = np.zeros((224, 448), bool)
    valid[:, :100] = True
    fake = FakeModel()
    got = predict_logits(fake, ArraySource(stack, valid), STATS, NO_TTA)
    assert fake.windows == 1  # of 3 windows (cols 0, 112, 224) only the first sees valid pixels
    assert np.isfinite(got[:, :100]).all() and np.isnan(got[:, 100:]).all()


def test_rows_stream_top_to_bottom_without_gaps() -> None:
    stack = _scene(560, 230)
    rows = list(iter_logit_rows(FakeModel(), ArraySource(stack, np.ones((560, 230), bool)), STATS, NO_TTA))
    starts = [r0 for r0, _ in rows]
    assert starts == sorted(starts) and starts[0] == 0 and len(rows) > 2
    assert sum(r.shape[0] for _, r in rows) == 560 and all(r.shape[1] == 230 for _, r in rows)


def _stack_file(path: Path, h: int, w: int) -> Path:
    profile = {
        "driver": "GTiff",
        "dtype": "float32",
        "count": 15,
        "width": w,
        "height": h,
        "crs": "EPSG:32643",
        "transform": from_origin(500000, 4800000, 10, 10),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "nodata": float("nan"),
    }
    with rasterio.open(path, "w", **profile) as dst:
        for r0 in range(0, h, 256):  # written in strips: the test itself never holds the scene
            n = min(256, h - r0)
            dst.write(_scene(n, w, seed=r0), window=((r0, r0 + n), (0, w)))
    return path


def _peak_bytes(path: Path) -> int:
    fake = FakeModel()
    with StackReader(path, strict=False) as source:  # a plain 15-band file: no valid mask, every band finite
        tracemalloc.start()
        for _ in iter_logit_rows(fake, source, STATS, InferenceParams(tta=False, batch_size=1)):
            pass
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_memory_does_not_grow_with_scene_height(tmp_path: Path) -> None:
    """A 4× taller scene read windowed from a file peaks at about the same traced memory."""
    FakeModel()(torch.zeros(1, 15, 224, 224))  # torch's one-off lazy initialisation is not the scene's
    small = _peak_bytes(_stack_file(tmp_path / "small.tif", 448, 336))
    large_path = _stack_file(tmp_path / "large.tif", 1792, 336)
    large = _peak_bytes(large_path)
    whole_scene = 15 * 1792 * 336 * 4
    assert large < 1.2 * small, (small, large)
    assert large < whole_scene, (large, whole_scene)  # less than one copy of the scene
    with StackReader(large_path, strict=False) as source:  # and the streamed result is complete
        assert np.isfinite(predict_logits(FakeModel(), source, STATS, NO_TTA)).all()


def test_pipeline_stage_streams_a_stack_cog_to_the_same_probabilities(tmp_path: Path) -> None:
    """segment_stack with a checkpoint streams the stack file; the COG equals the in-memory predict."""
    from models.checkpoint import save_checkpoint
    from models.registry import load_segmenter
    from models.segmenter import Segmenter
    from tasks.grid import GridSpec
    from tasks.segment import segment_stack
    from tasks.stack import write_stack

    torch.manual_seed(2)
    config = ModelConfig("tiny", "light", 2)
    ckpt = save_checkpoint(tmp_path / "m.ckpt", build_model(config), config, STATS)
    grid = GridSpec(32643, (10.0, 0.0, 500_000.0, 0.0, -10.0, 4_800_000.0), 224, 224)
    stack = _scene(224, 224, seed=4)
    valid = np.ones((224, 224), bool)
    valid[100:110, :] = False
    info = write_stack(stack, valid, grid, tmp_path, "scene")
    seg = load_segmenter(str(ckpt))
    assert isinstance(seg, Segmenter)
    out = segment_stack(info, str(ckpt), tmp_path / "prob.tif")
    with rasterio.open(out) as ds:
        streamed = ds.read(1)
        assert ds.crs.to_epsg() == 32643 and np.isnan(ds.nodata)
    # The stack file holds the values at its stored precision (tasks.stack_format): predict on those.
    from tasks.stack import read_stack

    stored, stored_valid, _ = read_stack(info)
    np.testing.assert_array_equal(stored_valid, valid)
    np.testing.assert_allclose(streamed, seg.predict(stored, valid), atol=1e-6, equal_nan=True)
    assert np.isnan(streamed[100:110]).all() and np.isfinite(streamed[:100]).all()
