"""The segmenter interface every water model implements (TerraMind, the spectral baseline, fakes).

The input is the analysis-ready stack of one scene: float32 ``(15, H, W)`` with bands in
:data:`STACK_BANDS` order: Sentinel-2 L2A reflectance × 10 000 on the pre-04.00 scale (no
``BOA_ADD_OFFSET``), Sentinel-1 VV and VH backscatter in dB, Copernicus DEM elevation in metres.
NaN is nodata in every band. ``valid`` is where all three sources could see (clear S2 ∧ finite
S1 ∧ finite DEM). The output is a water probability ``(H, W)`` float32 in 0–1, NaN outside
``valid``.

A scene reaches a segmenter either whole (:meth:`Segmenter.predict`, arrays in memory) or as a
:class:`WindowSource` that is read a band of rows at a time (:meth:`Segmenter.iter_probability_rows`,
which yields rows as they become final, so a writer can stream them to disk). Both give the same
probabilities; :class:`ArraySource` turns in-memory arrays into a source.

SEGMENTER PROTOCOL SYNC CONTRACT: a member added to (or changed in) :class:`Segmenter` must be
added in the same change to every segmenter: ``models.baseline.SpectralBaseline``,
``models.inference.TerraMindSegmenter`` and any fake segmenter in the tests. Callers use the
protocol's members only (no ``hasattr`` dispatch). Enforced by
``tests/unit/test_models_package.py::test_every_segmenter_implements_the_whole_protocol``.

This module is a leaf (numpy only, no torch): it knows nothing of files, grids, Prefect or the
database, and the project's error classes are not needed here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "STACK_BANDS",
    "ArraySource",
    "Progress",
    "Rows",
    "Segmenter",
    "WindowSource",
    "band_index",
    "check_stack",
    "mask_outside_valid",
    "wants_harmonised_s2",
]

_S2_BANDS: tuple[str, ...] = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
STACK_BANDS: tuple[str, ...] = (*_S2_BANDS, "VV", "VH", "DEM")
"""Band order of the analysis-ready stack: 12 × S2 L2A (TerraMind order), VV, VH (dB), DEM (m)."""


Progress = Callable[[int, int], None]
"""Called with (units done, units in the scene); for TerraMind a unit is one sliding window."""
Rows = Iterator[tuple[int, NDArray[np.float32]]]
"""``(first row, float32 block (r, width))`` pieces of a raster, top to bottom, without gaps."""


class WindowSource(Protocol):
    """Rows of a scene's analysis-ready stack, read on demand (in memory, a stack file, co-registered files)."""

    # Read-only properties, so that plain attributes and properties both satisfy the protocol.
    @property
    def height(self) -> int:
        """Rows of the scene, px."""
        ...

    @property
    def width(self) -> int:
        """Columns of the scene, px."""
        ...

    def read_rows(self, row0: int, row1: int) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
        """Stack rows ``[row0, row1)``: float32 ``(15, r, width)`` NaN nodata, and bool ``(r, width)`` valid."""
        ...


@dataclass(frozen=True, eq=False)
class ArraySource:
    """A stack already in memory as a :class:`WindowSource` (float32 ``(15, H, W)``, NaN nodata; bool valid)."""

    stack: NDArray[np.float32]
    valid: NDArray[np.bool_]

    def __post_init__(self) -> None:
        """Checks shapes."""
        check_stack(self.stack, self.valid)

    @property
    def height(self) -> int:
        """Rows, px."""
        return int(self.stack.shape[1])

    @property
    def width(self) -> int:
        """Columns, px."""
        return int(self.stack.shape[2])

    def read_rows(self, row0: int, row1: int) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
        """Views of rows ``[row0, row1)`` (no copy)."""
        return self.stack[:, row0:row1], self.valid[row0:row1]


@runtime_checkable
class Segmenter(Protocol):
    """A water segmenter over the analysis-ready stack."""

    # Read-only properties, so that plain attributes and properties both satisfy the protocol.
    @property
    def name(self) -> str:
        """Short model family name, e.g. "spectral-baseline" or "terramind"."""
        ...

    @property
    def version(self) -> str:
        """Stable id recorded with every scene; changes whenever outputs could change."""
        ...

    def predict(self, stack: NDArray[np.float32], valid: NDArray[np.bool_]) -> NDArray[np.float32]:
        """Water probability.

        Args:
            stack: float32 ``(15, H, W)`` in :data:`STACK_BANDS` order, NaN nodata.
            valid: bool ``(H, W)``, where the stack can be trusted.

        Returns:
            float32 ``(H, W)`` in 0–1, NaN where ``valid`` is False.
        """
        ...

    def iter_probability_rows(self, source: WindowSource, progress: Progress | None = None) -> Rows:
        """Water probability of ``source``, yielded top to bottom as rows become final.

        Args:
            source: The scene's stack, read a band of rows at a time.
            progress: Called with (units done, units in the scene) as work proceeds, if the
                segmenter has units to count.

        Yields:
            ``(row0, prob)``: float32 ``(r, width)`` in 0–1 for rows ``row0 … row0+r−1``, NaN
            outside valid; the blocks cover rows ``0 … height−1`` without gaps or overlap.
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
