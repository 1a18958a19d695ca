"""Processes that tests watch: children of a pid and liveness, read from /proc (Linux)."""

from __future__ import annotations

from pathlib import Path


def children(pid: int) -> dict[int, str]:
    """Direct children of ``pid`` (pid → command line), from /proc."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return found


def alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie (an exited process nobody has reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


SERVER_MARKS = ("prefect server start", "uvicorn")
"""Command-line marks of a temporary Prefect server: ours (``prefect server start``) or Prefect's own (uvicorn)."""


def is_prefect_server(cmdline: str) -> bool:
    """``cmdline`` is a temporary Prefect server's, whichever way it was started."""
    return any(mark in cmdline for mark in SERVER_MARKS)
