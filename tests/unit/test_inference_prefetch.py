"""Reading the next band of rows while the model runs: same output, one reader thread, clean stops."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from core.errors import RasterInputError
from models.inference import InferenceParams, iter_logit_rows, predict_logits
from models.normalisation import load_stats
from models.segmenter import ArraySource

STATS = load_stats()


def forward(x: torch.Tensor) -> torch.Tensor:
    """A deterministic stand-in model: the mean over bands, plus a column ramp (not flip-symmetric)."""
    return x.mean(dim=1) + torch.linspace(0, 1, x.shape[-1])


class RecordingSource:
    """An in-memory stack that records which thread reads, and fails if two reads overlap."""

    def __init__(self, h: int, w: int, fail_at_row: int | None = None) -> None:
        rng = np.random.default_rng(0)
        stack = np.concatenate(
            [rng.uniform(0, 4000, (12, h, w)), rng.uniform(-25, -5, (2, h, w)), rng.uniform(3000, 5000, (1, h, w))]
        ).astype(np.float32)
        self.inner = ArraySource(stack, np.ones((h, w), bool))
        self.height, self.width = h, w
        self.threads: list[str] = []
        self.rows: list[int] = []
        self.busy = False
        self.fail_at_row = fail_at_row

    def read_rows(self, row0: int, row1: int) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
        assert not self.busy, "two reads at once"
        self.busy = True
        try:
            time.sleep(0.01)  # long enough for an overlapping read to show
            self.threads.append(threading.current_thread().name)
            self.rows.append(row0)
            if row0 == self.fail_at_row:
                raise RasterInputError(f"stack.tif: rows {row0}–{row1} unreadable")
            return self.inner.read_rows(row0, row1)
        finally:
            self.busy = False


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("prefetch-rows")]


def test_prefetch_gives_the_same_logits_and_reads_in_one_background_thread() -> None:
    on, off = RecordingSource(560, 300), RecordingSource(560, 300)
    got = predict_logits(forward, on, STATS, InferenceParams(tta=False, prefetch=True))
    want = predict_logits(forward, off, STATS, InferenceParams(tta=False, prefetch=False))
    np.testing.assert_array_equal(got, want)
    assert on.rows == off.rows == [0, 112, 224, 336]  # each band read once, in order
    assert len(set(on.threads)) == 1 and on.threads[0].startswith("prefetch-rows")
    assert set(off.threads) == {threading.current_thread().name}
    assert not _prefetch_threads()  # the reader thread ended with the scene


def test_prefetch_is_not_part_of_the_output_hash() -> None:
    assert InferenceParams(prefetch=True).output_hash == InferenceParams(prefetch=False).output_hash
    assert InferenceParams(tta=True).output_hash != InferenceParams(tta=False).output_hash


def test_a_caller_that_stops_early_leaves_no_reader_running() -> None:
    source = RecordingSource(1120, 230)
    rows = iter_logit_rows(forward, source, STATS, InferenceParams(tta=False))
    next(rows)  # the first final rows come after the second band
    rows.close()
    assert not _prefetch_threads()
    assert len(source.rows) <= 3  # at most the band being prefetched when the caller stopped, of 9


def test_a_failed_background_read_reaches_the_caller() -> None:
    source = RecordingSource(560, 230, fail_at_row=224)
    with pytest.raises(RasterInputError, match="rows 224"):
        predict_logits(forward, source, STATS, InferenceParams(tta=False))
    assert not _prefetch_threads()
