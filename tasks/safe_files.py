"""One SAFE product on disk, a ``<name>.SAFE`` folder or a zip holding one, and what it contains.

A :class:`SafeProduct` is opened from a path the caller found under its source directory
(:func:`open_product`), never from a user-given GDAL path: the GDAL name of a member of a zip
(``/vsizip/<zip>/<member>``) is built here, from the resolved path of a checked zip file. A zip is
refused before anything is read from it when a member's name could land outside the product on
extraction (zip-slip: ``..`` components, absolute paths, drive letters, backslashes), and a product
without ``manifest.safe`` is refused. Members are listed relative to the ``.SAFE`` folder, with
``/`` separators.

XML members are read whole but bounded (:data:`MAX_MEMBER_BYTES`); rasters are read by GDAL
through :meth:`SafeProduct.href`.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from core.errors import SafeProductError

__all__ = ["MAX_MEMBER_BYTES", "SafeProduct", "open_product", "read_vsizip_member", "unsafe_member"]

MAX_MEMBER_BYTES = 32 * 1024 * 1024
"""Largest metadata member (XML, manifest) read, bytes (real S1 annotations are ~2 MB)."""


def unsafe_member(name: str) -> bool:
    """True for a zip member name that would escape the extraction folder (zip-slip)."""
    if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return True
    return any(part == ".." for part in PurePosixPath(name).parts)


@dataclass(frozen=True)
class SafeProduct:
    """A SAFE product: ``path`` is the ``.SAFE`` folder or the ``.zip`` file (resolved)."""

    path: Path
    name: str
    """The ``<product id>.SAFE`` folder name."""
    members: tuple[str, ...]
    """Every file of the product, relative to the ``.SAFE`` folder."""
    zip_prefix: str | None = None
    """The ``.SAFE`` folder's name inside the zip (``None`` for a folder)."""

    @property
    def product_id(self) -> str:
        """The product name without ``.SAFE``."""
        return self.name.removesuffix(".SAFE")

    def has(self, member: str) -> bool:
        """Whether the product holds ``member`` (relative to the ``.SAFE`` folder)."""
        return member in self.members

    def href(self, member: str) -> str:
        """The name GDAL opens ``member`` by: a path, or ``/vsizip/<zip>/<member>`` for a zip."""
        if self.zip_prefix is None:
            return str(self.path / member)
        return f"/vsizip/{self.path}/{self.zip_prefix}{member}"

    def read(self, member: str) -> bytes:
        """The bytes of one metadata member, bounded; SafeProductError naming the product otherwise."""
        if not self.has(member):
            raise SafeProductError(f"SAFE product {self.path}: {member} missing")
        if self.zip_prefix is None:
            path = self.path / member
            if path.stat().st_size > MAX_MEMBER_BYTES:
                raise SafeProductError(f"SAFE product {self.path}: {member} larger than {MAX_MEMBER_BYTES} bytes")
            return path.read_bytes()
        return _read_zip(self.path, self.zip_prefix + member)

    def fingerprint(self) -> str:
        """Size, modification time (ns) and path of the zip, or of every file of the folder."""
        if self.zip_prefix is not None:
            st = self.path.stat()
            parts = [f"{self.path}:{st.st_size}:{st.st_mtime_ns}"]
        else:
            parts = []
            for member in self.members:
                st = (self.path / member).stat()
                parts.append(f"{member}:{st.st_size}:{st.st_mtime_ns}")
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def _read_zip(zip_path: Path, member: str) -> bytes:
    try:
        with zipfile.ZipFile(zip_path) as zf:
            info = zf.getinfo(member)
            if info.file_size > MAX_MEMBER_BYTES:
                raise SafeProductError(f"SAFE product {zip_path}: {member} larger than {MAX_MEMBER_BYTES} bytes")
            with zf.open(info) as fh:
                return fh.read(MAX_MEMBER_BYTES + 1)
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise SafeProductError(f"SAFE product {zip_path}: {member} unreadable ({exc})") from None


def read_vsizip_member(href: str) -> bytes:
    """The bytes of ``/vsizip/<zip>/<member>`` as :meth:`SafeProduct.href` builds it (metadata XML).

    Only names of that form with a ``.zip`` file and a safe member are accepted.
    """
    body = href.removeprefix("/vsizip/")
    zip_part, sep, member = body.partition(".zip/")
    if not href.startswith("/vsizip/") or not sep or not member or unsafe_member(member):
        raise SafeProductError(f"{href}: not a member of a SAFE zip")
    return _read_zip(Path(zip_part + ".zip"), member)


def open_product(path: Path) -> SafeProduct:
    """The SAFE product at ``path`` (a ``.SAFE`` folder or a ``.zip`` file, resolved by the caller).

    Raises:
        SafeProductError: naming the product: not a folder or zip, an unreadable zip, a zip member
            that escapes the product (zip-slip), no single ``.SAFE`` folder in a zip, or no
            ``manifest.safe``.
    """
    path = Path(os.path.realpath(path))
    if path.is_dir():
        members = tuple(
            sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() and not p.is_symlink())
        )
        product = SafeProduct(path, path.name, members)
    elif path.is_file() and path.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(path) as zf:
                names = [i.filename for i in zf.infolist()]
        except (OSError, zipfile.BadZipFile) as exc:
            raise SafeProductError(f"SAFE product {path}: not a readable zip ({exc})") from None
        bad = next((n for n in names if unsafe_member(n)), None)
        if bad is not None:
            raise SafeProductError(f"SAFE product {path}: zip member {bad!r} escapes the product folder; refused")
        tops = {n.split("/", 1)[0] for n in names}
        if len(tops) != 1 or not next(iter(tops)).upper().endswith(".SAFE"):
            raise SafeProductError(f"SAFE product {path}: the zip holds {sorted(tops)[:3]}, not one <name>.SAFE folder")
        top = next(iter(tops))
        members = tuple(sorted(n[len(top) + 1 :] for n in names if not n.endswith("/") and "/" in n))
        product = SafeProduct(path, top, members, zip_prefix=top + "/")
    else:
        raise SafeProductError(f"SAFE product {path}: neither a .SAFE folder nor a .zip file")
    if not product.has("manifest.safe"):
        raise SafeProductError(f"SAFE product {path}: no manifest.safe; not a SAFE product")
    return product
