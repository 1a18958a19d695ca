"""Merge one processed scene into the inventory: identity, observations, derived history.

One scene is one transaction under an advisory lock per AOI: concurrent merges of an AOI
serialise, a crash leaves nothing half written, and a scene key already committed is a no-op.
Every geometry written is a valid 2-D MultiPolygon in EPSG:4326, projected once from the scene's
UTM outlines while staging; every area is measured in UTM.

The merge is set-based, so that an AOI of tens of thousands of lakes merges in a few bulk
statements. Its modules, in the order a merge runs them:

* :mod:`~db.merge.transaction`: the transaction script (:func:`merge_scene`, :func:`ensure_aoi`);
* :mod:`~db.merge.candidates`: the lakes the scene may continue or see dry, one binary query;
  identity itself is decided in Python (:func:`db.identity.match_outlines`);
* :mod:`~db.merge.staging` (with the binary COPY encoder :mod:`~db.merge.pgcopy`): the scene's
  outlines COPYed into a temporary table, from which lakes, observations and versions are
  inserted and lake rows updated, one statement each;
* :mod:`~db.merge.backfill`: absent rows for a new lake from older scenes that saw its place dry,
  so that the observations do not depend on the order of arrival;
* :mod:`~db.merge.fast_path`: histories extended from the lake row's tip
  (:func:`db.history.extend_histories`), the common case;
* :mod:`~db.merge.rebuild`: histories derived again from all observations
  (:func:`db.history.derive_history`) for backfills, repeated sensing times, disappearance and
  reappearance runs, splits and merges;
* :mod:`~db.merge.verify`: :func:`stale_histories`, which checks that both paths agree;
* :mod:`~db.merge.sql`: SQL shared by the statements (the row-hash function call).

May import :mod:`core` and the rest of :mod:`db`; never ``tasks``, ``flows`` or ``models``.
"""

from __future__ import annotations

from db.merge.transaction import ensure_aoi, merge_scene
from db.merge.verify import stale_histories

__all__ = ["ensure_aoi", "merge_scene", "stale_histories"]
