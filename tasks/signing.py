"""Signing asset hrefs before they are read: Planetary Computer SAS tokens (the ``modifier`` hook).

A :data:`HrefModifier` turns the href a catalog lists into the href GDAL reads. Planetary
Computer's blobs need a SAS token in the query string; its token endpoint
(``…/api/sas/v1/token/{collection}``) answers ``{"token": "st=…&se=…&sig=…", "msft:expiry": …}``.
Tokens are cached per collection until :data:`TOKEN_REFRESH_MARGIN_S` before their stated expiry,
so one search signs all its hrefs with one request per collection.

Hrefs are signed after the acquisition's fingerprint is taken from the unsigned ones (a new token
must not make a new scene key), and the token is never logged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from core.errors import SourceError
from tasks.acquisition import REMOTE_TIMEOUT_S, Acquisition, Signing, TransientSourceError

__all__ = [
    "PC_TOKEN_URL",
    "HrefModifier",
    "PlanetaryComputerSigner",
    "refresh_signatures",
    "shared_signer",
    "sign_acquisition",
]

PC_TOKEN_URL = "https://planetarycomputer.microsoft.com/api/sas/v1/token/{collection}"
"""Planetary Computer's SAS token endpoint; ``{collection}`` is the STAC collection id."""

TOKEN_REFRESH_MARGIN_S = 300.0
"""A cached token is renewed this many seconds before its stated expiry (reads take minutes), or
at half its life when it lives shorter than twice that."""

HrefModifier = Callable[[str, str], str]
"""``modify(href, collection) -> href``: the href to read for one listed asset href."""


@dataclass
class PlanetaryComputerSigner:
    """Appends the collection's SAS token to each href, tokens cached until shortly before expiry.

    ``token_url`` holds ``{collection}``. Raises SourceError for a 4xx answer or a body without a
    token (the endpoint named), TransientSourceError for 429/5xx or a dropped connection (the
    search task retries those), TimeoutError when the endpoint does not answer.
    """

    token_url: str = PC_TOKEN_URL
    timeout: tuple[float, float] = REMOTE_TIMEOUT_S
    _tokens: dict[str, tuple[str, datetime]] = field(default_factory=dict, repr=False)
    """collection → (token, when it is renewed)."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    requests_made: int = 0
    """Token requests sent so far (a cache that works keeps this at one per collection)."""

    def __call__(self, href: str, collection: str) -> str:
        """``href`` with the SAS token of ``collection`` in its query string."""
        token = self.token(collection)
        return f"{href}{'&' if '?' in href else '?'}{token}"

    def token(self, collection: str) -> str:
        """The SAS token of ``collection`` (query-string form), from the cache while it is fresh."""
        now = datetime.now(UTC)
        with self._lock:
            cached = self._tokens.get(collection)
            if cached is not None and cached[1] > now:
                return cached[0]
            token, expiry = self._fetch(collection)
            # Renewed TOKEN_REFRESH_MARGIN_S before expiry, or at half its life if it lives shorter.
            margin = min(timedelta(seconds=TOKEN_REFRESH_MARGIN_S), (expiry - now) / 2)
            self._tokens[collection] = (token, expiry - margin)
            return token

    def _fetch(self, collection: str) -> tuple[str, datetime]:
        import requests  # a dependency of pystac-client; only signing sources need it here

        from tasks.stac_retry import retrying_session, timed_out

        url = self.token_url.format(collection=collection)
        self.requests_made += 1
        try:
            response = retrying_session().get(url, timeout=self.timeout)
        except requests.RequestException as exc:
            if timed_out(exc):
                raise TimeoutError(f"SAS token endpoint {url}: no answer within {self.timeout[1]:g} s") from None
            if isinstance(exc, requests.ConnectionError | requests.exceptions.ChunkedEncodingError):
                raise TransientSourceError(f"SAS token endpoint {url}: {type(exc).__name__}") from None
            raise
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientSourceError(f"SAS token endpoint {url}: HTTP {response.status_code}")
        if response.status_code != 200:
            raise SourceError(f"SAS token endpoint {url}: HTTP {response.status_code}")
        try:
            body: Any = response.json()
            token = str(body["token"]).lstrip("?")
            expiry = datetime.fromisoformat(str(body["msft:expiry"]).replace("Z", "+00:00"))
        except (ValueError, KeyError, TypeError):
            raise SourceError(f"SAS token endpoint {url}: answer has no token and msft:expiry") from None
        if not token:
            raise SourceError(f"SAS token endpoint {url}: empty token")
        return token, expiry if expiry.tzinfo else expiry.replace(tzinfo=UTC)


_SIGNERS: dict[str, PlanetaryComputerSigner] = {}
_SIGNERS_LOCK = threading.Lock()


def shared_signer(
    token_url: str = PC_TOKEN_URL, timeout: tuple[float, float] = REMOTE_TIMEOUT_S
) -> PlanetaryComputerSigner:
    """One signer per token endpoint per process, its tokens reused until they near expiry.

    So they outlive one search: a retried search task, the next scheduled run of a served flow.
    """
    with _SIGNERS_LOCK:
        signer = _SIGNERS.get(token_url)
        if signer is None:
            signer = _SIGNERS[token_url] = PlanetaryComputerSigner(token_url, timeout)
        return signer


def sign_acquisition(acquisition: Acquisition, collection: str, modify: HrefModifier) -> Acquisition:
    """The acquisition with every asset href passed through ``modify`` (fingerprint unchanged).

    A :class:`PlanetaryComputerSigner` is remembered (:class:`~tasks.acquisition.Signing`), so
    :func:`refresh_signatures` can sign the hrefs again when the token nears expiry.
    """
    assets = tuple((key, modify(href, collection)) for key, href in acquisition.assets)
    signing = None
    if isinstance(modify, PlanetaryComputerSigner):
        signing = Signing(modify.token_url, collection, acquisition.assets)
    return replace(acquisition, assets=assets, signing=signing)


def refresh_signatures(acquisition: Acquisition) -> Acquisition:
    """The acquisition signed with its collection's current token (renewed only near expiry).

    Called just before a scene's reads: a run of many scenes outlives the token of its search.
    Unsigned acquisitions are returned as they are.
    """
    if acquisition.signing is None:
        return acquisition
    signer = shared_signer(acquisition.signing.token_url)
    collection = acquisition.signing.collection
    return replace(acquisition, assets=tuple((k, signer(h, collection)) for k, h in acquisition.signing.unsigned))
