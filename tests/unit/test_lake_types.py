"""The mapping of our lake types to published inventory schemes (:mod:`db.lake_types`)."""

from __future__ import annotations

import pytest

from db.lake_types import LAKE_TYPES, SCHEME_MAPPING, SCHEMES, mapping_for

ICIMOD_CODES = {"M(e)", "M(l)", "M(o)", "I(s)", "I(v)", "E(c)", "E(o)", "O"}
"""The type codes of the ICIMOD 2015 inventory (all eight occur in the real file)."""


def test_every_type_is_mapped_once_in_every_scheme() -> None:
    pairs = [(m.lake_type, m.scheme) for m in SCHEME_MAPPING]
    assert sorted(pairs) == sorted((t, s) for t in LAKE_TYPES for s in SCHEMES)
    assert all(m.fit in ("exact", "partial", "proxy") and m.note for m in SCHEME_MAPPING)
    # unknown maps to nothing anywhere: an uncovered lake is never given a class by default.
    assert all(mapping_for("unknown", s).classes == () for s in SCHEMES)


def test_icimod_codes_are_all_reachable_and_supraglacial_is_one_to_one() -> None:
    reached = {c for m in SCHEME_MAPPING if m.scheme == "icimod" for c in m.classes}
    assert reached == ICIMOD_CODES
    assert mapping_for("supraglacial", "icimod").classes == ("I(s)",)
    assert [t for t in LAKE_TYPES if "I(s)" in mapping_for(t, "icimod").classes] == ["supraglacial"]
    assert mapping_for("non_glacial", "glo_nepal").classes == ("non-glacier-fed",)
    with pytest.raises(KeyError):
        mapping_for("proglacial", "icimod")
