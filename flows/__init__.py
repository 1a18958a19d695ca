"""The edge: Prefect flows and tasks, the ``glacial-lakes`` CLI, settings and the run report.

Lives here: the flows (``update_inventory`` with its rolling window, ``backfill``, the demo), the
rolling deployments ``glacial-lakes serve`` runs (``flows.scheduled``), every
``@task`` wrapper with its retry/caching policy (``flows.tasks``), the CLI commands and their
exit-status contract (``flows.cli``, ``flows.cli_support``), settings read from the environment
(``flows.settings``; nothing below this package reads the environment), the AOI input model,
which database to use (``flows.database``), a run's temporary Prefect server (``flows.prefect_server``),
the task runner its scenes are spread by (``flows.runner``: in turn, or over a Dask cluster), the
outcome policy and final state (``flows.outcomes``), the run report and its artifacts
(``flows.report``, ``flows.report_artifacts``, ``flows.quicklook``), ``glacial-lakes runs``
(``flows.runs_cli``), ``glacial-lakes map`` (``flows.map_cli``; drawing in ``flows.map_style``,
``flows.map_png``, ``flows.map_html``, ``flows.map_script``) and progress bars (``flows.progress``).

May import: ``tasks``, ``models``, ``db``, ``demo`` and ``core``. Nothing imports ``flows``.
"""
