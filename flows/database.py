"""Which database the flows write to: ``DATABASE_URL``, or the project's own local PostGIS."""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy import Engine

from db.engine import make_engine
from db.local_cluster import LocalCluster, ensure_local_database
from db.migrate import upgrade
from flows.settings import Settings


def database_url(settings: Settings, *, start_local: bool = True) -> str:
    """The configured URL; without one, start (if needed) the local cluster and return its URL."""
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    if not start_local:
        return local_cluster(settings).url(settings.pg_database)
    return ensure_local_database(settings.cluster_root, settings.pg_port, settings.pg_database)


def local_cluster(settings: Settings) -> LocalCluster:
    """The project's own cluster under ``GLACIAL_LAKES_HOME`` (whether or not it exists or runs)."""
    return LocalCluster(settings.cluster_root, settings.pg_port)


@lru_cache(maxsize=4)
def _engine(url: str) -> Engine:
    return make_engine(url)


def ready_engine(settings: Settings) -> Engine:
    """An engine on a migrated inventory (migrations are idempotent: head → head is a no-op)."""
    url = database_url(settings)
    upgrade(url)
    return _engine(url)


def stop_local(settings: Settings) -> bool:
    """Stop the local cluster; False when it was not running."""
    cluster = local_cluster(settings)
    if not cluster.is_running():
        return False
    cluster.stop()
    return True
