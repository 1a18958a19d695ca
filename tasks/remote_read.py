"""GDAL options of remote raster reads: timeouts, retries of transient errors, S3 credentials.

Every remote read (``http(s)://`` or ``s3://`` href) runs inside :func:`remote_env`: the sources'
:data:`~tasks.acquisition.REMOTE_TIMEOUT_S`, and :data:`HTTP_RETRIES` retries of an HTTP 429 /
5xx answer (GDAL's own retry: ``GDAL_HTTP_MAX_RETRY`` / ``GDAL_HTTP_RETRY_DELAY``, doubling delays).
A read that still fails is a permanent error naming the asset (``tasks.preprocess``).

S3 credentials (access key, secret, session token) and the S3 endpoint (``AWS_S3_ENDPOINT``,
``AWS_VIRTUAL_HOSTING``, ``AWS_HTTPS``; Copernicus Data Space: ``eodata.dataspace.copernicus.eu``,
path-style) come from settings, read by the flow's stack task, and are handed to GDAL only for the
read of an ``s3://`` href, through :func:`use_s3_access`: never a task or flow parameter, never
logged (their repr is masked), never in an artifact.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from rasterio.session import Session

from tasks.acquisition import REMOTE_TIMEOUT_S

__all__ = ["HTTP_RETRIES", "HTTP_RETRY_DELAY_S", "S3Access", "gdal_remote_options", "remote_env", "use_s3_access"]

HTTP_RETRIES = 3
"""Retries of one GDAL HTTP request answered 429 / 5xx (a timeout is not retried: silence stays silent)."""

HTTP_RETRY_DELAY_S = 1
"""First delay between those retries, seconds (GDAL doubles it each time)."""


@dataclass(frozen=True)
class S3Access:
    """Credentials and endpoint of ``s3://`` reads; secrets never shown by ``repr``.

    ``endpoint`` is a host[:port] (GDAL's ``AWS_S3_ENDPOINT``); ``virtual_hosting`` False for
    path-style URLs (Copernicus Data Space); ``https`` False for plain HTTP. None leaves GDAL's
    default (or the process environment) in place.
    """

    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    endpoint: str | None = None
    region: str | None = None
    virtual_hosting: bool | None = None
    https: bool | None = None

    def endpoint_options(self) -> dict[str, str]:
        """The non-secret GDAL options (endpoint, region, addressing, scheme)."""
        out: dict[str, str] = {}
        if self.endpoint:
            out["AWS_S3_ENDPOINT"] = self.endpoint
        if self.region:
            out["AWS_REGION"] = self.region
        if self.virtual_hosting is not None:
            out["AWS_VIRTUAL_HOSTING"] = "TRUE" if self.virtual_hosting else "FALSE"
        if self.https is not None:
            out["AWS_HTTPS"] = "YES" if self.https else "NO"
        return out

    def credential_options(self) -> dict[str, str]:
        """The secret GDAL options (only those set)."""
        out: dict[str, str] = {}
        if self.access_key_id:
            out["AWS_ACCESS_KEY_ID"] = self.access_key_id
        if self.secret_access_key:
            out["AWS_SECRET_ACCESS_KEY"] = self.secret_access_key
        if self.session_token:
            out["AWS_SESSION_TOKEN"] = self.session_token
        return out


_S3_ACCESS: ContextVar[S3Access | None] = ContextVar("s3_access", default=None)


@contextmanager
def use_s3_access(access: S3Access | None) -> Iterator[None]:
    """Reads of ``s3://`` hrefs inside this block use ``access`` (None: GDAL's own configuration)."""
    token = _S3_ACCESS.set(access)
    try:
        yield
    finally:
        _S3_ACCESS.reset(token)


def is_s3(href: str) -> bool:
    """True for an ``s3://`` href (GDAL reads it through ``/vsis3/``)."""
    return href.lower().startswith("s3://")


def gdal_remote_options(href: str) -> dict[str, Any]:
    """GDAL options (no secrets) of one read of a remote href.

    A server that sends nothing for the read timeout aborts the request (under 1 byte/s), a
    request as a whole is capped at six times that (a silent server fails a read within about the
    read timeout: measured ~20 s, ``tests/unit/test_sources_remote.py``); 429/5xx answers are retried
    :data:`HTTP_RETRIES` times. For ``s3://`` hrefs, the endpoint options of the current
    :class:`S3Access`.
    """
    connect, read = REMOTE_TIMEOUT_S
    options: dict[str, Any] = {
        "GDAL_HTTP_CONNECTTIMEOUT": int(connect),
        "GDAL_HTTP_LOW_SPEED_TIME": int(read),
        "GDAL_HTTP_LOW_SPEED_LIMIT": 1,
        "GDAL_HTTP_TIMEOUT": int(6 * read),
        "GDAL_HTTP_MAX_RETRY": HTTP_RETRIES,
        "GDAL_HTTP_RETRY_DELAY": HTTP_RETRY_DELAY_S,
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # one request per asset, not a directory listing
    }
    access = _S3_ACCESS.get()
    if is_s3(href) and access is not None:
        options.update(access.endpoint_options())
    return options


def remote_env(href: str) -> Any:
    """A ``rasterio.Env`` for one read of the remote ``href`` (see :func:`gdal_remote_options`).

    The credentials of an ``s3://`` read go through a rasterio ``Session`` (rasterio refuses them
    as plain options), set for the block and cleared after it.
    """
    import rasterio

    access = _S3_ACCESS.get()
    if is_s3(href) and access is not None and access.credential_options():
        return rasterio.Env(session=_S3Session(access), **gdal_remote_options(href))
    return rasterio.Env(**gdal_remote_options(href))


class _S3Session(Session):  # type: ignore[misc]  # rasterio ships no type information
    """rasterio's documented extension point for credentials: a ``Session`` giving GDAL options."""

    def __init__(self, access: S3Access) -> None:
        self._access = access

    def __repr__(self) -> str:
        return "_S3Session(credentials masked)"

    @classmethod
    def hascreds(cls, config: dict[str, Any]) -> bool:
        """True when ``config`` already holds a key pair."""
        return "AWS_ACCESS_KEY_ID" in config and "AWS_SECRET_ACCESS_KEY" in config

    @property
    def credentials(self) -> dict[str, str]:
        """The credentials as GDAL options."""
        return self._access.credential_options()

    def get_credential_options(self) -> dict[str, str]:
        """What rasterio sets in GDAL's configuration for the block."""
        return self._access.credential_options()
