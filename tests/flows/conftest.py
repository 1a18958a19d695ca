"""Prefect test backend: one temporary server for the whole session (start-up costs ~13 s)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# Before prefect is imported anywhere: a busy 2-core machine needs a longer start-up budget.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")


@pytest.fixture(scope="session")
def prefect_backend() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield
