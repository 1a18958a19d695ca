"""The scene stack's file format and its streaming preparation: bytes, write time, peak memory.

Two parts, both on the demo generator's scenes (seed 0):

``--codecs N``: one N px scene's stack (the compact int16 encoding of :mod:`tasks.stack_format`)
written as a tiled GeoTIFF with each candidate compression, by strips of rows as
:func:`tasks.prepare.prepare_stack` writes it, with 1 and 2 compression threads: seconds to
write, to read back, and bytes per km².

``--prepare N [N ...]``: :func:`tasks.scene.prepare_stack` of the first demo scene at each size
in a fresh child process: seconds, peak RSS (the child's ``VmHWM``, reset after its imports
through ``/proc/self/clear_refs``, so neither the catalog generation nor the imports count) and
the stack's bytes per km². ``--tree`` runs the child against another checkout (to compare
with an earlier version); ``--threads`` sets :data:`tasks.prepare.PREPARE_THREADS` and
``--warp-threads`` :data:`tasks.preprocess.WARP_THREADS` in the child.

Measured on a 2-core machine shared with other work (load 11–14 on 2 cores: seconds are
noisy, ±50 %; memory and bytes are not), GDAL 3.10.

``--codecs 512`` (17 int16 bands, 26 km²; kB per km², write s at 1 / 2 threads):

==========================  =========  ===========
codec                       kB / km²   write s
==========================  =========  ===========
ZSTD level 1, predictor 2   137.6      0.27 / 0.36
ZSTD level 9, predictor 2   124.3      1.62 / 0.82
DEFLATE level 6, pred. 2    126.5      1.59 / 1.15
LERC_ZSTD lossless          165.3      0.76 / 0.16
uncompressed                322.6      0.04 / 0.05
==========================  =========  ===========

ZSTD level 1 is chosen: 6× faster to write than DEFLATE for 9 % more bytes; LERC is larger
when lossless, and its lossy mode (``MAX_Z_ERROR``) applies to every band alike, the 0/1 mask
bands included (measured: a mask error of 1 at ``MAX_Z_ERROR=2``), so the precision is set by
the encoding's steps instead. Compression threads did not pay at this size.

``--prepare`` (the first demo scene; before = the float32 COG + sidecars written whole):

=====  ======================  ======================  ===============
px     before: s, peak MB      after: s, peak MB       kB / km² b → a
=====  ======================  ======================  ===============
1022   12.0, 365               16.4, 291               437 → 176 (*)
2046   189, 998                21.9, 567 / 28.7, 566   440 → 125
4094   (not run: time)         PREPARE_4096
=====  ======================  ======================  ===============

One thread. 2046 px: strips of 1024 rows (2.1 M px) / 1536 rows (3.1 M px, the default since)
give the same peak: a larger strip did not raise it (what does set it at this size, beyond the
strip, was not profiled). The seconds are not comparable between the columns (the machine's
load changed from about 1 to 14 between the runs).

(*) measured before the reflectance / dB steps of :mod:`tasks.stack_format` (lossless at 1e-4
and 0.01 dB); with them: 137.6 kB/km² at 512 px above, 124.9 at 2046 px (28 % of the earlier 440).

Run from the project root: ``.venv/bin/python benchmarks/stack_format.py --prepare 1024 2048``.
Progress goes to stderr; the last line of stdout is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The child imports the tree it measures (argv[1]), which may predate demo.plans: so it pairs
# the catalog's scenes itself, as demo.plans.demo_scene_plans does.
_CHILD = r"""
import json, sys, time
from datetime import timedelta
from pathlib import Path
sys.path.insert(0, sys.argv[1])
threads, warp_threads = int(sys.argv[4]), int(sys.argv[5])
if threads:
    import tasks.prepare
    tasks.prepare.PREPARE_THREADS = threads
if warp_threads:
    import tasks.preprocess
    tasks.preprocess.WARP_THREADS = warp_threads
from flows.aoi import load_aoi
from tasks.grid import grid_for_geometry, utm_epsg_for
from tasks.pairing import pair_scenes
from tasks.scene import prepare_stack
from tasks.sources import LocalStacSource
root, out = Path(sys.argv[2]), Path(sys.argv[3])
kinds = ("S2L2A", "S1GRD", "S1RTC", "DEM")
aoi = load_aoi(root / "aoi.geojson")
grid = grid_for_geometry(aoi.shape, utm_epsg_for(aoi.shape.centroid.x, aoi.shape.centroid.y))
found = LocalStacSource(root).acquisitions(kinds)
start = min(a.sensing_time for a in found).date() - timedelta(days=1)
end = max(a.sensing_time for a in found).date() + timedelta(days=1)
plans, _ = pair_scenes(LocalStacSource(root).search(aoi.shape, start, end, kinds), aoi.shape)
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])
    raise KeyError(key)
base = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:  # resets the high-water mark: the imports do not count
    f.write("5")
t0 = time.perf_counter()
info = prepare_stack(plans[0], grid, out)
seconds = time.perf_counter() - t0
files = {info.path, info.valid_path} | ({info.dry_capable_path} if info.dry_capable_path else set())
nbytes = sum(Path(p).stat().st_size for p in files)
km2 = grid.width * grid.height * grid.resolution**2 / 1e6
try:  # an earlier checkout (--tree) has no streaming preparation
    import tasks.prepare as prepare_module
    extra = {"threads": prepare_module.PREPARE_THREADS, "strip_rows": prepare_module.strip_rows(grid.width)}
