"""Lake volume from area by a published area–volume scaling (pure, no I/O).

Used by the pipeline's attributes (:mod:`tasks.lake_measures`) and by imported inventories
(:mod:`db.importer`), which know an area but no pixel size, DEM or model. Areas in m² (local
UTM), volumes in m³.

Imports nothing of the project.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["VOLUME_CROSS_CHECK", "VOLUME_RELATION", "VolumeRelation", "lake_volume"]


@dataclass(frozen=True)
class VolumeRelation:
    """A published area–volume scaling ``V = c · A^b`` (A in m², V in m³)."""

    coefficient: float
    exponent: float
    source: str


VOLUME_RELATION = VolumeRelation(
    0.1697,
    1.3778,
    "Cook & Quincey (2015), Estimating the volume of Alpine glacial lakes, Earth Surf. Dynam. 3, 559-575",
)
"""The relation the inventory's ``volume_m3`` uses: ``V = 0.1697 · A^1.3778`` with A in m² and V in
m³ (global glacial-lake data set, r² = 0.91; at 1 km² it gives 3.1·10⁷ m³, a mean depth of 31 m)."""

VOLUME_CROSS_CHECK = VolumeRelation(
    0.104,
    1.42,
    "Huggel et al. (2002), Remote sensing based assessment of hazards from glacier lake outbursts, "
    "Can. Geotech. J. 39, 316-330",
)
"""A second published relation (``V = 0.104 · A^1.42``, m², m³): neither paper gives a per-lake
standard error, so the spread between the two stands for the relation's own uncertainty."""


def lake_volume(area_m2: float, area_uncertainty_m2: float | None = None) -> tuple[float, float | None]:
    """(volume m³, its uncertainty ± m³) of a lake of ``area_m2`` by :data:`VOLUME_RELATION`.

    The uncertainty combines in quadrature the area's uncertainty carried through the power law
    (``b · V · σA / A``) and the relation's own, the difference to :data:`VOLUME_CROSS_CHECK` at
    this area. None when the area's uncertainty is unknown (an imported inventory): half an
    uncertainty would read as the whole one.
    """
    if not area_m2 >= 0:
        raise ValueError(f"area must be a non-negative number of m², got {area_m2}")
    rel, other = VOLUME_RELATION, VOLUME_CROSS_CHECK
    volume = rel.coefficient * area_m2**rel.exponent
    if area_uncertainty_m2 is None or area_m2 == 0:
        return volume, (None if area_uncertainty_m2 is None else 0.0)
    from_area = rel.exponent * volume * area_uncertainty_m2 / area_m2
    from_relation = abs(volume - other.coefficient * area_m2**other.exponent)
    return volume, math.hypot(from_area, from_relation)
