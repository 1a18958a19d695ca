"""Fault tests that run flows share the flows' Prefect test backend (one temporary server per session)."""

from __future__ import annotations

from tests.flows.conftest import prefect_backend

__all__ = ["prefect_backend"]
