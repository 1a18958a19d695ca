"""What a Sentinel-1 asset holds (σ⁰ or γ⁰, linear power, dB or DN), decided and stated (pure).

Two kinds reach the pipeline (``tasks.sources``): ``S1RTC`` (radiometrically terrain-corrected
γ⁰, geocoded; Planetary Computer's ``sentinel-1-rtc`` is linear power) and ``S1GRD`` (ground-range
detected: ESA's product is uncalibrated DN amplitude in radar geometry, calibrated and geocoded by
:mod:`tasks.s1_grd`; a catalog may instead serve an already calibrated, geocoded σ⁰ and say so).

The scale of a calibrated asset is decided from its metadata (``raster:bands`` unit, title,
description; flattened onto the acquisition by :func:`asset_metadata`) and confirmed from its
values (dB backscatter is mostly negative, linear power is ≥ 0 and mostly below 1). A
contradiction, or values that fit neither, is refused; the decision is returned as a
:class:`S1Radiometry` with a one-line reason, to be logged and recorded with the scene.

Model input contract: the segmenter's S1 channels are VV, VH backscatter in dB through TerraMind's
``S1GRD`` modality; CryoSentinel trained it on σ⁰ (GRD, thermal-noise removed, calibrated, Lee 5 × 5,
Range-Doppler terrain corrected, dB). γ⁰ from RTC is the same physical quantity normalised by the
illuminated area instead of the ground area: on flat ground it reads ≈ 1–2 dB higher than σ⁰ at
IW incidence angles, on slopes it differs more. The pipeline does not convert one into the other;
which one a scene used is recorded (``S1Radiometry.kind`` / ``quantity``), and one AOI's scenes use
one kind (``tasks.pairing``).

The backscatter helpers (dB ↔ linear, the Lee filter) live here too; ``tasks.preprocess``
re-exports them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from core.errors import RasterInputError

__all__ = [
    "S1_KINDS",
    "S1Radiometry",
    "asset_metadata",
    "db_to_linear",
    "decide_scale",
    "declared_nodata",
    "declared_radiometry",
    "lee_filter",
    "scales_fitting_values",
    "sigma0_to_db",
]

S1_KINDS = ("S1RTC", "S1GRD")
"""The Sentinel-1 kinds, in pairing preference order (RTC's terrain-corrected geometry first)."""

Scale = Literal["linear", "db", "dn"]
Quantity = Literal["sigma0", "gamma0"]

MIN_VALUES_TO_CONFIRM = 100
"""Fewer finite values than this on the grid confirm nothing; the metadata alone then decides."""

LINEAR_MAX_MEDIAN = 2.0
"""Linear backscatter power of a scene has its median well below 1 (water ~0.001, rock ~0.1)."""

LINEAR_MAX_NEGATIVE = 0.01
"""Share of negative values linear power may hold (resampling overshoot at nodata edges)."""


@dataclass(frozen=True)
class S1Radiometry:
    """What one S1 acquisition's VV/VH assets held and how they were read.

    Attributes:
        kind: ``S1GRD`` or ``S1RTC``.
        quantity: ``sigma0`` (GRD) or ``gamma0`` (RTC).
        scale: What the assets held: ``linear`` power, ``db``, or ``dn`` (GRD amplitude
            calibrated here with the product's LUT).
        reason: One line with the evidence (metadata and values), for logs and scene records.
    """

    kind: str
    quantity: Quantity
    scale: Scale
    reason: str

    def as_inputs(self) -> dict[str, str]:
        """The decision as scene-input entries (string → string)."""
        return {"s1_kind": self.kind, "s1_quantity": self.quantity, "s1_scale": self.scale, "s1_reading": self.reason}


# --- metadata ----------------------------------------------------------------------------------

_ASSET_FIELDS = ("title", "description")
_BAND_FIELDS = ("unit", "nodata", "data_type")


def asset_metadata(item: Any, kind: str, aliases: Mapping[str, tuple[str, ...]]) -> tuple[tuple[str, str], ...]:
    """The metadata of an S1 item that says what its assets hold, flattened to strings.

    Args:
        item: A ``pystac.Item``.
        kind: Our kind of the item; other kinds than :data:`S1_KINDS` get ``()``.
        aliases: Canonical key (``vv``, ``vh``) → the catalog spellings tried in order
            (``tasks.sources.ASSET_ALIASES[kind]``); only ``vv`` and ``vh`` are described.

    Returns:
        ``(key, value)`` pairs: ``sar:product_type``, and per canonical asset ``<pol>.title``,
        ``<pol>.description``, ``<pol>.unit``, ``<pol>.nodata``, ``<pol>.data_type`` where present.
    """
    if kind not in S1_KINDS:
        return ()
    out: list[tuple[str, str]] = []
    product_type = item.properties.get("sar:product_type")
    if product_type is not None:
        out.append(("sar:product_type", str(product_type)))
    for canonical in ("vv", "vh"):
        asset = next((item.assets[k] for k in aliases.get(canonical, ()) if k in item.assets), None)
        if asset is None:
            continue
        fields = {"title": asset.title, "description": asset.description}
        bands = asset.extra_fields.get("raster:bands") or [{}]
        first = bands[0] if isinstance(bands[0], dict) else {}
        fields.update({f: first.get(f) for f in _BAND_FIELDS})
        out.extend((f"{canonical}.{f}", str(v)) for f, v in fields.items() if v is not None)
    return tuple(out)


def declared_nodata(metadata: Mapping[str, str], pol: str) -> float | None:
    """The ``raster:bands`` nodata of one polarisation's asset, or None when undeclared."""
    text = metadata.get(f"{pol}.nodata")
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise RasterInputError(f"S1 asset {pol}: unreadable raster:bands nodata {text!r}") from None


def declared_radiometry(metadata: Mapping[str, str], pol: str) -> tuple[Quantity | None, Scale | None, str]:
    """What the metadata of one asset says it holds: ``(quantity, scale, evidence)``.

    The ``raster:bands`` unit is read first ("dB", "linear", "linear power"), then the title and
    description ("sigma0", "gamma naught", "decibel", "amplitude" = DN). None where it says nothing.
    """
    unit = metadata.get(f"{pol}.unit", "").strip().lower()
    text = " ".join(metadata.get(f"{pol}.{f}", "") for f in _ASSET_FIELDS).lower()
    scale: Scale | None = None
    evidence = "metadata states no scale"
    if unit in ("db", "decibel", "decibels"):
        scale, evidence = "db", f"unit {unit!r}"
    elif unit in ("linear", "linear power", "power"):
        scale, evidence = "linear", f"unit {unit!r}"
    elif " db" in f" {text}" or "decibel" in text:
        scale, evidence = "db", "title/description say dB"
    elif "linear" in text:
        scale, evidence = "linear", "title/description say linear"
    elif "amplitude" in text or "digital number" in text:
        scale, evidence = "dn", "title/description say amplitude (DN)"
    quantity: Quantity | None = None
    if any(w in text for w in ("gamma0", "gamma naught", "gamma nought", "γ⁰", "gamma-naught")):
        quantity = "gamma0"
    elif any(w in text for w in ("sigma0", "sigma naught", "sigma nought", "σ⁰", "sigma-naught")):
        quantity = "sigma0"
    return quantity, scale, evidence


# --- values --------------------------------------------------------------------------------------


def scales_fitting_values(values: ArrayLike) -> tuple[frozenset[str], str]:
    """Which scales finite backscatter values fit: ``({"linear"} | {"db"} | {} , evidence)``.

    Linear power has a median in (0, :data:`LINEAR_MAX_MEDIAN`) and at most
    :data:`LINEAR_MAX_NEGATIVE` of values below 0 (a few resampling artefacts; they read as
    nodata later); dB has a median below 0 (natural surfaces are darker than 0 dB). The two are
    exclusive. Fewer than :data:`MIN_VALUES_TO_CONFIRM` finite values fit both (nothing to
    confirm with).
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size < MIN_VALUES_TO_CONFIRM:
        return frozenset({"linear", "db"}), f"only {x.size} finite values: nothing to confirm"
    median = float(np.median(x))
    negative = float((x < 0).mean())
    evidence = f"median {median:.4g}, min {x.min():.4g}, {100 * negative:.0f} % negative"
    fits = set()
    if 0.0 < median < LINEAR_MAX_MEDIAN and negative <= LINEAR_MAX_NEGATIVE:
        fits.add("linear")
    if median < 0.0:
        fits.add("db")
    return frozenset(fits), evidence


def decide_scale(where: str, kind: str, metadata: Mapping[str, str], pol: str, values: ArrayLike) -> S1Radiometry:
    """Linear or dB for one calibrated asset: metadata decides, values confirm; else refused.

    Args:
        where: The item and asset, for messages.
        kind: ``S1GRD`` (calibrated σ⁰ declared by the catalog) or ``S1RTC``.
        metadata: :func:`asset_metadata` of the acquisition.
        pol: ``vv`` or ``vh``.
        values: The asset's values as read onto the scene grid (NaN nodata).

    Raises:
        RasterInputError: the metadata and the values disagree, the values fit neither scale,
            the metadata says DN, or it says nothing and the values cannot tell.
    """
    quantity, declared, evidence = declared_radiometry(metadata, pol)
    default_q: Quantity = "gamma0" if kind == "S1RTC" else "sigma0"
    if quantity is not None and quantity != default_q:
        raise RasterInputError(f"{where}: a {kind} asset whose metadata says {quantity}, not {default_q}")
    fits, seen = scales_fitting_values(values)
    if declared == "dn":
        raise RasterInputError(f"{where}: {kind} asset holds uncalibrated amplitude (DN) per its metadata ({evidence})")
    if declared is not None:
        if declared not in fits:
            found = " or ".join(sorted(fits)) or "neither linear power nor dB"
            raise RasterInputError(
                f"{where}: metadata says {declared} ({evidence}) but the values look like {found} ({seen}); refused"
            )
        return S1Radiometry(
            kind, default_q, declared, f"{where}: {declared} from metadata ({evidence}); values agree ({seen})"
        )
    if len(fits) != 1:
        found = "both" if fits else "neither"
        raise RasterInputError(
            f"{where}: metadata states no scale and the values fit {found} linear power and dB ({seen}); refused"
        )
    (scale,) = fits
    return S1Radiometry(
        kind, default_q, "db" if scale == "db" else "linear", f"{where}: {scale} from values ({seen}); {evidence}"
    )


# --- backscatter helpers ---------------------------------------------------------------------


def sigma0_to_db(linear: ArrayLike) -> NDArray[np.float32]:
    """Linear backscatter power (σ⁰ or γ⁰) → dB; NaN for values ≤ 0 or not finite."""
    x = np.asarray(linear, dtype=np.float64)
    ok = np.isfinite(x) & (x > 0)
    out = np.full(x.shape, np.nan, dtype=np.float32)
    out[ok] = 10.0 * np.log10(x[ok])
    return out


def db_to_linear(db: ArrayLike) -> NDArray[np.float32]:
    """Backscatter in dB → linear power; NaN stays NaN."""
    return np.power(10.0, np.asarray(db, dtype=np.float64) / 10.0).astype(np.float32)


def lee_filter(linear: ArrayLike, size: int = 5, enl: float = 4.4) -> NDArray[np.float32]:
    """Lee speckle filter (multiplicative noise model) in the linear power domain.

    ``out = m + k·(x − m)`` with local mean ``m`` and variance ``v`` over a ``size`` × ``size``
    window, and ``k = clip((v − m²/enl) / (v·(1 + 1/enl)), 0, 1)``. Window statistics use only
    finite neighbours, so nodata does not bleed into its surroundings; nodata pixels stay NaN
    (the filter does not fill gaps).

    Args:
        linear: 2-D linear power (σ⁰ or γ⁰), NaN nodata.
        size: Odd window size in pixels (5 as in the TerraMesh/CryoSentinel recipe).
        enl: Equivalent number of looks of the input (IW GRDH ≈ 4.4).
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"window size must be odd and positive, got {size}")
    x = np.asarray(linear, dtype=np.float64)
    ok = np.isfinite(x) & (x > 0)
    xf = np.where(ok, x, 0.0)
    n = ndimage.uniform_filter(ok.astype(np.float64), size, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        m = ndimage.uniform_filter(xf, size, mode="nearest") / n
        m2 = ndimage.uniform_filter(xf * xf, size, mode="nearest") / n
        v = np.maximum(m2 - m * m, 0.0)
        cu2 = 1.0 / enl
        k = np.clip((v - m * m * cu2) / (v * (1.0 + cu2)), 0.0, 1.0)
    k = np.where(v > 0, k, 0.0)  # flat window: the mean is the best estimate
    out = m + k * (x - m)
    return np.where(ok, out, np.nan).astype(np.float32)
