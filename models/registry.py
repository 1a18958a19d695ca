"""Turning a model spec string into a ``Segmenter``; never a silent substitute.

Specs:

* ``default``: the TerraMind-tiny checkpoint shipped in ``models/weights`` (an offline demo
  model trained on synthetic scenes: see its ``MODEL_CARD.md``); what runs when nothing is
  configured;
* ``baseline``: the spectral baseline (comparison and QA only; chosen explicitly, never as a
  fallback);
* a local checkpoint path, or ``hf://<org>/<repo>[@<revision>]/<path>`` (through the Hugging
  Face cache; offline once cached): a TerraMind segmenter, loaded strictly
  (:mod:`models.checkpoint`), with sliding-window inference and flip TTA
  (:mod:`models.inference`).

Anything that cannot be loaded raises :class:`core.errors.ModelLoadError` with a one-line reason.
Where ``hf://`` specs are looked up is the caller's :class:`~models.hub.HubCache` (read at the edge).

This module is torch-free: the baseline path never imports torch. The TerraMind modules are
imported inside a function, only for checkpoint specs; none of them imports this
module back (models/__init__.py draws the import graph).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from core.errors import ModelLoadError
from models.baseline import SpectralBaseline
from models.hub import DEFAULT_HUB, HubCache, is_hub_spec
from models.runtime import DEFAULT_RUNTIME, InferenceRuntime
from models.segmenter import Segmenter

__all__ = ["BASELINE", "DEFAULT", "DEFAULT_WEIGHTS", "load_segmenter", "resolve_spec"]

BASELINE = "baseline"
DEFAULT = "default"
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "terramind_tiny_glacial_demo.pt"
"""The shipped offline model (fp16 TerraMind tiny, light UperNet, statistics beside it)."""


def load_segmenter(
    spec: str, tta: bool = True, hub: HubCache = DEFAULT_HUB, runtime: InferenceRuntime = DEFAULT_RUNTIME
) -> Segmenter:
    """The segmenter for ``spec``; cached per process because models are expensive to build.

    ``tta``: flip test-time augmentation for TerraMind models (4 passes per window; off is 4×
    faster, e.g. on a CPU). It is part of the model version. The baseline ignores it.
    ``hub``: Hugging Face cache folder and offline flag, used for ``hf://`` specs only (and only
    for them part of the cache key, so callers with and without a hub share one local model).
    ``runtime``: what runs a TerraMind forward (ONNX Runtime or torch, :mod:`models.runtime`).
    """
    spec = spec.strip()
    return _load_segmenter(spec, tta, hub if is_hub_spec(spec) else DEFAULT_HUB, runtime)


@lru_cache(maxsize=4)
def _load_segmenter(spec: str, tta: bool, hub: HubCache, runtime: InferenceRuntime) -> Segmenter:
    """:func:`load_segmenter` behind its cache; ``hub`` is already the default for local specs."""
    if spec == BASELINE:
        return SpectralBaseline()
    if not spec:
        raise ModelLoadError("empty model spec: use default, baseline, a checkpoint path or hf://…")
    path = resolve_spec(spec)
    # Imported here: torch and terratorch are heavy and the baseline needs neither.
    from models.checkpoint import load_model
    from models.inference import InferenceParams, TerraMindSegmenter

    return TerraMindSegmenter(load_model(path, hub=hub), InferenceParams(tta=tta), runtime)


def resolve_spec(spec: str) -> str:
    """``default`` → the shipped checkpoint's path (refused if the install lacks it); others unchanged."""
    if spec != DEFAULT:
        return spec
    if not DEFAULT_WEIGHTS.is_file():
        raise ModelLoadError(f"the default model's weights are missing from this install ({DEFAULT_WEIGHTS.name})")
    return str(DEFAULT_WEIGHTS)
