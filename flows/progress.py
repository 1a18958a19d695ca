"""Progress bars for long work, on standard error (standard output stays the result).

The CLI listens (:func:`terminal_progress`) to what the stages report through
:mod:`core.progress`: search pages per collection, inference windows, scenes of a run. Shown only where someone
watches: when standard error is a terminal. ``GLACIAL_LAKES_PROGRESS`` overrides that:
``1`` / ``always`` draws bars even into a pipe or a log file (one line per step, no carriage
returns), ``0`` / ``never`` silences them. Prefect's run logs say the same steps either way, so a
served or worker run (no listener) loses nothing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from core.progress import listening

__all__ = ["Progress", "progress_enabled", "terminal_progress"]

WIDTH = 24
"""Characters of the bar itself."""


def progress_enabled(stream: TextIO) -> bool:
    """Whether bars are drawn on ``stream`` (see the module docstring)."""
    setting = os.environ.get("GLACIAL_LAKES_PROGRESS", "").strip().lower()
    if setting in {"1", "always", "true", "yes"}:
        return True
    if setting in {"0", "never", "false", "no"}:
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


class Progress:
    """``label [#####.....] i/n note`` (``label i note`` when the total is unknown).

    Redrawn in place on a terminal, one line per step elsewhere.
    """

    def __init__(self, label: str, total: int | None, stream: TextIO | None = None, *, enabled: bool | None = None):
        self.label, self.total, self.done = label, total, 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = progress_enabled(self.stream) if enabled is None else enabled
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        if self.enabled and total:
            self._draw("")

    def update(self, done: int, note: str = "") -> None:
        """``done`` steps are done; ``note`` says the latest (a scene id, an item count)."""
        self.done = done if self.total is None else min(done, self.total)
        if self.enabled:
            self._draw(note)

    def advance(self, note: str = "") -> None:
        """One more step done."""
        self.update(self.done + 1, note)

    def close(self) -> None:
        """End the bar's line on a terminal."""
        if self.enabled and self._tty:
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self, note: str) -> None:
        if self.total:
            filled = WIDTH * self.done // self.total
            line = f"{self.label} [{'#' * filled}{'.' * (WIDTH - filled)}] {self.done}/{self.total} {note}"
        else:
            line = f"{self.label} {self.done} {note}"
        line = line.rstrip()
        self.stream.write(f"\r\x1b[2K{line}" if self._tty else f"{line}\n")
        self.stream.flush()


@contextmanager
def terminal_progress(stream: TextIO | None = None) -> Iterator[None]:
    """Draw a bar per reported stage on ``stream`` (standard error) for the ``with`` block."""
    out = stream if stream is not None else sys.stderr
    if not progress_enabled(out):
        yield
        return
    bars: dict[str, Progress] = {}

    def listener(stage: str, done: int, total: int | None, note: str) -> None:
        bar = bars.get(stage)
        if bar is None:
            for other in bars.values():  # one stage at a time: the previous bar's line is done
                other.close()
            bars.clear()
            bar = bars[stage] = Progress(stage, total, out, enabled=True)
        bar.update(done, note)

    with listening(listener):
        try:
            yield
        finally:
            for bar in bars.values():
                bar.close()
