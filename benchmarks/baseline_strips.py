"""Seconds and peak memory of the spectral baseline's streaming form at a tile's width.

Runs :meth:`models.baseline.SpectralBaseline.iter_probability_rows` over a generated scene of
``--width`` × ``--rows`` pixels (default 10980 × 1500: a Sentinel-2 tile's width) whose rows are
made on demand by the source (mountain-like DEM, pseudo-random spectra and VV, 10 % invalid), so
the source itself holds no scene and the peak is the segmenter's. Each tree (this checkout, and
``--tree DIR`` for another checkout of the project) runs in a fresh child process of its own and
reports the seconds, the peak resident set (``VmHWM``, MB) after the imports and after the run,
and the SHA-256 of the probabilities it yielded, so two trees are compared on the same pixels
in one run (equal digests: the same probabilities, bit for bit).

Progress goes to stderr; the last line of stdout is one JSON object with the figures.

Run from the project root: ``.venv/bin/python benchmarks/baseline_strips.py [--tree ../other]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import hashlib, json, resource, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
from models.baseline import SpectralBaseline

width, height = int(sys.argv[2]), int(sys.argv[3])

def _hash(y, x, k):
    v = np.sin(x * np.float32(12.9898) + y * np.float32(78.233) + np.float32(k * 37.719)) * np.float32(43758.5453)
    return v - np.floor(v)

class Generated:
    height, width = height, width
    def read_rows(self, r0, r1):
        # One band at a time into the float32 stack, as a stack file is read: the source holds
        # the strip's stack (as the real one does) and little else.
        yy, xx = np.mgrid[r0:r1, 0:width].astype(np.float32)
        stack = np.empty((15, r1 - r0, width), np.float32)
        for k in range(12):
            stack[k] = 300 + 2700 * _hash(yy, xx, k)
        for k in range(2):
            stack[12 + k] = -25 + 20 * _hash(yy, xx, 20 + k)
        stack[14] = 3000 + 400 * np.sin(yy / 230.0) * np.cos(xx / 170.0) + 2 * _hash(yy, xx, 99)
        return stack, _hash(yy, xx, 50) > 0.1

def hwm():
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
    return round(int(line.split()[1]) / 1024, 1)

before = hwm()
digest, strips = hashlib.sha256(), 0
t0 = time.perf_counter()
for r0, prob in SpectralBaseline().iter_probability_rows(Generated()):
    digest.update(np.ascontiguousarray(prob).tobytes())
    strips += 1
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": round(seconds, 2), "strips": strips, "vm_hwm_after_imports_mb": before,
                  "vm_hwm_mb": hwm(), "probabilities_sha256": digest.hexdigest()[:16]}))
"""


def _measure(tree: Path, width: int, rows: int) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tree), str(width), str(rows)],
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    """Measure this tree (and ``--tree``) and print the figures, the last line JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=10980, help="scene width, px (default a tile's, 10980)")
    parser.add_argument("--rows", type=int, default=1500, help="scene rows, px")
    parser.add_argument("--tree", type=Path, help="another checkout of the project to measure the same way")
    args = parser.parse_args()
    trees = {"this": ROOT} | ({"other": args.tree.resolve()} if args.tree else {})
    result: dict[str, object] = {"width": args.width, "rows": args.rows}
    for name, tree in trees.items():
        print(f"measuring {name} tree ({tree.name}) on {args.width} × {args.rows} px …", file=sys.stderr)
        figures = _measure(tree, args.width, args.rows)
        mpx = args.width * args.rows / 1e6
        figures["s_per_mpx"] = round(float(figures["seconds"]) / mpx, 3)  # type: ignore[arg-type]
        print(f"  {name}: {figures}", file=sys.stderr)
        result[name] = figures
    if args.tree:
        this, other = result["this"], result["other"]
        assert isinstance(this, dict) and isinstance(other, dict)
        result["same_probabilities"] = this["probabilities_sha256"] == other["probabilities_sha256"]
        result["speed_ratio_other_over_this"] = round(float(other["seconds"]) / float(this["seconds"]), 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
