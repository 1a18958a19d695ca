"""The compact on-disk encoding of the scene stack and its block writer (see :mod:`tasks.stack`).

One tiled GeoTIFF a scene, every band int16 (GeoTIFF holds one data type and one nodata value
per file), band-interleaved (a one-band read touches only that band's tiles), ZSTD with the
horizontal predictor (``benchmarks/stack_format.py``: about as small as deflate at a fraction of
its write time, LERC being larger for the lossless case), 256 × 256 tiles, written a strip of
rows at a time (:class:`StackWriter`; the COG driver cannot be written by windows).

Bands and their encoding, ``value = stored × scale + offset`` (the GDAL ``scale``/``offset``
metadata, so GDAL and QGIS show physical values), nodata ``-32768`` in every band. Stored
values are multiples of the band's ``step``: the precision is half a step.

=========  ===========  =======  ======  ====  =========================================
band       unit         scale    offset  step  precision / range
=========  ===========  =======  ======  ====  =========================================
B01…B12    reflectance  0.0001   0       4     ±2e-4 (the stored integer is the stack's
                                               "reflectance × 10 000"); 0 … 3.2767
VV, VH     dB           0.01     0       5     ±0.025 dB; −327.67 … +327.67 dB
DEM        metres       0.25     4000    1     ±0.125 m; −4191.75 … 12191.75 m
valid      1 / 0        —        —       —     exact
dry_cap.   1 / 0        —        —       —     exact (only with a known cloud state)
=========  ===========  =======  ======  ====  =========================================

Why the steps: the demo's reflectance carries sensor-like noise that no lossless codec packs
below ~10 bits a pixel; steps of 4e-4 in reflectance (under Sentinel-2's noise-equivalent
reflectance of ~1e-3) and 0.05 dB in backscatter (under the filtered speckle's ~0.5 dB) take
off two bits a pixel and leave the lakes as they were (``tests/unit/test_prepare.py``;
``benchmarks/stack_format.py`` has the bytes).

Reflectance above 3.2764 (never seen in L2A outside saturated pixels) is stored as 3.2764,
dB and metres outside their range are clipped likewise: clipping, not wrapping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "DRY_CAPABLE_BAND",
    "ENCODING_TAG",
    "ENCODING_VERSION",
    "STORED_DTYPE",
    "STORED_NODATA",
    "VALID_BAND",
    "WRITE_CACHE_BYTES",
    "BandCode",
    "StackWriter",
    "band_codes",
    "decode",
    "encode",
]

STORED_DTYPE = "int16"
STORED_NODATA = -32768
"""Stored nodata of every band (decoded to NaN; masks never hold it)."""
_STORED_MAX = 32767
VALID_BAND = "valid"
"""Description of the valid-mask band (1 valid, 0 not)."""
DRY_CAPABLE_BAND = "dry_capable"
"""Description of the dry-capable band (1 could be seen dry, 0 not); absent: cloud state unknown."""
ENCODING_TAG = "encoding"
ENCODING_VERSION = "int16-scaled-1"
"""The ``encoding`` tag of a stack in this format (the reader decodes by this module's table)."""
COMPRESS = "ZSTD"
"""Chosen by ``benchmarks/stack_format.py`` (figures in its docstring)."""
ZSTD_LEVEL = 1
"""ZSTD level 1: the fastest; higher levels bought a few per cent of bytes for twice the time."""
TILE_PX = 256
"""Tile side: also the strip height the writer is fed (whole tile rows: each tile written once)."""


@dataclass(frozen=True)
class BandCode:
    """How one band is stored: ``physical = stored × scale + offset``.

    ``stack_unit`` converts the physical value into the stack's unit as the readers return it
    (10 000 for reflectance: the stack carries reflectance × 10 000; 1 otherwise).
    """

    name: str
    scale: float
    offset: float
    unit: str
    stack_unit: float = 1.0
    step: int = 1
    """Stored values are multiples of this (the precision is half a step, in stored units)."""

    @property
    def stack_scale(self) -> float:
        """Stored integer → stack value factor (1.0 for reflectance: the stored integer is × 10 000)."""
        return round(self.scale * self.stack_unit, 12)

    @property
    def stack_offset(self) -> float:
        """Stored integer → stack value offset."""
        return round(self.offset * self.stack_unit, 12)


def band_codes(s2_bands: tuple[str, ...]) -> tuple[BandCode, ...]:
    """The codes of the 15 data bands in stack order: ``s2_bands``, VV, VH, DEM."""
    return (
        *(BandCode(b, 1e-4, 0.0, "reflectance", 10_000.0, step=4) for b in s2_bands),
        BandCode("VV", 0.01, 0.0, "dB", step=5),
        BandCode("VH", 0.01, 0.0, "dB", step=5),
        BandCode("DEM", 0.25, 4000.0, "m"),
    )


def encode(values: NDArray[np.floating], code: BandCode) -> NDArray[np.int16]:
    """Stack values (the stack's unit, NaN nodata) → stored int16: the nearest multiple of the step, clipped."""
    x = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(x)
    q = np.rint((np.where(ok, x, 0.0) - code.stack_offset) / (code.stack_scale * code.step)) * code.step
    top = _STORED_MAX // code.step * code.step  # the largest multiple of the step; −top never meets nodata
    np.clip(q, -top, top, out=q)
    out = q.astype(np.int16)
    out[~ok] = STORED_NODATA
    return out


def decode(stored: NDArray[np.integer], code: BandCode) -> NDArray[np.float32]:
    """Stored int16 → stack values, float32, NaN where nodata."""
    if code.stack_scale == 1.0 and code.stack_offset == 0.0:
        out = stored.astype(np.float32)
    else:  # in float64, so a stored step reads back as the nearest float32 of its value (−15.0, not −15.000001)
        out = (stored * code.stack_scale + code.stack_offset).astype(np.float32)
    out[stored == STORED_NODATA] = np.nan
    return out


WRITE_CACHE_BYTES = 64 * 1024**2
"""GDAL's block cache while a stage writes a raster by strips (the stack, the probability).

GDAL's default (5 % of RAM) keeps every dirty or read block up to that size, so a writer's
memory would grow with the scene's width × rows written: capped, blocks go to disk as they fill.
Measured on a full 10980 px tile's probability: 0.79 GB peak with the default, 0.16 GB capped."""


class StackWriter:
    """Writes a stack file a strip of rows at a time, through a temporary sibling renamed at the end.

    Use as a context manager: the file appears under ``path`` only when the block exits without
    an exception (a crash leaves nothing half-written under the final name). Memory: GDAL's
    block cache is held to :data:`WRITE_CACHE_BYTES` while writing, so whole tile rows go to disk as
    they are written, not when the file closes.

    Args:
        path: Final path of the ``*_stack.tif``.
        profile: ``width``, ``height``, ``crs``, ``transform``.
        codes: The data bands' codes, in band order.
        masks: Names of the mask bands after the data bands (``valid``, and ``dry_capable``
            when the cloud state is known).
        threads: GDAL compression threads (``NUM_THREADS`` creation option).
    """

    def __init__(
        self,
        path: Path,
        profile: dict[str, Any],
        codes: tuple[BandCode, ...],
        masks: tuple[str, ...],
        *,
        threads: int = 1,
    ) -> None:
        self.path = Path(path)
        self.codes, self.masks = codes, masks
        self._tmp = self.path.with_name(f".{self.path.name}.tmp")
        self._profile = {
            **profile,
            "driver": "GTiff",
            "count": len(codes) + len(masks),
            "dtype": STORED_DTYPE,
            "nodata": STORED_NODATA,
            "tiled": True,
            "blockxsize": TILE_PX,
            "blockysize": TILE_PX,
            "interleave": "band",
            "compress": COMPRESS,
            "zstd_level": ZSTD_LEVEL,
            "predictor": 2,
            "num_threads": max(1, threads),
            "bigtiff": "IF_SAFER",
        }
        self._env: Any = None
        self._ds: Any = None

    def __enter__(self) -> StackWriter:
        import rasterio

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._env = rasterio.Env(GDAL_CACHEMAX=WRITE_CACHE_BYTES)
        self._env.__enter__()
        try:
            self._ds = rasterio.open(self._tmp, "w", **self._profile)
        except BaseException:
            self._env.__exit__(None, None, None)
            raise
        return self

    def write_rows(self, row0: int, data: NDArray[np.floating], masks: tuple[NDArray[np.bool_], ...]) -> None:
        """Writes rows ``[row0, row0 + r)``: ``data`` ``(15, r, W)`` in stack units, masks bool ``(r, W)``."""
        from rasterio.windows import Window

        if data.shape[0] != len(self.codes) or len(masks) != len(self.masks):
            raise ValueError(f"expected {len(self.codes)} bands and {len(self.masks)} masks")
        rows, width = data.shape[1:]
        window = Window(0, row0, width, rows)
        for i, code in enumerate(self.codes):
            self._ds.write(encode(data[i], code), i + 1, window=window)
        for j, mask in enumerate(masks):
            self._ds.write(np.asarray(mask, dtype=np.int16), len(self.codes) + j + 1, window=window)

    def finish(self, tags: dict[str, str]) -> None:
        """Sets the descriptions, scales, offsets, units and ``tags`` (written at close)."""
        ds = self._ds
        ds.descriptions = (*(c.name for c in self.codes), *self.masks)
        ds.scales = (*(c.scale for c in self.codes), *(1.0 for _ in self.masks))
        ds.offsets = (*(c.offset for c in self.codes), *(0.0 for _ in self.masks))
        ds.units = (*(c.unit for c in self.codes), *("" for _ in self.masks))
        ds.update_tags(**{ENCODING_TAG: ENCODING_VERSION, **tags})

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self._ds.close()
        finally:
            self._env.__exit__(None, None, None)
        if exc_type is None:
            self._tmp.replace(self.path)
        else:
            self._tmp.unlink(missing_ok=True)


def fraction(numerator: int, denominator: int, empty: float = math.nan) -> float:
    """``numerator / denominator``, ``empty`` when the denominator is 0."""
    return numerator / denominator if denominator else empty
