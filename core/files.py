"""Atomic file replacement: the one way the project writes a file under its final name.

Every product file (stack COGs, probability and mask rasters, checkpoints, exports) is written
to a temporary sibling and renamed into place, so a crash or a kill never leaves a half-written
file under the final name, and readers never see one. The sibling is in the same folder, hence
on the same file system, where ``os.replace`` is atomic.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path"]


@contextmanager
def atomic_path(path: str | Path, *, suffix: str = "") -> Iterator[Path]:
    """Yields a temporary path beside ``path``; on success it replaces ``path``, on error it is removed.

    Args:
        path: the final file name; its folder is created if missing.
        suffix: appended to the temporary name, for writers that choose a format by extension
            (e.g. ``".tif"``).

    The temporary name starts with a dot and ends in ``.partial`` (plus ``suffix``), so listings
    and globs of final names never pick it up.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".partial{suffix}", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
