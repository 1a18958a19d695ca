"""Prefect flows and the CLI end to end (a temporary Prefect server per session)."""
