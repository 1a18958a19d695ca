"""Which task runner spreads a run's scenes: one after another here (default), or over a Dask cluster.

``update_inventory`` submits one ``process-scene`` task per scene (``flows.tasks.process_scene_task``)
to the runner chosen here from the environment, read when the flow module is imported (a worker
imports it afresh for every flow run):

- ``GLACIAL_LAKES_TASK_RUNNER=default`` (or unset): :class:`InlineTaskRunner`. Each scene runs
  when it is submitted, in the flow's own thread, one after another as they always have: the
  flow's memory is one scene's (a 2048 px scene with TerraMind takes a few GB), and the stages'
  timeouts can interrupt them (Prefect enforces a sync task's timeout with an alarm only on the
  main thread; in a worker thread, Dask's included, it takes effect after the blocking call).
- ``GLACIAL_LAKES_TASK_RUNNER=dask``: prefect-dask's ``DaskTaskRunner``. With
  ``GLACIAL_LAKES_DASK_ADDRESS=tcp://HOST:8786`` the scenes go to an existing cluster (a
  ``dask scheduler`` and its ``dask worker`` processes, e.g. ``deploy/compose.yaml``'s ``dask``
  profile); without it, to a temporary local cluster of ``GLACIAL_LAKES_DASK_WORKERS`` worker
  processes (default 2) of ``GLACIAL_LAKES_DASK_THREADS`` threads each (default 1), started for
  the run and stopped after it.

A scene is the unit (segmentation is the expensive step and stays one task per scene, with its own
internal batching); search, pairing, the ledger and the report stay in the flow's process. Dask
workers start with ``OMP_NUM_THREADS=1`` (distributed's ``nanny.pre-spawn-environ``), so a worker
runs torch on one thread: give a host as many worker processes as it has cores. Each worker reads
the same settings as the flow (``DATABASE_URL``, ``GLACIAL_LAKES_HOME``, S3 credentials) from its
own environment and must see the same data root (a shared volume across hosts): stacks are
written and read by path.
"""

from __future__ import annotations

import concurrent.futures
import uuid
from collections.abc import Iterable
from typing import Any, Literal

from prefect.futures import PrefectConcurrentFuture
from prefect.task_engine import run_task_sync
from prefect.task_runners import TaskRunner
from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import SettingsError
from flows.settings import ENV_PREFIX

__all__ = ["InlineTaskRunner", "RunnerSettings", "load_runner_settings", "scene_task_runner"]


class InlineTaskRunner(TaskRunner[PrefectConcurrentFuture[Any]]):
    """Runs each submitted task at once, in the submitting thread; its future is already done.

    The default runner of the scenes: submitting them one after another runs them one after
    another, in the flow's thread, exactly as calling them would, while the flow's code stays
    the same for every runner (``.submit`` and futures).
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Prefect's base __init__ states no types

    def duplicate(self) -> InlineTaskRunner:
        """A new runner of the same kind (no configuration)."""
        return type(self)()

    def submit(
        self,
        task: Any,
        parameters: dict[str, Any],
        wait_for: Iterable[Any] | None = None,
        dependencies: dict[str, set[Any]] | None = None,
    ) -> PrefectConcurrentFuture[Any]:
        """Runs ``task`` now; returns a done future holding its final state (a failure included)."""
        if not self._started:
            raise RuntimeError("the task runner must be started before submitting work")
        if task.isasync:  # the project's tasks are sync; an async one needs a loop this runner does not own
            raise TypeError(f"{task.name}: InlineTaskRunner runs sync tasks only")
        task_run_id = uuid.uuid4()
        state = run_task_sync(
            task=task,
            task_run_id=task_run_id,
            parameters=parameters,
            wait_for=wait_for,
            return_type="state",
            dependencies=dependencies,
        )
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()
        done.set_result(state)
        return PrefectConcurrentFuture(task_run_id=task_run_id, wrapped_future=done)


class RunnerSettings(BaseSettings):
    """Environment: ``GLACIAL_LAKES_TASK_RUNNER``, ``GLACIAL_LAKES_DASK_*``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", env_ignore_empty=True)

    task_runner: Literal["default", "dask"] = "default"
    """``default``: scenes one after another in the flow's process; ``dask``: over a Dask cluster."""
    dask_address: str | None = None
    """Scheduler of an existing Dask cluster (``tcp://HOST:8786``); unset: a local cluster per run."""
    dask_workers: int = Field(default=2, ge=1, le=256)
    """Worker processes of the local cluster (no ``dask_address``)."""
    dask_threads: int = Field(default=1, ge=1, le=64)
    """Threads per worker process of the local cluster: scenes each worker runs at once."""

    @model_validator(mode="after")
    def _dask_settings_need_dask(self) -> RunnerSettings:
        # An address with the default runner would be ignored: refuse it rather than run serially.
        if self.task_runner != "dask" and self.dask_address is not None:
            raise ValueError("GLACIAL_LAKES_DASK_ADDRESS is set but GLACIAL_LAKES_TASK_RUNNER is not dask")
        return self


def load_runner_settings() -> RunnerSettings:
    """:class:`RunnerSettings` from the environment.

    Raises:
        SettingsError: one line naming the variable, e.g. ``GLACIAL_LAKES_TASK_RUNNER='ray': …``.
    """
    try:
        return RunnerSettings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        reason = first["msg"].removeprefix("Value error, ")
        if not field:  # the cross-field check names its variables itself
            raise SettingsError(reason) from exc
        raise SettingsError(f"{ENV_PREFIX}{field.upper()}={first.get('input')!r}: {reason}") from exc


def scene_task_runner(settings: RunnerSettings | None = None) -> Any:
    """The task runner for a run's scenes (a Prefect ``TaskRunner``), from ``settings`` or the environment.

    Typed ``Any``: Prefect is untyped here (mypy override), and the flow decorator takes any runner.
    """
    chosen = settings if settings is not None else load_runner_settings()
    if chosen.task_runner == "default":
        return InlineTaskRunner()
    # Imported only when chosen: distributed takes seconds to import and the default run needs none of it.
    from prefect_dask.task_runners import DaskTaskRunner

    if chosen.dask_address is not None:
        return DaskTaskRunner(address=chosen.dask_address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": chosen.dask_workers,
            "threads_per_worker": chosen.dask_threads,
            "processes": True,  # torch and GDAL hold the GIL in places: processes, not threads
            "dashboard_address": None,  # no web server on a worker host unless one is asked for
        },
    )
