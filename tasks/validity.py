"""Observation validity: the one place that says which pixels of a scene count as seen, and for what.

Two masks, both bool ``(H, W)`` on the scene grid (UTM, 10 m pixels):

* **valid data** (the stack's valid mask; what the model reads): every S2 band has data, SCL is
  neither no data / defective (0, 1) nor cloud or cloud shadow (:data:`CLOUD_SCL_CLASSES`: 3, 8,
  9, 10), S1 VV and VH and the DEM are finite. Snow and ice (SCL 11) are valid data: glacial
  scenes are snowy, and the model has to see snow to tell it from water. Lakes are mapped here.
* **dry-capable** (``SceneResult.valid_footprint``; where the merge may mark a known lake
  *absent*): valid data ∧ the cloud state is known from SCL ∧ not snow or ice (SCL 11) ∧ a finite
  water probability ∧ no water pixel within :data:`WATER_RING_PX` pixel. Water pixels are those
  of the water mask (``probability > threshold``), kept as lakes or dropped below the mapping unit.

The rules, and why:

1. **No SCL → cloud state unknown** (:data:`CLOUD_STATE_UNKNOWN`). The scene's lakes are mapped
   (they add or continue lakes), but it marks no lake absent: its footprint is None, its cloud
   fraction unknown (NULL), and its scene inputs say ``cloud_state = "unknown"``. No cloud mask is
   made from the bands instead: a spectral cloud test over snow, firn and glacier ice mistakes
   them for cloud and cloud for them, and would be a second, unvalidated mask. Lake ice in a
   scene without SCL falls under the same rule: such a scene retires nothing.
2. **Snow or ice (SCL 11) over a lake's place → not observed for that lake.** A frozen or snow
   covered lake looks dry to every water test; two winter scenes must not retire it. Ice that SCL
   calls something else (water, dark area) is not caught here.
3. **Water below the mapping unit is not "dry".** A lake that shrank below the mapping unit still
   has water pixels: they and a one-pixel ring around them are cut out of the footprint. The
   merge calls a lake absent only where ``MergeConfig.min_footprint_cover`` (0.95) of its outline
   lies inside the footprint, so remaining water (with its ring) over more than 5 % of the known
   outline keeps the lake from being seen dry.
4. **No processing baseline → the +1000 DN offset is decided from the pixels** (the detector of
   :func:`tasks.preprocess.detect_s2_dn_offset`), never assumed absent; the decision and its
   evidence are recorded (:class:`S2Offset`) with the stack and in the scene inputs.

Pure functions (numpy / scipy only); the readers that feed them are in :mod:`tasks.preprocess`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

__all__ = [
    "CLOUD_SCL_CLASSES",
    "CLOUD_STATE_KNOWN",
    "CLOUD_STATE_UNKNOWN",
    "SCL_INVALID_CLASSES",
    "SNOW_ICE_SCL_CLASSES",
    "WATER_RING_PX",
    "CloudState",
    "S2Offset",
    "S2Validity",
    "cloud_mask_from_scl",
    "cloud_state_of",
    "dry_capable",
    "dry_capable_before_water",
    "s2_validity",
]

CLOUD_SCL_CLASSES = frozenset({3, 8, 9, 10})
"""SCL cloud shadow, cloud medium/high probability, thin cirrus: not valid data.

Never 11 (snow): glacial scenes are snowy."""

SCL_INVALID_CLASSES = frozenset({0, 1})
"""SCL no data and saturated/defective: not observed at all."""

SNOW_ICE_SCL_CLASSES = frozenset({11})
"""SCL snow and ice: valid data for the model, never "seen dry" for a lake."""

WATER_RING_PX = 1
"""Pixels around every water pixel that are left out of the dry-capable footprint (8-connected)."""

CloudState = Literal["scl", "unknown"]
"""How a scene's cloud state is known: from its SCL, or not at all."""
CLOUD_STATE_KNOWN: CloudState = "scl"
CLOUD_STATE_UNKNOWN: CloudState = "unknown"


@dataclass(frozen=True, eq=False)
class S2Validity:
    """What one S2 scene's SCL says about its pixels (all masks bool ``(H, W)`` on the grid).

    Attributes:
        clear: Valid S2 data: every band has data and SCL (when given) is neither no-data /
            defective nor cloud. Without SCL: every band has data.
        snow_ice: Clear pixels that SCL calls snow or ice; None without SCL (unknown).
        cloud_fraction: Share of observed pixels (data, SCL not 0/1) flagged cloud or cloud
            shadow, 0–1 (1.0 when nothing was observed); NaN without SCL (unknown).
    """

    clear: NDArray[np.bool_]
    snow_ice: NDArray[np.bool_] | None
    cloud_fraction: float

    @property
    def cloud_state(self) -> CloudState:
        """The cloud state: "scl" when SCL was given, else "unknown"."""
        return cloud_state_of(self.cloud_fraction)


