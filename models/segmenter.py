"""The segmenter interface every water model implements (TerraMind, the spectral baseline, fakes).

The input is the analysis-ready stack of one scene: float32 ``(15, H, W)`` with bands in
:data:`STACK_BANDS` order: Sentinel-2 L2A reflectance × 10 000 on the pre-04.00 scale (no
``BOA_ADD_OFFSET``), Sentinel-1 VV and VH backscatter in dB, Copernicus DEM elevation in metres.
NaN is nodata in every band. ``valid`` is where all three sources could see (clear S2 ∧ finite
S1 ∧ finite DEM). The output is a water probability ``(H, W)`` float32 in 0–1, NaN outside
``valid``.

This module is a leaf: it knows nothing of files, grids, Prefect or the database.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

__all__ = ["STACK_BANDS", "Segmenter", "band_index", "check_stack", "mask_outside_valid", "wants_harmonised_s2"]

STACK_BANDS: tuple[str, ...] = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12",
    "VV", "VH", "DEM",
)  # fmt: skip
"""Band order of the analysis-ready stack: 12 × S2 L2A (TerraMind order), VV, VH (dB), DEM (m)."""


@runtime_checkable
class Segmenter(Protocol):
    """A water segmenter over the analysis-ready stack."""

    name: str
    """Short model family name, e.g. "spectral-baseline" or "terramind"."""
    version: str
    """Stable id recorded with every scene; changes whenever outputs could change."""

    def predict(self, stack: NDArray[np.float32], valid: NDArray[np.bool_]) -> NDArray[np.float32]:
        """Water probability.

        Args:
            stack: float32 ``(15, H, W)`` in :data:`STACK_BANDS` order, NaN nodata.
            valid: bool ``(H, W)``, where the stack can be trusted.

        Returns:
            float32 ``(H, W)`` in 0–1, NaN where ``valid`` is False.
        """
        ...


def wants_harmonised_s2(segmenter: object) -> bool:
    """Whether ``segmenter`` was built for harmonised L2A reflectance (and wants the offset test).

    True for segmenters that say so with a ``harmonised_s2`` attribute (the spectral baseline,
    TerraMind checkpoints whose statistics set ``detect_s2_offset``).
    """
    return bool(getattr(segmenter, "harmonised_s2", False))


def band_index(name: str) -> int:
    """Position of a band in :data:`STACK_BANDS` (raises ``ValueError`` for unknown names)."""
    return STACK_BANDS.index(name)


def check_stack(stack: NDArray[np.floating], valid: NDArray[np.bool_]) -> None:
    """Raises ``ValueError`` unless ``stack`` is ``(15, H, W)`` and ``valid`` is ``(H, W)``."""
    if stack.ndim != 3 or stack.shape[0] != len(STACK_BANDS):
        raise ValueError(f"stack must be ({len(STACK_BANDS)}, H, W), got {stack.shape}")
    if valid.shape != stack.shape[1:]:
        raise ValueError(f"valid mask {valid.shape} does not match stack {stack.shape[1:]}")


def mask_outside_valid(prob: NDArray[np.floating], valid: NDArray[np.bool_]) -> NDArray[np.float32]:
    """Returns ``prob`` as float32 with NaN wherever ``valid`` is False."""
    return np.where(valid, prob, np.nan).astype(np.float32)
