"""``glacial-lakes train``: fine-tune a TerraMind segmenter on our stacks and inventory labels.

Scenes are stack COGs written by the pipeline (``--stack``, 15 bands + valid mask) and/or
S2,S1,DEM triplets on any grids (``--triplet``, co-registered onto the S2 grid like
``glacial-lakes segment``). Labels (``--labels``) are inventory polygons (GeoJSON, GPKG, any
CRS) or a label raster (> 0 water). Chips are split into train/val/test by CryoSentinel's
spatial block split. The checkpoint written is loadable with ``--model FILE``.

An ``hf://`` ``--init`` is looked up in the Hugging Face cache named by ``HF_HUB_CACHE`` (else
``$HF_HOME/hub``), in the cache only when ``HF_HUB_OFFLINE`` is set (:class:`flows.settings.Settings`).

Exit status: 0 success, 2 bad input (one line naming the input), 1 anything else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from flows.cli_support import BadInput, BoundedFloat, BoundedInt, guarded
from flows.settings import load_settings, prepare_prefect_environment
from tasks.defaults import Bound

__all__ = ["train_command"]


def _progress(step: str) -> None:
    click.echo(f"» {step}", err=True)


def _scenes(stacks: tuple[Path, ...], triplets: tuple[str, ...], labels: Path) -> list[Any]:
    from models.train import load_scene
    from tasks.segment import CoregisteredSource
    from tasks.stack import StackReader

    scenes = []
    for path in stacks:
        if not path.is_file():
            raise BadInput(f"--stack {path}: no such file")
        with StackReader(path, strict=False) as source:  # any 15-band raster, not only the pipeline's
            scenes.append(load_scene(source, labels, name=str(path)))
    for spec in triplets:
        parts = [Path(p) for p in spec.split(",")]
        if len(parts) != 3:
            raise BadInput(f"--triplet {spec}: expected S2,S1,DEM (three comma-separated paths)")
        for p in parts:
            if not p.is_file():
                raise BadInput(f"--triplet {spec}: {p}: no such file")
        with CoregisteredSource(parts[0], parts[1], parts[2]) as source:
            scenes.append(load_scene(source, labels, name=spec))
    if not scenes:
        raise BadInput("no training scenes: give --stack and/or --triplet")
    return scenes


@click.command("train")
@click.option("--stack", "stacks", multiple=True, type=click.Path(path_type=Path), help="stack COG (repeatable)")
@click.option("--triplet", "triplets", multiple=True, help="S2.tif,S1.tif,DEM.tif (repeatable)")
@click.option("--labels", required=True, type=click.Path(path_type=Path), help="lake polygons or a label raster")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="checkpoint to write (.ckpt)")
@click.option("--variant", default="tiny", show_default=True, type=click.Choice(["tiny", "small", "base", "large"]))
@click.option("--layout", default="light", show_default=True, type=click.Choice(["light", "heavy"]))
@click.option("--classes", "num_classes", default=1, show_default=True, type=click.Choice(["1", "2"]))
@click.option("--init", default=None, help="TerraMind backbone or model checkpoint, PATH | hf://… (default: random)")
@click.option("--stats", default="cryosentinel", show_default=True, help="cryosentinel | terramind_pretrain | FILE")
@click.option("--epochs", default=10, show_default=True, type=BoundedInt(1))
@click.option("--batch-size", default=4, show_default=True, type=int, help="≥ 2 (BatchNorm)")
@click.option("--lr", default=1e-4, show_default=True, type=BoundedFloat(Bound(0.0, 1.0, low_open=True)))
@click.option("--patience", default=3, show_default=True, type=BoundedInt(1), help="early stopping, epochs")
@click.option(
    "--block-size",
    default=0.15,
    show_default=True,
    type=BoundedFloat(Bound(0.0, low_open=True)),
    help="split block, degrees",
)
@click.option(
    "--buffer",
    "buffer_deg",
    default=0.02,
    show_default=True,
    type=BoundedFloat(Bound(0.0)),
    help="split buffer, degrees",
)
@click.option("--seed", default=42, show_default=True, type=int)
@guarded
def train_command(
    stacks: tuple[Path, ...],
    triplets: tuple[str, ...],
    labels: Path,
    out: Path,
    variant: str,
    layout: str,
    num_classes: str,
    init: str | None,
    stats: str,
    epochs: int,
    batch_size: int,
    lr: float,
    patience: int,
    block_size: float,
    buffer_deg: float,
    seed: int,
) -> None:
    """Fine-tune TerraMind on stacks and inventory labels; write a checkpoint."""
    settings = load_settings()
    prepare_prefect_environment(settings)  # tasks import prefect, which reads its settings at import
    if not labels.is_file():
        raise BadInput(f"--labels {labels}: no such file")
    inputs = [labels, *stacks, *(Path(p) for spec in triplets for p in spec.split(","))]
    if any(out.resolve() == path.resolve() for path in inputs):
        raise BadInput(f"--out {out}: is one of the inputs; choose another file")
    from models.normalisation import load_stats
    from models.terramind import ModelConfig
    from models.train import BlockSplit, TrainConfig, train

    cfg = TrainConfig(
        model=ModelConfig(variant, layout, int(num_classes)),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        patience=patience,
        split=BlockSplit(block_size, buffer_deg),
        seed=seed,
    )
    norm = load_stats(stats)
    _progress("reading scenes and labels")
    scenes = _scenes(stacks, triplets, labels)
    hub = settings.hub
    result = train(scenes, out, cfg, init=init, stats=norm, hub=hub, progress=_progress)
    best = f"best epoch {result.best_epoch}, val IoU {result.best_val_iou:.4f}"
    click.echo(f"checkpoint written to {result.path} ({best})")
