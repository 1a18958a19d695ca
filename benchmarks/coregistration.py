"""Co-registration accuracy: S1 and DEM onto the S2 grid with a known sub-pixel misregistration.

Synthetic part: for ``--n`` random offsets (uniform in a disc of ``--max-offset`` px radius,
inside the correction cap ``tasks.coregister.MAX_SHIFT_PX``; S1 and DEM drawn separately), a
scene is written by ``tests.helpers.coregistration.write_pair`` (one field as S2 DN, S1 σ⁰ and
DEM, the S1 and DEM georeference moved by the offset) and run through the pipeline's
:func:`tasks.scene.prepare_stack`. Reported per modality:

* ``measured_error_px``: |measured − true offset| (the estimator's accuracy);
* ``residual_px``: the offset left in the written stack, from the truth: |true − applied| (the
  true offset where nothing was applied); max and mean over the offsets; acceptance: max ≤ 0.25 px;
* ``remeasured_residual_px``: the same residual as the estimator sees it, between the stack's
  B08 and its VV / DEM band (it reads sub-pixel remainders a little low: bilinear resampling
  pulls the peak towards whole pixels);
* ``uncorrected_px``: the offset the stack would have had without correction (the true one).

Real part (evidence for the correct-only-when-confident rule): the estimator on the real
co-registered chips of ``shared/realdata`` (TerraMesh S2 L2A + S1 RTC + DEM, Sen1Floods11 S2 + S1
GRD): their measured offsets, peak ratios and correlations, and whether the rule would correct.

Progress goes to stderr; the last line of stdout is one JSON object with the figures.
Run from the project root: ``.venv/bin/python benchmarks/coregistration.py --n 20``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from tasks.coregister import ShiftEstimate, measure_shift  # noqa: E402
from tasks.scene import prepare_stack  # noqa: E402
from tasks.stack import StackReader  # noqa: E402
from tests.helpers import realdata  # noqa: E402
from tests.helpers.coregistration import write_pair  # noqa: E402


def _stats(values: list[float]) -> dict[str, float]:
    return {"max": round(max(values), 4), "mean": round(float(np.mean(values)), 4)}


def _offset(rng: np.random.Generator, radius: float) -> tuple[float, float]:
    """A point uniform in the disc of ``radius`` pixels: (dy, dx)."""
    r, angle = radius * math.sqrt(rng.uniform()), rng.uniform(0, 2 * math.pi)
    return r * math.sin(angle), r * math.cos(angle)


def synthetic(n: int, max_offset: float, seed: int) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    rows: dict[str, dict[str, list[float]]] = {
        m: {"measured_error_px": [], "residual_px": [], "remeasured_residual_px": [], "uncorrected_px": []}
        for m in ("s1", "dem")
    }
    applied = {"s1": 0, "dem": 0}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            off_s1, off_dem = _offset(rng, max_offset), _offset(rng, max_offset)
            pair = write_pair(Path(tmp) / f"{i}" / "in", off_s1, off_dem, seed=seed + i)
            info = prepare_stack(pair.plan, pair.grid, Path(tmp) / f"{i}" / "out")
            record = json.loads(dict(info.quality)["coregistration"])
            with StackReader(info) as stack:
                b08 = stack.read_band("B08")
                bands = {"s1": stack.read_band("VV"), "dem": stack.read_band("DEM")}
            usable = np.isfinite(b08)
            for m, true in (("s1", off_s1), ("dem", off_dem)):
                measured = record[m]["measured"]
                error = math.hypot(measured["dy"] - true[0], measured["dx"] - true[1])
                rows[m]["measured_error_px"].append(error)
                rows[m]["residual_px"].append(error if record[m]["applied"] else math.hypot(*true))
                remeasured = measure_shift(b08, bands[m], usable)
                assert remeasured is not None
                rows[m]["remeasured_residual_px"].append(remeasured.magnitude)
                rows[m]["uncorrected_px"].append(math.hypot(*true))
                applied[m] += bool(record[m]["applied"])
            s1_left, dem_left = rows["s1"]["residual_px"][-1], rows["dem"]["residual_px"][-1]
            print(
                f"[{i + 1}/{n}] S1 {off_s1[0]:+.2f},{off_s1[1]:+.2f} → residual {s1_left:.3f} px; "
                f"DEM {off_dem[0]:+.2f},{off_dem[1]:+.2f} → {dem_left:.3f} px",
                file=sys.stderr,
            )
    return {m: {k: _stats(v) for k, v in rows[m].items()} | {"applied": f"{applied[m]}/{n}"} for m in rows}


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read().astype(np.float64)


def _estimate(e: ShiftEstimate | None) -> dict[str, object]:
    if e is None:
        return {"measured": None}
    return {
        "dy": round(e.dy, 2),
        "dx": round(e.dx, 2),
        "peak_ratio": round(e.peak_ratio, 2),
        "correlation": round(e.correlation, 3),
        "would_correct": e.confident,
    }


def real_chips() -> dict[str, object]:
    base = realdata.root()
    out: dict[str, object] = {}
    tm = base / "terramesh_sample"
    if tm.exists():
        s2 = _read(tm / "433D_629L_3_1_S2L2A.tif")
        s1 = _read(tm / "433D_629L_3_1_S1RTC.tif")
        dem = _read(tm / "433D_629L_3_1_DEM.tif")[0]
        ok = np.isfinite(s2[7])
        out["terramesh_433D_629L S2 B08 vs S1RTC VV"] = _estimate(measure_shift(s2[7], s1[0], ok))
        out["terramesh_433D_629L S2 B08 vs S1RTC VH"] = _estimate(measure_shift(s2[7], s1[1], ok))
        out["terramesh_433D_629L S2 B08 vs DEM"] = _estimate(measure_shift(s2[7], dem, ok))
        out["terramesh_433D_629L S2 B08 vs S2 B11"] = _estimate(measure_shift(s2[7], s2[10], ok))
    sf = base / "sen1floods11"
    if sf.exists():
        s2 = _read(sf / "Spain_7370579_S2Hand.tif")
        s1 = _read(sf / "Spain_7370579_S1Hand.tif")
        ok = np.isfinite(s2[7])
        out["sen1floods11_Spain_7370579 S2 B08 vs S1 VV"] = _estimate(measure_shift(s2[7], s1[0], ok))
        out["sen1floods11_Spain_7370579 S2 B08 vs S1 VH"] = _estimate(measure_shift(s2[7], s1[1], ok))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="random offsets (synthetic scenes)")
    parser.add_argument("--max-offset", type=float, default=1.5, help="largest offset, pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    figures = {"synthetic": synthetic(args.n, args.max_offset, args.seed), "real_chips": real_chips()}
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