except ImportError:
    extra = {}
print(json.dumps({**extra, "px": grid.width, "seconds": round(seconds, 2),
    "peak_rss_mb": round(status("VmHWM:") / 1024),
    "rss_before_mb": round(base / 1024), "stack_bytes": nbytes,
    "stack_kb_per_km2": round(nbytes / km2 / 1e3, 1), "valid_fraction": info.valid_fraction,
    "cloud_fraction": info.cloud_fraction}))
"""


def prepare_figures(size: int, tree: Path, work: Path, threads: int, warp_threads: int = 0) -> dict[str, Any]:
    """Generates the demo catalog at ``size`` px and prepares its first scene in a child process."""
    from demo.synthetic import generate_demo_catalog

    catalog = generate_demo_catalog(work / f"catalog-{size}", size_px=size, seed=0)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _CHILD,
            str(tree),
            str(catalog.root),
            str(work / f"out-{size}"),
            str(threads),
            str(warp_threads),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"prepare at {size} px failed:\n{done.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", type=int, nargs="*", default=[], help="demo sizes in px to prepare")
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout whose prepare_stack is measured")
    parser.add_argument("--threads", type=int, default=0, help="PREPARE_THREADS in the child (0: default)")
    parser.add_argument("--warp-threads", type=int, default=0, help="GDAL warper threads (0: default)")
    parser.add_argument("--codecs", type=int, default=0, help="compare compressions on a stack of this size (px)")
    args = parser.parse_args()
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.prepare:
            row = prepare_figures(size, args.tree, Path(tmp), args.threads, args.warp_threads)
            print(json.dumps(row), file=sys.stderr)
            out.setdefault("prepare", []).append(row)
        if args.codecs:
            out["codecs"] = codec_figures(Path(tmp), args.codecs)
    print(json.dumps(out))


CODECS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("int16 ZSTD level 1", {"compress": "ZSTD", "zstd_level": 1, "predictor": 2}),
    ("int16 ZSTD level 9", {"compress": "ZSTD", "zstd_level": 9, "predictor": 2}),
    ("int16 DEFLATE level 6", {"compress": "DEFLATE", "zlevel": 6, "predictor": 2}),
    ("int16 LERC_ZSTD lossless", {"compress": "LERC_ZSTD", "max_z_error": 0}),
    ("int16 uncompressed", {"compress": "NONE"}),
)


def codec_figures(work: Path, size: int) -> list[dict[str, Any]]:
    """Writes one demo stack with each compression, by strips as the preparation does."""
    import rasterio
    from rasterio.windows import Window

    from demo.synthetic import generate_demo_catalog
    from tasks.stack import STACK_CODES, StackReader
    from tasks.stack_format import TILE_PX, encode

    catalog = generate_demo_catalog(work / f"codec-catalog-{size}", size_px=size, seed=0)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = work / "codec-stack"
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(ROOT), str(catalog.root), str(out), "0", "0"], env=env, check=True
    )
    del done
    (path,) = out.glob("*_stack.tif")
    with StackReader(path) as reader:
        grid = reader.grid
        decoded = reader.read_all()
        valid = reader.read_valid()
    stored = np.stack([encode(decoded[i], c) for i, c in enumerate(STACK_CODES)] + [valid.astype(np.int16)])
    km2 = grid.width * grid.height * grid.resolution**2 / 1e6
    base = {"driver": "GTiff", "width": grid.width, "height": grid.height, "crs": grid.crs}
    base |= {"transform": grid.affine, "tiled": True, "blockxsize": TILE_PX, "blockysize": TILE_PX}
    rows: list[dict[str, Any]] = []
    cases = [(name, opts, threads) for name, opts in CODECS for threads in (1, 2)]
    cases.append(("float32 DEFLATE (the earlier COG's codec)", {"compress": "DEFLATE", "predictor": 3}, 1))
    for name, opts, threads in cases:
        data = decoded if name.startswith("float32") else stored
        dtype = "float32" if name.startswith("float32") else "int16"
        target = work / "codec.tif"
        t0 = time.perf_counter()
        profile = {**base, **opts, "count": data.shape[0], "dtype": dtype, "interleave": "band"}
        with rasterio.open(target, "w", **profile, num_threads=threads) as ds:
            for r in range(0, grid.height, 2 * TILE_PX):
                block = data[:, r : r + 2 * TILE_PX]
                ds.write(block, window=Window(0, r, grid.width, block.shape[1]))
        seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        with rasterio.open(target) as ds:
            ds.read()
        read_s = time.perf_counter() - t0
        row = {"codec": name, "threads": threads, "write_s": round(seconds, 2), "read_s": round(read_s, 2)}
        row |= {"mb": round(target.stat().st_size / 1e6, 1), "kb_per_km2": round(target.stat().st_size / km2 / 1e3, 1)}
        print(json.dumps(row), file=sys.stderr)
        rows.append(row)
    return rows


if __name__ == "__main__":
    main()
