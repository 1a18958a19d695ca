"""Peak memory and time of ``extract_lakes`` on demo scenes of growing size (flat in area?).

For each ``--size`` (px), generates the demo catalog (seed 0) under ``--work``, prepares the first
paired scene's stack and segments it with the spectral baseline (once, in a child process of its
own; reused on later runs), then
runs :func:`tasks.scene.extract_lakes` in a fresh child process and reports its peak resident set
(``getrusage`` ``ru_maxrss``, MB, and ``VmHWM``) after the imports and after the extraction, the seconds it took,
and what it found (lake count, total lake area, footprint area), so two trees can be compared on
the same files: ``--tree`` runs the extraction of another checkout of the project; ``--tile K``
(or ``DOWNxACROSS``) measures K × K copies of each scene side by side instead (larger scenes
without generating them).
(Linux keeps
``ru_maxrss`` across fork and exec, so the measuring child is started by this small process,
never by one that held a scene.)

Progress goes to stderr; the last line of stdout is one JSON object with the figures.

Run from the project root: ``.venv/bin/python benchmarks/extract_memory.py --size 2048 4096``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
THRESHOLD, MIN_AREA_M2 = 0.5, 5000.0

_CHILD = """
import json, pickle, resource, sys, time
from tasks.scene import extract_lakes
import numpy, rasterio, shapely, scipy.ndimage  # noqa: F401  (imports counted before the stage)
info, prob = pickle.loads(open(sys.argv[1], "rb").read())
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
out = extract_lakes(info, prob, float(sys.argv[2]), float(sys.argv[3]))
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
areas = sorted(round(lake.area_m2) for lake in out.lakes)
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")]
print(json.dumps({
    "vm_hwm_mb": round(int(hwm[0].split()[1]) / 1024, 1) if hwm else None,
    "rss_after_imports_mb": round(before, 1),
    "peak_rss_mb": round(peak, 1),
    "extract_s": round(seconds, 2),
    "lakes": len(out.lakes),
    "lake_area_m2": sum(areas),
    "areas_m2": areas,
    "footprint_m2": None if out.footprint is None else round(out.footprint.area),
    "footprint_vertices": None if out.footprint is None else int(shapely.get_num_coordinates(out.footprint)),
}))
"""


Tile = tuple[int, int]
"""Copies of a scene down and across."""


def _name(size: int, tile: Tile) -> str:
    return f"scene_{size}" if tile == (1, 1) else f"scene_{size}_{tile[0]}x{tile[1]}"


def _tile(text: str) -> Tile:
    down, _, across = text.partition("x")
    return int(down), int(across or down)


def _prepare(size: int, tile: Tile, work: Path) -> Path:
    """The first demo scene of ``size`` px (``tile`` copies down × across), prepared by a child process."""
    manifest = work / f"{_name(size, tile)}.pickle"
    if not manifest.is_file():
        if tile != (1, 1):
            _prepare(size, (1, 1), work)
        cmd = [sys.executable, __file__, "--prepare", str(size), "--tile", f"{tile[0]}x{tile[1]}", "--work", str(work)]
        subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, check=True)
    return manifest


def _prepare_tiled(size: int, tile: Tile, work: Path) -> None:
    """``tile`` copies (down × across) of the ``size`` px scene side by side, pickled like a scene.

    A larger scene of the same content (stack, masks and probability), written by the stack's writer.
    """
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import rasterio

    from tasks.grid import GridSpec
    from tasks.stack import StackReader, write_stack

    info, prob_path = pickle.loads((work / f"{_name(size, (1, 1))}.pickle").read_bytes())
    with StackReader(info) as reader:
        stack, valid, dry = reader.read_all(), reader.read_valid(), reader.read_dry_capable()
    g = info.grid
    grid = GridSpec(g.epsg, g.transform, g.width * tile[1], g.height * tile[0])
    folder = work / _name(size, tile)
    big = write_stack(
        np.tile(stack, (1, *tile)),
        np.tile(valid, tile),
        grid,
        folder,
        "scene",
        cloud_fraction=info.cloud_fraction,
        dry_capable=None if dry is None else np.tile(dry, tile),
    )
    del stack
    with rasterio.open(prob_path) as src:
        prob, profile = src.read(1), src.profile
    profile.update(width=grid.width, height=grid.height, transform=grid.affine, driver="COG")
    with rasterio.open(folder / "probability.tif", "w", **profile) as dst:
        dst.write(np.tile(prob, tile)[np.newaxis])
    (work / f"{_name(size, tile)}.pickle").write_bytes(pickle.dumps((big, folder / "probability.tif")))


def _prepare_here(size: int, work: Path) -> None:
    """Generates, prepares and segments the scene; pickles (StackInfo, probability path)."""
    sys.path.insert(0, str(ROOT))
    from demo.plans import demo_scene_plans
    from demo.synthetic import generate_demo_catalog
    from tasks.scene import prepare_stack
    from tasks.segment import segment_stack

    catalog = generate_demo_catalog(work / f"catalog_{size}", size_px=size, seed=0)
    plans, grid = demo_scene_plans(catalog.root)
    folder = work / _name(size, (1, 1))
    info = prepare_stack(plans[0], grid, folder)
    prob = segment_stack(info, "baseline", folder / "probability.tif", tta=False)
    (work / f"{_name(size, (1, 1))}.pickle").write_bytes(pickle.dumps((info, prob)))


def _measure(manifest: Path, tree: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, "-c", _CHILD, str(manifest), str(THRESHOLD), str(MIN_AREA_M2)]
    done = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"extract_lakes failed in {tree}:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs="+", default=[1024, 2048], help="demo scene sizes in px")
    parser.add_argument("--work", type=Path, default=None, help="folder for the scenes (kept); default: temporary")
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout whose extract_lakes is measured")
    parser.add_argument("--areas", action="store_true", help="list every lake area in the output")
    parser.add_argument(
        "--tile", type=_tile, default=(1, 1), help="K or DOWNxACROSS: measure copies of each scene side by side"
    )
    parser.add_argument("--prepare", type=int, default=None, help=argparse.SUPPRESS)  # the preparing child
    args = parser.parse_args()
    if args.prepare is not None:
        if args.tile == (1, 1):
            _prepare_here(args.prepare, args.work)
        else:
            _prepare_tiled(args.prepare, args.tile, args.work)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        figures: dict[str, Any] = {"tree": args.tree.name, "scenes": []}
        for size in args.size:
            manifest = _prepare(size, args.tile, work)
            shape = {"height_px": size * args.tile[0], "width_px": size * args.tile[1]}
            row = {**shape, **_measure(manifest, args.tree.resolve())}
            if not args.areas:
                row.pop("areas_m2")
            print(json.dumps(row), file=sys.stderr)
            figures["scenes"].append(row)
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
