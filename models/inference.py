"""Scene inference: streaming sliding windows, Gaussian blending of logits, flip TTA.

Windows are ``window`` px (224) at ``stride`` (112); starts are 0, stride, 2·stride, … plus a
last one at ``extent − window`` so the far edge is covered. Each window's binary logit is
weighted by a 2-D Gaussian (peak 1 at the window centre, σ = 56 px), accumulated in float32
and divided by the summed weights; the sigmoid comes last (CryoSentinel's recipe, spec §3.1).
Flip TTA (identity, H, V, HV) averages the un-flipped logits of the four passes (spec §2.5).
A scene smaller than a window is reflect-padded and the result cropped back (the pipeline's AOI
grids are never that small: ``tasks.grid.MIN_GRID_SIDE_PX``; a stack given to ``segment`` can be).

Memory does not grow with the scene height: rows are read one band of ``window`` rows at a
time from a :class:`models.segmenter.WindowSource` (files are opened by the caller, e.g. the
pipeline's stack reader; this module reads none), only the rows that a later window can still
touch are kept in the accumulators, and finished rows are handed to the caller as soon as they
are final (:func:`iter_logit_rows`). Memory grows with the scene width only (one band of rows;
two with ``prefetch``).

With ``prefetch`` (the default) the next band of rows is read and normalised in a background
thread while the model runs on the current one, so reading the stack overlaps inference. One
read is in flight at a time and every read runs in that thread, so a source needs no locking.

The forward runs in torch or, on the CPU, in ONNX Runtime on the exported graph
(:mod:`models.onnx_runtime`; chosen by :class:`models.runtime.InferenceRuntime`).

Pixels outside ``valid`` are NaN in the output; windows without a single valid pixel are not
run at all. Invalid inputs are filled as CryoSentinel did (:func:`models.normalisation.prepare_stack`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray

from core.errors import InferenceBackendError
from models.checkpoint import LoadedModel
from models.normalisation import NormStats, prepare_stack
from models.runtime import BACKEND_SETTING, DEFAULT_RUNTIME, InferenceRuntime
from models.segmenter import ArraySource, Progress, Rows, WindowSource
from models.terramind import forward_binary_logits

__all__ = [
    "Forward",
    "InferenceParams",
    "TerraMindSegmenter",
    "flip_tta",
    "gaussian_weights",
    "iter_logit_rows",
    "model_forward",
    "predict_logits",
    "resolve_device",
    "window_starts",
]

Forward = Callable[[torch.Tensor], torch.Tensor]
"""Normalised ``(B, 15, h, w)`` float32 CPU batch → ``(B, h, w)`` float32 CPU binary logits."""


@dataclass(frozen=True)
class InferenceParams:
    """How a scene is tiled, blended and augmented.

    Attributes:
        window: Window size, px (TerraMind v1: 224).
        stride: Step between window starts, px, in (0, window].
        sigma: Gaussian σ of the blend weights, px; ``None`` weights every pixel equally.
        tta: Flip TTA (4 passes per window).
        batch_size: Windows per forward call (each is 4 passes with TTA).
        device: ``auto`` (CUDA if present, with bf16 autocast; else CPU float32), ``cpu``, ``cuda``.
        prefetch: Read the next band of rows in a background thread during inference.
    """

    window: int = 224
    stride: int = 112
    sigma: float | None = 56.0
    tta: bool = True
    batch_size: int = 4
    device: str = "auto"
    prefetch: bool = True

    def __post_init__(self) -> None:
        """Checks the tiling."""
        if self.window <= 0 or not 0 < self.stride <= self.window:
            raise ValueError(f"need 0 < stride ≤ window, got stride {self.stride}, window {self.window}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {self.batch_size}")

    @property
    def output_hash(self) -> str:
        """12 hex over what changes outputs (device, batch size and prefetch excluded)."""
        d = {k: v for k, v in asdict(self).items() if k not in {"device", "batch_size", "prefetch"}}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def gaussian_weights(window: int, sigma: float | None) -> NDArray[np.float32]:
    """``(window, window)`` blend weights: a Gaussian with peak 1 at the centre, or ones."""
    if sigma is None:
        return np.ones((window, window), np.float32)
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    c = np.arange(window, dtype=np.float64) - (window - 1) / 2.0
    g = np.exp(-(c**2) / (2.0 * sigma**2))
    w = np.outer(g, g)
    out: NDArray[np.float32] = (w / w.max()).astype(np.float32)
    return out


def window_starts(extent: int, window: int, stride: int) -> list[int]:
    """0, stride, … while the window fits, plus ``extent − window`` if the edge is not covered."""
    if extent <= window:
        return [0]
    starts = list(range(0, extent - window + 1, stride))
    if starts[-1] + window < extent:
        starts.append(extent - window)
    return starts


def flip_tta(forward: Forward) -> Forward:
    """Wraps a forward in flip TTA: mean of the un-flipped logits of id, H, V and HV passes."""
    flips: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))

    def run(x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        out = forward(torch.cat([x.flip(d) if d else x for d in flips]))
        parts = torch.split(out, b)
        return sum((p.flip(d) if d else p for p, d in zip(parts, flips, strict=True)), torch.zeros_like(parts[0])) / 4

    return run


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def model_forward(model: torch.nn.Module, num_classes: int, device: torch.device) -> Forward:
    """The model as a :data:`Forward`: eval, no grad, bf16 autocast on CUDA, fp32 on CPU."""
    model.eval()

    def run(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device, non_blocking=True)
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            z = forward_binary_logits(model, x, num_classes)
        return z.float().cpu()

    return run


def _pad_to(a: NDArray[Any], rows: int, cols: int, mode: Literal["reflect", "constant"], **kw: Any) -> NDArray[Any]:
    pr, pc = rows - a.shape[-2], cols - a.shape[-1]
    if pr <= 0 and pc <= 0:
        return a
    pad = [(0, 0)] * (a.ndim - 2) + [(0, max(pr, 0)), (0, max(pc, 0))]
    padded: NDArray[Any] = np.pad(a, pad, mode=mode, **kw)
    return padded


_Band = tuple[NDArray[np.float32], NDArray[np.bool_]]


def _bands(ys: list[int], read: Callable[[int], _Band], prefetch: bool) -> Generator[tuple[int, _Band]]:
    """``(y, read(y))`` for each ``y``; with ``prefetch`` the next read runs in a thread meanwhile.

    Every read runs in the one worker thread and only one is in flight, so a source's file
    handle is never used by two threads at once.
    """
    if not prefetch:
        yield from ((y, read(y)) for y in ys)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="prefetch-rows") as pool:
        pending: Future[_Band] = pool.submit(read, ys[0])
        try:
            for i, y in enumerate(ys):
                band = pending.result()
                if i + 1 < len(ys):
                    pending = pool.submit(read, ys[i + 1])
                yield y, band
        finally:  # the caller stopped early (or a read failed): drop a read not started yet
            pending.cancel()


def iter_logit_rows(
    forward: Forward,
    source: WindowSource,
    stats: NormStats,
    params: InferenceParams = InferenceParams(),
    weights: NDArray[np.float32] | None = None,
    progress: Progress | None = None,
) -> Rows:
    """Blended logits of a scene, yielded top to bottom as rows become final.

    Args:
        forward: Normalised window batch → binary logits (TTA already included if wanted).
        source: The stack, read a band of rows at a time.
        stats: Normalisation statistics of the model.
        params: Window, stride, σ, prefetch; ``tta`` and ``device`` are the forward's business here.
        weights: Override of the ``(window, window)`` blend weights (default: Gaussian σ).
        progress: Called after each band of windows.

    Yields:
        ``(row0, logits)``: float32 ``(r, width)`` for rows ``row0 … row0+r−1``, NaN outside valid.
    """
    h, w, win = source.height, source.width, params.window
    hp, wp = max(h, win), max(w, win)
    ys, xs = window_starts(hp, win, params.stride), window_starts(wp, win, params.stride)
    g = gaussian_weights(win, params.sigma) if weights is None else np.asarray(weights, np.float32)
    total, done, lo = len(ys) * len(xs), 0, 0
    acc = np.zeros((0, wp), np.float32)
    wsum = np.zeros((0, wp), np.float32)
    vbuf = np.zeros((0, wp), bool)

    def read_band(y: int) -> _Band:
        stack, valid = source.read_rows(y, min(y + win, h))
        x = _pad_to(prepare_stack(stack, stats), win, wp, "reflect")
        return x, _pad_to(np.asarray(valid, bool), win, wp, "constant", constant_values=False)

    def finish(r0: int, a: NDArray[np.float32], s: NDArray[np.float32], v: NDArray[np.bool_]) -> Rows:
        n = min(r0 + a.shape[0], h) - r0
        if n > 0:
            ok = v[:n, :w] & (s[:n, :w] > 0)
            with np.errstate(invalid="ignore", divide="ignore"):
                out = np.where(ok, a[:n, :w] / s[:n, :w], np.nan).astype(np.float32)
            yield r0, out

    # closing: the prefetching reader stops (and its thread ends) even if our caller stops early.
    with closing(_bands(ys, read_band, params.prefetch)) as bands:
        for y, (x, v) in bands:
            if y > lo:  # rows above y are touched by no later window: final
                k = y - lo
                yield from finish(lo, acc[:k], wsum[:k], vbuf[:k])
                acc, wsum, vbuf, lo = acc[k:], wsum[k:], vbuf[k:], y
            grow = y + win - lo - acc.shape[0]
            if grow > 0:
                acc = np.concatenate([acc, np.zeros((grow, wp), np.float32)])
                wsum = np.concatenate([wsum, np.zeros((grow, wp), np.float32)])
                vbuf = np.concatenate([vbuf, np.zeros((grow, wp), bool)])
            r = slice(y - lo, y - lo + win)
            vbuf[r] |= v
            todo = [x0 for x0 in xs if v[:, x0 : x0 + win].any()]
            for i in range(0, len(todo), params.batch_size):
                chunk = todo[i : i + params.batch_size]
                batch = torch.from_numpy(np.stack([x[:, :, x0 : x0 + win] for x0 in chunk]))
                logits = forward(batch).numpy()
                for j, x0 in enumerate(chunk):
                    acc[r, x0 : x0 + win] += logits[j] * g
                    wsum[r, x0 : x0 + win] += g
            done += len(xs)
            if progress is not None:
                progress(done, total)
    yield from finish(lo, acc, wsum, vbuf)


def predict_logits(
    forward: Forward,
    source: WindowSource,
    stats: NormStats,
    params: InferenceParams = InferenceParams(),
    **kw: Any,
) -> NDArray[np.float32]:
    """The whole scene's blended logits ``(H, W)`` in memory (NaN outside valid)."""
    out = np.full((source.height, source.width), np.nan, np.float32)
    for r0, rows in iter_logit_rows(forward, source, stats, params, **kw):
        out[r0 : r0 + rows.shape[0]] = rows
    return out


