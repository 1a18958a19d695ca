"""Reproducible recipe of the offline default model: TerraMind v1 tiny trained on synthetic chips.

Trains from random initialisation (no pretrained weights are needed, nothing is downloaded) on
chips from :func:`demo.synthetic.chips.make_training_chips`, on the CPU with 2 threads, within a
wall-clock budget (33 min by default, chip rendering included) on a 2-core machine.

* Loss BCE + soft Dice over valid pixels (:func:`models.train.bce_dice_loss`); AdamW; bf16
  autocast in the training forward only (validation and the shipped model run in fp32); a
  random flip / transpose per batch.
* An *epoch* is a fixed number of steps (default 100 batches of 4 = 400 chips, drawn without
  replacement from the shuffled training set); validation IoU (water, ΣI/ΣU at p = 0.5)
  follows every epoch, with early stopping on it.
* The learning rate warms up, then follows a cosine down to 2 % of its peak over the run's
  *progress*: the larger of steps done / step cap and time used / time left after rendering.
  On a busy shared machine the run still ends annealed; on a quiet one it stops at the cap.
  So the number of steps (recorded in the checkpoint) depends on the machine's load.
* The best epoch is written in fp16 in the loader's format
  (:func:`models.checkpoint.save_checkpoint`) with the normalisation statistics of the
  training chips embedded and beside it (``<file>.stats.json``), then reloaded strictly and
  re-validated as a check.

``models.train.train`` is not used because it cuts georeferenced scenes into chips and splits
them by place; synthetic chips come already split (disjoint random streams).

Run from the project root::

    python benchmarks/train_default_model.py [--out models/weights/terramind_tiny_glacial_demo.pt]

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from demo.synthetic.chips import IGNORE, make_training_chips  # noqa: E402
from models.checkpoint import load_model, save_checkpoint  # noqa: E402
from models.normalisation import NormStats, prepare_stack  # noqa: E402
from models.terramind import ModelConfig, build_model, forward_binary_logits  # noqa: E402
from models.train import bce_dice_loss  # noqa: E402

DEFAULT_OUT = ROOT / "models" / "weights" / "terramind_tiny_glacial_demo.pt"
STATS_NAME = "glacial-lakes-synthetic-v1"


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _chunk(args: tuple[int, int, int, str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chips ``[start, start+n)`` of a split (a worker process renders a slice)."""
    start, n, size, split, seed = args
    from demo.synthetic.chips import render_chip

    out = [render_chip(size, seed, split, i) for i in range(start, start + n)]
    return (
        np.stack([o[0] for o in out]).astype(np.float32),
        np.stack([o[1] for o in out]),
        np.stack([o[2] for o in out]),
    )


