"""Fine-tuning a TerraMind segmenter on our stacks and inventory labels.

Data: scenes (15-band stacks, NaN nodata, with a valid mask) and labels rasterised onto each
scene grid from inventory polygons (``all_touched``, as CryoSentinel did) or warped from a
label raster (nearest; > 0 water, nodata unknown). Scenes are cut into 224-px chips at stride
112; chips with under ``min_valid`` valid pixels are dropped.

Split: CryoSentinel's spatial block split (spec §5): the chip centre's (lat, lon) falls in a
block of ``block_size_deg``; ``sha1("<salt>|<lat_idx>|<lon_idx>")[:8] mod 100`` < 80 → train,
< 90 → val, else test; centres within ``buffer_deg`` of a block edge are dropped. The split
does not depend on the year, so a place stays in one split.

Loss: BCE + soft Dice over valid pixels. AdamW. Validation: hard IoU at 0.5 over the whole
split (ΣI/ΣU). Early stopping on it; the best epoch's weights are written in the loader's
Lightning-like format with the config and statistics (:func:`models.checkpoint.save_checkpoint`).
Training needs batches of at least 2 (BatchNorm in the neck and decoder); a last batch of one
is dropped. Chips are held in memory (about 3 MB each).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from core.errors import InputError, InventoryFileError, RasterInputError, SettingsError
from models.checkpoint import (
    config_of,
    load_backbone,
    parse_checkpoint,
    read_checkpoint,
    resolve_weights,
    save_checkpoint,
    strict_load,
)
from models.hub import DEFAULT_HUB, HubCache
from models.inference import resolve_device, window_starts
from models.normalisation import NormStats, load_stats, prepare_stack
from models.terramind import ModelConfig, build_model, forward_binary_logits

__all__ = ["BlockSplit", "Chips", "TrainConfig", "TrainResult", "TrainScene", "load_scene", "make_chips", "train"]


@dataclass(frozen=True)
class BlockSplit:
    """CryoSentinel's deterministic spatial block split (degrees, EPSG:4326)."""

    block_size_deg: float = 0.15
    buffer_deg: float = 0.02
    salt: str = "cryosentinel-blocks-v1"

    def __post_init__(self) -> None:
        """The buffer must leave some of each block."""
        if self.block_size_deg <= 0 or not 0 <= self.buffer_deg < self.block_size_deg / 2:
            raise SettingsError(
                f"need block size > 0 and 0 ≤ buffer < block/2, got {self.block_size_deg}/{self.buffer_deg}"
            )

    def split_for(self, lat: float, lon: float) -> str:
        """``train`` | ``val`` | ``test`` | ``BUFFER`` for a chip centre."""
        size = self.block_size_deg
        fy, fx = (lat / size) % 1.0, (lon / size) % 1.0
        if min(fy, 1 - fy) * size < self.buffer_deg or min(fx, 1 - fx) * size < self.buffer_deg:
            return "BUFFER"
        key = f"{self.salt}|{math.floor(lat / size)}|{math.floor(lon / size)}".encode()
        bucket = int(hashlib.sha1(key).hexdigest()[:8], 16) % 100
        return "train" if bucket < 80 else "val" if bucket < 90 else "test"


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tuning settings (learning rate per step, sizes in px)."""

    model: ModelConfig = field(default_factory=lambda: ModelConfig("tiny", "light", 1))
    epochs: int = 10
    batch_size: int = 4
    lr: float = 1e-4
    weight_decay: float = 1e-4
    patience: int = 3
    """Epochs without a better validation IoU before stopping."""
    chip: int = 224
    stride: int = 112
    min_valid: float = 0.1
    """Smallest share of valid pixels a chip needs."""
    split: BlockSplit = field(default_factory=BlockSplit)
    augment: bool = True
    """Random H/V flips of training chips (no rotations: TerraMind's positions are absolute)."""
    seed: int = 42
    device: str = "auto"

    def __post_init__(self) -> None:
        """Batch ≥ 2: BatchNorm fails on single-sample batches in train mode."""
        if self.batch_size < 2:
            raise SettingsError(f"batch size must be ≥ 2 (BatchNorm), got {self.batch_size}")
        if self.epochs < 1:
            raise SettingsError(f"epochs must be ≥ 1, got {self.epochs}")


@dataclass(frozen=True, eq=False)
class TrainScene:
    """One scene for training: stack, valid mask and labels on one grid.

    Attributes:
        stack: float32 ``(15, H, W)``, STACK_BANDS order, NaN nodata.
        valid: bool ``(H, W)``: stack usable and label known.
        labels: uint8 ``(H, W)``: 1 water, 0 not.
        crs: The grid's CRS (anything ``pyproj`` accepts).
        transform: Affine pixel-corner → CRS coefficients ``(a, b, c, d, e, f)``.
        name: For messages.
    """

    stack: NDArray[np.float32]
    valid: NDArray[np.bool_]
    labels: NDArray[np.uint8]
    crs: Any
    transform: tuple[float, ...]
    name: str = "scene"


@dataclass(frozen=True, eq=False)
class Chips:
    """Normalised chips of one split: x ``(N,15,c,c)`` float32, y ``(N,c,c)`` float32, m ``(N,c,c)`` bool."""

    x: NDArray[np.float32]
    y: NDArray[np.float32]
    m: NDArray[np.bool_]

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True)
class TrainResult:
    """Where the checkpoint went and how training went."""

    path: Path
    best_epoch: int
    best_val_iou: float
    history: tuple[dict[str, float], ...]
    counts: dict[str, int]


