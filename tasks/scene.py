"""One scene's raster stages: prepare the analysis-ready stack, extract attributed lakes.

Both stream a scene by strips of rows, each in its own module, re-exported here (the flows'
names for them): ``prepare_stack`` in :mod:`tasks.prepare`, ``extract_lakes`` in
:mod:`tasks.extract`.

Each stage takes and returns small things (plans, paths, frozen records), so a scheduler can
persist results cheaply; rasters live in files under the data root. The Prefect wrappers of
these stages are in ``flows.tasks``.
"""

from __future__ import annotations

from tasks.extract import ExtractedLakes, extract_lakes
from tasks.prepare import prepare_stack

__all__ = ["ExtractedLakes", "extract_lakes", "prepare_stack"]
