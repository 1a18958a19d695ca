"""A STAC API as a source (pystac-client): Earth Search v1, Planetary Computer, Copernicus Data Space.

The catalog's table (:mod:`tasks.catalogs`) says which collections are searched and which asset
keys are read. Every request has the :data:`~tasks.acquisition.REMOTE_TIMEOUT_S` timeouts and the
back-off of :mod:`tasks.stac_retry`. Results are paged through the API's ``next`` links up to
``max_items`` per collection: a search matching more is an error (:class:`SearchCapError`) that
says so, never a silent truncation. Failures are classified once (:meth:`StacApiSource.classify`):
HTTP 4xx and unparseable answers are the user's input (SourceError), 429/5xx and dropped
connections are transient, a silent server is a TimeoutError, anything else is a bug and
propagates unchanged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pystac
from shapely.geometry.base import BaseGeometry

from core.errors import SourceError
from core.progress import report_progress
from tasks.acquisition import (
    REMOTE_TIMEOUT_S,
    Acquisition,
    TransientSourceError,
    filter_acquisitions,
    item_to_acquisition,
    remote_href,
)
from tasks.catalogs import CatalogLayout, layout_for
from tasks.signing import PC_TOKEN_URL, HrefModifier, shared_signer, sign_acquisition
from tasks.stac_retry import timed_out

__all__ = ["DEFAULT_MAX_ITEMS", "SearchCapError", "StacApiOptions", "StacApiSource"]

log = logging.getLogger(__name__)

DEFAULT_MAX_ITEMS = 2000
"""Items one collection's search may return (≈ 5 years of one S2 tile at 5-day revisit, both satellites)."""

PAGE_SIZE = 100
"""Items asked per page (servers may send fewer: the ``next`` links are followed)."""


class SearchCapError(SourceError):
    """A search matched more items than the configured cap; nothing is silently dropped."""


@dataclass(frozen=True)
class StacApiOptions:
    """How a STAC API is searched (settings, no secrets: safe as a task parameter).

    ``catalog`` is ``auto`` (by the URL's host) or a :data:`tasks.catalogs.CATALOGS` name.
    """

    catalog: str = "auto"
    max_items: int = DEFAULT_MAX_ITEMS
    allow_s3: bool = False
    pc_token_url: str = PC_TOKEN_URL
    page_size: int = PAGE_SIZE


