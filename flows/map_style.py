"""The one owner of the map colours and legends: lakes by status / change, or by growth.

Both the static PNG (:mod:`flows.map_png`, the run's quick look included) and the interactive
HTML map (:mod:`flows.map_html`) colour lakes through :func:`classify`, so one lake has one
colour and one legend label everywhere.

*Status*: the lake's latest change kind while it is active (``new``, ``grown``, … of
:data:`flows.report.CHANGE_KINDS`), ``disappeared`` once gone, ``superseded`` when only scenes a
rerun replaced saw it. *Growth*: the lake's area change in %, in classes. Its figure, the first
that exists: the export row's ``area_change_pct`` (against the previous version); for the
current inventory, the same figure from the view ``lake_growth``
(:func:`db.map_layers.current_growth`); else computed from ``lake_area_timeseries`` (the latest
observation, 0 m² when seen dry, against the first one with water). The legend title names which.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from db.map_layers import SeriesPoint
from flows.report import CHANGE_KINDS

__all__ = [
    "CHANGE_COLOURS",
    "GROWTH_CLASSES",
    "GROWTH_COLUMN",
    "STATUS_COLOURS",
    "Legend",
    "LegendEntry",
    "classify",
    "growth_from_series",
]

CHANGE_COLOURS = {
    "new": "#1f77b4",
    "grown": "#2ca02c",
    "shrunk": "#ff7f0e",
    "reshaped": "#9467bd",
    "split": "#8c564b",
    "merged": "#e377c2",
    "disappeared": "#d62728",
    "reappeared": "#17becf",
}
"""Fill colour of each change kind (:data:`flows.report.CHANGE_KINDS`)."""
if set(CHANGE_COLOURS) != set(CHANGE_KINDS):  # a kind without a colour would be drawn in a default
    raise ImportError(f"map colours {sorted(CHANGE_COLOURS)} differ from the change kinds {sorted(CHANGE_KINDS)}")

UNKNOWN = "unknown"
"""Class of a lake the inventory gives no figure for (no change kind; no growth figure)."""
UNKNOWN_COLOUR = "#9e9e9e"

STATUS_COLOURS = {**CHANGE_COLOURS, "superseded": "#7f7f7f", UNKNOWN: UNKNOWN_COLOUR}
"""Fill colour of each status class, in legend order."""

GROWTH_COLUMN = "area_change_pct"
"""The export row's growth figure (% of the previous version's water area), where the schema has it."""

GROWTH_CLASSES: tuple[tuple[str, float, float, str], ...] = (
    ("≤ −20 %", -math.inf, -20.0, "#b2182b"),
    ("−20 … −5 %", -20.0, -5.0, "#ef8a62"),
    ("−5 … +5 %", -5.0, 5.0, "#f7f7f7"),
    ("+5 … +20 %", 5.0, 20.0, "#67a9cf"),
    ("≥ +20 %", 20.0, math.inf, "#2166ac"),
)
"""(label, low, high, colour): a change in [low, high) falls in the class; diverging, blue = growth."""


@dataclass(frozen=True)
class LegendEntry:
    """One legend line: class key, label shown, fill colour (``#rrggbb``), lakes in it."""

    key: str
    label: str
    colour: str
    count: int


@dataclass(frozen=True)
class Legend:
    """A colouring of lakes: a class key per lake (row order), the legend entries used, a title."""

    title: str
    classes: tuple[str, ...]
    entries: tuple[LegendEntry, ...]

    def colour_of(self, key: str) -> str:
        """The fill colour of class ``key``."""
        return next(e.colour for e in self.entries if e.key == key)


def status_class(status: object, change_kind: object) -> str:
    """The status class of one lake (see the module docstring)."""
    if status == "superseded":
        return "superseded"
    if status == "disappeared":
        return "disappeared"
    return str(change_kind) if isinstance(change_kind, str) and change_kind in CHANGE_COLOURS else UNKNOWN


def growth_from_series(series: Sequence[SeriesPoint]) -> float | None:
    """Area change in % of a lake's series: the latest observation against the first with water.

    A dry latest observation counts 0 m² (−100 %); None without an observation with water.
    """
    first = next((p.area_m2 for p in series if p.present and p.area_m2), None)
    if first is None:
        return None
    last = series[-1]
    now = last.area_m2 if last.present and last.area_m2 is not None else 0.0
    return 100.0 * (now - first) / first


def growth_class(pct: float | None) -> str:
    """The growth class label of a change in %, :data:`UNKNOWN` for None or NaN."""
    if pct is None or math.isnan(pct):
        return UNKNOWN
    return next(label for label, low, high, _ in GROWTH_CLASSES if low <= pct < high)


def growth_figures(
    lakes: pd.DataFrame, series: Mapping[int, Sequence[SeriesPoint]], growth: Mapping[int, float | None] | None = None
) -> tuple[list[float | None], str]:
    """Each lake's growth figure (%) and what it is (the legend title), see the module docstring."""
    if GROWTH_COLUMN in lakes.columns:
        values = [None if pd.isna(v) else float(v) for v in lakes[GROWTH_COLUMN]]
        return values, "area change vs previous version (%)"
    if growth is not None:
        return [growth.get(int(i)) for i in lakes["lake_id"]], "area change vs previous version (%, lake_growth)"
    values = [growth_from_series(series.get(int(i), ())) for i in lakes["lake_id"]]
    return values, "area change since first seen (%, lake_area_timeseries)"


def classify(
    lakes: pd.DataFrame,
    colour_by: str,
    series: Mapping[int, Sequence[SeriesPoint]] | None = None,
    growth: Mapping[int, float | None] | None = None,
) -> Legend:
    """Colour the lakes by ``status`` (columns ``status``, ``change_kind``) or ``growth``.

    ``growth``: lake id → % change from :func:`db.map_layers.current_growth`, or None;
    ``series``: lake id → its area series (:func:`db.map_layers.area_series`), used for growth
    when neither the rows' :data:`GROWTH_COLUMN` nor ``growth`` is there. Legend entries list the
    classes in use, in their fixed order, with counts.
    """
    if colour_by == "status":
        status = lakes["status"] if "status" in lakes.columns else pd.Series(["active"] * len(lakes))
        keys = tuple(status_class(s, k) for s, k in zip(status, lakes["change_kind"], strict=True))
        order = [(k, k, c) for k, c in STATUS_COLOURS.items()]
        title = "status / latest change"
    elif colour_by == "growth":
        values, title = growth_figures(lakes, series or {}, growth)
        keys = tuple(growth_class(v) for v in values)
        order = [(label, label, colour) for label, _, _, colour in GROWTH_CLASSES]
        order.append((UNKNOWN, "no figure", UNKNOWN_COLOUR))
    else:
        raise ValueError(f"colour_by {colour_by!r}: use 'status' or 'growth'")
    entries = tuple(LegendEntry(k, label, c, keys.count(k)) for k, label, c in order if k in keys)
    return Legend(title, keys, entries)
