"""Per-band normalisation statistics as data, and the input protocol of CryoSentinel (spec §1.5–1.6).

Statistics live in JSON files beside the model (``models/stats/*.json``) in CryoSentinel's
``dataset_stats`` layout::

    {"S2L2A": {"means": [12], "stds": [12]}, "S1GRD": {...2...}, "DEM": {...1...},
     "name": "...", "s2_dn_offset": 0, "source": "..."}

**S2 scale, the one place it is converted.** Our stack holds reflectance × 10 000 on the
harmonised pre-04.00 scale (no ``BOA_ADD_OFFSET``). ``s2_dn_offset`` is the number of DN the
statistics' own data carried on top of that scale (1000 for statistics computed over
un-harmonised baseline ≥ 04.00 products, 0 for harmonised data). :func:`prepare_stack` adds it
before anything else, so a model sees exactly the scale its statistics describe. Both shipped
files use 0, an assumption: the spec (§1.2) says nothing about the offset; CryoSentinel's
nodata convention (``unmask(0)``) points to an Earth Engine ingest, whose current L2A
collection is the harmonised one. TerraMind's pretraining data is not documented either. If a
release turns out to have been trained on un-harmonised data, set its ``s2_dn_offset`` to 1000.

**Nodata (spec §1.6).** NaN is our nodata; CryoSentinel fed the model fixed fill values
instead, and so must we for its weights: S2 nodata is 0 (Earth Engine ``unmask(0)``) and S2 is
clipped to [0, 16 000]; S1 NaN → −25 dB, +Inf → 5 dB, −Inf → −30 dB; DEM nodata (a ±32 768
sentinel) ends at the clip floor, so NaN → −500 m, and DEM is clipped to [−500, 9000] m. The
output is masked outside ``valid`` afterwards, so these fills only shape the context that
valid pixels see.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "BUILTIN_STATS",
    "DEFAULT_STATS",
    "NormStats",
    "load_stats",
    "prepare_stack",
]

STATS_DIR = Path(__file__).with_name("stats")
BUILTIN_STATS = {"cryosentinel": "cryosentinel.json", "terramind_pretrain": "terramind_pretrain.json"}
DEFAULT_STATS = "cryosentinel"
"""Statistics used when a checkpoint neither carries nor points to its own."""

_GROUPS: tuple[tuple[str, int], ...] = (("S2L2A", 12), ("S1GRD", 2), ("DEM", 1))
_S2, _S1, _DEM = slice(0, 12), slice(12, 14), slice(14, 15)

S2_CLIP = (0.0, 16_000.0)
"""Reflectance × 10 000; 0 is CryoSentinel's S2 nodata value."""
DEM_CLIP = (-500.0, 9_000.0)
"""Metres; nodata ends at the floor."""
S1_FILL_DB = {"nan": -25.0, "posinf": 5.0, "neginf": -30.0}


