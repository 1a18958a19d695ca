"""What the observation validity policy (tasks.validity) takes out of each demo scene's footprint.

Generates the demo catalog (``--size`` px, seed 0) in a temporary folder and, for every paired
scene, runs the pipeline's stages without a database (stack → spectral baseline → lakes) and
counts, in 10 m pixels: the valid data (what the model reads), the snow/ice pixels (SCL 11) and
the water pixels with their one-pixel ring that the dry-capable mask leaves out, and what remains
dry-capable (the footprint's pixels), and the footprint's vertex count against that of the valid
pixels' outline (the footprint before the policy); plus the S2 offset decision. Then the same scenes with the
items' processing baseline removed (the offset detector decides; the stacks must be identical)
and with their SCL removed (cloud state unknown: no footprint).

Progress goes to stderr; the last line of stdout is one JSON object with the figures.

Run from the project root: ``.venv/bin/python benchmarks/validity_footprint.py --size 256``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import rasterio
import shapely

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demo.plans import demo_scene_plans  # noqa: E402
from demo.synthetic import generate_demo_catalog  # noqa: E402
from tasks.attribute import valid_footprint  # noqa: E402
from tasks.scene import extract_lakes, prepare_stack  # noqa: E402
from tasks.segment import segment_stack  # noqa: E402
from tasks.stack import StackReader  # noqa: E402
from tasks.validity import dry_capable  # noqa: E402
from tasks.vectorize import probability_to_mask  # noqa: E402

THRESHOLD, MIN_AREA_M2 = 0.5, 5000.0


def _edit_items(root: Path, edit: Any) -> None:
    for path in (root / "sentinel-2-l2a").glob("*/*.json"):
        item = json.loads(path.read_text())
        edit(item)
        path.write_text(json.dumps(item))


def _scenes(root: Path, work: Path) -> list[dict[str, Any]]:
    plans, grid = demo_scene_plans(root)
    out = []
    for plan in plans:
        folder = work / plan.scene_id[:40]
        info = prepare_stack(plan, grid, folder)
        prob_path = segment_stack(info, "baseline", folder / "probability.tif", tta=False)
        lakes = extract_lakes(info, prob_path, THRESHOLD, MIN_AREA_M2)
        with StackReader(info) as reader:
            valid, before = reader.read_valid(), reader.read_dry_capable()
            stack_sha = hashlib.sha256(reader.read_all().tobytes()).hexdigest()
        with rasterio.open(prob_path) as ds:
            prob = ds.read(1)
        water = probability_to_mask(prob, THRESHOLD) & valid
        seen_dry = dry_capable(before, water, prob)
        row: dict[str, Any] = {
            "scene": plan.s2.product_id[:24],
            "s2_offset": info.s2_offset.describe() if info.s2_offset else None,
            "cloud_fraction": info.cloud_fraction,
            "valid_px": int(valid.sum()),
            "lakes": len(lakes.lakes),
            "footprint_m2": None if lakes.footprint is None else round(lakes.footprint.area),
            "footprint_vertices": None
            if lakes.footprint is None
            else int(shapely.get_num_coordinates(lakes.footprint)),
            # The footprint before the policy: every valid pixel (what the merge used to get).
            "valid_footprint_vertices": int(shapely.get_num_coordinates(valid_footprint(valid, grid))),
            "stack_sha256": stack_sha[:16],
        }
        if before is not None and seen_dry is not None:
            row |= {
                "snow_ice_px": int((valid & ~before).sum()),
                "water_and_ring_px": int((before & ~seen_dry).sum()),
                "dry_capable_px": int(seen_dry.sum()),
            }
        print(json.dumps(row), file=sys.stderr)
        out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="demo scene size in px (256–4096)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        figures: dict[str, Any] = {}
        for case, edit in (
            ("pristine", None),
            ("no_baseline", lambda item: item["properties"].pop("s2:processing_baseline")),
            ("no_scl", lambda item: item["assets"].pop("SCL")),
        ):
            root = Path(tmp) / case
            catalog = generate_demo_catalog(root / "catalog", size_px=args.size, seed=0)
            if edit is not None:
                _edit_items(catalog.root, edit)
            print(f"--- {case}", file=sys.stderr)
            figures[case] = _scenes(catalog.root, root / "work")
        same = [
            a["stack_sha256"] == b["stack_sha256"]
            for a, b in zip(figures["pristine"], figures["no_baseline"], strict=True)
        ]
        figures["no_baseline_stacks_identical"] = all(same)
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
