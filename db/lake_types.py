"""Our lake types, and how they map to the classes of published glacial-lake inventories.

Our ``lake_type`` (:mod:`db.glaciers`, revision 0012) is **geometric**: the lake's relation to
glacier outlines (on, touching, near, far). Published schemes mostly classify by **dam** (moraine,
ice, bedrock) or by water supply; a geometric type cannot tell a moraine dam from a bedrock sill,
nor see a feeding stream. So the mappings below are one-to-many both ways, and each row says
how close it is (``exact``, ``partial``, ``proxy``). The table is the reference the README
section "Glacier context" prints; ``tests/db/test_lake_types.py`` checks it is complete and
checks the ICIMOD rows against the real ICIMOD 2015 inventory.

Schemes:

* ``icimod``: ICIMOD 2011 / 2015 inventories (Mool et al. 2011; the 2015 Koshi–Gandaki–Karnali
  inventory): ``M(e)`` end-moraine-dammed, ``M(l)`` lateral-moraine-dammed, ``M(o)`` other
  moraine-dammed, ``I(s)`` supraglacial, ``I(v)`` glacier-ice-dammed valley lake, ``E(c)``
  glacier-erosion cirque lake, ``E(o)`` other glacier-erosion lake, ``O`` other.
* ``wang2020``: Wang et al. 2020, glacial lake inventory of High Mountain Asia 1990 and 2018
  (ESSD 12, 2169–2182): lakes within 10 km of glaciers, typed by dam after Yao et al. 2017
  (moraine-dammed, ice-dammed including supraglacial, bedrock- / erosion-dammed, other). The
  class labels of a given release may be spelled differently: map them to these four first.
* ``glo_nepal``: glacier-fed vs non-glacier-fed lakes (a lake fed by glacier meltwater).

Pure (no I/O).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LAKE_TYPES", "SCHEMES", "SCHEME_MAPPING", "SchemeMapping", "mapping_for"]

LAKE_TYPES = ("supraglacial", "proglacial_contact", "unconnected_glacial", "non_glacial", "unknown")
"""The values of ``lake_type``, from on the glacier to unknown (no glacier outlines cover the lake)."""

SCHEMES = ("icimod", "wang2020", "glo_nepal")


@dataclass(frozen=True)
class SchemeMapping:
    """Our type → the classes of one published scheme it corresponds to."""

    lake_type: str
    scheme: str
    classes: tuple[str, ...]
    """The scheme's classes a lake of our type may carry (empty: none corresponds)."""
    fit: str
    """``exact`` (same definition), ``partial`` (ours is one of several cases of theirs, or the
    reverse) or ``proxy`` (a geometric stand-in for a property we do not observe)."""
    note: str


SCHEME_MAPPING: tuple[SchemeMapping, ...] = (
    SchemeMapping(
        "supraglacial", "icimod", ("I(s)",), "exact", "on the glacier surface; differences come from outline dates"
    ),
    SchemeMapping(
        "proglacial_contact",
        "icimod",
        ("M(e)", "M(l)", "I(v)", "E(o)"),
        "partial",
        "touching the ice: mostly end-moraine-dammed at a terminus (M(e)), or dammed by the ice (I(v)); "
        "the dam is not observed",
    ),
    SchemeMapping(
        "unconnected_glacial",
        "icimod",
        ("M(e)", "M(l)", "M(o)", "E(c)", "E(o)", "O"),
        "partial",
        "near a glacier, detached: moraine-dammed (M(*), by dam) or glacier-erosion lakes (E(*))",
    ),
    SchemeMapping(
        "non_glacial",
        "icimod",
        ("M(e)", "M(l)", "M(o)", "E(c)", "E(o)", "O"),
        "partial",
        "far from today's glaciers: ICIMOD still lists such lakes as glacial (dammed or carved by glaciers "
        "that have since retreated)",
    ),
    SchemeMapping("unknown", "icimod", (), "exact", "no glacier outlines cover the lake: no class can be given"),
    SchemeMapping(
        "supraglacial", "wang2020", ("ice-dammed (supraglacial)",), "exact", "the supraglacial case of ice-dammed"
    ),
    SchemeMapping(
        "proglacial_contact",
        "wang2020",
        ("moraine-dammed", "ice-dammed"),
        "partial",
        "in contact with the ice; moraine- or ice-dammed by the dam, which is not observed",
    ),
    SchemeMapping(
        "unconnected_glacial",
        "wang2020",
        ("moraine-dammed", "bedrock-dammed", "other"),
        "partial",
        "within our 2 km; Wang et al. keep lakes up to 10 km from glaciers, so some of their lakes are our non_glacial",
    ),
    SchemeMapping(
        "non_glacial",
        "wang2020",
        ("moraine-dammed", "bedrock-dammed", "other"),
        "partial",
        "beyond 2 km: in their inventory only up to 10 km from a glacier; beyond that not a glacial lake there",
    ),
    SchemeMapping("unknown", "wang2020", (), "exact", "no glacier outlines cover the lake: no class can be given"),
    SchemeMapping("supraglacial", "glo_nepal", ("glacier-fed",), "exact", "on the ice: fed by it"),
    SchemeMapping("proglacial_contact", "glo_nepal", ("glacier-fed",), "exact", "in contact with the ice: fed by it"),
    SchemeMapping(
        "unconnected_glacial",
        "glo_nepal",
        ("glacier-fed", "non-glacier-fed"),
        "proxy",
        "distance stands in for a feeding stream, which is not traced: fed when a meltwater stream reaches it",
    ),
    SchemeMapping(
        "non_glacial", "glo_nepal", ("non-glacier-fed",), "proxy", "beyond 2 km of any glacier: taken as not fed"
    ),
    SchemeMapping("unknown", "glo_nepal", (), "exact", "no glacier outlines cover the lake: no class can be given"),
)
"""Every (lake type, scheme) pair once."""


def mapping_for(lake_type: str, scheme: str) -> SchemeMapping:
    """The row of :data:`SCHEME_MAPPING` for one of our types in one scheme.

    Raises:
        KeyError: an unknown type or scheme.
    """
    for row in SCHEME_MAPPING:
        if row.lake_type == lake_type and row.scheme == scheme:
            return row
    raise KeyError(f"no mapping of lake type {lake_type!r} to scheme {scheme!r}")
