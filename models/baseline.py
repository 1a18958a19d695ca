"""Spectral baseline water segmenter: NDWI / MNDWI with snow, terrain, SAR and shadow guards.

Used for comparison with TerraMind and for QA; it is never substituted for the model silently.

The rule is a fuzzy AND of margins, each already divided by its scale so that one unit is one
logit: ``z = min(spectral, snow/ice, slope, SAR, shadow)`` and ``probability = sigmoid(gain·z)``.
A pixel is water at probability 0.5 exactly when every hard threshold is met, and the
probability says how clearly, so a lake's mean probability means something.

* **Spectral**: NDWI(B03, B08) *or* MNDWI(B03, B11) above its threshold. MNDWI separates water
  from soil and rock; NDWI keeps the 10 m resolution for narrow water (B11 is 20 m).
* **Snow and ice** are bright in the visible and, unlike water, not dark in the NIR: the NDWI
  needed rises with B03 reflectance, B08 must be low and B03 below a ceiling (turbid glacial
  water stays under about 0.25; snow is 0.5–0.9, clean ice 0.3–0.5).
* **Slope**: lake surfaces are flat; the gentlest DEM slope within 50 m must be under ~10°.
* **SAR**: very bright VV (layover, rough rock, buildings) is not open water.
* **Terrain shadow** is dark in all bands and looks like water to both indices. A pixel that is
  dark in B03, B08 and B11 *and* has high terrain around it (horizon angle above a threshold)
  is called water only if VV is dark too. Dark water on open, flat ground needs no SAR.

Known limits: wind-roughened, dark (clear, deep) lakes under a high horizon are missed;
shadowed snow on flat ground in a deep cirque can pass when VV is also dark (wet snow);
frozen or snow-covered lakes are, correctly for this rule, not water.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from models.segmenter import Progress, Rows, WindowSource, band_index, check_stack, mask_outside_valid

__all__ = ["HORIZON_RADII_M", "STRIP_PIXELS", "SpectralBaseline", "horizon_angle_degrees", "slope_degrees"]

_B03, _B08, _B11 = band_index("B03"), band_index("B08"), band_index("B11")
_VV, _DEM = band_index("VV"), band_index("DEM")


def slope_degrees(dem: ArrayLike, resolution: float) -> NDArray[np.float32]:
    """Terrain slope in degrees from a DEM on a square grid.

    Central differences where both neighbours have data, one-sided differences at nodata and
    array edges, so a hole does not erase the slope of its surroundings.

    Args:
        dem: 2-D elevation in metres, NaN nodata.
        resolution: Pixel size in metres (same units as the elevation).

    Returns:
        float32 degrees (0 flat … 90); NaN where the DEM is NaN or has no finite neighbour
        along an axis.
    """
    z = np.asarray(dem, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"dem must be 2-D, got shape {z.shape}")
    gy = _gradient_nan(z, axis=0, spacing=resolution)
    gx = _gradient_nan(z, axis=1, spacing=resolution)
    return np.degrees(np.arctan(np.hypot(gx, gy))).astype(np.float32)


def _gradient_nan(z: NDArray[np.float64], axis: int, spacing: float) -> NDArray[np.float64]:
    pad = [(0, 0), (0, 0)]
    pad[axis] = (1, 1)
    p = np.pad(z, pad, constant_values=np.nan)
    n = z.shape[axis]
    prev = np.take(p, range(0, n), axis=axis)
    nxt = np.take(p, range(2, n + 2), axis=axis)
    central = (nxt - prev) / (2 * spacing)
    forward = (nxt - z) / spacing
    backward = (z - prev) / spacing
    g = np.where(np.isfinite(central), central, np.where(np.isfinite(forward), forward, backward))
    return np.where(np.isfinite(z), g, np.nan)


HORIZON_RADII_M: tuple[float, ...] = (20, 40, 80, 160, 320, 640)
"""Search radii of the terrain-shadow guard's horizon, metres (the farthest sets the rows of halo
a strip of the scene needs: :meth:`SpectralBaseline.halo_rows`)."""

STRIP_PIXELS = 2_000_000
"""Pixels of the stack read per strip in the streaming form (:meth:`SpectralBaseline.iter_probability_rows`:
own rows and the halo below): the rule's float intermediates then peak near 0.35 GB at any scene width.
At a tile's width that is 115 own rows per strip, the DEM's guards computed on 115 + 2 × 67 rows; the
earlier form, which computed every guard on the whole halo (48 own rows + 134), ran 1.83× longer for
the same probabilities, bit for bit, at 0.40 against now 0.43 GB (``benchmarks/baseline_strips.py``,
10980 × 1500 px). A whole tile's segment stage: 81 s at 0.58 GB (``benchmarks/tile_scale.py``; 237 s before)."""


