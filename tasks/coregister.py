"""Measured co-registration of S1 and the DEM against S2 on the scene grid (phase correlation).

S1 and the DEM come onto the S2 grid by georeferencing (the GDAL warper). What georeferencing
leaves is measured here: the translation between a feature image of S2 (gradient magnitude of
B08, NIR: water–land and snow–rock edges) and the same feature of S1 VV or of the DEM, by
cross-correlation of the two feature images with the peak refined to 1/100 px by an upsampled
DFT (Guizar-Sicairos, Thurman & Fienup 2008, the method of scikit-image's
``phase_cross_correlation``, written out here in numpy so the pipeline needs no further package).

Measure always, correct only when confident. On the real co-registered chips (TerraMesh
433D_629L: S2 L2A + S1 RTC + DEM; Sen1Floods11 Spain_7370579: S2 + S1 GRD) this estimator reads
S1 ↔ S2 offsets of 0.9–2.1 px that change with polarisation and chip, at a peak correlation of
0.08–0.21 and a peak ratio of 1.6–3.4; even two S2 bands (B08 ↔ B11) read 1.5 px at 0.21, and
DEM ↔ S2 reads 60 px at a ratio of 1.25. The demo world (S1 exactly on the S2 grid, speckled)
reads 0.1–0.3 px at a correlation of 0.40–0.44 and a ratio of 2.5–3.4. A true offset of one
field against its copy reads at a correlation of 0.88–0.99 and a ratio of 10–14. The real
figures are multimodal look-alikes, not measured shifts: correcting by them could misregister
good data. A shift is therefore applied only when the peak is unambiguous
(:data:`MIN_PEAK_RATIO` and, the decisive one on real data, :data:`MIN_CORRELATION`), small
(:data:`MAX_SHIFT_PX`: georeferenced Sentinel products agree to a pixel or two, more is a wrong
match) and worth a second read (:data:`MIN_SHIFT_PX`), and it is kept only when the re-measured
offset is smaller than the measured one. A correction re-warps the source onto the grid shifted
by the measured offset: one interpolation, as without correction. Every measurement, applied or
not, is recorded with the scene (:meth:`Coregistration.as_inputs`).
``benchmarks/coregistration.py`` gives these figures and the residuals on synthetic pairs (≤
0.08 px for S1, ≤ 0.03 px for the DEM, from offsets up to 1.5 px).

Sign convention: an offset ``(dy, dx)`` in pixels of the scene grid says the moving image's
content lies ``dy`` rows south and ``dx`` columns east of where S2 has it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from tasks.grid import GridSpec

__all__ = [
    "MAX_SHIFT_PX",
    "MIN_CORRELATION",
    "MIN_PEAK_RATIO",
    "Coregistration",
    "ShiftEstimate",
    "align",
    "align_modality",
    "candidate_windows",
    "feature_image",
    "measure_shift",
    "shifted_grid",
]

MIN_PEAK_RATIO = 3.0
"""Correlation peak over the next-highest local maximum (7 × 7 px), at least (real pairs 1.25–3.4,
a true offset 10–14)."""
MIN_CORRELATION = 0.5
"""Normalised cross-correlation of the feature images at the peak, at least (real pairs ≤ 0.21,
the exactly registered demo ≤ 0.44, a true offset of a copy ≥ 0.88)."""
MAX_SHIFT_PX = 2.0
"""Largest offset corrected, pixels (20 m at 10 m); a larger measured one is a wrong match."""
MIN_SHIFT_PX = 0.1
"""Smallest offset corrected, pixels: below it a second read buys nothing measurable."""
WINDOW_PX = 1024
"""Side of the square window measured, pixels (the best-covered of nine candidates): bounds the
FFT memory to a few 16 MB arrays however large the grid."""
MIN_PIXELS = 4096
"""Valid pixels (both images, clear S2) below which nothing is measured."""
UPSAMPLE = 100
"""Sub-pixel refinement: 1/100 px."""
_FEATURE_SIGMA_PX = 1.0
_EXCLUDE_PX = 3


@dataclass(frozen=True)
class ShiftEstimate:
    """One measured offset of a moving image against the reference (see the module's sign convention).

    Attributes:
        dy: Rows, pixels (+ = south).
        dx: Columns, pixels (+ = east).
        peak_ratio: Correlation peak over the next-highest local maximum (7 × 7 px neighbourhoods).
        correlation: Normalised cross-correlation at the peak (−1…1).
        pixels: Valid pixels the measurement used.
    """

    dy: float
    dx: float
    peak_ratio: float
    correlation: float
    pixels: int

    @property
    def magnitude(self) -> float:
        """Length of the offset, pixels."""
        return math.hypot(self.dy, self.dx)

    @property
    def confident(self) -> bool:
        """Unambiguous peak and a plausible size (see the module docstring for the evidence)."""
        return (
            self.peak_ratio >= MIN_PEAK_RATIO and self.correlation >= MIN_CORRELATION and self.magnitude <= MAX_SHIFT_PX
        )


@dataclass(frozen=True)
class ModalityRecord:
    """What co-registration measured and did for one modality (S1 or DEM)."""

    measured: ShiftEstimate | None
    """None when too few valid pixels (:data:`MIN_PIXELS`)."""
    applied: bool
    residual: ShiftEstimate | None
    """Re-measured after a correction; None when nothing was applied."""
    reason: str


@dataclass(frozen=True)
class Coregistration:
    """The co-registration of one scene: S1 and DEM against S2."""

    s1: ModalityRecord
    dem: ModalityRecord

    def as_inputs(self) -> dict[str, str]:
        """The record as a scene ``inputs`` entry (``coregistration``: JSON, offsets in pixels)."""
        return {"coregistration": json.dumps({"s1": _plain(self.s1), "dem": _plain(self.dem)}, sort_keys=True)}


def _plain(record: ModalityRecord) -> dict[str, object]:
    def est(e: ShiftEstimate | None) -> dict[str, object] | None:
        if e is None:
            return None
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(e).items()}

    return {
        "measured": est(record.measured),
        "applied": record.applied,
        "residual": est(record.residual),
        "reason": record.reason,
    }


# --- pure functions --------------------------------------------------------------------------


def feature_image(band: NDArray[np.floating], usable: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Gradient magnitude of ``band`` (Gaussian, σ = 1 px), zero-mean over ``usable``, 0 elsewhere.

    Edges are what S2, S1 and a DEM share (shores, moraines, snow lines); the contrast's sign
    and scale differ between sensors, so magnitudes are normalised to unit variance. Unusable
    pixels are filled with the median before the gradient and zeroed after (with a 3 px margin),
    so a nodata border draws no edge of its own that would correlate at zero shift.
    """
    x = np.asarray(band, dtype=np.float64)
    ok = usable & np.isfinite(x)
    if not ok.any():
        return np.zeros(x.shape)
    filled = np.where(ok, x, float(np.median(x[ok])))
    g = ndimage.gaussian_gradient_magnitude(filled, _FEATURE_SIGMA_PX)
    inner = ndimage.binary_erosion(ok, iterations=3, border_value=1)
    if not inner.any():
        return np.zeros(x.shape)
    g -= g[inner].mean()
    g /= g[inner].std() or 1.0
    return np.where(inner, g, 0.0)


def _hann(shape: tuple[int, int]) -> NDArray[np.float64]:
    """Separable Hann window: the image's border does not wrap into the FFT as an edge."""
    return np.outer(np.hanning(shape[0]), np.hanning(shape[1]))


def _upsampled_dft(
    data: NDArray[np.complex128], region: int, upsample: int, offsets: NDArray[np.float64]
) -> NDArray[np.complex128]:
    """The inverse DFT of ``data`` on a ``region`` × ``region`` patch upsampled ``upsample`` times.

    Matrix-multiply DFT (Guizar-Sicairos et al. 2008): cost region × N per axis, not an FFT of
    the ``upsample``-times larger array. ``offsets`` is the patch's corner in upsampled pixels.
    """
    out = data
    for n, off in reversed(list(zip(data.shape, offsets, strict=True))):
        kernel = np.exp(-2j * np.pi * (np.arange(region) - off)[:, None] * np.fft.fftfreq(n, upsample)[None, :])
        out = np.tensordot(kernel, out, axes=(1, -1))
    return out


def measure_shift(
    reference: NDArray[np.floating],
    moving: NDArray[np.floating],
    usable: NDArray[np.bool_],
    *,
    upsample: int = UPSAMPLE,
) -> ShiftEstimate | None:
    """Offset of ``moving`` against ``reference`` (same grid), from their feature images.

    Args:
        reference: 2-D image (S2 band), NaN nodata.
        moving: 2-D image of the same shape (S1 VV dB, DEM m), NaN nodata.
        usable: Where the reference may be used (clear S2); NaN in either image is excluded too.
        upsample: Sub-pixel refinement factor.

    Returns:
        The offset (module sign convention) with its peak ratio and correlation, or None when
        fewer than :data:`MIN_PIXELS` pixels are usable in both.
    """
    ref = np.asarray(reference, dtype=np.float64)
    mov = np.asarray(moving, dtype=np.float64)
    if ref.shape != mov.shape or ref.ndim != 2:
        raise ValueError(f"reference {ref.shape} and moving {mov.shape} must be one 2-D shape")
    both = usable & np.isfinite(ref) & np.isfinite(mov)
    if int(both.sum()) < MIN_PIXELS:
        return None
    window = _hann(ref.shape)
    a = feature_image(ref, both) * window
    b = feature_image(mov, both) * window
    norm = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    if norm == 0:
        return None
    product = np.fft.fft2(a) * np.conj(np.fft.fft2(b))
    cc = np.fft.ifft2(product).real
    peak = np.unravel_index(int(np.argmax(cc)), cc.shape)
    top = float(cc[peak])
    # The runner-up is the highest other local maximum: the peak's own lobe (broad for smooth
    # features) is no rival, a second match elsewhere is.
    local = cc == ndimage.maximum_filter(cc, size=2 * _EXCLUDE_PX + 1, mode="wrap")
    local[peak] = False
    second = float(cc[local].max()) if local.any() else 0.0
    shape = np.array(cc.shape, dtype=np.float64)
    shift = np.array(peak, dtype=np.float64)
    shift[shift > shape // 2] -= shape[shift > shape // 2]
    # Refine on a 1.5 px patch around the integer peak, 1/upsample px apart.
    shift = np.round(shift * upsample) / upsample
    region = math.ceil(upsample * 1.5)
    centre = float(region // 2)
    patch = np.conj(_upsampled_dft(np.conj(product), region, upsample, centre - shift * upsample)).real
    fine = np.unravel_index(int(np.argmax(patch)), patch.shape)
    shift += (np.array(fine, dtype=np.float64) - centre) / upsample
    # cc peaks where reference(x) ≈ moving(x − s), i.e. the moving content sits at +(−s).
    return ShiftEstimate(
        dy=float(-shift[0]) + 0.0,
        dx=float(-shift[1]) + 0.0,
        peak_ratio=top / second if second > 0 else math.inf,
        correlation=top / norm,
        pixels=int(both.sum()),
    )


def candidate_windows(shape: tuple[int, int], size: int = WINDOW_PX) -> list[tuple[slice, slice]]:
    """The nine ``size`` × ``size`` windows (or the whole grid, if smaller) at the start, middle and end of each axis.

    In row-major order (the first of equals wins in :func:`best_window`).
    """
    h, w = shape
    sh, sw = min(size, h), min(size, w)
    rows = sorted({0, (h - sh) // 2, h - sh})
    cols = sorted({0, (w - sw) // 2, w - sw})
    return [(slice(r, r + sh), slice(c, c + sw)) for r in rows for c in cols]


def best_window(usable: NDArray[np.bool_], size: int = WINDOW_PX) -> tuple[slice, slice]:
    """The candidate window (:func:`candidate_windows`) with the most usable pixels."""
    return max(candidate_windows(usable.shape, size), key=lambda rc: int(usable[rc].sum()))


def shifted_grid(grid: GridSpec, dy: float, dx: float) -> GridSpec:
    """``grid`` moved by ``(dy, dx)`` pixels: pixel (r, c) of it is (r + dy, c + dx) of ``grid``.

    Warping a source whose content is offset by ``(dy, dx)`` onto it puts the content where the
    reference has it.
    """
    from affine import Affine

    return GridSpec.from_affine(grid.epsg, grid.affine @ Affine.translation(dx, dy), grid.width, grid.height)


# --- the pipeline's step ---------------------------------------------------------------------

Reader = Callable[[GridSpec], NDArray[np.float32]]
"""Reads one modality onto a grid (S1: ``(2, H, W)``, DEM: ``(H, W)``)."""


def align_modality(
    reference: NDArray[np.float32],
    usable: NDArray[np.bool_],
    data: NDArray[np.float32],
    band: Callable[[NDArray[np.float32]], NDArray[np.float32]],
    reread: Reader,
    grid: GridSpec,
) -> tuple[NDArray[np.float32], ModalityRecord]:
    """Measures one modality against S2 in its best window and corrects a confident offset.

    ``data`` is on ``grid`` (``band`` picks the measured image of it); ``reread`` reads the
    modality onto a grid again (for a correction, onto the shifted one). Returns the data to
    use (corrected or as given) and the record. :func:`tasks.prepare.prepare_stack` calls it
    with ``grid`` one window of the scene, the correction then applied to the whole scene.
    """
    rows, cols = best_window(usable & np.isfinite(band(data)))
    measured = measure_shift(reference[rows, cols], band(data)[rows, cols], usable[rows, cols])
    if measured is None:
        return data, ModalityRecord(None, False, None, f"fewer than {MIN_PIXELS} usable pixels")
    if not measured.confident:
        return data, ModalityRecord(measured, False, None, "not confident: measured and recorded only")
    if measured.magnitude < MIN_SHIFT_PX:
        return data, ModalityRecord(measured, False, None, f"under {MIN_SHIFT_PX} px: nothing to correct")
    corrected = reread(shifted_grid(grid, measured.dy, measured.dx))
    residual = measure_shift(reference[rows, cols], band(corrected)[rows, cols], usable[rows, cols])
    if residual is None or residual.magnitude >= measured.magnitude:
        return data, ModalityRecord(measured, False, residual, "correction did not reduce the offset: not applied")
    return corrected, ModalityRecord(measured, True, residual, "applied: source re-warped onto the shifted grid")


def align(
    s2_nir: NDArray[np.float32],
    s2_clear: NDArray[np.bool_],
    s1: NDArray[np.float32],
    dem: NDArray[np.float32],
    grid: GridSpec,
    *,
    read_s1: Reader,
    read_dem: Reader,
) -> tuple[NDArray[np.float32], NDArray[np.float32], Coregistration]:
    """Measures S1 and DEM against S2 on ``grid`` and corrects a confident offset (module docstring).

    Args:
        s2_nir: S2 B08 reflectance × 10 000 ``(H, W)``, NaN nodata.
        s2_clear: Clear-sky S2 pixels (clouds draw edges S1 and the DEM do not have).
        s1: ``(2, H, W)`` VV, VH dB on ``grid``, NaN nodata (VV is measured; VH moves with it).
        dem: ``(H, W)`` metres on ``grid``, NaN nodata.
        grid: The scene grid.
        read_s1: Reads S1 onto a given grid again, as it was read (for a correction).
        read_dem: Reads the DEM onto a given grid again.

    Returns:
        ``(s1, dem, record)``: the arrays to stack (corrected or as given) and what was done.
    """
    s1_out, s1_rec = align_modality(s2_nir, s2_clear, s1, lambda a: a[0], read_s1, grid)
    dem_out, dem_rec = align_modality(s2_nir, s2_clear, dem, lambda a: a, read_dem, grid)
    return s1_out, dem_out, Coregistration(s1=s1_rec, dem=dem_rec)