def make_chips(scenes: Sequence[TrainScene], stats: NormStats, cfg: TrainConfig) -> dict[str, Chips]:
    """Cuts scenes into chips and assigns each to a split by its centre (see module docstring)."""
    from pyproj import Transformer

    parts: dict[str, list[tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.bool_]]]]
    parts = {"train": [], "val": [], "test": []}
    c = cfg.chip
    for scene in scenes:
        _, h, w = scene.stack.shape
        if h < c or w < c:
            raise RasterInputError(f"{scene.name}: {h}×{w} px is smaller than one {c}-px chip")
        to_ll = Transformer.from_crs(scene.crs, 4326, always_xy=True)
        a, b, x0, d, e, y0 = scene.transform[:6]
        for r in window_starts(h, c, cfg.stride):
            for col in window_starts(w, c, cfg.stride):
                m = scene.valid[r : r + c, col : col + c]
                if m.mean() < cfg.min_valid:
                    continue
                cx, cy = col + c / 2, r + c / 2
                lon, lat = to_ll.transform(a * cx + b * cy + x0, d * cx + e * cy + y0)
                split = cfg.split.split_for(lat, lon)
                if split in parts:
                    x = prepare_stack(scene.stack[:, r : r + c, col : col + c], stats)
                    parts[split].append((x, scene.labels[r : r + c, col : col + c].astype(np.float32), m.copy()))
    empty = Chips(np.zeros((0, 15, c, c), np.float32), np.zeros((0, c, c), np.float32), np.zeros((0, c, c), bool))

    def stacked(items: list[tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.bool_]]]) -> Chips:
        if not items:
            return empty
        return Chips(np.stack([i[0] for i in items]), np.stack([i[1] for i in items]), np.stack([i[2] for i in items]))

    return {name: stacked(items) for name, items in parts.items()}


