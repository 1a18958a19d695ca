"""Segmentation stage: analysis-ready stack in, water-probability COG out.

The probability raster is float32 0–1 on the scene grid, NaN (declared nodata) outside the
valid mask: nodata is never written as 0, which would read as "certainly dry". The optional
mask is uint8: 1 water (probability > threshold), 0 dry, 255 nodata.

Every segmenter is driven through one call of the ``Segmenter`` protocol,
``iter_probability_rows(source)``: the source is read a band of rows at a time and rows are
written as they become final. TerraMind segmenters stream, so memory does not grow with the
scene height; the spectral baseline reads its source whole (see ``models.baseline``).

:class:`CoregisteredSource` serves one-off inputs (``glacial-lakes segment``): a 12-band S2
GeoTIFF defines the grid; S1 (VV, VH in dB) and the DEM (metres) on any grid are warped onto it
window by window (bilinear, GDAL ``WarpedVRT``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from numpy.typing import NDArray

from core.errors import RasterInputError, SettingsError
from core.files import atomic_path
from core.progress import report_progress
from models.hub import DEFAULT_HUB, HubCache
from models.registry import load_segmenter
from models.runtime import DEFAULT_RUNTIME, InferenceRuntime
from models.segmenter import Rows
from tasks.defaults import WATER_THRESHOLD
from tasks.grid import GridSpec, read_grid
from tasks.preprocess import S2_BANDS, detect_s2_dn_offset, harmonise_s2_dn
from tasks.stack import StackInfo, StackReader
from tasks.stack_format import WRITE_CACHE_BYTES

__all__ = [
    "CoregisteredSource",
    "s2_file_offset",
    "segment_files",
    "segment_stack",
    "write_float_cog",
    "write_probability",
]

MASK_NODATA = 255
"""Nodata of the uint8 water mask (1 water, 0 dry)."""


def write_float_cog(array: NDArray[np.float32], grid: GridSpec, path: Path, description: str) -> Path:
    """Write one float32 band as a tiled, deflate-compressed COG with NaN nodata."""
    return write_probability(iter([(0, array.astype(np.float32, copy=False))]), grid, path, description=description)[0]


def _scratch_profile(grid: GridSpec, dtype: str, nodata: float) -> dict[str, Any]:
    # Striped and uncompressed: rows can be written in any band height without re-reading blocks.
    return {
        "driver": "GTiff",
        "dtype": dtype,
        "count": 1,
        "width": grid.width,
        "height": grid.height,
        "crs": grid.crs,
        "transform": grid.affine,
        "nodata": nodata,
        "tiled": False,
        "blockysize": 16,
    }


def write_probability(
    rows: Rows,
    grid: GridSpec,
    out_path: Path,
    mask_path: Path | None = None,
    threshold: float = WATER_THRESHOLD,
    description: str = "water probability",
) -> tuple[Path, Path | None]:
    """Writes probability rows (top to bottom) as a float32 COG, and optionally the uint8 mask.

    Rows go to scratch GeoTIFFs as they arrive; GDAL then copies each into a COG block by
    block, so neither step holds a whole raster (GDAL's block cache capped at
    :data:`tasks.stack_format.WRITE_CACHE_BYTES`). Each COG is written through
    :func:`core.files.atomic_path`, so it appears under its final name only when complete.

    Args:
        rows: ``(row0, probability rows)`` covering the grid top to bottom, NaN nodata.
        grid: The scene grid.
        out_path: Probability COG (float32, NaN nodata).
        mask_path: Mask COG (uint8: 1 water where probability > threshold, 0 dry, 255 nodata).
        threshold: Water threshold.
        description: Band description of the probability.
    """
    from contextlib import ExitStack

    from rasterio.shutil import copy as rio_copy

    outputs = [(Path(out_path), "float32", float("nan"), description, 3)]
    if mask_path is not None:
        outputs.append((Path(mask_path), "uint8", MASK_NODATA, f"water mask (p > {threshold})", 2))
    for path, *_ in outputs:
        path.parent.mkdir(parents=True, exist_ok=True)
    # GDAL's block cache capped (WRITE_CACHE_BYTES): rows go to disk as they come, and the COG
    # copy reads the scratch file block by block, so memory does not grow with the scene.
    with (
        rasterio.Env(GDAL_CACHEMAX=WRITE_CACHE_BYTES),
        tempfile.TemporaryDirectory(dir=Path(out_path).parent, prefix=".seg-") as tmpdir,
    ):
        scratch = [Path(tmpdir) / f"rows{i}.tif" for i in range(len(outputs))]
        with ExitStack() as files:
            dsts = [
                files.enter_context(rasterio.open(s, "w", **_scratch_profile(grid, dt, nd)))
                for s, (_, dt, nd, _, _) in zip(scratch, outputs, strict=True)
            ]
            for r0, p in rows:
                window = ((r0, r0 + p.shape[0]), (0, grid.width))
                dsts[0].write(p.astype(np.float32, copy=False), 1, window=window)
                if len(dsts) > 1:
                    mask = np.where(np.isnan(p), MASK_NODATA, p > threshold).astype(np.uint8)
                    dsts[1].write(mask, 1, window=window)
            for dst, (_, _, _, desc, _) in zip(dsts, outputs, strict=True):
                dst.set_band_description(1, desc)
        for s, (path, _, _, _, predictor) in zip(scratch, outputs, strict=True):
            with atomic_path(path, suffix=".tif") as partial:
                rio_copy(s, partial, driver="COG", compress="deflate", predictor=predictor, blocksize=256)
    return Path(out_path), (Path(mask_path) if mask_path is not None else None)


class CoregisteredSource:
    """S2 + S1 + DEM files co-registered onto the S2 file's grid, read a band of rows at a time.

    Args:
        s2: 12-band GeoTIFF in TerraMind order, reflectance × 10 000; 0 or the nodata tag = nodata.
        s1: 2-band GeoTIFF, VV then VH backscatter in dB (used as is: no speckle filter).
        dem: 1-band elevation raster, metres.
        s2_offset: DN offset present in the S2 file: 0 (harmonised, pre-04.00 scale) or 1000
            (un-harmonised baseline ≥ 04.00 product), removed on reading.

    Raises:
        RasterInputError: Unreadable file, wrong band count, no CRS, or no overlap with the S2 grid;
            the message names the input.
        SettingsError: ``s2_offset`` is neither 0 nor 1000.
    """

    def __init__(self, s2: str | Path, s1: str | Path, dem: str | Path, s2_offset: int = 0) -> None:
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        if s2_offset not in (0, 1000):
            raise SettingsError(f"S2 offset must be 0 or 1000 DN, got {s2_offset}")
        self._baseline = "04.00" if s2_offset else "02.00"  # what harmonise_s2_dn keys the offset on
        self._files: list[Any] = []
        try:
            self._s2 = self._open("S2", s2, len(S2_BANDS))
            try:
                self.grid = read_grid(str(s2))
            except ValueError as exc:
                raise RasterInputError(f"S2 file {exc}") from exc
            self.height, self.width = self.grid.height, self.grid.width
            vrts = []
            for role, path, count in (("S1", s1, 2), ("DEM", dem, 1)):
                ds = self._open(role, path, count)
                self._check_overlap(role, path, ds)
                # No nodata tag: NaN is the nodata of float rasters, integer ones have none.
                is_float = ds.dtypes[0].startswith("float")
                src_nodata = ds.nodata if ds.nodata is not None else (np.nan if is_float else None)
                vrt = WarpedVRT(
                    ds,
                    crs=self.grid.crs,
                    transform=self.grid.affine,
                    width=self.width,
                    height=self.height,
                    resampling=Resampling.bilinear,
                    src_nodata=src_nodata,
                    nodata=np.nan,
                    dtype="float32",
                )
                self._files.append(vrt)
                vrts.append(vrt)
            self._s1, self._dem = vrts
        except BaseException:
            self.close()
            raise

    def _open(self, role: str, path: str | Path, count: int) -> Any:
        try:
            ds = rasterio.open(path)
        except rasterio.errors.RasterioIOError as exc:
            raise RasterInputError(f"{role} file {path}: cannot be read ({str(exc).splitlines()[0]})") from exc
        self._files.append(ds)
        if ds.count != count:
            raise RasterInputError(f"{role} file {path}: expected {count} band(s), found {ds.count}")
        if ds.crs is None:
            raise RasterInputError(f"{role} file {path}: raster has no CRS")
        return ds

    def _check_overlap(self, role: str, path: str | Path, ds: Any) -> None:
        from rasterio.warp import transform_bounds

        left, bottom, right, top = transform_bounds(ds.crs, self.grid.crs, *ds.bounds, densify_pts=21)
        gl, gb, gr, gt = self.grid.bounds
        if left >= gr or right <= gl or bottom >= gt or top <= gb:
            raise RasterInputError(f"{role} file {path} does not overlap the S2 grid")

    @property
    def crs(self) -> Any:
        """The S2 grid's CRS."""
        return self.grid.crs

    @property
    def transform(self) -> Any:
        """The S2 grid's affine transform."""
        return self.grid.affine

    def read_rows(self, row0: int, row1: int) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
        """Stack rows ``[row0, row1)`` (15 bands, NaN nodata) and where all sources have data."""
        from rasterio.windows import Window

        win = Window(0, row0, self.width, row1 - row0)
        s2 = self._s2.read(window=win, masked=True).astype(np.float32).filled(np.nan)
        s2 = harmonise_s2_dn(s2, self._baseline)
        s1 = self._s1.read(window=win)
        dem = self._dem.read(1, window=win)[np.newaxis]
        stack = np.concatenate([s2, s1, dem]).astype(np.float32, copy=False)
        return stack, np.asarray(np.isfinite(stack).all(axis=0), dtype=np.bool_)

    def close(self) -> None:
        """Closes every file and VRT opened (VRTs first)."""
        for f in reversed(self._files):
            f.close()
        self._files = []

    def __enter__(self) -> CoregisteredSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def s2_file_offset(path: str | Path, max_pixels: int = 1_000_000) -> tuple[int, str]:
    """The +1000 DN offset test (:func:`~tasks.preprocess.detect_s2_dn_offset`) on an S2 file.

    Reads at most about ``max_pixels`` pixels per band (a decimated read: overviews when the
    file has them); 0 and the nodata tag are nodata.
    """
    with rasterio.open(path) as ds:
        step = max(1, int(np.ceil(np.sqrt(ds.width * ds.height / max_pixels))))
        shape = (ds.count, max(1, ds.height // step), max(1, ds.width // step))
        dn = ds.read(out_shape=shape, masked=True).astype(np.float64).filled(np.nan)
    return detect_s2_dn_offset(dn)


def segment_files(
    s2: Path,
    s1: Path,
    dem: Path,
    out_path: Path,
    model_spec: str,
    *,
    mask_path: Path | None = None,
    threshold: float = WATER_THRESHOLD,
    s2_offset: int = 0,
    tta: bool = True,
    progress: Callable[[int, int], None] | None = None,
    hub: HubCache = DEFAULT_HUB,
    runtime: InferenceRuntime = DEFAULT_RUNTIME,
) -> tuple[Path, Path | None]:
    """Co-registers S1 and the DEM onto the S2 grid, segments, writes probability (and mask) COGs.

    ``hub`` says where ``hf://`` model specs are resolved, ``runtime`` what runs the model's
    forward (the edge builds both from settings).
    """
    segmenter = load_segmenter(model_spec, tta, hub, runtime)
    with CoregisteredSource(s2, s1, dem, s2_offset) as source:
        rows = segmenter.iter_probability_rows(source, progress=progress)
        description = f"water probability ({segmenter.name})"
        return write_probability(rows, source.grid, out_path, mask_path, threshold, description)


def segment_stack(
    stack_info: StackInfo,
    model_spec: str,
    out_path: Path,
    tta: bool = True,
    hub: HubCache = DEFAULT_HUB,
    runtime: InferenceRuntime = DEFAULT_RUNTIME,
) -> Path:
    """Runs the named segmenter over a stack file and writes the probability COG (float32 0–1, NaN nodata).

    ``hub`` says where ``hf://`` model specs are resolved, ``runtime`` what runs the model's
    forward (the edge builds both from settings).
    """
    segmenter = load_segmenter(model_spec, tta, hub, runtime)
    with StackReader(stack_info) as source:
        # Windows done, for whoever listens (the CLI's progress bars; nobody in a served run).
        rows = segmenter.iter_probability_rows(
            source, lambda done, total: report_progress("inference windows", done, total)
        )
        description = f"water probability ({segmenter.name})"
        return write_probability(rows, stack_info.grid, out_path, description=description)[0]
