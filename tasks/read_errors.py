"""What a failed raster read says: the file and GDAL's own cause, on one line.

rasterio raises the last GDAL error of a failed call (``WarpOperationError: Chunk and warp
failed``) and chains the earlier ones as its ``__cause__``: the chain is where the file and the
real reason are ("T43TGH_…_B01_60m.tif, band 1: IReadBlock failed at X offset 0, Y offset 0:
TIFFReadEncodedTile() failed."; "ZIPDecode:ZLib error"). :func:`gdal_reason` joins them.
"""

from __future__ import annotations

from core.errors import RasterInputError

__all__ = ["NoPixelOnGrid", "RemoteReadError", "gdal_reason"]

MAX_REASON_CHARS = 400
"""A reason is cut here: it is stored with the acquisition and shown on one line."""


class RemoteReadError(OSError):
    """A remote raster read failed (timeout, HTTP error, dropped connection): worth retrying."""


class NoPixelOnGrid(RasterInputError):
    """A raster leaves no valid pixel on the grid it was read onto (a wrong CRS, no overlap, only nodata).

    Bad input for a whole scene grid; for one strip of a scene read by strips
    (:mod:`tasks.prepare`) it only means that strip lies outside the raster's data.
    """


def gdal_reason(exc: BaseException) -> str:
    """The messages of ``exc`` and of the errors chained under it, each once, first lines only, ``; ``-joined."""
    seen: list[str] = []
    current: BaseException | None = exc
    depth = 0
    while current is not None and depth < 8:  # a chain is a few GDAL errors; a cycle is not followed
        lines = str(current).strip().splitlines()
        message = lines[0].strip() if lines else type(current).__name__
        if message and not any(message in s for s in seen):
            seen.append(message)
        current = current.__cause__ or current.__context__
        depth += 1
    text = "; ".join(seen)
    return text if len(text) <= MAX_REASON_CHARS else f"{text[: MAX_REASON_CHARS - 1]}…"
