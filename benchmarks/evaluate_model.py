"""Water-segmentation figures of a TerraMind checkpoint beside a naive MNDWI rule and the baseline.

Data sets (water IoU = ΣI/ΣU over valid, labelled pixels, threshold p = 0.5):

* ``synthetic_test``: the chip generator's ``test`` split (its own random stream, and a seed
  other than the training recipe's), 224 px.
* ``terramesh``: the real TerraMesh chip (S2 L2A + S1 RTC + DEM, 224 px, EPSG:32718) against
  its LULC water class (an annual land-cover product, wider than the water on this date). Its
  DN carry the baseline-04.00 offset (every band's minimum is near 1000, some just below:
  over-corrected dark pixels), so 1000 is removed as the pipeline does for baselines ≥ 04.00.
* ``sen1floods11``: the real Sen1Floods11 chip (Spain, 512 px, EPSG:4326 at about 10 m, kept
  as is): S2 **L1C** (top of atmosphere, no offset) with B10 dropped to get our 12 bands, S1
  VV/VH dB, hand label (-1 ignored). It has **no DEM**: a flat constant DEM of 20 m (about the
  flood plain's height) is used.
* ``land_only``: synthetic test chips without any water: share of valid pixels called water.
  The same share is given on the real chips' non-water pixels.
* ``snow``: synthetic snow-covered alpine chips without water (no real snow chip exists in the
  sample data): share of valid pixels called water.

The last line printed is one JSON object; the same figures go to ``--report``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from demo.synthetic.chips import IGNORE, Scenario, make_training_chips  # noqa: E402
from models.baseline import SpectralBaseline  # noqa: E402
from models.segmenter import band_index  # noqa: E402
from tasks.preprocess import harmonise_s2_dn  # noqa: E402

REALDATA = ROOT.parent / "shared" / "realdata"
DEFAULT_REPORT = ROOT / "tests" / "_reports" / "default_model_eval.json"
FLAT_DEM_M = 20.0
Predict = Callable[[np.ndarray, np.ndarray], np.ndarray]


def mndwi_rule(stack: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Naive MNDWI(B03, B11) > 0 as a 0/1 probability, NaN outside valid."""
    g, s = stack[band_index("B03")], stack[band_index("B11")]
    with np.errstate(invalid="ignore", divide="ignore"):
        water = (g - s) / (g + s) > 0
    return np.where(valid, water.astype(np.float32), np.nan).astype(np.float32)


def counts(prob: np.ndarray, label: np.ndarray) -> dict[str, int]:
    """Confusion counts over labelled pixels (label 0/1; anything else ignored)."""
    known = (label == 0) | (label == 1)
    pred = np.nan_to_num(prob, nan=0.0) >= 0.5
    truth = label == 1
    return {
        "tp": int((pred & truth & known).sum()),
        "fp": int((pred & ~truth & known).sum()),
        "fn": int((~pred & truth & known).sum()),
        "tn": int((~pred & ~truth & known).sum()),
    }


def scores(c: dict[str, int]) -> dict[str, float]:
    """IoU, precision, recall and false-water share on land from confusion counts."""
    tp, fp, fn, tn = c["tp"], c["fp"], c["fn"], c["tn"]
    return {
        "iou": round(tp / max(tp + fp + fn, 1), 4),
        "precision": round(tp / max(tp + fp, 1), 4),
        "recall": round(tp / max(tp + fn, 1), 4),
        "false_water_on_land": round(fp / max(fp + tn, 1), 4),
    }


def _read(path: str) -> np.ndarray:
    """All bands of a raster, ``(bands, H, W)``, in the file's dtype."""
    import rasterio

    with rasterio.open(path) as ds:
        return ds.read()


def read_terramesh() -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, float]]:
    """Stack, valid, label (1 LULC water / 0) of the TerraMesh chip, and the offset evidence."""
    base = REALDATA / "terramesh_sample" / "433D_629L_3_1_"
    dn = _read(f"{base}S2L2A.tif").astype(np.float32)
    s1 = _read(f"{base}S1RTC.tif").astype(np.float32)
    dem = _read(f"{base}DEM.tif")[0].astype(np.float32)
    label = (_read(f"{base}LULC.tif")[0] == 1).astype(np.uint8)
    mins = dn.reshape(12, -1).min(axis=1)
    evidence = {
        "min_dn_lowest_band": float(mins.min()),
        "min_dn_median_band": float(np.median(mins)),
        "share_of_bands_min_above_900": float((mins > 900).mean()),
    }
    refl = harmonise_s2_dn(dn, "05.00")  # offset present: see the module docstring
    stack = np.concatenate([refl, s1, dem[None]]).astype(np.float32)
    valid = np.isfinite(stack).all(axis=0)
    return stack, valid, np.where(valid, label, IGNORE).astype(np.uint8), evidence


