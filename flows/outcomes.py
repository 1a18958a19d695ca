"""The outcome policy, in one table: what each class of error does to a scene and to the run.

=============  ================================================================  ===================
disposition    errors (first matching row wins)                                  what happens
=============  ================================================================  ===================
retry          TransientSourceError (catalog 429/5xx, dropped connection),       the task is retried
               RemoteReadError (a remote raster read: timeout, HTTP error),      with exponential
               OperationalError / InterfaceError (database connection lost)      back-off + jitter;
                                                                                 still failing: the
                                                                                 scene ``failed``,
                                                                                 tried again next run
fail           ParameterMismatchError (the run's parameters differ from the      scene ``failed``
               AOI's committed scenes: the run is wrong, not the input)          with the reason
quarantine     InputError (corrupt or unreadable file, wrong CRS, no valid       acquisition
               pixel on the grid, bad catalog item), RasterioError              ``quarantined``,
                                                                                 reported; the rest
                                                                                 goes on
fail           anything else (a bug, the environment)                            scene ``failed``
=============  ================================================================  ===================

Skips are decided before any error can happen and carry their reason: no S1 partner within the
pairing window, no DEM cover, "already processed" (:func:`tasks.pairing.pair_scenes`, the ledger).

A quarantined acquisition is tried again by the next run that finds it (a cheap failure: the read
fails first) and stays quarantined until its file is replaced. A signal or interrupt (SIGTERM,
Ctrl-C), even one a library turned into its own error (:func:`core.errors.interrupted`), is no
scene's outcome: it ends the run, whose ledger row closes ``crashed``.

A scene's reason is one line naming the input and the cause: ``RasterInputError: <file>:
unreadable raster (Chunk and warp failed; <file>, band 1: IReadBlock failed …; ZIPDecode:ZLib
error)`` (:func:`describe`). The run's final state follows from the outcomes (:func:`final_state`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from prefect import State
from prefect.states import Completed, Failed
from rasterio.errors import RasterioError
from sqlalchemy.exc import InterfaceError, OperationalError

from core.errors import InputError
from db.ledger import ParameterMismatchError
from flows.report import RunReport
from tasks.read_errors import RemoteReadError, gdal_reason
from tasks.sources import TransientSourceError

__all__ = [
    "POLICY",
    "Disposition",
    "Rule",
    "classify",
    "describe",
    "final_state",
    "report_of",
    "retry_condition",
    "retry_delays",
    "run_status",
]


class Disposition(StrEnum):
    """What an error does to its scene."""

    RETRY = "retry"
    """Transient: the task retries; when retries run out the scene fails and the next run tries again."""
    QUARANTINE = "quarantine"
    """The input itself is bad: it fails the same way until it is replaced (a new fingerprint)."""
    FAIL = "fail"
    """The run or the code is wrong: reported, tried again by the next run."""


@dataclass(frozen=True)
class Rule:
    """One row of the policy: errors of ``error`` (subclasses included) get ``disposition``."""

    error: type[BaseException]
    disposition: Disposition
    why: str


POLICY: tuple[Rule, ...] = (
    Rule(TransientSourceError, Disposition.RETRY, "a catalog answered 429/5xx or dropped the connection"),
    Rule(RemoteReadError, Disposition.RETRY, "a remote raster read timed out or got an HTTP error"),
    Rule(OperationalError, Disposition.RETRY, "the database connection failed"),
    Rule(InterfaceError, Disposition.RETRY, "the database connection failed"),
    Rule(ParameterMismatchError, Disposition.FAIL, "the run's parameters differ from the AOI's committed scenes"),
    Rule(InputError, Disposition.QUARANTINE, "the input is unusable (corrupt, wrong CRS, no valid pixel)"),
    Rule(RasterioError, Disposition.QUARANTINE, "GDAL could not read or warp the input"),
)
"""The table (first matching row wins); an error no row matches is :attr:`Disposition.FAIL`."""


def classify(exc: BaseException) -> Disposition:
    """The disposition of ``exc`` by :data:`POLICY`."""
    for rule in POLICY:
        if isinstance(exc, rule.error):
            return rule.disposition
    return Disposition.FAIL


def describe(exc: BaseException) -> str:
    """One line: the error's class, then its message and the causes chained under it (GDAL's)."""
    return f"{type(exc).__name__}: {gdal_reason(exc)}"


def retry_condition(task: object, task_run: object, state: Any) -> bool:
    """A Prefect ``retry_condition_fn``: retry only errors the policy calls :attr:`Disposition.RETRY`.

    Every other error fails the same way again: not retrying it is the decision, not a fallback,
    so it is reported at once with its reason.
    """
    try:
        state.result()  # re-raises the task's exception
    except Exception as exc:
        return classify(exc) is Disposition.RETRY
    return False


RETRY_JITTER_FACTOR = 0.5
"""Each delay is stretched by up to half again at random, so runs that failed together (one
catalog outage) do not retry in step."""


def retry_delays(first_s: float, retries: int = 3) -> list[float]:
    """Exponential back-off: ``first_s``, then doubled each retry (seconds)."""
    return [first_s * 2**i for i in range(retries)]


def run_status(report: RunReport) -> str:
    """The ledger's word for a finished run (:data:`db.runs.RUN_STATUSES`)."""
    if report.complete:
        return "committed"
    return "partial" if report.processed else "failed"


def final_state(report: RunReport) -> State:
    """The flow run's final state, with the report as its result.

    Completed only when every scene landed (skipped scenes carry their reason and are decisions,
    not failures). Otherwise Failed: state *types* drive Prefect's orchestration (automations,
    notifications, ``--state-type`` filters, retries) while *names* are for display, so a run
    with failed scenes is of type FAILED and, when some scenes did land, named ``Partial`` (a
    ``Completed(name="Partial")`` would read as a success to everything that looks at types).
    """
    t = report.totals()
    summary = (
        f"{report.aoi}: {t['processed']} processed, {t['skipped']} skipped, {t['failed']} failed "
        f"({t['quarantined']} quarantined) of {t['found']} found"
    )
    if report.complete:
        return Completed(message=summary, data=report)
    first = next(o for o in report.outcomes if o.status == "failed")
    message = f"{summary}; first failure: {first.product_id}: {first.reason}"
    if report.processed:
        return Failed(name="Partial", message=message, data=report)
    return Failed(message=message, data=report)


def report_of(state: object) -> RunReport:
    """The run report of a finished ``update_inventory`` state (Completed or Failed alike).

    Raises the run's own exception when it ended without a report (the search failed, a bug).
    """
    if not isinstance(state, State):
        raise TypeError(f"expected a Prefect State, got {type(state).__name__}")
    result = state.result(raise_on_failure=False)
    if isinstance(result, RunReport):
        return result
    if isinstance(result, BaseException):
        raise result
    raise RuntimeError(f"flow run ended {state.name} without a report: {state.message}")
