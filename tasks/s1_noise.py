"""Sentinel-1 GRD thermal noise: the ``noise-*.xml`` of a product, as noise power per image pixel.

IPF 2.9 and later (March 2018 on) split the noise into a range profile and an azimuth profile:

    N(line, sample) = noiseRange(line, sample) × noiseAzimuth(line)   (DN², the power of DN)

* ``noiseRangeVectorList``: one vector every ~667 lines, one value every 40 samples; bilinear
  between them (in sample, then line), the edge value holding past the last one, as for the
  calibration LUT (:class:`tasks.s1_grd.CalibrationLut`).
* ``noiseAzimuthVectorList``: per sub-swath block (``IW1`` … ``IW3``: first/last azimuth line and
  range sample), one value per listed line, linear between them. A pixel no block covers gets
  the range noise alone (factor 1).

Then ``σ⁰ = (DN² − N) / A_σ²``, clipped at :data:`tasks.s1_grd.NOISE_FLOOR_SIGMA0`
(:func:`tasks.s1_grd.calibrated_sigma0_on_grid`). The older layout (``noiseVectorList``, IPF < 2.9)
is refused, named: its single LUT is not the same quantity.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from core.errors import RasterInputError
from tasks.s1_grd import CalibrationLut, range_vectors, xml_numbers, xml_root

__all__ = ["AzimuthNoiseBlock", "NoiseLut", "parse_noise"]


@dataclass(frozen=True, eq=False)
class AzimuthNoiseBlock:
    """One sub-swath block of azimuth noise: lines ``first_line..last_line``, samples ``first_sample..last_sample``."""

    swath: str
    first_line: int
    last_line: int
    first_sample: int
    last_sample: int
    lines: NDArray[np.float64]
    values: NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class NoiseLut:
    """The thermal noise of one GRD polarisation (see the module docstring)."""

    range_lut: CalibrationLut
    """The range vectors (lines, samples, noise DN²), interpolated like a calibration LUT."""
    azimuth: tuple[AzimuthNoiseBlock, ...]
    polarisation: str

    def noise_at(self, rows: NDArray[Any], cols: NDArray[Any]) -> NDArray[np.float64]:
        """Noise power (DN²) at every (row, col) of ``rows`` × ``cols``: ``(len(rows), len(cols))`` float64."""
        rows = np.asarray(rows)
        cols = np.asarray(cols)
        out = self.range_lut.sigma_at(rows, cols)
        for block in self.azimuth:
            r = (rows >= block.first_line) & (rows <= block.last_line)
            c = (cols >= block.first_sample) & (cols <= block.last_sample)
            if r.any() and c.any():
                factor = np.interp(rows[r].astype(np.float64), block.lines, block.values)
                out[np.ix_(r, c)] *= factor[:, np.newaxis]
        return out


def _int(node: ET.Element, key: str, href: str, where: str) -> int:
    try:
        return int(node.findtext(key, ""))
    except ValueError:
        raise RasterInputError(f"{href}: {where} lacks {key}") from None


def parse_noise(data: bytes, href: str) -> NoiseLut:
    """The thermal noise of a ``noise-*.xml`` (IPF ≥ 2.9 layout).

    Raises:
        RasterInputError: naming ``href``: not a noise document, the pre-2.9 layout, no range or
            azimuth vectors, a vector whose counts differ or whose positions do not increase.
    """
    root = xml_root(data, href, "noise")
    if root.find("noiseVectorList") is not None and root.find("noiseRangeVectorList") is None:
        raise RasterInputError(f"{href}: noise XML of the IPF < 2.9 layout (noiseVectorList) is not supported")
    vectors = root.findall("noiseRangeVectorList/noiseRangeVector")
    blocks_xml = root.findall("noiseAzimuthVectorList/noiseAzimuthVector")
    if not vectors or not blocks_xml:
        raise RasterInputError(f"{href}: no noiseRangeVector or no noiseAzimuthVector")
    line_arr, pixels, values = range_vectors(
        vectors, href, "noiseRangeVector", "noiseRangeLut", lambda v: bool(np.all(v >= 0))
    )
    blocks = []
    for k, vec in enumerate(blocks_xml):
        where = f"noiseAzimuthVector {k}"
        az_lines = xml_numbers(vec.find("line"), href, f"{where} line")
        az = xml_numbers(vec.find("noiseAzimuthLut"), href, f"{where} noiseAzimuthLut")
        if len(az_lines) != len(az) or np.any(np.diff(az_lines) < 0):
            raise RasterInputError(f"{href}: {where} has unusable line/noiseAzimuthLut lists")
        blocks.append(
            AzimuthNoiseBlock(
                swath=(vec.findtext("swath") or "").strip(),
                first_line=_int(vec, "firstAzimuthLine", href, where),
                last_line=_int(vec, "lastAzimuthLine", href, where),
                first_sample=_int(vec, "firstRangeSample", href, where),
                last_sample=_int(vec, "lastRangeSample", href, where),
                lines=az_lines,
                values=az,
            )
        )
    pol = (root.findtext("adsHeader/polarisation") or "").strip().upper()
    return NoiseLut(CalibrationLut(line_arr, pixels, values, pol), tuple(blocks), pol)