def generate(n: int, size: int, split: str, seed: int, workers: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Renders ``n`` chips in ``workers`` processes; identical to ``make_training_chips``."""
    if workers <= 1:
        cs = make_training_chips(n, size, seed, split)
        return cs.stack, cs.valid, cs.label
    step = math.ceil(n / (4 * workers))
    jobs = [(s, min(step, n - s), size, split, seed) for s in range(0, n, step)]
    with ProcessPoolExecutor(workers) as pool:
        parts = list(pool.map(_chunk, jobs))
    return tuple(np.concatenate([p[k] for p in parts]) for k in range(3))  # type: ignore[return-value]


def compute_stats(stack: np.ndarray, valid: np.ndarray, seed: int) -> NormStats:
    """Per-band mean and std over a sample of valid pixels of the training chips."""
    rng = np.random.default_rng(seed)
    idx = np.flatnonzero(valid.reshape(-1))
    take = rng.choice(idx, size=min(2_000_000, idx.size), replace=False)
    bands = stack.transpose(1, 0, 2, 3).reshape(stack.shape[1], -1)[:, take]
    means = np.nanmean(bands, axis=1)
    stds = np.maximum(np.nanstd(bands, axis=1), 1e-3)
    # Trained on harmonised reflectance: one-off inputs are tested for the +1000 DN offset.
    return NormStats(
        STATS_NAME,
        tuple(means),
        tuple(stds),
        0.0,
        "Training chips of benchmarks/train_default_model.py (synthetic, valid pixels)",
        detect_s2_offset=True,
    )


def normalise(stack: np.ndarray, stats: NormStats) -> np.ndarray:
    """Model inputs stored as float16 to halve memory (converted back per batch)."""
    return np.stack([prepare_stack(s, stats).astype(np.float16) for s in stack])


def augment(x: torch.Tensor, y: torch.Tensor, m: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
    """One random element of the dihedral group per batch: flips and a transpose."""
    if rng.random() < 0.5:
        x, y, m = x.flip(-1), y.flip(-1), m.flip(-1)
    if rng.random() < 0.5:
        x, y, m = x.flip(-2), y.flip(-2), m.flip(-2)
    if rng.random() < 0.5:
        x, y, m = x.transpose(-1, -2), y.transpose(-1, -2), m.transpose(-1, -2)
    return x.contiguous(), y.contiguous(), m.contiguous()


def evaluate(model: torch.nn.Module, x: np.ndarray, label: np.ndarray, batch: int) -> dict[str, float]:
    """Water IoU, precision and recall at p = 0.5 over all valid pixels (ΣI/ΣU)."""
    model.eval()
    tp = fp = fn = 0
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            z = forward_binary_logits(model, torch.from_numpy(x[i : i + batch].astype(np.float32)), 1).numpy()
            lab = label[i : i + batch]
            known = lab != IGNORE
            pred, truth = (z > 0) & known, (lab == 1)
            tp += int((pred & truth).sum())
            fp += int((pred & ~truth).sum())
            fn += int((~pred & truth & known).sum())
    return {"iou": tp / max(tp + fp + fn, 1), "precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1)}


def main(argv: list[str] | None = None) -> int:
    """Parses the recipe's arguments, trains, writes and re-checks the checkpoint."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--train-chips", type=int, default=1024)
    ap.add_argument("--val-chips", type=int, default=96)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--epochs", type=int, default=20, help="step cap = epochs × steps per epoch")
    ap.add_argument("--steps-per-epoch", type=int, default=100)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--warmup-steps", type=int, default=60)
    ap.add_argument("--patience", type=int, default=4)
    ap.add_argument("--decoder-channels", type=int, default=128)
    ap.add_argument("--budget-min", type=float, default=33.0, help="wall-clock budget, chip rendering included")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--precision",
        choices=("bf16", "fp32"),
        default="bf16",
        help="bf16 autocast of the training forward (about 1.5x faster on CPUs with AVX512-BF16)",
    )
    ap.add_argument("--workers", type=int, default=2, help="processes rendering chips")
    ap.add_argument(
        "--init",
        type=Path,
        default=None,
        help="continue from this checkpoint (its architecture and normalisation statistics are kept)",
    )
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    _log(f"rendering {args.train_chips} train + {args.val_chips} val chips of {args.size} px (seed {args.seed})")
    tr_stack, tr_valid, tr_label = generate(args.train_chips, args.size, "train", args.seed, args.workers)
    va_stack, _, va_label = generate(args.val_chips, args.size, "val", args.seed, args.workers)
    init = load_model(str(args.init)) if args.init else None
    stats = replace(init.stats, detect_s2_offset=True) if init else compute_stats(tr_stack, tr_valid, args.seed)
    water_share = float((tr_label == 1).sum() / max((tr_label != IGNORE).sum(), 1))
    _log(f"chips ready in {time.time() - t0:.0f} s; water {water_share:.3%} of valid training pixels")
    tr_x, va_x = normalise(tr_stack, stats), normalise(va_stack, stats)
    del tr_stack, va_stack
    tr_y = (tr_label == 1).astype(np.float32)
    tr_m = tr_label != IGNORE

    if init:  # weights, architecture and statistics of the earlier model; training continues from them
        config, model = init.config, init.model.float()
    else:
        config = ModelConfig("tiny", "light", 1, decoder_channels=args.decoder_channels)
        model = build_model(config)
    params = sum(p.numel() for p in model.parameters())
    origin = f"from {args.init.name}" if args.init else "random init"
    _log(
        f"model terramind-tiny {config.layout}, decoder {config.decoder_channels} ch, "
        f"{params / 1e6:.2f} M parameters, {origin}"
    )
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    total = args.epochs * args.steps_per_epoch
    t_train = time.time()
    budget = args.budget_min * 60 - (t_train - t0) - 60  # a minute kept for the final save and check
    progress = 0.0

    def lr_factor() -> float:
        warm = min(1.0, (step + 1) / args.warmup_steps)
        return warm * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))

    best: dict[str, float] = {"iou": -1.0}
    best_state, best_epoch, bad, step = None, 0, 0, 0
    history = []
    stop = ""
    order = rng.permutation(len(tr_x))
    cursor = 0
    for epoch in range(1, args.epochs + 1):
        model.train()
        losses = []
        for b in range(args.steps_per_epoch):
            if cursor + args.batch > len(order):  # a new pass over the shuffled training chips
                order, cursor = rng.permutation(len(tr_x)), 0
            idx = np.sort(order[cursor : cursor + args.batch])
            cursor += args.batch
            for group in opt.param_groups:
                group["lr"] = args.lr * lr_factor()
            x, y, m = augment(
                torch.from_numpy(tr_x[idx].astype(np.float32)),
                torch.from_numpy(tr_y[idx]),
                torch.from_numpy(tr_m[idx]),
                rng,
            )
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                z = forward_binary_logits(model, x, 1)
            loss = bce_dice_loss(z.float(), y, m)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
            progress = max(step / total, (time.time() - t_train) / budget)
            if step % 25 == 0:
                rate = (time.time() - t_train) / step
                _log(
                    f"epoch {epoch} step {b + 1}/{args.steps_per_epoch}: loss {np.mean(losses[-25:]):.4f}, "
                    f"lr {args.lr * lr_factor():.2e}, {rate:.2f} s/step, progress {progress:.0%}"
                )
            if progress >= 1.0:
                break
        val = evaluate(model, va_x, va_label, 8)
        history.append(
            {
                "epoch": epoch,
                "steps": step,
                "loss": round(float(np.mean(losses)), 4),
                **{k: round(v, 4) for k, v in val.items()},
            }
        )
        _log(
            f"epoch {epoch}: loss {np.mean(losses):.4f}, val IoU {val['iou']:.4f} "
            f"(P {val['precision']:.3f}, R {val['recall']:.3f})"
        )
        if val["iou"] > best["iou"]:
            best, best_epoch, bad = val, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
            if bad >= args.patience:
                stop = f"early stop: no better val IoU for {args.patience} epochs"
                break
        if progress >= 1.0:
            used = f"wall-clock budget of {args.budget_min:.0f} min used (annealed)"
            stop = "step cap reached" if step >= total else used
            break
    if stop:
        _log(stop)
    assert best_state is not None
    model.load_state_dict(best_state)
    half = copy.deepcopy(model).half()  # fp16 on disk; the loader copies into an fp32 model
    recipe = {k: (v.name if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out"}
    if init:
        recipe["init_version"] = init.version
    save_checkpoint(
        args.out,
        half,
        config,
        stats,
        epoch=best_epoch,
        global_step=step,
        metrics={"val_iou": round(best["iou"], 4)},
        recipe=recipe,
        history=history,
        data="synthetic chips only (demo.synthetic.chips)",
    )
    stats_path = args.out.with_name(args.out.name + ".stats.json")
    stats_path.write_text(json.dumps(stats.to_dict(), indent=2) + "\n", encoding="utf-8")
    loaded = load_model(str(args.out))  # strict: proves the file loads as shipped
    check = evaluate(loaded.model, va_x, va_label, 8)
    size_mb = args.out.stat().st_size / 1e6
    _log(f"wrote {args.out.name} ({size_mb:.1f} MB, fp16); reloaded val IoU {check['iou']:.4f}")
    summary = {
        "checkpoint": args.out.name,
        "size_mb": round(size_mb, 1),
        "version": loaded.version,
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "steps": step,
        "val_iou": round(check["iou"], 4),
        "val_precision": round(check["precision"], 4),
        "val_recall": round(check["recall"], 4),
        "train_minutes": round((time.time() - t_train) / 60, 1),
        "total_minutes": round((time.time() - t0) / 60, 1),
        "stop": stop or "step cap reached",
        "history": history,
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
