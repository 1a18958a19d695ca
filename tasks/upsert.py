"""Inventory stage: one scene's lakes into PostGIS (one transaction, see ``db.merge``)."""

from __future__ import annotations

from functools import lru_cache

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError

from db.engine import make_engine
from db.merge import merge_scene
from db.records import MergeConfig, MergeReport, SceneResult


@lru_cache(maxsize=4)
def engine_for(url: str) -> Engine:
    """One pooled engine per database per process."""
    return make_engine(url)


def _lost_connection(task: object, task_run: object, state: object) -> bool:
    """Retry only when the database connection failed; a bad input fails the same way twice."""
    try:
        state.result()  # type: ignore[attr-defined]
    except (OperationalError, InterfaceError):
        return True
    except Exception:
        return False
    return False


@task(
    name="merge-into-inventory",
    cache_policy=NO_CACHE,
    # Connection losses are worth a retry: the merge is one transaction and its ledger key makes
    # a retry after a commit a no-op.
    retries=3,
    retry_delay_seconds=[1, 5, 15],
    retry_condition_fn=_lost_connection,
)
def merge_task(database_url: SecretStr, result: SceneResult, config: MergeConfig) -> MergeReport:
    """Merge one scene; the URL travels as a SecretStr so it is never shown or persisted."""
    return merge_scene(engine_for(database_url.get_secret_value()), result, config)
