"""The run report: what one ``update_inventory`` run found, did, skipped and failed."""

from __future__ import annotations

from dataclasses import dataclass, field

from db.records import MergeReport


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

    @property
    def label(self) -> str:
        """The acquisition, with its zone part when it has one."""
        return self.product_id if self.part is None else f"{self.product_id} ({self.part})"


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
        """Scenes that failed (their error is recorded on the acquisition)."""
        return self.count("failed")

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
            "noop_merges": sum(1 for m in merges if m.noop),
            **sums,
        }

    def markdown(self) -> str:
        """A short Markdown summary (Prefect artifact and CLI)."""
        t = self.totals()
        lines = [
            f"# Inventory update: {self.aoi}",
            f"Model: `{self.model}`",
            "",
            f"Acquisitions found {t['found']}, processed {t['processed']}, "
            f"skipped {t['skipped']}, failed {t['failed']}.",
            f"New lakes {t['new_lakes']}, changed {t['changed_lakes']}, disappeared {t['disappeared']}, "
            f"reappeared {t['reappeared']}, versions added {t['versions_added']}.",
            *(
                [
                    f"Processed per UTM zone part ({', '.join(self.zone_parts)}): one outcome per "
                    "acquisition and part it reaches.",
                ]
                if self.zone_parts
                else []
            ),
            "",
            "| acquisition | outcome | reason |",
            "| --- | --- | --- |",
        ]
        lines += [f"| {o.label} | {o.status} | {o.reason or ''} |" for o in self.outcomes]
        return "\n".join(lines)

    def table_rows(self) -> list[dict[str, object]]:
        """One row per acquisition for a Prefect table artifact."""
        rows: list[dict[str, object]] = []
        for o in self.outcomes:
            m = o.merge
            rows.append(
                {
                    "acquisition": o.label,
                    "outcome": o.status,
                    "reason": o.reason or "",
                    "new": m.new_lakes if m else 0,
                    "changed": m.changed_lakes if m else 0,
                    "disappeared": m.disappeared if m else 0,
                }
            )
        return rows
