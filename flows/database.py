"""Which database the flows write to: ``DATABASE_URL``, or the project's own local PostGIS.

Local cluster: started (and created) on demand, migrated as its superuser, and the flows get the
writer login (member of ``lake_writer``). ``DATABASE_URL``: used as given, never migrated here
(``glacial-lakes db upgrade`` does that, as the owner); every engine first checks that the
database is at the shipped revision.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from functools import lru_cache

from sqlalchemy import Engine

from db.engine import make_engine
from db.local_cluster import LocalCluster, ensure_local_database
from db.migrate import require_head, upgrade
from flows.settings import Settings


def database_url(settings: Settings, *, start_local: bool = True) -> str:
    """The URL the flows use (keep it in memory: it may hold a password).

    Args:
        settings: ``DATABASE_URL`` wins; without it, the local cluster.
        start_local: start, migrate and provision the local cluster and return its writer URL
            with the password; False: start nothing and return the writer URL naming its
            passfile instead of the password (safe to print, what ``psql`` takes).
    """
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    cluster = local_cluster(settings)
    if not start_local:
        return cluster.writer_url(settings.pg_database, with_password=False)
    key = (str(settings.cluster_root), settings.pg_port, settings.pg_database)
    with _prepared_lock:  # a second caller waits for the first one's start instead of repeating it
        # Once per process while it keeps running (a cluster stopped meanwhile is started again):
        # a run prepares it before its flow starts, and the flow asks again.
        if key not in _prepared or not cluster.is_running():
            ensure_local_database(settings.cluster_root, settings.pg_port, settings.pg_database, migrate=True)
            _prepared.add(key)
    return cluster.writer_url(settings.pg_database)


_prepared: set[tuple[str, int, str]] = set()
"""Local clusters (root, port, database) this process has started, migrated and provisioned."""
_prepared_lock = threading.Lock()


def local_cluster(settings: Settings) -> LocalCluster:
    """The project's own cluster under ``GLACIAL_LAKES_HOME`` (whether or not it exists or runs)."""
    return LocalCluster(settings.cluster_root, settings.pg_port)


def upgrade_database(settings: Settings) -> str:
    """Migrate to head: the local cluster as its superuser, ``DATABASE_URL`` as its user; the URL."""
    url = database_url(settings)  # the local path migrates on the way
    if settings.database_url is not None:
        upgrade(url)
    return url


@lru_cache(maxsize=4)
def _engine(url: str) -> Engine:
    return make_engine(url)


def ready_engine(settings: Settings) -> Engine:
    """An engine on an inventory at the shipped revision (the local cluster is migrated first).

    Raises:
        db.migrate.SchemaBehindError: ``DATABASE_URL``'s database is not at head.
    """
    url = database_url(settings)
    if settings.database_url is not None:
        require_head(url)
    return _engine(url)


def prepare_engine(settings: Settings) -> Future[Engine]:
    """:func:`ready_engine` in a background thread, so the database starts while other things do.

    A run calls this once the Prefect server is launching; ``result()`` before the flow starts
    returns the engine or raises what :func:`ready_engine` raised. The flow's own
    :func:`ready_engine` then finds the cluster ready (and the engine made).
    """
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="database")
    future = executor.submit(ready_engine, settings)
    executor.shutdown(wait=False)  # the thread ends with its one call
    return future


def stop_local(settings: Settings) -> bool:
    """Stop the local cluster; False when it was not running."""
    cluster = local_cluster(settings)
    if not cluster.is_running():
        return False
    cluster.stop()
    return True
