"""Pairing: each Sentinel-2 scene with the nearest Sentinel-1 acquisition and the DEM (pure).

One AOI's scenes use one S1 kind: RTC γ⁰ and GRD σ⁰ are different quantities (γ⁰ reads ≈ 1–2 dB
higher on flat ground, more on slopes; see :mod:`tasks.sar`), so they are never mixed silently.
RTC is preferred where the acquisitions hold any (terrain-corrected geometry, which matters in
glacier relief); an S2 scene with only the other kind in reach is skipped with that reason. The
kind is part of each plan (``ScenePlan.s1_kind``) and of its scene key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from core.errors import SettingsError
from tasks.defaults import MAX_PAIR_DAYS
from tasks.sar import S1_KINDS
from tasks.sources import Acquisition


@dataclass(frozen=True)
class ScenePlan:
    """The inputs of one scene: an S2 L2A product, its S1 partner and the DEM tiles."""

    s2: Acquisition
    s1: Acquisition
    dems: tuple[Acquisition, ...]
    """The DEM acquisitions whose union covers the AOI (one, or several across tile edges),
    sorted by product id; the mosaic reads them in this order."""

    @property
    def scene_id(self) -> str:
        """Readable scene name (the S2 product id)."""
        return self.s2.product_id

    @property
    def s1_kind(self) -> str:
        """The S1 kind the scene uses: ``S1RTC`` (γ⁰) or ``S1GRD`` (σ⁰)."""
        return self.s1.kind

    @property
    def dem_id(self) -> str:
        """The DEM as one text: the tiles' product ids, sorted, joined with '+' (one tile: its id)."""
        return "+".join(d.product_id for d in self.dems)

    @property
    def dem_hrefs(self) -> tuple[str, ...]:
        """The tiles' elevation assets, in :attr:`dems` order."""
        return tuple(d.asset("data") for d in self.dems)


@dataclass(frozen=True)
class Skipped:
    """An acquisition that will not be processed, and why."""

    product_id: str
    reason: str


def choose_s1_kind(acquisitions: Sequence[Acquisition]) -> str:
    """The AOI's S1 kind: the first of :data:`tasks.sar.S1_KINDS` (RTC, then GRD) present, else RTC."""
    present = {a.kind for a in acquisitions}
    return next((k for k in S1_KINDS if k in present), S1_KINDS[0])


def pair_scenes(
    acquisitions: Sequence[Acquisition],
    aoi: BaseGeometry,
    max_days: float = MAX_PAIR_DAYS,
    s1_kind: str | None = None,
) -> tuple[list[ScenePlan], list[Skipped]]:
    """Pair each S2 L2A acquisition with the closest-in-time S1 one and DEM tiles covering the AOI.

    Only S1 acquisitions of one kind are paired: ``s1_kind``, or when None
    :func:`choose_s1_kind` (RTC wherever the acquisitions hold any). An S2 scene that has only
    the other kind within ``max_days`` is skipped, and the reason names it. Ties in time go to
    the S1 product whose footprint covers more of the AOI, then to the smaller product id, so
    the pairing is deterministic.

    Raises:
        SettingsError: ``max_days`` is negative or not a number (it would pair nothing,
            silently), or ``s1_kind`` is not one of :data:`tasks.sar.S1_KINDS`.
    """
    if not max_days >= 0:
        raise SettingsError(f"max pair days must be a number ≥ 0, got {max_days!r}")
    if s1_kind is not None and s1_kind not in S1_KINDS:
        raise SettingsError(f"S1 kind must be one of {', '.join(S1_KINDS)}, got {s1_kind!r}")
    kind = s1_kind or choose_s1_kind(acquisitions)
    s2s = [a for a in acquisitions if a.kind == "S2L2A"]
    s1s = [a for a in acquisitions if a.kind == kind]
    others = [a for a in acquisitions if a.kind in S1_KINDS and a.kind != kind]
    dems = [a for a in acquisitions if a.kind == "DEM"]
    dem = _best_dem(dems, aoi)
    plans: list[ScenePlan] = []
    skipped: list[Skipped] = []
    limit = timedelta(days=max_days)
    for s2 in s2s:
        candidates = [s1 for s1 in s1s if abs(s1.sensing_time - s2.sensing_time) <= limit]
        if not candidates:
            skipped.append(Skipped(s2.product_id, _no_s1_reason(s2, kind, others, limit, max_days)))
            continue
        if not dem:
            skipped.append(Skipped(s2.product_id, "no DEM covering the AOI"))
            continue
        s1 = min(
            candidates,
            key=lambda a: (
                abs(a.sensing_time - s2.sensing_time),
                -_cover(a.footprint, aoi),
                a.product_id,
            ),
        )
        plans.append(ScenePlan(s2=s2, s1=s1, dems=dem))
    return plans, skipped


