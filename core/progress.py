"""Progress of long work: reported by any layer, shown only where someone listens.

A stage (``search sentinel-2-l2a``, ``scenes``) reports ``done`` of ``total`` steps (None: not
known in advance) with a short note. Nothing is shown unless a listener is registered: the CLI
registers one that draws bars on standard error (``flows.progress``); a served or worker run
registers none, and its Prefect logs tell the same steps.

This module is a leaf: it imports nothing of the project (and no third-party package).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["ProgressListener", "listening", "report_progress"]

ProgressListener = Callable[[str, int, "int | None", str], None]
"""``(stage, done, total, note)``."""

_listeners: list[ProgressListener] = []


def report_progress(stage: str, done: int, total: int | None = None, note: str = "") -> None:
    """Tell every listener that ``done`` steps of ``stage`` are done (cheap when none listens)."""
    for listener in tuple(_listeners):
        listener(stage, done, total, note)


@contextmanager
def listening(listener: ProgressListener) -> Iterator[None]:
    """Register ``listener`` for the ``with`` block (this process, every thread)."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)
