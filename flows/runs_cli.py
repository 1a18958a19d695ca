"""``glacial-lakes runs``: recent update runs with their outcome counts and failures.

Read from the ledger (``inventory.ingest_run``, :mod:`db.runs`), newest first: one line per run
(id, AOI, status, start time UTC, duration, window, counts), then one indented line per failed
acquisition with its reason. ``--json`` prints the rows as JSON instead. Opening the ledger
closes runs whose process died as ``crashed`` first, so no row reads ``running`` forever.

Exit status: 0 success, 2 bad input (one line naming the input), 1 anything else.
"""

from __future__ import annotations

import json

import click

from db.runs import RunRow, close_stale_runs, recent_runs
from flows.cli_support import BoundedInt, guarded
from flows.settings import load_settings

__all__ = ["format_run", "runs_command"]


def format_run(row: RunRow) -> list[str]:
    """The lines of one run: a summary, then one per failed acquisition."""
    c = row.counts
    counts = (
        f"found {c.get('found', '?')}, processed {c.get('processed', '?')}, skipped {c.get('skipped', '?')}, "
        f"failed {c.get('failed', '?')} (quarantined {c.get('quarantined', 0)})"
        if c
        else "no counts"
    )
    took = f"{(row.finished_at - row.started_at).total_seconds():.0f} s" if row.finished_at else "still running"
    window = f"{row.request.get('start', '?')}..{row.request.get('end', '?')}" if row.request else "window unknown"
    lines = [
        f"#{row.run_id} {row.aoi or '-'} {row.status} {row.started_at:%Y-%m-%d %H:%M:%S}Z ({took}) {window}: {counts}"
    ]
    for failure in row.failures:
        what = failure.get("acquisition", "run")
        how = f" [{failure['disposition']}]" if failure.get("disposition") else ""
        lines.append(f"    {what}{how}: {failure.get('error', '')}")
    return lines


@click.command("runs")
@click.option("--limit", type=BoundedInt(1, 1000), default=20, show_default=True, help="how many runs")
@click.option("--aoi", default=None, help="only this AOI (name)")
@click.option("--json", "as_json", is_flag=True, help="print the rows as JSON")
@guarded
def runs_command(limit: int, aoi: str | None, as_json: bool) -> None:
    """List recent runs with their outcome counts and failures (newest first)."""
    from flows.database import ready_engine

    settings = load_settings()
    engine = ready_engine(settings)
    close_stale_runs(engine)
    rows = recent_runs(engine, limit, aoi)
    if as_json:
        click.echo(
            json.dumps(
                [{**r.__dict__, "started_at": r.started_at.isoformat(), "finished_at": _iso(r)} for r in rows],
                indent=2,
                default=str,
            )
        )
        return
    if not rows:
        click.echo("no runs recorded" + (f" for AOI {aoi}" if aoi else ""))
        return
    for row in rows:
        for line in format_run(row):
            click.echo(line)


def _iso(row: RunRow) -> str | None:
    return row.finished_at.isoformat() if row.finished_at else None
