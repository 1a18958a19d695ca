"""Scale-out: the update flow's scenes on a Dask cluster give the same inventory as the default runner.

A local Dask cluster of two worker processes (one thread each) runs the demo AOI's scenes; the
inventory it leaves (content digests of every table, :mod:`tests.helpers.digests`) equals the one
the default runner leaves in another database. The scenes really ran on the workers, both of
them (Dask's task stream names the worker of every ``process-scene`` task), and in processes
other than the flow's: every argument pickled and each worker opened its own engine. The two
workers' merges meet the AOI's advisory lock (:mod:`db.merge.locks`), which keeps them serial.

The runner choice itself (``flows.runner``) is checked without a cluster: settings → runner.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import SettingsError
from demo.synthetic import DemoCatalog, generate_demo_catalog
from flows.outcomes import report_of
from flows.runner import InlineTaskRunner, RunnerSettings, load_runner_settings, scene_task_runner
from tests.helpers.database import fresh_database
from tests.helpers.digests import content
from tests.helpers.flow_runs import demo_window


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalog:
    return generate_demo_catalog(tmp_path_factory.mktemp("catalog"), size_px=256, seed=0)


@pytest.mark.db
@pytest.mark.flow
@pytest.mark.slow
def test_dask_runner_gives_the_default_runners_inventory(
    catalog: DemoCatalog,
    db_url: str,
    pg_url_base: str,
    template_db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prefect_backend: None,
) -> None:
    from distributed import Client, LocalCluster, get_task_stream

    from db.engine import make_engine
    from flows.update_inventory import update_inventory

    window = demo_window(catalog)
    # One home for both runs: a scene's stored inputs name its stack's path under the data root.
    monkeypatch.setenv("GLACIAL_LAKES_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DATABASE_URL", db_url)
    serial = update_inventory(**window)
    assert serial.failed == 0 and serial.processed >= 4, serial.markdown()

    with fresh_database(pg_url_base, template_db) as dask_url:
        # Before the workers start: they read their settings (data root, S3) from their own environment.
        monkeypatch.setenv("DATABASE_URL", dask_url)
        with (
            LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster,
            Client(cluster, set_as_default=False) as client,  # the runner finds the cluster by its address
            get_task_stream(client) as stream,
        ):
            runner = scene_task_runner(RunnerSettings(task_runner="dask", dask_address=cluster.scheduler_address))
            spread = report_of(update_inventory.with_options(task_runner=runner)(**window, return_state=True))
            workers = set(cluster.scheduler_info["workers"])
        # Dask names a task by its function: one process_scene_task per scene, and the worker that ran it.
        ran_on = [t["worker"] for t in stream.data if str(t["key"]).startswith("process_scene_task-")]

        assert spread.failed == 0, spread.markdown()
        assert sorted((o.product_id, o.status, o.reason) for o in spread.outcomes) == sorted(
            (o.product_id, o.status, o.reason) for o in serial.outcomes
        )
        assert len(ran_on) == spread.processed, "every scene ran as one task on the cluster"
        assert set(ran_on) == workers and len(workers) == 2, "both workers took scenes"

        serial_engine, dask_engine = make_engine(db_url), make_engine(dask_url)
        try:
            assert content(dask_engine) == content(serial_engine)
        finally:
            serial_engine.dispose()
            dask_engine.dispose()


@pytest.mark.db
@pytest.mark.flow
@pytest.mark.slow
def test_a_scene_failing_on_a_dask_worker_is_reported_as_with_the_default_runner(
    db_url: str,
    pg_url_base: str,
    template_db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prefect_backend: None,
) -> None:
    """The worker's exception comes back to the flow (pickled): the same failed scene, the same reason."""
    from flows.update_inventory import update_inventory

    catalog = generate_demo_catalog(tmp_path / "catalog", size_px=256, seed=0)
    first = sorted((catalog.root / "sentinel-2-l2a").glob("*/*_B03_10m.tif"))[0]
    first.write_bytes(first.read_bytes()[: first.stat().st_size // 2])  # truncated: unreadable past its header
    window = demo_window(catalog)
    monkeypatch.setenv("GLACIAL_LAKES_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DATABASE_URL", db_url)
    # A run with a failed scene ends Failed: its report comes from the state (flows.outcomes).
    serial = report_of(update_inventory(**window, return_state=True))
    failed = [(o.product_id, o.reason) for o in serial.outcomes if o.status == "failed"]
    assert [p for p, _ in failed] == [first.parent.name] and serial.processed >= 3, serial.markdown()

    with fresh_database(pg_url_base, template_db) as dask_url:
        monkeypatch.setenv("DATABASE_URL", dask_url)
        # No address: the runner starts a local cluster of two worker processes for the run.
        runner = scene_task_runner(RunnerSettings(task_runner="dask", dask_workers=2))
        spread = report_of(update_inventory.with_options(task_runner=runner)(**window, return_state=True))
    assert [(o.product_id, o.reason) for o in spread.outcomes if o.status == "failed"] == failed
    assert spread.processed == serial.processed


def test_default_runner_runs_each_scene_when_submitted_in_the_flows_thread(prefect_backend: None) -> None:
    """Scenes one after another, on the flow's thread (where a stage's timeout can interrupt it)."""
    import threading

    from prefect import flow, task

    assert isinstance(scene_task_runner(RunnerSettings()), InlineTaskRunner)
    events: list[tuple[str, int, str]] = []

    @task
    def step(n: int) -> int:
        events.append(("ran", n, threading.current_thread().name))
        if n == 2:
            raise ValueError("scene 2 is corrupt")
        return n * 10

    @flow(task_runner=scene_task_runner(RunnerSettings()))
    def scenes() -> list[object]:
        futures = []
        for n in (1, 2, 3):
            futures.append(step.submit(n))
            events.append(("submitted", n, threading.current_thread().name))
        out: list[object] = []
        for f in futures:
            try:
                out.append(f.result())
            except ValueError as exc:
                out.append(str(exc))
        return out

    assert scenes() == [10, "scene 2 is corrupt", 30]
    assert [(e[0], e[1]) for e in events] == [(k, n) for n in (1, 2, 3) for k in ("ran", "submitted")]
    assert {e[2] for e in events} == {threading.main_thread().name}


def test_the_flow_takes_its_runner_from_the_environment_when_imported() -> None:
    """A worker imports the flow module afresh for each run: the decorator reads the setting then."""
    code = "from flows.update_inventory import update_inventory as f; print(type(f.task_runner).__name__)"
    env = {**os.environ, "GLACIAL_LAKES_TASK_RUNNER": "dask", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["DaskTaskRunner"]


def test_dask_runner_without_address_starts_a_local_cluster_of_processes() -> None:
    from prefect_dask.task_runners import DaskTaskRunner

    runner = scene_task_runner(RunnerSettings(task_runner="dask", dask_workers=3))
    assert isinstance(runner, DaskTaskRunner)
    assert runner.address is None
    assert runner.cluster_kwargs["n_workers"] == 3
    assert runner.cluster_kwargs["threads_per_worker"] == 1
    assert runner.cluster_kwargs["processes"] is True


def test_dask_runner_with_address_joins_that_cluster() -> None:
    from prefect_dask.task_runners import DaskTaskRunner

    runner = scene_task_runner(RunnerSettings(task_runner="dask", dask_address="tcp://10.0.0.5:8786"))
    assert isinstance(runner, DaskTaskRunner)
    assert runner.address == "tcp://10.0.0.5:8786"


def test_runner_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLACIAL_LAKES_TASK_RUNNER", "dask")
    monkeypatch.setenv("GLACIAL_LAKES_DASK_WORKERS", "4")
    chosen = load_runner_settings()
    assert (chosen.task_runner, chosen.dask_workers, chosen.dask_address) == ("dask", 4, None)


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"GLACIAL_LAKES_TASK_RUNNER": "ray"}, "GLACIAL_LAKES_TASK_RUNNER='ray'"),
        ({"GLACIAL_LAKES_TASK_RUNNER": "dask", "GLACIAL_LAKES_DASK_WORKERS": "0"}, "GLACIAL_LAKES_DASK_WORKERS='0'"),
        # An address with the default runner would be ignored silently: refused instead.
        ({"GLACIAL_LAKES_DASK_ADDRESS": "tcp://10.0.0.5:8786"}, "GLACIAL_LAKES_TASK_RUNNER is not dask"),
    ],
)
def test_bad_runner_settings_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], message: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=message) as caught:
        load_runner_settings()
    assert "\n" not in str(caught.value)
