"""A DHuS hub as a source (``dhus:URL``), through sentinelsat's ``SentinelAPI``.

DHuS (the Data Hub Software) still serves Sentinel products at national collaborative ground
segments and mirrors; the Copernicus Open Access Hub it was written for (scihub/apihub) closed
in 2023 and is no target. A search is one OpenSearch query per kind, by the AOI's footprint
(WKT, EPSG:4326), the sensing window, the platform and the product type (``S2MSI2A``, ``GRD``),
and for S2 the cloud cover when a maximum is set. sentinelsat pages the answer itself (100 per
page); a query that matches more than ``max_items`` products is an error
(:class:`~tasks.stac_api.SearchCapError`), counted first so nothing is silently dropped.

An acquisition found here names its product zip (asset ``product``: the OData ``$value`` URL)
and its DHuS uuid; :meth:`DhusSource.fetch` downloads that zip into the data root through
:func:`tasks.download.download` (resumed, retried, checked against the OData ``Checksum`` MD5
and ``ContentLength``); :func:`fetch_dhus` reads that zip in place with the SAFE readers
(:func:`tasks.safe_files.open_product`: member names checked for zip-slip, rasters through GDAL's
``/vsizip/``) before the scene's stack is prepared. Nothing is extracted, so a product takes its
zip's size on disk once (an S2 L2A tile ≈ 1.2 GB, an S1 GRD ≈ 1.7 GB), not twice. DHuS
serves no DEM: DEM acquisitions come from ``dem`` (another source) when one is given.

Credentials come from the settings or a netrc entry (``flows.settings``), never from flow
parameters; they live only inside the task that searches or fetches. Failures are classified
once (:meth:`DhusSource.classify`): 401 is a SettingsError naming the credential settings, other
4xx and answers that are no OpenSearch JSON are SourceError, 429/5xx (a maintenance page
included) and dropped connections are transient.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shapely import wkt
from shapely.geometry.base import BaseGeometry

from core.errors import SettingsError, SourceError
from tasks.acquisition import (
    REMOTE_TIMEOUT_S,
    Acquisition,
    AcquisitionSource,
    TransientSourceError,
    filter_acquisitions,
)
from tasks.download import Expected, download, sanitise_name
from tasks.stac_api import DEFAULT_MAX_ITEMS, SearchCapError
from tasks.stac_retry import timed_out

__all__ = [
    "CREDENTIAL_SETTINGS",
    "QUERIES",
    "DhusCredentials",
    "DhusOptions",
    "DhusSource",
    "fetch_dhus",
]

log = logging.getLogger(__name__)

CREDENTIAL_SETTINGS = "GLACIAL_LAKES_DHUS_USER / GLACIAL_LAKES_DHUS_PASSWORD"
"""Where a hub's credentials are set (or a netrc entry for the hub's host); named by a 401."""

QUERIES: dict[str, dict[str, str]] = {
    "S2L2A": {"platformname": "Sentinel-2", "producttype": "S2MSI2A"},
    "S1GRD": {"platformname": "Sentinel-1", "producttype": "GRD"},
}
"""Our kind → the OpenSearch keywords that select it on a DHuS hub (other kinds are not served)."""


@dataclass(frozen=True)
class DhusCredentials:
    """A hub account. The password never shows in a repr, a log line or an error."""

    user: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class DhusOptions:
    """How ``dhus:URL`` is searched and where its products land (holds credentials: never a task parameter).

    ``data_root`` receives the product zips (``dhus-HOST/NAME.zip``), read in place;
    ``max_cloud_cover`` (percent, 0–100) filters S2 queries, None: no filter.
    """

    data_root: Path
    credentials: DhusCredentials | None = None
    max_items: int = DEFAULT_MAX_ITEMS
    max_cloud_cover: float | None = None
    dem_source: str | None = None
    """A ``local:DIR`` or ``stac:URL`` source searched for the DEM tiles (DHuS serves none)."""
    timeout: tuple[float, float] = REMOTE_TIMEOUT_S


@dataclass(frozen=True)
class DhusSource:
    """A DHuS hub through sentinelsat (see the module docstring); ``url`` is the hub's API root."""

    url: str
    options: DhusOptions
    dem: AcquisitionSource | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        """The source URI, ``dhus:URL`` (no credentials in it)."""
        return f"dhus:{self.url}"

    @property
    def folder(self) -> str:
        """The data root's folder of this hub's products: ``dhus-HOST[_PORT]``."""
        host = urlsplit(self.url).netloc.rsplit("@", 1)[-1].replace(":", "_")
        return sanitise_name(f"dhus-{host}")

    def api(self) -> Any:
        """A ``SentinelAPI`` on ``url`` with the credentials and the project's retry policy on its session."""
        from requests.adapters import HTTPAdapter
        from sentinelsat import SentinelAPI

        from tasks.stac_retry import retry_policy

        creds = self.options.credentials
        if creds is None:
            raise SettingsError(f"{self.name}: no credentials; set {CREDENTIAL_SETTINGS} or a netrc entry for the host")
        api = SentinelAPI(creds.user, creds.password, self.url, show_progressbars=False, timeout=self.options.timeout)
        adapter = HTTPAdapter(max_retries=retry_policy())  # 429/5xx (a maintenance page) retried with back-off
        api.session.mount("http://", adapter)
        api.session.mount("https://", adapter)
        api.session.trust_env = False  # the credentials above, not a netrc or proxy picked up on the side
        return api

    def classify(self, exc: BaseException) -> BaseException:
        """A failed hub request as one line naming the hub; ``exc`` itself when it is none of ours."""
        import requests
        from sentinelsat.exceptions import LTAError, QuerySyntaxError, SentinelAPIError, UnauthorizedError

        if isinstance(exc, UnauthorizedError):
            return SettingsError(
                f"{self.name}: the hub refused the credentials (HTTP 401); check {CREDENTIAL_SETTINGS} "
                "or the netrc entry for the host"
            )
        if isinstance(exc, QuerySyntaxError):
            return SourceError(f"{self.name}: the hub rejected the query ({exc.msg.splitlines()[0][:200]})")
        if isinstance(exc, LTAError):  # the user's retrieval quota or the archive's load: it passes
            first = (exc.msg.splitlines() or [""])[0][:160]
            return TransientSourceError(f"{self.name}: long-term archive retrieval not accepted now ({first})")
        if isinstance(exc, SentinelAPIError):
            status = exc.response.status_code if exc.response is not None else None
            first = (exc.msg.splitlines() or [""])[0][:120]
            if status is not None and (status == 429 or status >= 500):
                return TransientSourceError(f"{self.name}: HTTP {status} ({first})")
            return SourceError(f"{self.name}: not a usable DHuS hub (HTTP {status}: {first})")
        if isinstance(exc, requests.RequestException):
            if timed_out(exc):
                return TimeoutError(f"{self.name}: no answer within {self.options.timeout[1]:g} s")
            if isinstance(exc, requests.ConnectionError | requests.exceptions.ChunkedEncodingError):
                return TransientSourceError(f"{self.name}: connection failed ({type(exc).__name__})")
        return exc

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            mapped = self.classify(exc)
            if mapped is exc:
                raise
            raise mapped from None

    def check(self) -> None:
        """One count query (rows=0): the hub answers, the credentials are accepted."""
        self._call(self.api().count, raw="*")

    def search(self, aoi: BaseGeometry, start: date, end: date, kinds: Sequence[str]) -> list[Acquisition]:
        """Acquisitions of ``kinds`` intersecting ``aoi`` (EPSG:4326) sensed in [start, end] (UTC days).

        Raises:
            SearchCapError: a kind matches more than ``max_items`` products.
            SettingsError: credentials missing or refused; SourceError, TransientSourceError,
                TimeoutError: see :meth:`classify`.
        """
        wanted = [k for k in kinds if k in QUERIES]
        found: list[Acquisition] = []
        if wanted:
            api = self.api()
            area = wkt.dumps(aoi.convex_hull, rounding_precision=6)  # the footprint filter below is exact
            window = (start, end + timedelta(days=1))  # DHuS ranges end at midnight: the last day included
            for kind in wanted:
                keywords: dict[str, Any] = dict(QUERIES[kind])
                if kind == "S2L2A" and self.options.max_cloud_cover is not None:
                    keywords["cloudcoverpercentage"] = (0, self.options.max_cloud_cover)
                count = self._call(api.count, area=area, date=window, **keywords)
                if count > self.options.max_items:
                    raise SearchCapError(
                        f"{self.name}: {count} {keywords['producttype']} products match the AOI and window "
                        f"{start}/{end}, more than {self.options.max_items}; narrow the window or raise "
                        "GLACIAL_LAKES_DHUS_MAX_ITEMS"
                    )
                products = self._call(api.query, area=area, date=window, **keywords)
                found += [self._acquisition(uuid, props, kind) for uuid, props in products.items()]
        if "DEM" in kinds and self.dem is not None:
            found += self.dem.search(aoi, start, end, ["DEM"])
        return filter_acquisitions(found, aoi, start, end, kinds)

    def _acquisition(self, uuid: str, props: dict[str, Any], kind: str) -> Acquisition:
        """One OpenSearch entry (as sentinelsat parses it) → an acquisition; SourceError naming it."""
        title = str(props.get("title") or uuid)
        try:
            footprint = wkt.loads(str(props["footprint"]))
            sensed = props["beginposition"]
            link = str(props["link"])
        except Exception as exc:  # a malformed entry is the hub's, whatever shapely or the dict raise
            raise SourceError(f"{self.name}: product {title!r} lacks a usable {exc!s:.80}") from None
        if not isinstance(sensed, datetime):
            raise SourceError(f"{self.name}: product {title!r}: beginposition {sensed!r} is no date")
        if urlsplit(link).netloc != urlsplit(self.url).netloc:
            raise SourceError(f"{self.name}: product {title!r} links to another host ({urlsplit(link).netloc})")
        ingested = props.get("ingestiondate")
        cloud = props.get("cloudcoverpercentage")
        return Acquisition(
            product_id=title,
            kind=kind,
            platform=str(props.get("platformserialidentifier", "unknown")).lower(),
            sensing_time=sensed if sensed.tzinfo else sensed.replace(tzinfo=UTC),
            footprint=footprint,
            assets=(("product", link),),
            source=self.name,
            processing_baseline=str(props["processingbaseline"]) if "processingbaseline" in props else None,
            cloud_cover=float(cloud) if cloud is not None else None,
            fingerprint=f"dhus:{uuid}:{ingested.isoformat() if isinstance(ingested, datetime) else ingested}",
            metadata=(("dhus:uuid", uuid), ("dhus:title", title)),
        )

    def fetch(self, acquisition: Acquisition) -> Path:
        """Downloads and verifies one acquisition's product; returns its zip (``NAME.zip``).

        A zip already there that matches the OData size and checksum is kept without a request. An
        offline product (OData ``Online`` false) is requested from the hub's long-term archive
        (``SentinelAPI.trigger_offline_retrieval``) and the fetch fails as transient; a retrieval the
        hub does not accept now (the user's quota, the archive's load) is transient too.

        Raises CorruptDownloadError (checksum or size mismatch: quarantined), UnsafePathError
        (a product name that would leave the data root), SourceError, TransientSourceError.
        """
        meta = dict(acquisition.metadata)
        uuid, title = meta.get("dhus:uuid"), meta.get("dhus:title", acquisition.product_id)
        if uuid is None:
            raise SourceError(f"{acquisition.product_id}: not a product of {self.name} (no DHuS uuid)")
        api = self.api()
        odata = self._call(api.get_product_odata, uuid)
        # An offline product comes back from the long-term archive only when someone asks for it:
        # ask (one request of two bytes), then fail this scene as transient so a later run fetches it.
        if odata.get("Online") is False and self._call(api.trigger_offline_retrieval, uuid):
            raise TransientSourceError(
                f"{self.name}: {title} is offline (long-term archive); retrieval requested, a later run fetches it"
            )
        url = str(odata["url"])
        if urlsplit(url).netloc != urlsplit(self.url).netloc:
            raise SourceError(f"{self.name}: product {title!r} is served from another host ({urlsplit(url).netloc})")
        expected = Expected(size=int(odata["size"]), md5=odata.get("md5"))
        if expected.md5 is None:
            log.warning("%s: %s states no MD5 checksum; only its size is checked", self.name, title)
        root = self.options.data_root
        return download(api.session, url, root, self.folder, f"{title}.zip", expected, timeout=self.options.timeout)


