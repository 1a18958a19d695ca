"""Which login a process writes as: the check that services (``serve``, workers) are writers.

Scheduled runs write unattended; they must hold exactly the writer's privileges (``lake_writer``:
rows, no DDL, no roles), never a superuser's or the schema owner's, so a bug or a hostile input
can do no more than a writer could.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, text

from core.errors import InputError
from db.schema import OWNER_ROLE, WRITER_ROLE

__all__ = ["Login", "NotAWriterError", "check_writer_login", "current_login"]


class NotAWriterError(InputError):
    """The database login is not a plain writer (a superuser, the owner, or not in ``lake_writer``)."""


@dataclass(frozen=True)
class Login:
    """The session's login and what it may do."""

    name: str
    superuser: bool
    createrole: bool
    writer: bool
    """Member of ``lake_writer``."""
    owner: bool
    """Member of ``lake_owner`` (may change the schema)."""


_LOGIN = text(
    """
    SELECT current_user, r.rolsuper, r.rolcreaterole,
           pg_has_role(current_user, :writer, 'MEMBER'), pg_has_role(current_user, :owner, 'MEMBER')
    FROM pg_roles r WHERE r.rolname = current_user
    """
)


def current_login(engine: Engine) -> Login:
    """The login of ``engine``'s sessions (connects once)."""
    with engine.connect() as conn:
        name, superuser, createrole, writer, owner = conn.execute(
            _LOGIN, {"writer": WRITER_ROLE, "owner": OWNER_ROLE}
        ).one()
    return Login(str(name), bool(superuser), bool(createrole), bool(writer), bool(owner))


def check_writer_login(engine: Engine, what: str) -> Login:
    """``engine``'s login when it is a writer and nothing more; ``what`` names the setting (``DATABASE_URL``).

    Raises:
        NotAWriterError: a superuser, a login with CREATEROLE, a member of ``lake_owner``, or a
            login outside ``lake_writer``; the message says how to make a writer login.
    """
    login = current_login(engine)
    fix = f"use a {WRITER_ROLE} login (glacial-lakes db create-user NAME --role writer)"
    if login.superuser:
        raise NotAWriterError(f"{what}: login {login.name!r} is a superuser; {fix}")
    if login.owner or login.createrole:
        why = f"a member of {OWNER_ROLE}" if login.owner else "allowed to create roles"
        raise NotAWriterError(f"{what}: login {login.name!r} is {why}; {fix}")
    if not login.writer:
        raise NotAWriterError(f"{what}: login {login.name!r} is not a member of {WRITER_ROLE}; {fix}")
    return login