def _no_s1_reason(s2: Acquisition, kind: str, others: Sequence[Acquisition], limit: timedelta, max_days: float) -> str:
    near = sorted((o.product_id, o.kind) for o in others if abs(o.sensing_time - s2.sensing_time) <= limit)
    if not near:
        return f"no S1 within {max_days:g} days"
    return (
        f"no {kind} within {max_days:g} days; {near[0][0]} ({near[0][1]}) is, "
        f"but this AOI's scenes use {kind}: GRD σ⁰ and RTC γ⁰ are not mixed"
    )


def _cover(footprint: BaseGeometry | None, aoi: BaseGeometry) -> float:
    if footprint is None or aoi.area == 0:
        return 0.0
    return float(footprint.intersection(aoi).area / aoi.area)


DEM_MIN_COVER = 0.999
"""Share of the AOI (EPSG:4326 area) the DEM tiles' union must cover for a scene to be planned."""


def _best_dem(dems: Sequence[Acquisition], aoi: BaseGeometry) -> tuple[Acquisition, ...]:
    """The DEM tiles of the plans: one covering the AOI if there is one, else a union that does.

    One tile covering more than :data:`DEM_MIN_COVER` of the AOI (or with no footprint to say otherwise)
    wins alone, the smallest id among several. Else tiles are taken greedily, the one adding the
    most uncovered AOI area first (ties: smaller id), until the union covers the share; tiles the
    final union does not need are dropped again. Empty when even all tiles together cover no more.
    The result is sorted by product id, so the plan (and the scene key) is deterministic.
    """
    covering = [d for d in dems if d.footprint is None or _cover(d.footprint, aoi) > DEM_MIN_COVER]
    if covering:
        return (min(covering, key=lambda d: d.product_id),)
    if aoi.area == 0:
        return ()
    chosen: list[Acquisition] = []
    union: BaseGeometry | None = None
    candidates = sorted((d for d in dems if d.footprint.intersects(aoi)), key=lambda d: d.product_id)
    while candidates and _union_cover(union, aoi) <= DEM_MIN_COVER:
        best = max(candidates, key=lambda d: _gain(union, d.footprint, aoi))  # first maximum: smaller id
        if _gain(union, best.footprint, aoi) <= 0:
            break
        chosen.append(best)
        candidates.remove(best)
        union = best.footprint if union is None else union.union(best.footprint)
    if _union_cover(union, aoi) <= DEM_MIN_COVER:
        return ()
    for tile in list(reversed(chosen)):  # the last picks add least; drop any the rest make redundant
        rest = [d.footprint for d in chosen if d is not tile]
        if rest and _union_cover(unary_union(rest), aoi) > DEM_MIN_COVER:
            chosen.remove(tile)
    return tuple(sorted(chosen, key=lambda d: d.product_id))


def _union_cover(union: BaseGeometry | None, aoi: BaseGeometry) -> float:
    return 0.0 if union is None else _cover(union, aoi)


def _gain(union: BaseGeometry | None, footprint: BaseGeometry, aoi: BaseGeometry) -> float:
    """AOI area (degrees²) ``footprint`` adds to ``union``."""
    part = footprint.intersection(aoi)
    return float(part.area if union is None else part.difference(union).area)


def scene_key(plan: ScenePlan, model_version: str, params: Mapping[str, object], aoi: str | None = None) -> str:
    """Ledger key of a scene: sha256 over input product ids and what they are, model version and parameters.

    Every DEM tile counts: its id (in :attr:`ScenePlan.dem_id`) and its fingerprint. The S1 kind
    needs no entry of its own: a GRD and an RTC product have their own ids and fingerprints (and
    the scene's inputs record how S1 was read), so keys of existing scenes stand.

    "What they are" is each acquisition's ``fingerprint`` (size, modification time and path of
    local files; the item's update time or checksums for remote ones): a fixed or replaced file
    makes a new key, so the scene is processed again instead of reading "already processed".

    ``aoi`` (the AOI's name) makes the key one AOI's: two AOIs with one grid share inputs, model
    and parameters, and each must merge the scene. Without it, the key of scenes merged before
    keys named their AOI (the update flow still recognises those within their own AOI).
    """
    payload: dict[str, object] = {
        "s2": plan.s2.product_id,
        "s1": plan.s1.product_id,
        "dem": plan.dem_id,
        "inputs": [plan.s2.fingerprint, plan.s1.fingerprint, *(d.fingerprint for d in plan.dems)],
        "model": model_version,
        "params": params_hash(params),
    }
    if aoi is not None:
        payload["aoi"] = aoi
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def params_hash(params: Mapping[str, object]) -> str:
    """Stable short hash of processing parameters (JSON, sorted keys)."""
    return hashlib.sha256(json.dumps(dict(params), sort_keys=True, default=str).encode()).hexdigest()[:16]
