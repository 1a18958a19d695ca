"""Stack retention after the merge (flows.retention, GLACIAL_LAKES_KEEP_STACKS)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flows.retention import MERGED_MARKER, prune_stacks
from flows.settings import Settings


def _scene(root: Path, name: str, age_s: int) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    for file in (f"{name}_stack.tif", "probability.tif"):
        (folder / file).write_bytes(b"x")
        os.utime(folder / file, (1_700_000_000 - age_s, 1_700_000_000 - age_s))
    return folder


def test_keeps_the_newest_merged_stacks_and_never_an_unmerged_one(tmp_path: Path) -> None:
    """keep=2 of four merged scenes: the two oldest stacks go; a failed scene's stack and every probability stay."""
    root = tmp_path / "scenes"
    merged = [_scene(root, f"m{i}", age_s=100 * i) for i in range(4)]  # m0 newest
    failed = _scene(root, "failed", age_s=10_000)  # the oldest of all, but it never merged
    earlier = _scene(root, "earlier", age_s=5_000)  # merged in an earlier run: marked then
    (earlier / MERGED_MARKER).touch()
    deleted = prune_stacks(root, merged, keep=2)
    assert sorted(p.parent.name for p in deleted) == ["earlier", "m2", "m3"]
    for folder in (*merged, earlier, failed):
        assert (folder / "probability.tif").is_file()
    assert [m.name for m in merged if (m / f"{m.name}_stack.tif").exists()] == ["m0", "m1"]
    assert (failed / "failed_stack.tif").is_file() and not (failed / MERGED_MARKER).exists()
    # keep=0: every merged scene's stack; the failed one's still stays.
    assert [p.parent.name for p in prune_stacks(root, [], keep=0)] == ["m0", "m1"]
    assert (failed / "failed_stack.tif").is_file()
    assert prune_stacks(tmp_path / "absent", [tmp_path / "absent" / "x"], keep=1) == []


def test_the_setting_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """GLACIAL_LAKES_KEEP_STACKS: 5 by default, 0–10 000, anything else refused naming it."""
    from pydantic import ValidationError

    monkeypatch.delenv("GLACIAL_LAKES_KEEP_STACKS", raising=False)
    assert Settings().keep_stacks == 5
    monkeypatch.setenv("GLACIAL_LAKES_KEEP_STACKS", "0")
    assert Settings().keep_stacks == 0
    monkeypatch.setenv("GLACIAL_LAKES_KEEP_STACKS", "-1")
    with pytest.raises(ValidationError, match="keep_stacks"):
        Settings()