def horizon_angle_degrees(
    dem: ArrayLike, resolution: float, radii_m: tuple[float, ...] = HORIZON_RADII_M
) -> NDArray[np.float32]:
    """Approximate horizon elevation angle in degrees, the highest in any direction.

    For each radius r, the highest terrain within r (square window) is compared with the pixel:
    ``atan((max − z) / r)``; the largest over radii is kept. It over-estimates slightly (the
    window corner is farther than r), which errs towards "shadow is possible".

    Args:
        dem: 2-D elevation in metres, NaN nodata (ignored in the maxima).
        resolution: Pixel size in metres.
        radii_m: Search radii in metres.

    Returns:
        float32 degrees ≥ 0; NaN where the DEM is NaN.
    """
    z = np.asarray(dem, dtype=np.float64)
    filled = np.where(np.isfinite(z), z, -np.inf)
    best = np.zeros(z.shape)
    for r in radii_m:
        half = max(1, round(r / resolution))
        top = ndimage.maximum_filter(filled, size=2 * half + 1, mode="nearest")
        with np.errstate(invalid="ignore"):
            best = np.fmax(best, np.degrees(np.arctan((top - z) / (half * resolution))))
    return np.where(np.isfinite(z), best, np.nan).astype(np.float32)


def _index(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a - b) / (a + b)