@dataclass(frozen=True)
class NormStats:
    """Per-band mean and standard deviation for the 15 stack bands (S2 ×12, VV, VH, DEM).

    Attributes:
        name: Short identifier recorded in model versions, e.g. ``cryosentinel-v3``.
        means: 15 means in stack order (S2 reflectance × 10 000, dB, metres).
        stds: 15 standard deviations, all > 0.
        s2_dn_offset: DN added to our harmonised S2 before normalising (see module docstring).
        source: Free text: where the numbers come from.
        detect_s2_offset: The model was trained on harmonised reflectance and wants one-off
            inputs of unknown baseline (``glacial-lakes segment --s2-offset auto``) checked for
            the +1000 DN offset (:func:`tasks.preprocess.detect_s2_dn_offset`). False for
            released models whose input convention is unknown: they get the file as it is.
    """

    name: str
    means: tuple[float, ...]
    stds: tuple[float, ...]
    s2_dn_offset: float = 0.0
    source: str = ""
    detect_s2_offset: bool = False

    def __post_init__(self) -> None:
        """Checks band counts and positive deviations."""
        object.__setattr__(self, "means", tuple(float(v) for v in self.means))
        object.__setattr__(self, "stds", tuple(float(v) for v in self.stds))
        if len(self.means) != 15 or len(self.stds) != 15:
            raise ValueError(f"stats {self.name!r}: need 15 means and stds, got {len(self.means)}/{len(self.stds)}")
        if not all(np.isfinite(self.means)) or not all(s > 0 and np.isfinite(s) for s in self.stds):
            raise ValueError(f"stats {self.name!r}: means must be finite and stds positive")

    @classmethod
    def from_dict(cls, data: dict[str, Any], name: str | None = None) -> NormStats:
        """Reads the CryoSentinel ``dataset_stats`` layout (plus our optional metadata keys)."""
        means: list[float] = []
        stds: list[float] = []
        try:
            for group, n in _GROUPS:
                m, s = list(data[group]["means"]), list(data[group]["stds"])
                if len(m) != n or len(s) != n:
                    raise ValueError(f"{group} needs {n} means and stds, got {len(m)}/{len(s)}")
                means += m
                stds += s
        except (KeyError, TypeError) as exc:
            raise ValueError(f"statistics lack {exc}; expected S2L2A/S1GRD/DEM means and stds") from exc
        return cls(
            name=str(data.get("name") or name or "unnamed"),
            means=tuple(means),
            stds=tuple(stds),
            s2_dn_offset=float(data.get("s2_dn_offset", 0.0)),
            source=str(data.get("source", "")),
            detect_s2_offset=bool(data.get("detect_s2_offset", False)),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON layout :meth:`from_dict` reads."""
        out: dict[str, Any] = {"name": self.name, "source": self.source, "s2_dn_offset": self.s2_dn_offset}
        if self.detect_s2_offset:
            out["detect_s2_offset"] = True
        start = 0
        for group, n in _GROUPS:
            out[group] = {"means": list(self.means[start : start + n]), "stds": list(self.stds[start : start + n])}
            start += n
        return out

    @classmethod
    def from_json(cls, path: str | Path) -> NormStats:
        """Loads a statistics file; ValueError naming the file if it is malformed."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls.from_dict(data, name=path.stem)
        except (OSError, json.JSONDecodeError, ValueError) as exc:
            raise ValueError(f"{path}: unusable normalisation statistics: {exc}") from exc

    @property
    def stats_hash(self) -> str:
        """First 12 hex of the sha256 of the numbers (name and free text excluded)."""
        blob = json.dumps([self.means, self.stds, self.s2_dn_offset]).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def load_stats(name_or_path: str | Path = DEFAULT_STATS) -> NormStats:
    """A built-in statistics set (``cryosentinel``, ``terramind_pretrain``) or a JSON file."""
    key = str(name_or_path)
    if key in BUILTIN_STATS:
        return NormStats.from_json(STATS_DIR / BUILTIN_STATS[key])
    return NormStats.from_json(Path(name_or_path))


def prepare_stack(stack: NDArray[np.floating], stats: NormStats) -> NDArray[np.float32]:
    """Stack on our scale (NaN nodata) → the model's input: offset, fills, clips, z-score.

    Args:
        stack: ``(15, ...)`` in STACK_BANDS order: S2 reflectance × 10 000 (harmonised), VV and
            VH in dB, DEM in metres; NaN nodata. Not modified.
        stats: The model's statistics.

    Returns:
        float32 of the same shape, finite everywhere: ``(x − mean) / std`` after the
        CryoSentinel fills and clips (module docstring).
    """
    x = np.array(stack, dtype=np.float32, copy=True)
    if x.shape[0] != 15:
        raise ValueError(f"stack must have 15 bands, got {x.shape[0]}")
    s2 = x[_S2]
    if stats.s2_dn_offset:
        s2 += np.float32(stats.s2_dn_offset)
    np.nan_to_num(s2, copy=False, nan=S2_CLIP[0], posinf=S2_CLIP[1], neginf=S2_CLIP[0])
    np.clip(s2, *S2_CLIP, out=s2)
    np.nan_to_num(x[_S1], copy=False, **S1_FILL_DB)
    dem = x[_DEM]
    np.nan_to_num(dem, copy=False, nan=DEM_CLIP[0], posinf=DEM_CLIP[1], neginf=DEM_CLIP[0])
    np.clip(dem, *DEM_CLIP, out=dem)
    shape = (15,) + (1,) * (x.ndim - 1)
    mean = np.asarray(stats.means, dtype=np.float32).reshape(shape)
    std = np.asarray(stats.stds, dtype=np.float32).reshape(shape)
    x -= mean
    x /= std
    return x
