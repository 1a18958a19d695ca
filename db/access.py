"""Database logins and their secrets: generated passwords, 0600 files, SCRAM verifiers.

Passwords never travel in argv or in a SQL statement's text: a login's password is sent to
the server as a SCRAM-SHA-256 verifier computed here (what ``password_encryption =
scram-sha-256`` would store), so neither the server log nor ``pg_stat_activity`` can show it.
Secret files are written atomically with mode 0600 in a 0700 directory.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import unicodedata
from pathlib import Path

from core.errors import InputError

SCRAM_ITERATIONS = 4096
"""PostgreSQL's default ``scram_iterations``."""
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def role_groups() -> dict[str, str]:
    """``db create-user --role`` choices and the group role each login joins."""
    # Imported here: db.schema loads SQLAlchemy/GeoAlchemy, and settings import this package.
    from db.schema import OWNER_ROLE, READER_ROLE, WRITER_ROLE

    return {"reader": READER_ROLE, "writer": WRITER_ROLE, "owner": OWNER_ROLE}


def generate_password() -> str:
    """43 URL-safe characters (256 bits): no character needs escaping in a URL or a passfile."""
    return secrets.token_urlsafe(32)


def scram_verifier(password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """The ``SCRAM-SHA-256$iter:salt$StoredKey:ServerKey`` verifier PostgreSQL stores for ``password``.

    The password is NFKC-normalised, as SASLprep does for every password libpq accepts.
    """
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", unicodedata.normalize("NFKC", password).encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def validate_role_name(name: str) -> str:
    """``name`` when it is a plain lower-case SQL identifier that is not reserved here.

    Raises:
        InputError: the name needs quoting, starts with ``pg_``, or is a group/superuser name.
    """
    if not _NAME.fullmatch(name):
        raise InputError(f"user name {name!r}: use 1-63 of a-z, 0-9 and _, not starting with a digit")
    if name.startswith("pg_") or name in {"postgres", "public", *role_groups().values()}:
        raise InputError(f"user name {name!r} is reserved (pg_*, postgres, public, and the group roles)")
    return name


def write_secret(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, mode 0600, its folder created (or tightened) to 0700."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)  # O_CREAT's mode only applies to a new file
    os.replace(tmp, path)


def read_secret(path: Path) -> str:
    """The first line of a secret file (a password).

    Raises:
        InputError: the file is missing, empty, or readable by other users.
    """
    try:
        mode = path.stat().st_mode & 0o077
        text = path.read_text().splitlines()
    except OSError as exc:
        raise InputError(f"password file {path}: {exc.strerror}") from exc
    if mode:
        raise InputError(f"password file {path}: readable by other users (chmod 600 it)")
    if not text or not text[0]:
        raise InputError(f"password file {path}: empty")
    return text[0]


def pgpass_line(host: str, port: int, user: str, password: str) -> str:
    """One libpq passfile line (any database), with colons and backslashes escaped."""

    def esc(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    return f"{esc(host)}:{port}:*:{esc(user)}:{esc(password)}\n"


def ensure_login(conn: object, name: str, group: str, password: str, *, reset_password: bool = True) -> bool:
    """Create LOGIN role ``name`` in ``group`` (or update it); True when it was created.

    Args:
        conn: a psycopg connection in autocommit mode, as a user with CREATEROLE.
        name: validated login name.
        group: one of the group roles (``lake_reader`` / ``lake_writer`` / ``lake_owner``).
        password: sent as a SCRAM verifier only.
        reset_password: for an existing role, set its password (False: keep it).
    """
    import psycopg
    from psycopg import sql

    assert isinstance(conn, psycopg.Connection)
    if group not in role_groups().values():
        raise ValueError(f"not a group role: {group}")
    verifier = sql.Literal(scram_verifier(password))
    ident = sql.Identifier(name)
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone() is not None
    created = False
    if not exists:
        try:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(ident, verifier))
            created = True
        except psycopg.errors.DuplicateObject:
            pass  # created concurrently: update it below
    if not created and reset_password:
        conn.execute(sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(ident, verifier))
    conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), ident))
    return created
