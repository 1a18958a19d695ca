"""Downloads into the data root that never corrupt it: resumable, retried, verified, moved into place.

A product is fetched to a hidden temporary name beside its target (``.NAME.part``), resumed with
an HTTP ``Range`` request from that file's size after a cut, retried with exponential back-off and
jitter on 429/5xx answers (a 503 maintenance page included) and dropped connections, checked
against the size and checksum the source states, and only then moved into place with
:func:`os.replace` (atomic on one file system). A file that fails its check is moved to the data
root's ``quarantine/`` folder and reported as :class:`~core.errors.CorruptDownloadError` (the
acquisition is quarantined by the outcome policy); the target, and anything else already in the
data root, is never overwritten or removed by a download that failed.

Paths: every target is a sanitised product name joined under the data root and resolved
(symlinks included) to stay under it (:func:`guarded_path`); GDAL ``/vsi…`` prefixes and URLs are
refused. Nothing here extracts an archive: a product zip is read in place, and its member
names are checked for zip-slip by :func:`tasks.safe_files.open_product`, their one owner.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import CorruptDownloadError, SourceError, UnsafePathError
from core.progress import report_progress
from tasks.acquisition import REMOTE_TIMEOUT_S, TransientSourceError, has_scheme, is_gdal_prefix
from tasks.stac_retry import RETRY_STATUSES

__all__ = [
    "ATTEMPTS",
    "SPACE_MARGIN_BYTES",
    "Expected",
    "InsufficientSpaceError",
    "backoff_delays",
    "download",
    "guarded_path",
    "sanitise_name",
]

ATTEMPTS = 6
"""Requests one download may make (the first and five resumed or retried ones)."""

FIRST_DELAY_S = 0.5
"""Wait before the second attempt, seconds; doubled each further attempt, stretched by jitter."""

JITTER_FACTOR = 0.5
"""Each wait is stretched by up to half again at random, so clients cut together do not retry in step."""

CHUNK_BYTES = 256 * 1024
"""Bytes read from the connection and written per step (256 KiB): a cut download resumes from
the last whole step written."""

SPACE_MARGIN_BYTES = 256 * 1024 * 1024
"""Free space kept on the data root's file system beyond a download's remaining bytes (and its
extraction), so a download never fills the disk the database and stacks share."""

_NAME = re.compile(r"[^A-Za-z0-9._-]")


class InsufficientSpaceError(OSError):
    """The data root's file system lacks the space a download needs (an environment failure, not bad input)."""


@dataclass(frozen=True)
class Expected:
    """What the source states of a file: size in bytes and an MD5 hex digest (None: not stated)."""

    size: int | None = None
    md5: str | None = None


def backoff_delays(attempts: int = ATTEMPTS, first_s: float = FIRST_DELAY_S) -> list[float]:
    """Waits before attempts 2…n, seconds: ``first_s`` doubled each time, each stretched by jitter."""
    return [first_s * 2**i * (1 + JITTER_FACTOR * random.random()) for i in range(attempts - 1)]


def sanitise_name(name: str) -> str:
    """A product name as a single safe file name: letters, digits, ``.``, ``_``, ``-`` only.

    Raises UnsafePathError naming ``name`` when it is empty, a dot name, a ``/vsi…`` path or a URL.
    """
    if is_gdal_prefix(name) or has_scheme(name):
        raise UnsafePathError(f"product name {name!r}: a URL or GDAL /vsi… path is no file name")
    clean = _NAME.sub("_", name)
    if not clean.strip(".") or clean.startswith("."):
        raise UnsafePathError(f"product name {name!r}: not a usable file name")
    return clean


def guarded_path(root: Path, *parts: str) -> Path:
    """``root/parts…`` resolved (symlinks included); UnsafePathError unless it stays under ``root``."""
    for part in parts:
        if is_gdal_prefix(part) or has_scheme(part):
            raise UnsafePathError(f"path part {part!r}: a URL or GDAL /vsi… path may not name a file")
    base = root.resolve()
    path = base.joinpath(*parts).resolve()
    if path == base or not path.is_relative_to(base):
        raise UnsafePathError(f"path {'/'.join(parts)!r} leaves the data root {base}")
    return path


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while block := f.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _verified(path: Path, expected: Expected) -> str | None:
    """None when ``path`` matches ``expected``; otherwise why not (one phrase)."""
    size = path.stat().st_size
    if expected.size is not None and size != expected.size:
        return f"size {size} bytes, the source states {expected.size}"
    if expected.md5 is not None:
        actual = _md5(path)
        if actual.lower() != expected.md5.lower():
            return f"MD5 {actual}, the source states {expected.md5.lower()}"
    return None


