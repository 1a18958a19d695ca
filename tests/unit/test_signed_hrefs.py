"""A signed href's token (Planetary Computer SAS, in the query string) is never stored or shown."""

from __future__ import annotations

from datetime import UTC, datetime

from shapely.geometry import box

from tasks.acquisition import Acquisition, Signing, ledger_href, redact_urls, shown_href
from tasks.preprocess import _read_failure

SIGNED = "https://example.blob.core.windows.net/c/B02.tif?st=2026&se=2027&sig=SECRET"
UNSIGNED = SIGNED.split("?", 1)[0]


def test_the_query_string_of_a_url_is_cut() -> None:
    assert shown_href(SIGNED) == f"{UNSIGNED}?…"
    assert shown_href("/data/B02.tif") == "/data/B02.tif"
    assert "SECRET" not in redact_urls(f"HTTP error reading '{SIGNED}': 403") and UNSIGNED in redact_urls(SIGNED)


def test_read_failures_name_the_asset_without_its_token() -> None:
    failure = _read_failure(SIGNED, RuntimeError(f"'{SIGNED}' not recognized as a supported file format"))
    assert "SECRET" not in str(failure) and UNSIGNED in str(failure)


def test_the_ledger_keeps_the_unsigned_href() -> None:
    acq = Acquisition(
        product_id="S2A_X",
        kind="S2L2A",
        platform="sentinel-2a",
        sensing_time=datetime(2024, 8, 18, tzinfo=UTC),
        footprint=box(0, 0, 1, 1),
        assets=(("B02", SIGNED),),
        source="stac:https://planetarycomputer.microsoft.com/api/stac/v1",
        signing=Signing("https://t.example/{collection}", "sentinel-2-l2a", (("B02", UNSIGNED),)),
    )
    assert ledger_href(acq) == UNSIGNED
