"""Downloads that never corrupt the data root: path guard, space check, atomic placement.

Served by a real HTTP server on 127.0.0.1 (``http.server`` in a thread) with Range support and
switchable faults; read through a real ``requests`` session.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from core.errors import CorruptDownloadError, InputError, SourceError, UnsafePathError
from tasks import download as dl
from tasks.acquisition import TransientSourceError
from tasks.download import (
    Expected,
    InsufficientSpaceError,
    download,
    guarded_path,
    sanitise_name,
)

BODY = bytes(range(256)) * 4096  # 1 MiB
MD5 = hashlib.md5(BODY, usedforsecurity=False).hexdigest()


@dataclass
class _Server:
    url: str
    statuses: list[int] = field(default_factory=list)
    """Statuses to answer before serving the body (consumed one per request)."""
    ranges: list[str] = field(default_factory=list)
    ignore_range: bool = False


@pytest.fixture
def server() -> Iterator[_Server]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            return

        def do_GET(self) -> None:
            state.ranges.append(self.headers.get("Range", ""))
            if state.statuses:
                code = state.statuses.pop(0)
                self.send_response(code)
                self.send_header("Content-Length", "4")
                self.end_headers()
                self.wfile.write(b"busy")
                return
            lo = 0
            if self.headers.get("Range") and not state.ignore_range:
                lo = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
            self.send_response(206 if lo else 200)
            self.send_header("Content-Length", str(len(BODY) - lo))
            self.end_headers()
            self.wfile.write(BODY[lo:])

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    http.daemon_threads = True
    state = _Server(f"http://127.0.0.1:{http.server_address[1]}/p.zip")
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield state
    http.shutdown()
    http.server_close()


def _get(session: requests.Session, root: Path, server: _Server, expected: Expected) -> Path:
    return download(session, server.url, root, "hub", "P.zip", expected, sleep=lambda s: None)


def test_download_resumes_a_partial_file(server: _Server, tmp_path: Path) -> None:
    """A ``.part`` left by a cut run is continued with ``Range: bytes=N-`` and verified."""
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / ".P.zip.part").write_bytes(BODY[:1000])
    with requests.Session() as s:
        path = _get(s, tmp_path, server, Expected(len(BODY), MD5))
    assert server.ranges == ["bytes=1000-"]
    assert path.read_bytes() == BODY and not (tmp_path / "hub" / ".P.zip.part").exists()


def test_server_ignoring_the_range_restarts_the_file(server: _Server, tmp_path: Path) -> None:
    """A 200 to a Range request is the whole file: written from the start, never appended."""
    server.ignore_range = True
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / ".P.zip.part").write_bytes(b"x" * 1000)
    with requests.Session() as s:
        assert _get(s, tmp_path, server, Expected(len(BODY), MD5)).read_bytes() == BODY


def test_503_is_retried_and_persisting_5xx_is_transient(server: _Server, tmp_path: Path) -> None:
    server.statuses = [503, 502]
    with requests.Session() as s:
        assert _get(s, tmp_path, server, Expected(len(BODY), MD5)).read_bytes() == BODY
        assert len(server.ranges) == 3
        server.statuses = [503] * dl.ATTEMPTS
        with pytest.raises(TransientSourceError, match=f"still failing after {dl.ATTEMPTS} attempts"):
            download(s, server.url, tmp_path, "hub", "Q.zip", Expected(len(BODY)), sleep=lambda s: None)


def test_404_is_the_sources_error(server: _Server, tmp_path: Path) -> None:
    server.statuses = [404]
    with requests.Session() as s, pytest.raises(SourceError, match=r"download of P.zip .*: HTTP 404"):
        _get(s, tmp_path, server, Expected(len(BODY), MD5))


def test_checksum_mismatch_keeps_the_file_in_place(server: _Server, tmp_path: Path) -> None:
    """A corrupt download never replaces the file already at the target; it goes to quarantine."""
    (tmp_path / "hub").mkdir()
    earlier = tmp_path / "hub" / "P.zip"
    earlier.write_bytes(b"earlier copy")
    with requests.Session() as s, pytest.raises(CorruptDownloadError, match=r"MD5 .*the source states f{32}") as info:
        _get(s, tmp_path, server, Expected(len(BODY), "f" * 32))
    assert isinstance(info.value, InputError)
    assert earlier.read_bytes() == b"earlier copy"
    assert [p.read_bytes() for p in (tmp_path / "quarantine").iterdir()] == [BODY]


def test_disk_space_is_checked_before_the_download(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Too little free space (a full disk cannot be made here: the free figure is stubbed) → one line, no request."""
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda p: _Usage(100))
    with requests.Session() as s, pytest.raises(InsufficientSpaceError) as info:
        _get(s, tmp_path, server, Expected(len(BODY), MD5))
    assert "download of P.zip: needs 1.0 MB plus a 268 MB margin, 0.0 MB free" in str(info.value)
    assert "\n" not in str(info.value) and server.ranges == []


@dataclass(frozen=True)
class _Usage:
    free: int


@pytest.mark.parametrize(
    "parts",
    [("..", "etc"), ("/etc/passwd",), ("a", "../../b"), ("/vsicurl/http://x/y",), ("http://x/y",)],
)
def test_guarded_path_refuses_leaving_the_root(tmp_path: Path, parts: tuple[str, ...]) -> None:
    with pytest.raises(UnsafePathError):
        guarded_path(tmp_path, *parts)


def test_guarded_path_follows_symlinks(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path)
    with pytest.raises(UnsafePathError, match="leaves the data root"):
        guarded_path(tmp_path / "root", "link", "x")
    assert guarded_path(tmp_path / "root", "a", "b") == (tmp_path / "root" / "a" / "b").resolve()


def test_sanitise_name() -> None:
    assert sanitise_name("S2A_MSIL2A_X.zip") == "S2A_MSIL2A_X.zip"
    assert sanitise_name("a/b\\c d") == "a_b_c_d"
    for bad in ("", "..", ".hidden", "/vsizip/x.zip", "https://x"):
        with pytest.raises(UnsafePathError):
            sanitise_name(bad)
