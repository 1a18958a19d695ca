"""Scene throughput of TerraMind segmentation: km² per minute with 4× flip TTA, and peak GPU memory.

A random-init model (weights do not change the cost) runs the production path
(:class:`models.inference.TerraMindSegmenter`: 224 px windows, stride 112, Gaussian blending,
flip TTA, bf16 autocast on CUDA) over a synthetic scene streamed band by band. One window-row of
the scene is run first, untimed, to warm up kernels.

Usage::

    python benchmarks/segment_gpu.py --backbone large               # on a GPU machine
    python benchmarks/segment_gpu.py --backbone large --device cpu --size 448   # CPU smoke check

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from models.checkpoint import LoadedModel
from models.inference import ArraySource, InferenceParams, TerraMindSegmenter, window_starts
from models.normalisation import load_stats
from models.terramind import ModelConfig, build_model


def scene(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A (15, size, size) float32 stack with lake-like dark discs, all valid."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    water = ((yy % 500 - 250) ** 2 + (xx % 700 - 350) ** 2) < 80**2
    s2 = np.where(water, 600, 2500)[None] + rng.normal(0, 200, (12, size, size))
    s1 = np.where(water, -22, -10)[None] + rng.normal(0, 2, (2, size, size))
    dem = 4200 + 0.2 * yy[None] + rng.normal(0, 3, (1, size, size))
    return np.concatenate([s2, s1, dem]).astype(np.float32), np.ones((size, size), bool)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="large", choices=["tiny", "small", "base", "large"])
    ap.add_argument("--layout", default="heavy", choices=["heavy", "light"], help="heavy = CryoSentinel release")
    ap.add_argument("--device", default="auto", help="auto | cuda | cpu")
    ap.add_argument("--size", type=int, default=4480, help="scene edge, px at 10 m (4480 px = 2007 km²)")
    ap.add_argument("--batch-size", type=int, default=8, help="windows per forward (×4 passes with TTA)")
    ap.add_argument("--no-tta", action="store_true", help="one pass per window instead of four")
    args = ap.parse_args()

    torch.manual_seed(0)
    config = ModelConfig(args.backbone, args.layout, 1)
    model = build_model(config)
    params = InferenceParams(tta=not args.no_tta, batch_size=args.batch_size, device=args.device)
    seg = TerraMindSegmenter(LoadedModel(model, config, load_stats(), "0" * 64, "random-init"), params)
    cuda = seg.device.type == "cuda"
    stack, valid = scene(args.size)

    warm = min(args.size, 224)
    seg.predict(stack[:, :warm, : min(args.size, 224 * 2)], valid[:warm, : min(args.size, 224 * 2)])
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    done = {"n": 0}
    t0 = time.perf_counter()
    rows = 0
    for r0, prob in seg.iter_probability_rows(ArraySource(stack, valid), progress=lambda d, t: done.update(n=d)):
        rows = r0 + prob.shape[0]
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    assert rows == args.size, "the stream must cover the scene"
    km2 = args.size * args.size * 100 / 1e6  # 10 m pixels
    windows = len(window_starts(args.size, 224, 112)) ** 2
    result = {
        "benchmark": "segment_gpu",
        "backbone": f"terramind_v1_{args.backbone}",
        "layout": args.layout,
        "device": torch.cuda.get_device_name(seg.device) if cuda else "cpu",
        "precision": "bf16 autocast" if cuda else "fp32",
        "tta_passes": 1 if args.no_tta else 4,
        "size_px": args.size,
        "km2": round(km2, 3),
        "windows": windows,
        "batch_size": args.batch_size,
        "seconds": round(seconds, 3),
        "km2_per_min": round(km2 / seconds * 60, 3),
        "windows_per_s": round(windows / seconds, 3),
        "peak_gpu_mem_gib": round(torch.cuda.max_memory_allocated(seg.device) / 2**30, 3) if cuda else None,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
