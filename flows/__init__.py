"""The edge: Prefect flows and tasks, the ``glacial-lakes`` CLI, settings and the run report.

Lives here: the flows (``update_inventory`` with its rolling window, ``backfill``, the demo), the
rolling deployments ``glacial-lakes serve`` runs (``flows.scheduled``), every
``@task`` wrapper with its retry/caching policy (``flows.tasks``), the CLI commands and their
exit-status contract (``flows.cli``, ``flows.cli_support``), settings read from the environment
(``flows.settings``; nothing below this package reads the environment), the AOI input model,
which database to use (``flows.database``), a run's temporary Prefect server (``flows.prefect_server``)
and the task runner its scenes are spread by (``flows.runner``: in turn, or over a Dask cluster).

May import: ``tasks``, ``models``, ``db``, ``demo`` and ``core``. Nothing imports ``flows``.
"""
