"""Which scenes' stack files stay on disk after the merge (``GLACIAL_LAKES_KEEP_STACKS``).

A stack is the scene's largest file (:mod:`tasks.stack`) and what a rerun of the scene's later
stages reads; it is not needed once the scene's lakes are in the inventory. After a run's merges,
the AOI keeps the stacks of its ``keep`` most recently written merged scenes (so reruns of the
latest scenes skip the preparation) and deletes the older merged scenes' stacks.

* Only a merged scene's stack is ever deleted: a folder gets the :data:`MERGED_MARKER` file when
  its scene's merge committed (this run or an earlier one, as the ledger says), and a folder
  without one (a scene that failed, was refused or is still running) is never touched.
* The water probability (``probability.tif``, one band) is kept: it is the evidence behind the
  merged lakes, and the lakes can be extracted again from it without a segmentation.

May import: ``tasks``, ``core``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

__all__ = ["MERGED_MARKER", "STACK_GLOB", "prune_stacks"]

log = logging.getLogger(__name__)

MERGED_MARKER = "merged"
"""Empty file in a scene folder: the scene's merge committed (its stack may be pruned)."""
STACK_GLOB = "*_stack.tif"
"""The stack files of a scene folder (:mod:`tasks.stack`)."""


def prune_stacks(scenes_root: Path, merged_dirs: Iterable[Path], keep: int) -> list[Path]:
    """Marks ``merged_dirs`` as merged, then deletes the stacks of all merged folders but the newest ``keep``.

    Args:
        scenes_root: The AOI's scene folders' parent (``SceneContext.data_dir / "scenes"``).
        merged_dirs: Folders of scenes whose merge committed (missing folders are skipped).
        keep: Merged scenes whose stacks stay, the most recently written first; 0 deletes every
            merged scene's stack.

    Returns:
        The deleted stack files.
    """
    if keep < 0:
        raise ValueError(f"keep must be >= 0, got {keep}")
    for folder in merged_dirs:
        if folder.is_dir():
            (folder / MERGED_MARKER).touch()
    if not scenes_root.is_dir():
        return []
    stacks = [
        stack
        for folder in scenes_root.iterdir()
        if (folder / MERGED_MARKER).is_file()
        for stack in folder.glob(STACK_GLOB)
    ]
    stacks.sort(key=lambda p: p.stat().st_mtime_ns, reverse=True)
    deleted = []
    for stack in stacks[keep:]:
        stack.unlink(missing_ok=True)
        deleted.append(stack)
    if deleted:
        log.info("deleted %d merged scenes' stacks (GLACIAL_LAKES_KEEP_STACKS=%d)", len(deleted), keep)
    return deleted
