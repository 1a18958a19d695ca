"""Where the real sample data lives, and what a test does when it is missing.

The one definition of the location: ``GLACIAL_LAKES_REALDATA`` if set, else ``shared/realdata``
beside the checkout (``<checkout>/../shared/realdata``; its README lists the files). Tests reach
it only through the ``realdata`` fixture (``tests/conftest.py``) or :func:`require`.

Missing data skips the test on a developer's machine; under ``CI=true`` it fails the run, so a
CI that lost its data copy cannot pass by skipping every real-data test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ENV = "GLACIAL_LAKES_REALDATA"
"""Overrides the location (e.g. a copy elsewhere)."""


def root() -> Path:
    """The real-data folder (whether or not it exists)."""
    configured = os.environ.get(ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    return Path(__file__).resolve().parents[3] / "shared" / "realdata"


def in_ci() -> bool:
    """``CI`` set to a true value (``true``, ``1``, ``yes``)."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require(*parts: str) -> Path:
    """``root() / parts``; skips the test when missing, or fails it under ``CI=true``."""
    path = root().joinpath(*parts)
    if not path.exists():
        reason = f"real sample data missing: {path} (set {ENV} or lay out shared/realdata beside the checkout)"
        if in_ci():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return path
