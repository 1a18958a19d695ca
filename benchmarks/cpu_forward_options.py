"""Where CPU scene-inference time goes, and which exact (fp32) forward options change it.

Scene inference on a CPU is the model forward (> 99 % of the time: see ``segment_cpu.py``), so
a faster tiler cannot beat terratorch's on a fully valid scene by itself. This script times one
batch of 224 px windows of the TerraMind-tiny light model (random init, fp32) under options
that keep the output the same to 1e-4:

* ``eager``: the model as built (what both tilers call);
* ``channels_last``: NHWC memory format for the decoder convolutions;
* ``jit_freeze``: TorchScript trace, ``torch.jit.freeze`` and ``optimize_for_inference``
  (oneDNN weight pre-packing, conv/BN folding);
* ``compile``: ``torch.compile`` (inductor, C++ on CPU); compile time reported separately;
* threads 1 vs N: intra-op scaling (two single-thread processes would not beat one N-thread one
  unless scaling is poor);
* an operator profile of the eager forward (top 6 by self CPU time).

Usage: ``python benchmarks/cpu_forward_options.py [--batch 4] [--repeat 5] [--no-compile]``.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from models.terramind import ModelConfig, build_model, forward_binary_logits  # noqa: E402


class Logits(torch.nn.Module):
    """The segmentation model as tensor in → ``(B, H, W)`` logits out (traceable)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return forward_binary_logits(self.model, x, 1)


def timed(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, repeat: int) -> float:
    """Best-of-``repeat`` seconds per call after one warm-up call."""
    with torch.inference_mode():
        fn(x)
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn(x)
            best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile (slow to compile)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    net = Logits(build_model(ModelConfig("tiny", "light", 1)).eval()).eval()
    x = torch.randn(args.batch, 15, 224, 224)
    with torch.inference_mode():
        ref = net(x)

    results: dict[str, dict[str, float]] = {}

    def record(name: str, fn: Callable[[torch.Tensor], torch.Tensor], **extra: float) -> None:
        seconds = timed(fn, x, args.repeat)
        with torch.inference_mode():
            diff = float((fn(x) - ref).abs().max())
        results[name] = {"windows_per_s": round(args.batch / seconds, 3), "max_abs_diff": diff, **extra}
        print(f"{name}: {results[name]}", flush=True)

    record("eager", net)
    record("channels_last", net.to(memory_format=torch.channels_last))
    net = net.to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(net, x, check_trace=False)))
    record("jit_freeze", frozen)
    if not args.no_compile:
        compiled = torch.compile(net)
        t0 = time.perf_counter()
        with torch.inference_mode():
            compiled(x)
        record("compile", compiled, compile_s=round(time.perf_counter() - t0, 1))
    torch.set_num_threads(1)
    record("eager_1_thread", net)
    torch.set_num_threads(threads)

    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        net(x)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    top = {e.key: round(e.self_cpu_time_total / total, 3) for e in events[:6]}
    eager = results["eager"]["windows_per_s"]
    summary = {
        "benchmark": "cpu_forward_options",
        "model": "terramind_v1_tiny light, random init, fp32",
        "batch": args.batch,
        "torch_threads": threads,
        "results": results,
        "speedup_over_eager": {k: round(v["windows_per_s"] / eager, 3) for k, v in results.items()},
        "thread_scaling": round(eager / results["eager_1_thread"]["windows_per_s"], 3),
        "profile_top_self_cpu_share": top,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
