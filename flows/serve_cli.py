"""``glacial-lakes serve`` and ``glacial-lakes worker``: the rolling updates as a service.

``serve`` (one host): the rolling deployment of each AOI (:mod:`flows.scheduled`) served by this
process, on a real Prefect server so the schedules fire: the user's (``PREFECT_API_URL`` in the
environment or the Prefect profile), else one it starts on ``127.0.0.1:--port`` with Prefect's
scheduler and UI, its database under the Prefect home, stopped (and never orphaned) with it.

``worker`` (server + workers): checks the worker's environment, then becomes
``prefect worker start --pool POOL``. Both check at start that the database login is a writer
(``lake_writer``, never a superuser or the owner) and that the schema is at the shipped revision.

Exit status: 0 on a clean stop, 2 bad input or environment setting (one line), 1 anything else.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import click

from core.errors import SettingsError
from flows.cli_support import BadInput, BoundedInt, guarded, progress
from flows.settings import Settings, load_settings, prepare_prefect_environment
from flows.window import DEFAULT_DAYS, MAX_DAYS

__all__ = ["DEFAULT_CRON", "check_api", "check_writer", "serve_command", "worker_command"]

DEFAULT_CRON = "0 6 * * *"
"""Every day at 06:00 UTC: Sentinel-2 revisits every 5 days, and a product is online within a day."""
DEFAULT_PORT = 4200
"""Port of the Prefect server ``serve`` starts (Prefect's own default: its UI at http://127.0.0.1:4200)."""
MIN_INTERVAL_S = 10
"""Shortest ``--interval``, seconds (the runner polls for due runs every 10 s)."""
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _settings() -> Settings:
    settings = load_settings()
    prepare_prefect_environment(settings)
    return settings


def check_writer(settings: Settings) -> str:
    """The database login's name once it is checked to be a plain writer at the shipped schema.

    Raises:
        db.logins.NotAWriterError: a superuser, the owner, or a login outside ``lake_writer``.
        db.migrate.SchemaBehindError: ``DATABASE_URL``'s schema is behind.
    """
    from db.logins import check_writer_login
    from flows.database import ready_engine

    what = "DATABASE_URL" if settings.database_url is not None else "the local PostGIS writer login"
    return check_writer_login(ready_engine(settings), what).name


def check_api(url: str) -> None:
    """The Prefect API at ``url`` answers its health check.

    Raises:
        SettingsError: it does not (named with the URL, the setting that gave it and the reason).
    """
    try:
        with _DIRECT.open(f"{url.rstrip('/')}/health", timeout=10) as response:
            healthy = json.loads(response.read() or b"false")
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise SettingsError(f"PREFECT_API_URL={url!r}: the Prefect API does not answer ({reason})") from exc
    if healthy is not True:
        raise SettingsError(f"PREFECT_API_URL={url!r}: the Prefect API is not healthy ({healthy!r})")


def _answers(url: str) -> bool:
    try:
        check_api(url)
    except SettingsError:
        return False
    return True


@click.command("serve")
@click.option(
    "--aoi", "aoi_paths", multiple=True, required=True, type=click.Path(path_type=Path), help="AOI GeoJSON (repeat)"
)
@click.option("--source", required=True, help="local:DIR or stac:URL")
@click.option("--cron", default=None, help=f"schedule, cron in UTC (default {DEFAULT_CRON!r})")
@click.option(
    "--interval", type=BoundedInt(MIN_INTERVAL_S), default=None, help="seconds between runs (instead of --cron)"
)
@click.option(
    "--days",
    type=BoundedInt(1, MAX_DAYS),
    default=DEFAULT_DAYS,
    show_default=True,
    help="look-back of an AOI's first window, days (later runs start at its last processed acquisition)",
)
@click.option("--model", default=None, help="segmenter (default GLACIAL_LAKES_MODEL)")
@click.option(
    "--port",
    type=BoundedInt(1, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="port of the Prefect server started when none is configured",
)
@guarded
def serve_command(
    aoi_paths: tuple[Path, ...],
    source: str,
    cron: str | None,
    interval: int | None,
    days: int,
    model: str | None,
    port: int,
) -> None:
    """Serve the rolling update of each AOI on this host, on a Prefect server that fires the schedules.

    Each run covers the days since the AOI's last processed acquisition (its first run: the last
    --days days). Stop with Ctrl-C or SIGTERM: the schedules are paused, a server started here stops.
    """
    from flows.aoi import load_aoi
    from flows.scheduled import RollingSchedule, deployment_name, rolling_deployments, serve_deployments
    from models.registry import load_segmenter
    from tasks.sources import source_from_uri

    if cron is not None and interval is not None:
        raise BadInput("--cron and --interval: give one of them")
    settings = _settings()
    aois = [load_aoi(path) for path in aoi_paths]
    names = [a.name for a in aois]
    if len(set(names)) != len(names):
        raise BadInput(f"--aoi: AOI names repeat ({', '.join(sorted(names))}): one deployment per name")
    source_from_uri(source, options=settings.stac_options, dhus=settings.dhus_options(source))
    load_segmenter(model or settings.model, settings.tta, settings.hub, settings.inference_runtime)
    schedule = RollingSchedule(cron=None if interval else (cron or DEFAULT_CRON), interval_s=interval)
    if schedule.cron is not None:
        _check_cron(schedule.cron)
    login = check_writer(settings)
    progress(f"database login {login}: a lake_writer login")

    from flows.prefect_server import configured_api_url, prefect_api

    configured = configured_api_url()
    if configured is not None:
        check_api(configured)
    elif _answers(f"http://127.0.0.1:{port}/api"):  # a server the user started but did not configure
        raise BadInput(
            f"--port {port}: a Prefect server already answers on 127.0.0.1:{port}; serve on it with "
            f"PREFECT_API_URL=http://127.0.0.1:{port}/api, or choose another --port"
        )
    with prefect_api(progress, services=True, port=port) as ready:
        deployments = rolling_deployments(aois, source, schedule, days, model)
        ready()
        url = os.environ.get("PREFECT_API_URL") or configured
        progress(f"Prefect API {url} ({'configured' if configured else 'started here, UI on the same port'})")
        when = f"cron {schedule.cron!r} (UTC)" if schedule.cron else f"every {schedule.interval_s} s"
        for name in names:
            progress(f"serving {deployment_name(name)}: {when}")
        serve_deployments(deployments)


def _check_cron(cron: str) -> None:
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        CronSchedule(cron=cron, timezone="UTC")
    except ValidationError as exc:
        raise BadInput(f"--cron {cron!r}: not a cron expression") from exc


@click.command("worker")
@click.option("--pool", required=True, help="work pool to poll (deploy/work-pools.sh creates lakes-cpu, lakes-gpu)")
@click.option("--limit", type=BoundedInt(1), default=None, help="most flow runs at once")
@click.option("--run-once", is_flag=True, help="poll once, run what is due, exit when it is done")
@click.option("--prefetch-seconds", type=BoundedInt(0), default=None, help="start runs due this soon")
@guarded
def worker_command(pool: str, limit: int | None, run_once: bool, prefetch_seconds: int | None) -> None:
    """Check this host's environment, then run a Prefect worker on POOL (``prefect worker start``).

    Checked: a Prefect API is configured (PREFECT_API_URL or the Prefect profile) and answers; the
    database login is a lake_writer login (never a superuser or the owner) at the shipped schema.
    """
    settings = _settings()
    login = check_writer(settings)
    from flows.prefect_server import configured_api_url

    url = configured_api_url()
    if url is None:
        raise SettingsError(
            "PREFECT_API_URL: not set (environment or Prefect profile); a worker polls the server "
            "the deployments are on (prefect config set PREFECT_API_URL=http://HOST:4200/api)"
        )
    check_api(url)
    progress(f"worker on pool {pool}: database login {login}, Prefect API {url}")
    argv = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool]
    argv += ["--limit", str(limit)] if limit is not None else []
    argv += ["--run-once"] if run_once else []
    argv += ["--prefetch-seconds", str(prefetch_seconds)] if prefetch_seconds is not None else []
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)  # the worker takes this process's place: signals reach it directly