@dataclass(frozen=True)
class SpectralBaseline:
    """NDWI/MNDWI water rule with guards; see the module docstring.

    Reflectances below are 0–1 (the stack holds reflectance × 10 000); angles in degrees;
    backscatter in dB. Each ``*_scale`` is the change in its quantity worth one logit.
    """

    harmonised_s2: ClassVar[bool] = True
    """Its thresholds are surface reflectance: S2 must be on the harmonised scale."""

    ndwi_min: float = 0.0
    """NDWI(B03, B08) needed at zero B03 reflectance."""
    ndwi_per_b03: float = 0.5
    """Extra NDWI needed per unit of B03 reflectance (snow/ice: bright, NDWI near 0.1)."""
    mndwi_min: float = 0.0
    """MNDWI(B03, B11) needed."""
    index_scale: float = 0.05
    b03_max: float = 0.25
    """B03 reflectance ceiling for water (turbid glacial lakes stay below; snow and ice do not)."""
    b08_max: float = 0.15
    """B08 (NIR) ceiling for water (turbid water ≤ ~0.12; snow, ice, vegetation above)."""
    reflectance_scale: float = 0.02
    slope_max_deg: float = 10.0
    """Water is flat."""
    slope_scale_deg: float = 2.0
    slope_window_px: int = 5
    """The slope guard uses the gentlest slope within this window: a shore pixel's DEM slope
    (30 m DEM, bilinear) is inflated by the bank behind it, its lake-side neighbour's is not."""
    vv_max_db: float = -6.0
    """VV above this is not open water (layover, rough rock, buildings)."""
    vv_water_db: float = -15.0
    """VV below this confirms water where shadow is possible."""
    vv_scale_db: float = 1.5
    dark_max: float = 0.05
    """Dark in all bands: B03, B08 and B11 reflectance all below this."""
    dark_scale: float = 0.01
    shadow_horizon_deg: float = 15.0
    """Terrain shadow is possible where the horizon is higher than this (sun elevation proxy)."""
    horizon_scale_deg: float = 3.0
    pixel_size_m: float = 10.0
    """Pixel size of the stack, for slope and horizon."""
    gain: float = 1.0
    """Multiplies the margin before the logistic; larger gives a harder output."""

    name: str = "spectral-baseline"

    @property
    def params_hash(self) -> str:
        """Short sha256 of the thresholds (the name excluded)."""
        params = {k: v for k, v in asdict(self).items() if k != "name"}
        blob = json.dumps(params, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    @property
    def version(self) -> str:
        """``spectral-baseline-v1+<params hash>``: changes whenever a threshold changes."""
        return f"{self.name}-v1+{self.params_hash}"

    def terrain(self, dem: NDArray[np.floating]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """(gentlest slope, horizon angle), degrees, of a DEM block (metres, NaN nodata), same shape.

        The only guards that look beyond their pixel (up to :meth:`halo_rows` rows away); every
        other guard is per pixel. NaN where the DEM is NaN.
        """
        slope = slope_degrees(dem, self.pixel_size_m)
        if self.slope_window_px > 1:
            gentlest = ndimage.minimum_filter(np.where(np.isfinite(slope), slope, np.inf), size=self.slope_window_px)
            slope = np.where(np.isfinite(gentlest), gentlest, np.nan)
        return slope.astype(np.float32, copy=False), horizon_angle_degrees(dem, self.pixel_size_m)

    def margin(
        self,
        stack: NDArray[np.floating],
        terrain: tuple[NDArray[np.float32], NDArray[np.float32]] | None = None,
    ) -> NDArray[np.float32]:
        """The fuzzy-AND margin z in logit units (> 0: water), NaN where spectra are missing.

        A guard whose input is NaN (no SAR, no DEM) gives no evidence and is skipped, except
        that a pixel dark in all bands stays non-water unless a low horizon or dark VV clears it.
        ``terrain``: :meth:`terrain` of these pixels, computed elsewhere (from a DEM block with
        a halo); None: from the stack's own DEM band.
        """
        # float32 throughout: a full tile is 1.2e8 pixels per intermediate.
        g = stack[_B03].astype(np.float32) / 10_000
        n = stack[_B08].astype(np.float32) / 10_000
        s = stack[_B11].astype(np.float32) / 10_000
        vv = stack[_VV].astype(np.float32)

        ndwi_needed = self.ndwi_min + self.ndwi_per_b03 * g
        z_spec = np.maximum(
            (_index(g, n) - ndwi_needed) / self.index_scale,
            (_index(g, s) - self.mndwi_min) / self.index_scale,
        )  # NaN when a band is missing: no spectral evidence, no water
        z_snow = np.minimum((self.b03_max - g) / self.reflectance_scale, (self.b08_max - n) / self.reflectance_scale)
        slope, horizon = self.terrain(stack[_DEM].astype(np.float32)) if terrain is None else terrain
        z_slope = (self.slope_max_deg - slope) / self.slope_scale_deg
        z_sar = (self.vv_max_db - vv) / self.vv_scale_db

        brightest = np.maximum(np.maximum(g, n), s)
        z_shadow = np.fmax(
            np.fmax(
                (brightest - self.dark_max) / self.dark_scale,
                (self.shadow_horizon_deg - horizon) / self.horizon_scale_deg,
            ),
            (self.vv_water_db - vv) / self.vv_scale_db,
        )
        z = z_spec
        for guard in (z_snow, z_slope, z_sar, z_shadow):
            z = np.fmin(z, guard)  # fmin: a NaN guard is skipped
        return np.where(np.isfinite(z_spec), z, np.nan).astype(np.float32)

    def predict(self, stack: NDArray[np.float32], valid: NDArray[np.bool_]) -> NDArray[np.float32]:
        """Water probability 0–1 (float32), NaN outside ``valid``; see :class:`Segmenter`."""
        return self._probability(stack, valid, None)

    def _probability(
        self,
        stack: NDArray[np.float32],
        valid: NDArray[np.bool_],
        terrain: tuple[NDArray[np.float32], NDArray[np.float32]] | None,
    ) -> NDArray[np.float32]:
        check_stack(stack, valid)
        z = np.clip(self.gain * self.margin(stack, terrain), -50, 50)
        return mask_outside_valid(1.0 / (1.0 + np.exp(-z)), valid)

    def halo_rows(self) -> int:
        """Rows above and below a strip that its pixels' guards look at (a strip's halo).

        The horizon's farthest radius (:data:`HORIZON_RADII_M`), the slope's one-pixel differences
        and its gentlest-slope window. With this halo a strip's probabilities equal the whole
        scene's exactly.
        """
        horizon = max(max(1, round(r / self.pixel_size_m)) for r in HORIZON_RADII_M)
        return horizon + self.slope_window_px // 2 + 1

    def iter_probability_rows(
        self, source: WindowSource, progress: Progress | None = None, *, strip_pixels: int = STRIP_PIXELS
    ) -> Rows:
        """The :class:`~models.segmenter.Segmenter` streaming form: strips of rows, the DEM's with a halo.

        Every guard but two is per pixel; the slope and horizon guards (:meth:`terrain`) look up
        to :meth:`halo_rows` rows away, and they read the DEM alone. So each strip's stack is
        read once with its own rows and the halo below (the rows the next strip owns), the DEM
        rows of the halo above are kept from the previous strip, :meth:`terrain` runs on the
        DEM block with both halos (clipped at the scene's edges, where the filters' edge rule
        then applies as on the whole scene) and everything else on the strip's own rows only:
        the result equals :meth:`predict` on the whole scene. Memory is set by ``strip_pixels``
        (the pixels of the stack read per strip, own rows + the halo below: own rows
        ``strip_pixels // width − halo``, at least 16), not by the scene. ``progress(done,
        total)`` counts strips.

        Yields:
            ``(row0, prob)`` per strip: float32 ``(rows, width)`` in 0–1, NaN outside valid.
        """
        height, width = source.height, source.width
        halo = self.halo_rows()
        # The stack read per strip makes the budget: a wide scene gets fewer own rows, so memory
        # stays the same at any width (a tile's 10980 px: 115 own rows + 67 below).
        rows = max(16, strip_pixels // max(1, width) - halo)
        starts = list(range(0, height, rows))
        above = np.empty((0, width), np.float32)  # DEM rows [r0 − len(above), r0), from the previous strip
        for i, r0 in enumerate(starts, 1):
            r1 = min(height, r0 + rows)
            stack, valid = source.read_rows(r0, min(height, r1 + halo))
            base = r0 - len(above)  # the DEM block's first row
            dem = np.concatenate([above, stack[_DEM]])
            slope, horizon = self.terrain(dem)
            own = slice(r0 - base, r1 - base)
            terrain = (slope[own], horizon[own])
            prob = self._probability(stack[:, : r1 - r0], valid[: r1 - r0], terrain)
            above = dem[max(0, r1 - halo) - base : r1 - base].copy()  # not a view holding the block
            del stack, valid, dem, slope, horizon, terrain  # released before the caller asks for the next strip
            yield r0, prob
            if progress is not None:
                progress(i, len(starts))
