"""Serve the update flow on one host with a schedule (no work pool needed).

    python deploy/serve.py --aoi AOI.geojson --source local:DIR --cron "0 6 */5 * *"

Each run covers the last ``--days`` days of acquisitions; rerunning a window is a no-op for
scenes already in the inventory.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    """Parses the options, loads the AOI and serves ``rolling_update`` on the given cron schedule."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aoi", type=Path, required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--cron", default="0 6 */5 * *")
    parser.add_argument("--days", type=int, default=30)
    args = parser.parse_args()

    from flows.aoi import load_aoi
    from flows.settings import Settings, prepare_prefect_environment

    prepare_prefect_environment(Settings())
    from flows.scheduled import rolling_update

    aoi = load_aoi(args.aoi)
    rolling_update.serve(
        name=f"update-{aoi.name}",
        cron=args.cron,
        parameters={"aoi": aoi.model_dump(), "source": args.source, "days": args.days},
        pause_on_shutdown=False,
    )


if __name__ == "__main__":
    main()
