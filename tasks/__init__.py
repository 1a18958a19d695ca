"""The pipeline stages: plain, Prefect-free functions from catalog entries to attributed lakes.

Lives here, in pipeline order: ``sources`` (STAC / local catalogs → acquisitions; the record
and item conversion in ``acquisition``, per-catalog tables in ``catalogs``, the STAC API in
``stac_api`` with its HTTP policy in ``stac_retry`` and href signing in ``signing``; the
searched windows in ``search_window``; GDAL's remote-read options in ``remote_read``), ``pairing``
(S2 ↔ S1 ↔ DEM scene plans, scene keys), ``grid`` (the UTM scene grid), ``preprocess`` (read,
harmonise and warp each source onto the grid; Sentinel-1 by kind in ``sar`` (what an asset
holds: σ⁰/γ⁰, linear/dB), ``s1_grd`` (GRD calibration LUT and geocoding) and ``s1_read`` (one S1
acquisition onto the grid)), ``dem`` (DEM tiles mosaicked onto the grid), ``coregister`` (S1 and
DEM offsets against S2: measured, corrected when confident), ``validity`` (which pixels count as
seen, and for what: the valid data the model reads, the dry-capable footprint absences need),
``stack`` (the analysis-ready stack file: its one format owner, writer and readers), ``segment``
(stack → water-probability COG), ``vectorize`` (probability → lake polygons), ``attribute``
(polygons → inventory records), ``scene`` (one scene's stages end to end), ``defaults``
(parameter defaults); a failed read's file and GDAL cause in ``read_errors``. Every function
takes and returns arrays, files or small frozen values; none schedules, retries or caches: the
Prefect wrappers of these stages, with their policies, are on
one page, ``flows.tasks``.

May import: ``core``, ``models``, ``db`` (records, CRS helpers) and third-party libraries.
Never ``flows``, ``demo`` or Prefect (``tests/unit/test_tasks_layer.py`` checks this).
"""