def sigmoid(z: NDArray[np.float32]) -> NDArray[np.float32]:
    """Logistic function, NaN preserved, no overflow warnings."""
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))).astype(np.float32)


class TerraMindSegmenter:
    """A loaded TerraMind model as a :class:`~models.segmenter.Segmenter`.

    ``name`` is ``terramind-<variant>``; ``version`` is the weights' sha256 (16 hex), the
    architecture hash and a hash of the statistics and inference parameters, so it changes
    whenever the outputs could. ``backend`` is what runs the forward (``onnxruntime`` or
    ``torch``, :meth:`models.runtime.InferenceRuntime.resolve`); it is not part of the version.

    Raises:
        InferenceBackendError: ONNX Runtime was chosen and the model's export failed.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        params: InferenceParams = InferenceParams(),
        runtime: InferenceRuntime = DEFAULT_RUNTIME,
    ) -> None:
        self.loaded, self.params = loaded, params
        self.device = resolve_device(params.device)
        loaded.model.to(self.device)
        self.name = f"terramind-{loaded.config.variant}"
        extra = hashlib.sha256(f"{loaded.stats.stats_hash}|{params.output_hash}".encode()).hexdigest()[:8]
        self.version = f"{self.name}:{loaded.version}+{extra}"
        self.backend = runtime.resolve(self.device.type)
        fwd: Forward
        if self.backend == "onnxruntime":
            if self.device.type != "cpu":
                raise InferenceBackendError(
                    f"{loaded.source}: ONNX Runtime runs on the CPU only, the model is on {self.device.type}; "
                    f"set {BACKEND_SETTING}=auto or torch"
                )
            from models.onnx_runtime import load_onnx_forward  # onnxruntime only where it is chosen

            assert runtime.cache_dir is not None  # InferenceRuntime requires it for this backend
            fwd = load_onnx_forward(loaded, params.window, runtime.cache_dir)
        else:
            fwd = model_forward(loaded.model, loaded.config.num_classes, self.device)
        # TTA runs the one exported graph on the flipped windows (4× the batch): no second export.
        self.forward: Forward = flip_tta(fwd) if params.tta else fwd

    @property
    def harmonised_s2(self) -> bool:
        """Built for harmonised S2 (its statistics set ``detect_s2_offset``); see ``wants_harmonised_s2``."""
        return self.loaded.stats.detect_s2_offset

    def iter_probability_rows(self, source: WindowSource, progress: Progress | None = None) -> Rows:
        """Water probability rows as they become final (see :func:`iter_logit_rows`); ``progress`` counts windows."""
        for r0, z in iter_logit_rows(self.forward, source, self.loaded.stats, self.params, progress=progress):
            yield r0, sigmoid(z)

    def predict(self, stack: NDArray[np.float32], valid: NDArray[np.bool_]) -> NDArray[np.float32]:
        """Water probability 0–1 (float32), NaN outside ``valid``; see :class:`Segmenter`."""
        z = predict_logits(self.forward, ArraySource(stack, valid), self.loaded.stats, self.params)
        return sigmoid(z)
