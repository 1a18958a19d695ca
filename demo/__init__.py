"""The demo world: a seeded synthetic Tien Shan valley and the score of a mapped inventory against its truth.

Lives here: ``demo.synthetic`` (the demo data generator: a local static STAC catalog of Sentinel-2
L2A, Sentinel-1 GRD and a GLO-30-like DEM, its truth lakes, and the training-chip generator) and
``demo.score`` (recall, precision and area error of mapped lakes against that truth). Nothing of
the pipeline depends on this package: it only feeds the pipeline files, the way real sources do,
and scores what comes out.

May import: ``tasks``, ``models``, ``db``, ``core`` (and third-party libraries). Never ``flows``,
and never Prefect: the ``glacial-lakes demo`` command (``flows.demo``) drives it.
"""
