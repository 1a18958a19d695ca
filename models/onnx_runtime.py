"""A loaded TerraMind model exported once to ONNX, cached, and run by ONNX Runtime on the CPU.

Export: ``torch.onnx.export(..., dynamo=True)`` of the model's forward as :func:`models.inference.model_forward`
computes it (normalised float32 ``(B, 15, window, window)`` → ``(B, window, window)`` binary
logits, :func:`models.terramind.forward_binary_logits`), with a dynamic batch dimension, so
batch size and flip TTA (4 passes stacked in one batch) reuse one graph. The TorchScript
exporter cannot be used: it refuses UperNet's adaptive pooling.

Cache: one file per graph, ``<cache_dir>/terramind-<variant>-<key>.onnx``, where the key hashes
everything that changes the graph: the model version (weights sha256 + architecture hash), the
window, the opset and the torch, onnxscript and onnxruntime versions. A later load with the same
key opens the file without exporting again. The file is written atomically (temporary sibling,
rename), and only after ONNX Runtime's output on a probe window agreed with torch's within 1e-4
in probability, so a file under its final name is always a checked graph.

Failures never fall back to torch silently: an export that fails, or disagrees with torch, or
a cached file that does not open, raises :class:`core.errors.InferenceBackendError` naming the
model, the reason and the setting that selects torch instead.

Threads: ONNX Runtime's intra-op pool gets torch's thread count (``torch.get_num_threads()``,
which the caller may have set), one inter-op thread.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from core.errors import InferenceBackendError
from core.files import atomic_path
from models.checkpoint import LoadedModel
from models.runtime import BACKEND_SETTING
from models.terramind import forward_binary_logits

__all__ = ["OPSET", "PROBE_TOLERANCE", "OnnxForward", "export_key", "load_onnx_forward", "onnx_path"]

OPSET = 18
"""ONNX opset of the exported graph (part of the cache key)."""
PROBE_TOLERANCE = 1e-4
"""Largest |Δ probability| between ONNX Runtime and torch on the probe window accepted at export."""
_PROBE_BATCH = 2  # ≥ 2: torch.export specialises a dimension whose example size is 1


class _Logits(nn.Module):
    """The segmentation model as one tensor in, ``(B, H, W)`` binary logits out (exportable)."""

    def __init__(self, model: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.model, self.num_classes = model, num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return forward_binary_logits(self.model, x, self.num_classes)


def export_key(loaded: LoadedModel, window: int) -> str:
    """16 hex over what changes the exported graph: model version, window, opset, exporter and runtime versions."""
    import onnxscript

    d = {
        "model": loaded.version,
        "num_classes": loaded.config.num_classes,
        "window": window,
        "opset": OPSET,
        "torch": torch.__version__,
        "onnxscript": onnxscript.__version__,
        "onnxruntime": ort.__version__,
    }
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def onnx_path(loaded: LoadedModel, window: int, cache_dir: Path) -> Path:
    """The cached graph's file for ``loaded`` at ``window`` px."""
    return cache_dir / f"terramind-{loaded.config.variant}-{export_key(loaded, window)}.onnx"


@dataclass(frozen=True, eq=False)
class OnnxForward:
    """An ONNX Runtime session as a :data:`models.inference.Forward` (CPU float32 in and out).

    Attributes:
        session: The ONNX Runtime session on the CPU execution provider.
        path: The cached graph it runs.
        exported: Whether this load exported the graph (False: the cache already had it).
    """

    session: ort.InferenceSession
    path: Path
    exported: bool

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised ``(B, 15, h, w)`` float32 batch → ``(B, h, w)`` float32 binary logits."""
        feed = {self.session.get_inputs()[0].name: x.detach().cpu().float().contiguous().numpy()}
        out = self.session.run(None, feed)[0]
        return torch.from_numpy(np.ascontiguousarray(out, np.float32))


def _what(loaded: LoadedModel) -> str:
    return f"{loaded.source}: terramind-{loaded.config.variant} on ONNX Runtime"


def _remedy() -> str:
    return f"set {BACKEND_SETTING}=torch to run it in torch"


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: ORT warns about unused initialisers of exported graphs
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@contextmanager
def _fp32_matmul(precision: str) -> Iterator[None]:
    """Float32 matmul precision for the block (torch's setting is process-wide; restored after)."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def _root_cause(exc: BaseException) -> str:
    """``Type: first line`` of the innermost cause (the exporter wraps the real reason in generic steps)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z.astype(np.float64), -60, 60))))


def _export(loaded: LoadedModel, window: int, path: Path, threads: int) -> None:
    """Exports, checks against torch on a probe window, then renames into ``path``."""
    net = _Logits(loaded.model, loaded.config.num_classes).eval()
    probe = torch.randn(_PROBE_BATCH, 15, window, window, generator=torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    try:
        # The exporter narrates its steps and dumps graphs on failure, and terratorch warns about its
        # internals: none of it is ours to show (the reason is in the error below).
        with warnings.catch_warnings(), redirect_stdout(StringIO()), redirect_stderr(StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                net, (probe,), dynamo=True, dynamic_shapes={"x": {0: batch}}, opset_version=OPSET, verbose=False
            )
    except Exception as exc:  # any exporter failure is this backend's failure, reported with the way out
        reason = _root_cause(exc)
        raise InferenceBackendError(f"{_what(loaded)}: the ONNX export failed ({reason}); {_remedy()}") from exc
    if program is None:  # only the TorchScript path returns None
        raise InferenceBackendError(f"{_what(loaded)}: the ONNX exporter returned no program; {_remedy()}")
    with atomic_path(path, suffix=".onnx") as tmp:
        program.save(tmp, external_data=False)  # one file: the rename publishes it whole
        # One window of the probe: also checks the dynamic batch (exported at 2), at half the cost.
        got = OnnxForward(_session(tmp, threads), tmp, True)(probe[:1]).numpy()
        # The reference in full float32: a library may have lowered the process's matmul precision.
        with torch.inference_mode(), _fp32_matmul("highest"):
            want = net(probe[:1]).numpy()
        diff = float(np.abs(_sigmoid(got) - _sigmoid(want)).max()) if got.shape == want.shape else np.inf
        if not diff <= PROBE_TOLERANCE:
            raise InferenceBackendError(
                f"{_what(loaded)}: the exported graph disagrees with torch (max |Δ probability| {diff:.2e} > "
                f"{PROBE_TOLERANCE:g}); {_remedy()}"
            )


def load_onnx_forward(loaded: LoadedModel, window: int, cache_dir: Path, threads: int | None = None) -> OnnxForward:
    """The model's forward on ONNX Runtime, exporting it into ``cache_dir`` first if not cached yet.

    Args:
        loaded: The model, on the CPU, in eval mode.
        window: Window edge, px (the graph's fixed height and width).
        cache_dir: Folder of the cached graphs (created if missing).
        threads: ONNX Runtime intra-op threads; ``None``: torch's thread count.

    Raises:
        InferenceBackendError: the export failed or disagreed with torch, or the cached file does not open.
    """
    threads = torch.get_num_threads() if threads is None else threads
    path = onnx_path(loaded, window, cache_dir)
    exported = not path.is_file()
    if exported:
        _export(loaded, window, path, threads)
    try:
        session = _session(path, threads)
    except Exception as exc:  # a cached file damaged after it was written: name it, never re-export silently
        raise InferenceBackendError(
            f"{_what(loaded)}: the cached graph {path} does not open ({exc}); delete it to export again, or {_remedy()}"
        ) from exc
    return OnnxForward(session, path, exported)
