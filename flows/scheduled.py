"""The rolling deployments that ``glacial-lakes serve`` runs on one host.

One deployment of ``update_inventory`` per AOI, named ``rolling-<aoi>``, with no ``start``/``end``
(the rolling window of :mod:`flows.window`), a cron or interval schedule and at most one run at a
time (more are queued: the merge's advisory lock is the guarantee, the limit keeps runs from
piling up behind it). Entry points are module paths (``flows.update_inventory:update_inventory``):
a file path would put ``flows/`` first on ``sys.path`` in the run's process, where
``flows/tasks.py`` would shadow the ``tasks`` package.
"""

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from flows.aoi import AoiSpec

if TYPE_CHECKING:
    from prefect.schedules import Schedule

__all__ = ["RollingSchedule", "deployment_name", "rolling_deployments", "serve_deployments"]

SERVE_LIMIT = 1
"""Runs of one AOI's deployment at a time (the others wait, ``ENQUEUE``)."""


@dataclass(frozen=True)
class RollingSchedule:
    """Cron text (UTC) or an interval in seconds: exactly one is set."""

    cron: str | None = None
    interval_s: int | None = None

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.interval_s is None):
            raise ValueError("give exactly one of cron and interval_s")

    def prefect_schedule(self) -> "Schedule":
        """Prefect's ``Cron`` (timezone UTC) or ``Interval`` (imports Prefect)."""
        from prefect.schedules import Cron, Interval

        if self.cron is not None:
            return Cron(self.cron, timezone="UTC")
        assert self.interval_s is not None
        return Interval(timedelta(seconds=self.interval_s))


def deployment_name(aoi_name: str) -> str:
    """``rolling-<aoi name>``: one deployment per AOI."""
    return f"rolling-{aoi_name}"


def rolling_deployments(
    aois: list[AoiSpec], source: str, schedule: RollingSchedule, days: int, model: str | None
) -> list[object]:
    """One ``RunnerDeployment`` of ``update_inventory`` per AOI (imports Prefect: call after its environment is set)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.types.entrypoint import EntrypointType

    from flows.update_inventory import update_inventory

    deployments: list[object] = []
    for aoi in aois:
        parameters: dict[str, object] = {"aoi": aoi.model_dump(), "source": source, "days": days}
        if model is not None:
            parameters["model"] = model
        deployments.append(
            update_inventory.to_deployment(
                name=deployment_name(aoi.name),
                description=f"Rolling update of {aoi.name} from {source}.",
                schedules=[schedule.prefect_schedule()],
                parameters=parameters,
                concurrency_limit=ConcurrencyLimitConfig(
                    limit=SERVE_LIMIT, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE
                ),
                enforce_parameter_schema=True,
                entrypoint_type=EntrypointType.MODULE_PATH,
            )
        )
    return deployments


def serve_deployments(deployments: list[object]) -> None:
    """Serve ``deployments`` until SIGINT/SIGTERM.

    The schedules are paused when serving stops (``pause_on_shutdown``): a stopped host must not
    leave a schedule that piles up Late runs; the next ``serve`` resumes it.
    """
    from prefect import serve

    serve(*deployments, pause_on_shutdown=True, print_starting_message=True)  # type: ignore[arg-type]