@dataclass(frozen=True)
class S2Offset:
    """How the +1000 DN ``BOA_ADD_OFFSET`` of one S2 product was decided.

    Attributes:
        dn: The offset removed, 0 or 1000 DN.
        source: "baseline" (the product's processing baseline says it) or "detector" (no
            baseline: the pixels' low percentiles decided, see ``detect_s2_dn_offset``).
        evidence: One line: the baseline, or the detector's percentile values.
    """

    dn: int
    source: Literal["baseline", "detector"]
    evidence: str

    def describe(self) -> str:
        """One line for logs and the scene inputs, e.g. "1000 DN (detector: every band's p1 …)"."""
        return f"{self.dn} DN ({self.source}: {self.evidence})"


def cloud_state_of(cloud_fraction: float) -> CloudState:
    """The cloud state a recorded cloud fraction stands for: NaN (no SCL) is "unknown"."""
    return CLOUD_STATE_UNKNOWN if math.isnan(cloud_fraction) else CLOUD_STATE_KNOWN


def cloud_mask_from_scl(scl: NDArray[np.integer], data: NDArray[np.bool_]) -> tuple[NDArray[np.bool_], float]:
    """Clear-sky mask and cloud fraction from the scene classification layer.

    Args:
        scl: SCL classes on the grid (nearest-neighbour resampled).
        data: Where all S2 bands have data.

    Returns:
        ``(clear, cloud_fraction)``: clear = data ∧ SCL valid ∧ not cloud; the fraction is of
        observed pixels (data ∧ SCL valid; 1.0 when there are none).
    """
    observed = data & ~np.isin(scl, list(SCL_INVALID_CLASSES))
    cloud = observed & np.isin(scl, list(CLOUD_SCL_CLASSES))
    n = int(observed.sum())
    return observed & ~cloud, (float(cloud.sum()) / n if n else 1.0)


def s2_validity(data: NDArray[np.bool_], scl: NDArray[np.integer] | None) -> S2Validity:
    """Rule 1 and 2 for one S2 scene: clear pixels, snow/ice, cloud fraction; unknown without SCL.

    Args:
        data: bool ``(H, W)``, where every S2 band has data.
        scl: SCL classes on the grid (uint8, 0 where the SCL has no data), or None when the
            product has no SCL.
    """
    data = np.asarray(data, dtype=bool)
    if scl is None:
        # Nothing says where the clouds are: the model may still read every pixel with data
        # (lakes it maps are real), but the scene can never claim a lake's place was seen dry.
        return S2Validity(clear=data, snow_ice=None, cloud_fraction=math.nan)
    clear, fraction = cloud_mask_from_scl(scl, data)
    snow_ice = clear & np.isin(scl, list(SNOW_ICE_SCL_CLASSES))
    return S2Validity(clear=clear, snow_ice=snow_ice, cloud_fraction=fraction)


def dry_capable_before_water(valid: NDArray[np.bool_], snow_ice: NDArray[np.bool_] | None) -> NDArray[np.bool_] | None:
    """Where the scene could see a lake's place dry, before the segmentation: valid ∧ ¬snow/ice.

    Args:
        valid: The stack's valid mask (valid data), bool ``(H, W)``.
        snow_ice: SCL snow/ice pixels, or None when the cloud state is unknown (no SCL).

    Returns:
        bool ``(H, W)``, or None when the cloud state is unknown: then nothing is dry-capable.
    """
    if snow_ice is None:
        return None
    valid = np.asarray(valid, dtype=bool)
    if snow_ice.shape != valid.shape:
        raise ValueError(f"snow/ice mask {snow_ice.shape} does not match the valid mask {valid.shape}")
    out: NDArray[np.bool_] = valid & ~snow_ice
    return out


def dry_capable(
    before_water: NDArray[np.bool_] | None, water: NDArray[np.bool_], probability: NDArray[np.floating]
) -> NDArray[np.bool_] | None:
    """The dry-capable mask of rule 3: :func:`dry_capable_before_water` minus water and its ring.

    Args:
        before_water: From :func:`dry_capable_before_water`, or None (cloud state unknown).
        water: bool ``(H, W)``, the water mask (every pixel the segmentation calls water, before
            the minimum mapped area drops small bodies).
        probability: Water probability ``(H, W)``, 0–1, NaN nodata: a pixel without one was not
            looked at.

    Returns:
        bool ``(H, W)``: the pixels whose outline is ``SceneResult.valid_footprint``; None when
        the cloud state is unknown (the scene marks no lake absent).
    """
    if before_water is None:
        return None
    water = np.asarray(water, dtype=bool)
    if water.shape != before_water.shape or np.shape(probability) != before_water.shape:
        raise ValueError(
            f"water {water.shape} and probability {np.shape(probability)} must match the mask {before_water.shape}"
        )
    ring = ndimage.binary_dilation(water, structure=np.ones((3, 3), dtype=bool), iterations=WATER_RING_PX)
    out: NDArray[np.bool_] = before_water & ~ring & np.isfinite(probability)
    return out
