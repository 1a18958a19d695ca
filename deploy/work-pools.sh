#!/bin/sh
# The work pools deploy/prefect.yaml names, on the Prefect server of PREFECT_API_URL (or the
# active Prefect profile). Safe to run again: existing pools are updated (--overwrite).
#   lakes-cpu  process pool: every stage, any host (glacial-lakes worker --pool lakes-cpu)
#   lakes-gpu  process pool for the deployments that segment on a CUDA host (optional: create it
#              anyway; without a worker its deployments' schedules stay off)
# PREFECT (default: prefect) is the Prefect CLI to use, e.g. .venv/bin/prefect.
set -eu
PREFECT="${PREFECT:-prefect}"
"$PREFECT" work-pool create lakes-cpu --type process --overwrite
"$PREFECT" work-pool create lakes-gpu --type process --overwrite