@dataclass(frozen=True)
class StacApiSource:
    """A STAC API through pystac-client (see the module docstring).

    ``modifier`` signs hrefs before they are read (default: the catalog's own signing, e.g.
    Planetary Computer SAS tokens from ``pc_token_url``); asset hrefs must be ``http(s)://``
    (or ``s3://`` with ``allow_s3``).
    """

    url: str
    max_items: int = DEFAULT_MAX_ITEMS
    allow_s3: bool = False
    timeout: tuple[float, float] = REMOTE_TIMEOUT_S
    catalog: str = "auto"
    pc_token_url: str = PC_TOKEN_URL
    page_size: int = PAGE_SIZE
    modifier: HrefModifier | None = field(default=None, compare=False)

    @classmethod
    def from_options(cls, url: str, options: StacApiOptions) -> StacApiSource:
        """The source at ``url`` searched as ``options`` say."""
        return cls(
            url,
            max_items=options.max_items,
            allow_s3=options.allow_s3,
            catalog=options.catalog,
            pc_token_url=options.pc_token_url,
            page_size=options.page_size,
        )

    @property
    def name(self) -> str:
        """The source URI, ``stac:URL``."""
        return f"stac:{self.url}"

    @property
    def layout(self) -> CatalogLayout:
        """The catalog's table (SourceError for an unknown ``catalog`` name)."""
        return layout_for(self.url, self.catalog)

    def _modifier(self) -> HrefModifier | None:
        if self.modifier is not None:
            return self.modifier
        if self.layout.signing == "planetary-computer":
            return shared_signer(self.pc_token_url, self.timeout)
        return None

    def client(self) -> Any:
        """The opened pystac-client ``Client`` (its landing page read and checked)."""
        from pystac_client import Client  # imported here: only this source needs it
        from pystac_client.stac_api_io import StacApiIO

        from tasks.stac_retry import retry_policy

        try:
            io = StacApiIO(timeout=self.timeout, max_retries=retry_policy())
            return Client.open(self.url, stac_io=io, timeout=self.timeout)  # open() re-applies its own timeout
        except Exception as exc:
            raise self.classify(exc) from None

    def classify(self, exc: BaseException) -> BaseException:
        """A failed request as one line naming the API; ``exc`` itself when it is none of ours (a bug).

        HTTP 429/5xx and dropped connections → TransientSourceError; no answer → TimeoutError;
        HTTP 4xx, a body that is not JSON or not STAC, an API without item search → SourceError.
        """
        import requests
        from pystac_client.errors import ClientTypeError
        from pystac_client.exceptions import APIError
        from pystac_client.warnings import DoesNotConformTo

        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200] or type(exc).__name__
        if isinstance(exc, APIError):
            status = getattr(exc, "status_code", None)
            cause = exc.__context__
            if status is None:
                if timed_out(cause):
                    return TimeoutError(f"{self.name}: no answer within {self.timeout[1]:g} s ({reason})")
                if isinstance(cause, requests.ConnectionError | requests.exceptions.ChunkedEncodingError):
                    return TransientSourceError(f"{self.name}: connection failed ({type(cause).__name__})")
                if isinstance(cause, UnicodeDecodeError):
                    return SourceError(f"{self.name}: answer is not UTF-8 text")
                return exc
            if status == 429 or status >= 500:
                return TransientSourceError(f"{self.name}: HTTP {status} ({reason})")
            return SourceError(f"{self.name}: not a usable STAC API (HTTP {status}: {reason})")
        if isinstance(exc, json.JSONDecodeError | pystac.STACError | ClientTypeError):
            return SourceError(f"{self.name}: not a usable STAC API (answer is not STAC JSON: {reason})")
        if isinstance(exc, DoesNotConformTo | NotImplementedError):
            return SourceError(f"{self.name}: not a STAC API with item search ({reason})")
        return exc

    def search(self, aoi: BaseGeometry, start: date, end: date, kinds: Sequence[str]) -> list[Acquisition]:
        """Acquisitions of ``kinds`` intersecting ``aoi`` (EPSG:4326) sensed in [start, end] (DEM: any time).

        Raises:
            SearchCapError: a collection matches more than ``max_items`` items.
            SourceError: a bad answer or item (named); TransientSourceError, TimeoutError: see
                :meth:`classify`.
        """
        layout = self.layout
        client = self.client()
        # POST (long AOIs fit a body, not a URL) unless the API advertises GET searches only.
        methods = {str(link.extra_fields.get("method") or "GET").upper() for link in client.get_links("search")}
        method = "GET" if methods == {"GET"} else "POST"
        check = remote_href(self.allow_s3)
        modify = self._modifier()
        found: list[Acquisition] = []
        for collection_id, kind in layout.collections.items():
            if kind not in kinds:
                continue
            window = None if kind == "DEM" else f"{start.isoformat()}T00:00:00Z/{end.isoformat()}T23:59:59Z"
            for item in self._items(client, collection_id, aoi, window, method):
                acquisition = item_to_acquisition(item, kind, self.name, check, aliases=layout.aliases(kind))
                found.append(sign_acquisition(acquisition, collection_id, modify) if modify else acquisition)
        return filter_acquisitions(found, aoi, start, end, kinds)

    def _items(
        self, client: Any, collection_id: str, aoi: BaseGeometry, window: str | None, method: str
    ) -> list[pystac.Item]:
        """Every item of one collection's search, paged, at most ``max_items`` (else SearchCapError)."""
        from pystac_client.exceptions import APIError

        try:
            search = client.search(
                collections=[collection_id],
                intersects=aoi.__geo_interface__,
                datetime=window,
                max_items=self.max_items + 1,  # one more than the cap: a cap reached is told from one exceeded
                limit=min(self.page_size, self.max_items + 1),
                method=method,
            )
            dicts: list[dict[str, Any]] = []
            for d in search.items_as_dicts():  # page by page through the `next` links
                dicts.append(d)
                if len(dicts) % self.page_size == 1:  # the first item of each page
                    report_progress(f"search {collection_id}", len(dicts) // self.page_size + 1, None, "pages")
        except APIError as exc:
            if getattr(exc, "status_code", None) == 404:  # the catalog lacks this collection of its table
                log.warning("%s has no collection %s (HTTP 404); not searched", self.name, collection_id)
                return []
            raise self.classify(exc) from None
        except Exception as exc:
            mapped = self.classify(exc)
            if mapped is exc:
                raise
            raise mapped from None
        if len(dicts) > self.max_items:
            raise SearchCapError(
                f"{self.name}: more than {self.max_items} items of {collection_id} match the AOI and window "
                f"{window or 'any time'}; narrow the window or raise GLACIAL_LAKES_STAC_MAX_ITEMS"
            )
        items = []
        for d in dicts:
            try:
                items.append(pystac.Item.from_dict(d, preserve_dict=False))
            except Exception as exc:  # a malformed feature is the catalog's, whatever pystac raises
                ident = d.get("id", "?") if isinstance(d, dict) else "?"
                reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
                raise SourceError(
                    f"{self.name}: item {ident!r} of {collection_id} is not a STAC item ({reason})"
                ) from None
        return items
