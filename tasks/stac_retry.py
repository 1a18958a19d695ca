"""The HTTP retry policy of STAC API and token requests: back-off on 429/5xx, Retry-After honoured.

Connection attempts are retried quickly; a read that timed out is not (a silent server stays
silent). HTTP 429 and 5xx answers are retried :data:`STATUS_RETRIES` times with exponential
back-off (0.5 s, 1 s, 2 s …), or after the server's ``Retry-After`` when it sends one, capped
at :data:`MAX_RETRY_AFTER_S`. When they persist, the answer goes up as an error that the search
task retries again later (``flows.tasks.search_task``).
"""

from __future__ import annotations

from typing import Any

from urllib3 import Retry

__all__ = ["MAX_RETRY_AFTER_S", "STATUS_RETRIES", "CappedRetry", "retry_policy", "retrying_session", "timed_out"]

STATUS_RETRIES = 3
"""Retries of one request answered 429 / 500 / 502 / 503 / 504."""

MAX_RETRY_AFTER_S = 30.0
"""Longest wait a ``Retry-After`` header gets honoured with, seconds (a longer one waits this)."""

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class CappedRetry(Retry):
    """urllib3's ``Retry`` with ``Retry-After`` capped at :data:`MAX_RETRY_AFTER_S`."""

    def parse_retry_after(self, retry_after: str) -> float:
        """The server's wait in seconds, at most :data:`MAX_RETRY_AFTER_S`."""
        return min(float(super().parse_retry_after(retry_after)), MAX_RETRY_AFTER_S)


def retry_policy() -> CappedRetry:
    """The policy of every STAC API request (GET and the POST of a search: both idempotent)."""
    return CappedRetry(
        total=STATUS_RETRIES + 2,
        connect=2,
        read=0,
        status=STATUS_RETRIES,
        other=0,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "POST", "HEAD"}),
        backoff_factor=0.5,
        respect_retry_after_header=True,
        raise_on_status=False,  # the last answer comes back, and its status is classified
    )


def retrying_session() -> Any:
    """A ``requests.Session`` with :func:`retry_policy` on http and https."""
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry_policy())
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def timed_out(error: BaseException | None) -> bool:
    """True when ``error`` (a requests exception) means no answer came in time.

    requests reports a read timeout that the policy does not retry as a ``ConnectionError``
    wrapping urllib3's ``MaxRetryError(ReadTimeoutError)``, not as a ``Timeout``.
    """
    import requests
    from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError, ReadTimeoutError

    if isinstance(error, requests.Timeout):
        return True
    inner = error.args[0] if isinstance(error, requests.ConnectionError) and error.args else None
    reason = inner.reason if isinstance(inner, MaxRetryError) else None
    # urllib3 derives NewConnectionError (refused, unreachable) from ConnectTimeoutError: not a timeout.
    return isinstance(reason, ReadTimeoutError) or (
        isinstance(reason, ConnectTimeoutError) and not isinstance(reason, NewConnectionError)
    )
