"""Turning a model spec string into a ``Segmenter``; never a silent substitute.

Specs: ``baseline`` (the spectral baseline, for comparison and QA). Checkpoint paths and
``hf://`` references are refused with a clear message until a TerraMind loader is configured
for them: the caller must choose the baseline explicitly.
"""

from __future__ import annotations

from functools import lru_cache

from models.baseline import SpectralBaseline
from models.segmenter import Segmenter

BASELINE = "baseline"


class ModelLoadError(ValueError):
    """The model named by the user cannot be loaded (bad input, one-line reason)."""


@lru_cache(maxsize=4)
def load_segmenter(spec: str) -> Segmenter:
    """The segmenter for ``spec``; cached per process because models are expensive to build."""
    if spec == BASELINE:
        return SpectralBaseline()
    raise ModelLoadError(
        f"cannot load model {spec!r}: no TerraMind loader is available in this build; "
        "use --model baseline (spectral baseline, QA only)"
    )
