"""A few calls of the Prefect REST API (loopback, no proxy), for tests that watch a real server."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call(api: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """GET (no body) or POST ``body`` as JSON to ``api + path``; the decoded answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{api}{path}", data=data, headers={"Content-Type": "application/json"})
    with _DIRECT.open(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def healthy(api: str) -> bool:
    """The server answers its health check."""
    try:
        return bool(call(api, "/health"))
    except OSError:
        return False


def flow_runs(api: str, **filters: Any) -> list[dict[str, Any]]:
    """Flow runs matching ``filters`` (the ``flow_runs`` filter of ``/flow_runs/filter``), oldest expected first."""
    return list(call(api, "/flow_runs/filter", {"flow_runs": filters, "sort": "EXPECTED_START_TIME_ASC", "limit": 200}))


def deployments(api: str) -> dict[str, dict[str, Any]]:
    """Every deployment by name."""
    return {d["name"]: d for d in call(api, "/deployments/filter", {"limit": 200})}


def wait_for(what: str, check: Callable[[], Any], timeout_s: float, alive: Callable[[], bool] = lambda: True) -> Any:
    """Poll ``check`` (every second) until it returns something truthy; fail after ``timeout_s``
    or as soon as ``alive`` says the process that should make it happen is gone.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if not alive():
            raise AssertionError(f"gave up waiting for {what}: the process doing it exited")
        time.sleep(1)
    raise AssertionError(f"{what}: not within {timeout_s:g} s")
