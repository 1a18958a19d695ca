"""Progress bars for long work, on standard error (standard output stays the result).

Shown only where someone watches: when standard error is a terminal. ``GLACIAL_LAKES_PROGRESS``
overrides that: ``1`` / ``always`` draws bars even into a pipe or a log file (one line per
step, no carriage returns), ``0`` / ``never`` silences them. Prefect's run logs say the same
steps either way, so a served or worker run (no terminal) loses nothing.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

__all__ = ["Progress", "progress_enabled"]

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
    """``label [#####.....] i/n note``: redrawn in place on a terminal, one line per step elsewhere."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self.label, self.total, self.done = label, max(total, 0), 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = progress_enabled(self.stream) and self.total > 0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        if self.enabled:
            self._draw("")

    def advance(self, note: str = "") -> None:
        """One step done; ``note`` says which (a scene id)."""
        self.done = min(self.done + 1, self.total)
        if self.enabled:
            self._draw(note)
            if self.done == self.total and self._tty:
                self.stream.write("\n")
                self.stream.flush()

    def _draw(self, note: str) -> None:
        filled = WIDTH * self.done // self.total
        line = f"{self.label} [{'#' * filled}{'.' * (WIDTH - filled)}] {self.done}/{self.total} {note}".rstrip()
        if self._tty:
            self.stream.write(f"\r\x1b[2K{line}")
        else:
            self.stream.write(f"{line}\n")
        self.stream.flush()
