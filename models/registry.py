"""Turning a model spec string into a ``Segmenter``; never a silent substitute.

Specs:

* ``baseline``: the spectral baseline (comparison and QA only; chosen explicitly, never as a
  fallback);
* a local checkpoint path, or ``hf://<org>/<repo>[@<revision>]/<path>`` (through the Hugging
  Face cache; offline once cached): a TerraMind segmenter, loaded strictly
  (:mod:`models.checkpoint`), with sliding-window inference and flip TTA
  (:mod:`models.inference`).

Anything that cannot be loaded raises :class:`ModelLoadError` with a one-line reason.
"""

from __future__ import annotations

from functools import lru_cache

from models.baseline import SpectralBaseline
from models.segmenter import Segmenter

__all__ = ["BASELINE", "ModelLoadError", "load_segmenter"]

BASELINE = "baseline"


class ModelLoadError(ValueError):
    """The model named by the user cannot be loaded (bad input, one-line reason)."""


@lru_cache(maxsize=4)
def load_segmenter(spec: str) -> Segmenter:
    """The segmenter for ``spec``; cached per process because models are expensive to build."""
    spec = spec.strip()
    if spec == BASELINE:
        return SpectralBaseline()
    if not spec:
        raise ModelLoadError("empty model spec: use baseline, a checkpoint path or hf://…")
    # Imported here: torch and terratorch are heavy and the baseline needs neither.
    from models.checkpoint import load_model
    from models.inference import TerraMindSegmenter

    return TerraMindSegmenter(load_model(spec))
