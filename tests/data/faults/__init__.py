"""Fabricators of the raster bad-input classes (reliability §3), see :mod:`tests.data.faults.make`."""