def _check_space(folder: Path, needed: int, what: str) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed + SPACE_MARGIN_BYTES:
        raise InsufficientSpaceError(
            f"{what}: needs {needed / 1e6:.1f} MB plus a {SPACE_MARGIN_BYTES / 1e6:.0f} MB margin, "
            f"{free / 1e6:.1f} MB free under {folder}"
        )


def _quarantine(root: Path, partial: Path, name: str) -> Path:
    folder = root.resolve() / "quarantine"
    folder.mkdir(parents=True, exist_ok=True)
    kept = folder / f"{name}.{int(time.time())}"
    os.replace(partial, kept)
    return kept


def download(
    session: Any,
    url: str,
    root: Path,
    folder: str,
    name: str,
    expected: Expected,
    *,
    attempts: int = ATTEMPTS,
    timeout: tuple[float, float] = REMOTE_TIMEOUT_S,
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """Fetches ``url`` to ``root/folder/name`` (see the module docstring); returns the verified file.

    A target already there that matches ``expected`` is kept and returned without a request.

    Raises:
        CorruptDownloadError: the complete file differs from ``expected`` (moved to quarantine).
        SourceError: the server refuses the file (HTTP 4xx other than 429: no such product,
            credentials refused); UnsafePathError: ``folder`` or ``name`` would leave ``root``.
        TransientSourceError: 429/5xx or dropped connections persisted over ``attempts``.
        InsufficientSpaceError: the file system lacks the remaining bytes plus the margin.
    """
    import requests

    clean = sanitise_name(name)
    target = guarded_path(root, sanitise_name(folder), clean)
    if target.is_file() and (expected.size is not None or expected.md5 is not None):
        if _verified(target, expected) is None:
            return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{clean}.part")
    delays = backoff_delays(attempts)
    last = ""
    for attempt in range(attempts):
        if attempt:
            sleep(delays[attempt - 1])
        have = partial.stat().st_size if partial.exists() else 0
        if expected.size is not None:
            if have > expected.size:  # longer than the product: not a prefix of it
                partial.unlink()
                have = 0
            _check_space(target.parent, expected.size - have, f"download of {clean}")
            if have == expected.size:
                break
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            with session.get(url, headers=headers, stream=True, timeout=timeout) as response:
                status = response.status_code
                if status in RETRY_STATUSES:
                    last = f"HTTP {status}"
                    continue
                if status == 416 and have:  # the range starts at or past the end: nothing more to send
                    break
                if status >= 400:
                    raise SourceError(f"download of {clean} from {url.split('?')[0]}: HTTP {status}")
                if status != 206:  # the server ignored the range: start over, never append a whole file
                    have = 0
                with partial.open("ab" if have else "wb") as out:
                    for block in response.iter_content(CHUNK_BYTES):
                        out.write(block)
                        have += len(block)
                        report_progress(f"download {clean}", have >> 20, _mib(expected.size), "MiB")
                    out.flush()
                    os.fsync(out.fileno())
            if expected.size is None or have >= expected.size:
                break
            last = f"connection ended after {have} of {expected.size} bytes"
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError, requests.Timeout) as exc:
            last = f"{type(exc).__name__} after {partial.stat().st_size if partial.exists() else 0} bytes"
    else:
        raise TransientSourceError(f"download of {clean}: still failing after {attempts} attempts ({last})")
    why = _verified(partial, expected)
    if why is not None:
        kept = _quarantine(root, partial, clean)
        raise CorruptDownloadError(f"download of {clean}: {why}; kept as {kept.name} in quarantine")
    os.replace(partial, target)
    return target


def _mib(size: int | None) -> int | None:
    return None if size is None else max(1, size >> 20)
