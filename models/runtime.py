"""Which engine runs a TerraMind model's forward: ONNX Runtime on the exported graph, or torch.

A value object filled in at the edge (``flows.settings.Settings.inference_runtime`` from
``GLACIAL_LAKES_INFERENCE_BACKEND`` and the home) and passed down to
:func:`models.registry.load_segmenter`, like :class:`models.hub.HubCache`; nothing in
``models/`` reads the environment.

Backends:

* ``auto``: ONNX Runtime where the model runs on the CPU, torch where it runs on CUDA (bf16
  autocast there; the exported graph is float32 and CPU-only here);
* ``onnxruntime``: the model exported once to ONNX (torch's dynamo exporter) and cached under
  ``cache_dir``, run by ONNX Runtime on the CPU; same probabilities as torch within 1e-4;
* ``torch``: the torch module, eager.

The backend is not part of the model version: both give the same probabilities within 1e-4
(a far smaller change than CUDA's bf16, which is not part of it either).

This module is a leaf (standard library only, no torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["BACKENDS", "BACKEND_SETTING", "DEFAULT_RUNTIME", "InferenceRuntime"]

BACKENDS: tuple[str, ...] = ("auto", "onnxruntime", "torch")
BACKEND_SETTING = "GLACIAL_LAKES_INFERENCE_BACKEND"
"""The environment variable that chooses the backend (named in errors: the way to switch to torch)."""


@dataclass(frozen=True)
class InferenceRuntime:
    """How a TerraMind forward is run (hashable: it is part of the segmenter cache key).

    Attributes:
        backend: ``auto`` | ``onnxruntime`` | ``torch`` (see the module docstring).
        cache_dir: Folder of the exported ONNX graphs (one file per model version, window and
            exporter/runtime versions); needed unless ``backend`` is ``torch``.
    """

    backend: str = "torch"
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        """Rejects unknown backends, and ONNX Runtime without a cache folder."""
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown inference backend {self.backend!r}; use one of {BACKENDS}")
        if self.backend != "torch" and self.cache_dir is None:
            raise ValueError(f"inference backend {self.backend!r} needs a cache folder for the exported model")

    def resolve(self, device_type: str) -> str:
        """The backend that runs on ``device_type`` (``cpu`` | ``cuda``): ``onnxruntime`` or ``torch``."""
        if self.backend == "auto":
            return "onnxruntime" if device_type == "cpu" else "torch"
        return self.backend


DEFAULT_RUNTIME = InferenceRuntime()
"""Torch, no cache: what library callers without settings get (the CLI and flows pass the setting's)."""