def bce_dice_loss(z: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """BCE (mean over valid pixels) + soft Dice (smooth 1, over the batch's valid pixels)."""
    mf = m.float()
    n = mf.sum().clamp(min=1.0)
    bce = (F.binary_cross_entropy_with_logits(z, y, reduction="none") * mf).sum() / n
    p = torch.sigmoid(z) * mf
    dice = 1 - (2 * (p * y).sum() + 1) / (p.sum() + (y * mf).sum() + 1)
    return bce + dice


def _init_model(cfg: TrainConfig, init: str | None, hub: HubCache) -> tuple[torch.nn.Module, ModelConfig, str]:
    if init is None:
        return build_model(cfg.model), cfg.model, "random"
    path = resolve_weights(init, hub)
    parsed = parse_checkpoint(read_checkpoint(path))
    if parsed.kind == "backbone":
        model = build_model(cfg.model)
        return model, cfg.model, f"backbone {init} ({load_backbone(model, path)[:16]})"
    config = config_of(parsed)  # continue from a full model: its architecture wins
    model = build_model(config)
    strict_load(model, parsed.state_dict, config)
    return model, config, f"model {init}"


def _batches(n: int, size: int, rng: np.random.Generator | None) -> list[NDArray[np.intp]]:
    order = rng.permutation(n) if rng is not None else np.arange(n)
    out = [order[i : i + size] for i in range(0, n, size)]
    return [b for b in out if len(b) >= 2] if rng is not None else out  # train: no batch of one


def _evaluate(model: torch.nn.Module, chips: Chips, ncls: int, device: torch.device, size: int) -> float:
    model.eval()
    inter = union = 0.0
    with torch.inference_mode():
        for idx in _batches(len(chips), size, None):
            z = forward_binary_logits(model, torch.from_numpy(chips.x[idx]).to(device), ncls).float().cpu().numpy()
            pred, truth, m = z > 0, chips.y[idx] > 0.5, chips.m[idx]
            inter += float((pred & truth & m).sum())
            union += float(((pred | truth) & m).sum())
    return inter / union if union else 1.0


def train(
    scenes: Sequence[TrainScene],
    out_path: str | Path,
    cfg: TrainConfig = TrainConfig(),
    *,
    init: str | None = None,
    stats: NormStats | None = None,
    hub: HubCache = DEFAULT_HUB,
    progress: Callable[[str], None] | None = None,
) -> TrainResult:
    """Fine-tunes and writes the best epoch's checkpoint to ``out_path``.

    Args:
        scenes: Training scenes (any number; chips are split by place).
        out_path: Checkpoint to write (Lightning-like, loadable by :func:`models.checkpoint.load_model`).
        cfg: Settings.
        init: None (random), a TerraMind backbone checkpoint, or a full model checkpoint (path or hf://).
        stats: Normalisation statistics (default CryoSentinel's); stored in the checkpoint.
        hub: Hugging Face cache folder and offline flag for ``hf://`` inits.
        progress: Called with one line per stage and epoch.

    Raises:
        InputError: No training or no validation chips (try a smaller block size).
    """
    say = progress or (lambda _msg: None)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    stats = stats or load_stats()
    chips = make_chips(scenes, stats, cfg)
    counts = {k: len(v) for k, v in chips.items()}
    say(f"chips: {counts['train']} train, {counts['val']} val, {counts['test']} test")
    if counts["train"] < 2 or counts["val"] < 1:
        raise InputError(
            f"block split left {counts['train']} train and {counts['val']} val chips; "
            "more scenes or a smaller block size are needed"
        )
    model, config, origin = _init_model(cfg, init, hub)
    say(f"model terramind-{config.variant} ({config.layout}, {config.num_classes}-class) from {origin}")
    device = resolve_device(cfg.device)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999))
    best, best_epoch, bad, step = -1.0, 0, 0, 0
    history: list[dict[str, float]] = []
    tr = chips["train"]
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        losses = []
        for idx in _batches(len(tr), cfg.batch_size, rng):
            x, y, m = (torch.from_numpy(a[idx]).to(device) for a in (tr.x, tr.y, tr.m))
            if cfg.augment:
                for dim in (-1, -2):
                    flip = torch.from_numpy(rng.random(len(idx)) < 0.5).to(device)
                    x = torch.where(flip[:, None, None, None], x.flip(dim), x)
                    y, m = (torch.where(flip[:, None, None], t.flip(dim), t) for t in (y, m))
            loss = bce_dice_loss(forward_binary_logits(model, x, config.num_classes), y, m)
            opt.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
        iou = _evaluate(model, chips["val"], config.num_classes, device, cfg.batch_size)
        history.append({"epoch": epoch, "loss": float(np.mean(losses)) if losses else float("nan"), "val_iou": iou})
        say(f"epoch {epoch}/{cfg.epochs}: loss {history[-1]['loss']:.4f}, val IoU {iou:.4f}")
        if iou > best:
            best, best_epoch, bad = iou, epoch, 0
            save_checkpoint(
                out_path,
                model,
                config,
                stats,
                epoch=epoch,
                global_step=step,
                metrics={"val_iou": iou},
                split=dict(counts),
                init=origin,
            )
        else:
            bad += 1
            if bad >= cfg.patience:
                say(f"early stop: no better val IoU for {cfg.patience} epochs")
                break
    return TrainResult(Path(out_path), best_epoch, best, tuple(history), counts)


# --- I/O ---------------------------------------------------------------------------------------


def _labels_on_grid(
    labels: str | Path, crs: Any, transform: Any, shape: tuple[int, int]
) -> tuple[NDArray[np.uint8], NDArray[np.bool_]]:
    """Label raster (1 water / 0 not) and where it is known, on a grid."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.features import rasterize
    from rasterio.warp import reproject

    path = Path(labels)
    if path.suffix.lower() in {".geojson", ".json", ".gpkg", ".shp", ".fgb"}:
        import geopandas as gpd
        from shapely import make_valid

        gdf = gpd.read_file(path)
        if gdf.crs is None:
            raise InventoryFileError(f"{path}: labels have no CRS")
        geoms = [make_valid(g) for g in gdf.to_crs(crs).geometry if g is not None and not g.is_empty]
        if not geoms:  # no lake in the scene: every pixel is known land
            return np.zeros(shape, np.uint8), np.ones(shape, bool)
        burnt = rasterize(
            ((g, 1) for g in geoms),
            out_shape=shape,
            transform=transform,
            fill=0,
            all_touched=True,
            dtype="uint8",
        )
        return burnt, np.ones(shape, bool)
    out = np.full(shape, np.nan, np.float32)
    with rasterio.open(path) as ds:
        if ds.crs is None:
            raise RasterInputError(f"{path}: label raster has no CRS")
        reproject(
            rasterio.band(ds, 1),
            out,
            src_nodata=ds.nodata,
            dst_transform=transform,
            dst_crs=crs,
            dst_nodata=np.nan,
            resampling=Resampling.nearest,
        )
    known = np.isfinite(out)
    return np.where(known & (out > 0), 1, 0).astype(np.uint8), known


def load_scene(source: Any, labels: str | Path, name: str = "scene") -> TrainScene:
    """Reads a whole scene from a row source with ``crs``/``transform`` and puts labels on its grid."""
    stack, valid = source.read_rows(0, source.height)
    lab, known = _labels_on_grid(labels, source.crs, source.transform, (source.height, source.width))
    stack = stack.astype(np.float32, copy=False)
    return TrainScene(stack, valid & known, lab, source.crs, tuple(source.transform)[:6], name)