def read_sen1floods11() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack (L1C without B10, VV, VH, flat DEM), valid, label (-1 → ignore) of the Spain chip."""
    base = REALDATA / "sen1floods11" / "Spain_7370579_"
    s2 = _read(f"{base}S2Hand.tif").astype(np.float32)
    s1 = _read(f"{base}S1Hand.tif").astype(np.float32)
    lab = _read(f"{base}LabelHand.tif")[0]
    s2 = np.delete(s2, 10, axis=0)  # B10 (cirrus, TOA only) is not an L2A band
    s2[s2 == 0] = np.nan  # nodata 0
    dem = np.full((1, *lab.shape), FLAT_DEM_M, np.float32)
    stack = np.concatenate([s2, s1, dem]).astype(np.float32)
    valid = np.isfinite(stack).all(axis=0) & (lab >= 0)
    label = np.where(valid, lab == 1, IGNORE).astype(np.uint8)
    return stack, valid, label


def run_set(
    predict: Predict, stacks: np.ndarray, valids: np.ndarray, labels: np.ndarray
) -> tuple[dict[str, int], list[float], list[float]]:
    """Summed confusion counts, per-chip water IoU (chips with water only), per-chip false-water share."""
    total = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    per_chip, false_share = [], []
    for s, v, lab in zip(stacks, valids, labels, strict=True):
        c = counts(predict(s, v), lab)
        for k in total:
            total[k] += c[k]
        if (lab == 1).any():
            per_chip.append(c["tp"] / max(c["tp"] + c["fp"] + c["fn"], 1))
        false_share.append(c["fp"] / max(c["fp"] + c["tn"], 1))
    return total, per_chip, false_share


def evaluate(methods: dict[str, Predict], n_test: int, n_land: int, n_snow: int, seed: int) -> dict[str, object]:
    """Every figure of the module docstring for every method."""
    test = make_training_chips(n_test, 224, seed, "test")
    land = make_training_chips(n_land, 224, seed, "test", Scenario(water=False))
    snow = make_training_chips(n_snow, 224, seed + 1, "test", Scenario(kind="alpine", water=False, snow_cover=0.9))
    tm_stack, tm_valid, tm_label, offset = read_terramesh()
    sf_stack, sf_valid, sf_label = read_sen1floods11()
    out: dict[str, object] = {
        "terramesh_offset_check": offset,
        "sen1floods11_flat_dem_m": FLAT_DEM_M,
        "chips": {"synthetic_test": n_test, "land_only": n_land, "snow": n_snow, "seed": seed},
    }
    for name, predict in methods.items():
        t = time.time()
        c_test, per_chip, _ = run_set(predict, test.stack, test.valid, test.label)
        c_land, _, _ = run_set(predict, land.stack, land.valid, land.label)
        c_snow, _, snow_shares = run_set(predict, snow.stack, snow.valid, snow.label)
        tm = scores(counts(predict(tm_stack, tm_valid), tm_label))
        sf = scores(counts(predict(sf_stack, sf_valid), sf_label))
        out[name] = {
            "synthetic_test": {
                **scores(c_test),
                "mean_chip_iou": round(float(np.mean(per_chip)), 4) if per_chip else None,
            },
            "terramesh": tm,
            "sen1floods11": sf,
            "mean_real_iou": round((tm["iou"] + sf["iou"]) / 2, 4),
            "false_water_land_only_chips": scores(c_land)["false_water_on_land"],
            "false_water_real_land": round((tm["false_water_on_land"] + sf["false_water_on_land"]) / 2, 4),
            "snow_called_water": round(scores(c_snow)["false_water_on_land"], 4),
            "snow_called_water_worst_chip": round(max(snow_shares), 4) if snow_shares else None,
            "seconds": round(time.time() - t, 1),
        }
        print(f"{name}: {json.dumps(out[name])}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    """Loads the model, evaluates it and the two rules, writes the report, prints one JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="checkpoint path or hf:// spec")
    ap.add_argument("--test-chips", type=int, default=48)
    ap.add_argument("--land-chips", type=int, default=16)
    ap.add_argument("--snow-chips", type=int, default=8)
    ap.add_argument("--seed", type=int, default=2024, help="differs from the training recipe's seed on purpose")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-tta", action="store_true", help="one pass per window instead of four flips")
    ap.add_argument("--report", type=Path, default=DEFAULT_REPORT)
    args = ap.parse_args(argv)

    import torch

    from models.checkpoint import load_model
    from models.inference import InferenceParams, TerraMindSegmenter

    torch.set_num_threads(args.threads)
    loaded = load_model(args.model)
    model = TerraMindSegmenter(loaded, InferenceParams(tta=not args.no_tta, device="cpu"))
    methods: dict[str, Predict] = {
        "terramind": model.predict,
        "mndwi": mndwi_rule,
        "baseline": SpectralBaseline().predict,
    }
    figures = evaluate(methods, args.test_chips, args.land_chips, args.snow_chips, args.seed)
    ours = figures["terramind"]
    assert isinstance(ours, dict)
    result = {
        "model": Path(args.model).name,
        "version": model.version,
        "tta": not args.no_tta,
        **figures,
        "acceptance": {  # what a default model must meet
            "mean_real_iou_ge_0.80": ours["mean_real_iou"] >= 0.80,
            "false_water_land_le_0.02": ours["false_water_land_only_chips"] <= 0.02,
            "snow_called_water_le_0.05": ours["snow_called_water"] <= 0.05,
        },
    }
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
