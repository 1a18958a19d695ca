"""The run report: what one ``update_inventory`` run found, did, skipped and failed, and what changed.

Plain data (frozen dataclasses) with its Markdown and table forms; :mod:`flows.report_artifacts`
publishes it as Prefect artifacts. Areas are m², times seconds, cloud fractions 0–1 of the
scene's grid (None: the item had no SCL, so the cloud state is unknown).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from db.records import MergeReport

STAGES = ("search", "pair", "stack", "segment", "extract", "merge", "report")
"""Timed stages, in run order (``stack`` … ``merge`` summed over the run's scenes)."""

CHANGE_KINDS = ("new", "grown", "shrunk", "reshaped", "split", "merged", "disappeared", "reappeared")
"""``lake_version.change_kind`` values; the report names the first four the issue asks for first."""


@dataclass(frozen=True)
class SceneOutcome:
    """How one S2 acquisition ended in this run (in one UTM zone part, for an AOI across zones)."""

    product_id: str
    status: str
    """processed | skipped | failed"""
    reason: str | None = None
    merge: MergeReport | None = None
    part: str | None = None
    """The UTM zone part (``EPSG:32642``) of an AOI across zones, whose acquisitions make one scene
    per part; None for an AOI within one zone (one scene per acquisition)."""

    disposition: str | None = None
    """For a failed scene, the outcome policy's word (:class:`flows.outcomes.Disposition`):
    ``quarantine`` (its input is bad), ``retry`` (transient, retries ran out) or ``fail``."""
    cloud_fraction: float | None = None
    timings: Mapping[str, float] = field(default_factory=dict)
    """Seconds per stage (``stack``, ``segment``, ``extract``, ``merge``) of this scene."""

    @property
    def label(self) -> str:
        """The acquisition, with its zone part when it has one."""
        return self.product_id if self.part is None else f"{self.product_id} ({self.part})"

    @property
    def quarantined(self) -> bool:
        """Failed because its input is bad (the acquisition's status is ``quarantined``)."""
        return self.status == "failed" and self.disposition == "quarantine"


@dataclass(frozen=True)
class LakeChange:
    """One lake this run changed: its latest version's change kind (outline EPSG:4326 in the map)."""

    lake_id: int
    change_kind: str
    area_m2: float | None
    area_change_m2: float | None


@dataclass(frozen=True)
class RunReport:
    """Per-AOI counts: expected (found) vs processed vs skipped (with reason) vs failed (with error)."""

    aoi: str
    model: str
    found: int
    outcomes: tuple[SceneOutcome, ...] = field(default_factory=tuple)
    zone_parts: tuple[str, ...] = ()
    """The UTM zone parts of an AOI across zones (empty for one zone): outcomes are then per scene
    (acquisition × part), so processed + skipped + failed may exceed ``found``."""
    changes: tuple[LakeChange, ...] = field(default_factory=tuple)
    timings: Mapping[str, float] = field(default_factory=dict)
    """Seconds per stage of :data:`STAGES` (scene stages summed over scenes)."""
    flow_run_id: str | None = None

    def count(self, status: str) -> int:
        """Scenes with this outcome (``processed``, ``skipped`` or ``failed``)."""
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def processed(self) -> int:
        """Scenes merged."""
        return self.count("processed")

    @property
    def skipped(self) -> int:
        """Scenes skipped, with their reasons (no partner, already processed)."""
        return self.count("skipped")

    @property
    def failed(self) -> int:
        """Scenes that failed, quarantined ones included (their error is recorded on the acquisition)."""
        return self.count("failed")

    @property
    def quarantined(self) -> int:
        """Failed scenes whose input is bad."""
        return sum(1 for o in self.outcomes if o.quarantined)

    @property
    def complete(self) -> bool:
        """Every scene of the run landed: none failed (skips carry their reason and are not failures)."""
        return self.failed == 0

    def change_counts(self) -> dict[str, int]:
        """Lakes this run changed, per change kind (every kind of :data:`CHANGE_KINDS`, zeros included)."""
        return {k: sum(1 for c in self.changes if c.change_kind == k) for k in CHANGE_KINDS}

    def totals(self) -> dict[str, int]:
        """Sums of the merge counts over processed scenes, plus the outcome counts."""
        keys = ("observations", "absent", "new_lakes", "changed_lakes", "disappeared", "reappeared", "versions_added")
        merges = [o.merge for o in self.outcomes if o.merge is not None]
        sums = {k: sum(int(getattr(m, k)) for m in merges) for k in keys}
        return {
            "found": self.found,
            "processed": self.processed,
            "skipped": self.skipped,
            "failed": self.failed,
            "quarantined": self.quarantined,
            "noop_merges": sum(1 for m in merges if m.noop),
            **sums,
        }

    def failures(self) -> list[dict[str, str]]:
        """Failed scenes with their reason and disposition (the ledger's ``failures``)."""
        return [
            {"acquisition": o.product_id, "error": o.reason or "", "disposition": o.disposition or "fail"}
            for o in self.outcomes
            if o.status == "failed"
        ]

    def markdown(self) -> str:
        """A short Markdown summary (Prefect artifact and CLI)."""
        t = self.totals()
        c = self.change_counts()
        lines = [
            f"# Inventory update: {self.aoi}",
            f"Model: `{self.model}`" + (f" · flow run `{self.flow_run_id}`" if self.flow_run_id else ""),
            "",
            f"Acquisitions found {t['found']}, processed {t['processed']}, "
            f"skipped {t['skipped']}, failed {t['failed']} (quarantined {t['quarantined']}).",
            f"Lakes: new {c['new']}, grown {c['grown']}, shrunk {c['shrunk']}, disappeared {c['disappeared']}, "
            f"reshaped {c['reshaped']}, reappeared {c['reappeared']}, split {c['split']}, merged {c['merged']}.",
            "Timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in self.timings.items()),
            *(
                [
                    f"Processed per UTM zone part ({', '.join(self.zone_parts)}): one outcome per "
                    "acquisition and part it reaches.",
                ]
                if self.zone_parts
                else []
            ),
            "",
            "| acquisition | outcome | cloud fraction | reason |",
            "| --- | --- | --- | --- |",
        ]
        lines += [
            f"| {o.label} | {_outcome_word(o)} | {_cloud(o.cloud_fraction, o.status)} | {_cell(o.reason)} |"
            for o in self.outcomes
        ]
        return "\n".join(lines)

    def table_rows(self) -> list[dict[str, object]]:
        """One row per acquisition for a Prefect table artifact."""
        rows: list[dict[str, object]] = []
        for o in self.outcomes:
            m = o.merge
            rows.append(
                {
                    "acquisition": o.label,
                    "outcome": _outcome_word(o),
                    "reason": o.reason or "",
                    "cloud_fraction": "" if o.cloud_fraction is None else round(o.cloud_fraction, 4),
                    "new": m.new_lakes if m else 0,
                    "changed": m.changed_lakes if m else 0,
                    "disappeared": m.disappeared if m else 0,
                    **{f"{k}_s": round(v, 2) for k, v in o.timings.items()},
                }
            )
        return rows

    def change_rows(self) -> list[dict[str, object]]:
        """One row per lake this run changed (kind, area and change in m²)."""
        return [
            {
                "lake_id": c.lake_id,
                "change": c.change_kind,
                "area_m2": "" if c.area_m2 is None else round(c.area_m2, 1),
                "area_change_m2": "" if c.area_change_m2 is None else round(c.area_change_m2, 1),
            }
            for c in self.changes
        ]


def _outcome_word(o: SceneOutcome) -> str:
    return "failed (quarantined)" if o.quarantined else o.status


def _cloud(fraction: float | None, status: str) -> str:
    if status != "processed":
        return ""
    return "unknown (no SCL)" if fraction is None else f"{fraction:.3f}"


def _cell(text: str | None) -> str:
    """A Markdown table cell: pipes escaped, one line."""
    return (text or "").replace("|", "\\|").replace("\n", " ")