def fetch_dhus(acquisition: Acquisition, options: DhusOptions) -> Acquisition:
    """``acquisition`` read from its fetched SAFE product (a DHuS one; any other comes back as it is).

    The product zip is downloaded (:meth:`DhusSource.fetch`), then read in place by the SAFE
    reader of its kind (:mod:`tasks.safe_s2`, :mod:`tasks.safe_s1`): band assets, scaling,
    calibration and noise files. The DHuS identity is kept (product id, source, fingerprint), so
    the ledger sees the acquisition the search found. Raises SafeProductError naming the product
    when its SAFE is unusable: no single ``NAME.SAFE`` folder in the zip, a member name that would
    escape it (zip-slip), a file missing (quarantined like any bad input).
    """
    from tasks.safe_files import open_product
    from tasks.safe_s1 import s1_acquisition
    from tasks.safe_s2 import s2_acquisition

    if not acquisition.source.startswith("dhus:"):
        return acquisition
    archive = DhusSource(acquisition.source.removeprefix("dhus:"), options).fetch(acquisition)
    read = s2_acquisition if acquisition.kind == "S2L2A" else s1_acquisition
    product = read(open_product(archive), acquisition.source)
    return replace(
        product,
        product_id=acquisition.product_id,
        fingerprint=acquisition.fingerprint,
        metadata=(*product.metadata, *acquisition.metadata),
    )
