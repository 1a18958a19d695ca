"""``glacial-lakes segment``: one S2 + S1 + DEM scene in, a water-probability COG out.

Inputs are analysis-ready files on any grids; S1 and the DEM are co-registered onto the S2
grid (bilinear). Expected scales:

* ``--s2``: one 12-band GeoTIFF, bands B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B11 B12
  (TerraMind order), surface reflectance × 10 000 on the harmonised pre-04.00 scale; 0 or the
  file's nodata tag is nodata. Baseline ≥ 04.00 products that still carry the +1000 DN offset
  are un-harmonised: ``--s2-offset 1000`` says so, ``0`` says the file is harmonised, and
  ``auto`` (the default) tests the file (every band's 1st percentile ≥ 950 DN means the offset
  is there) for models trained on harmonised reflectance (the spectral baseline, the shipped
  default model) and leaves the file as it is for other checkpoints, whose input convention
  is their own. The decision and its evidence are printed.
* ``--s1``: 2 bands, VV then VH backscatter in dB (used as given: no speckle filter).
* ``--dem``: 1 band, metres.

``hf://`` models are looked up in the Hugging Face cache named by ``HF_HUB_CACHE`` (else
``$HF_HOME/hub``), in the cache only when ``HF_HUB_OFFLINE`` is set (:class:`flows.settings.Settings`).

Exit status: 0 success, 2 bad input (one line naming the input), 1 anything else.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from flows.cli_support import BadInput, BoundedFloat, guarded, progress
from flows.settings import load_settings, prepare_prefect_environment
from tasks.defaults import WATER_THRESHOLD_BOUND

__all__ = ["segment_command"]


def _existing(option: str, path: Path) -> Path:
    if not path.is_file():
        raise BadInput(f"{option} {path}: no such file")
    return path


def _same_file(a: Path, b: Path) -> bool:
    """The same file: one resolved path, or (both existing) one inode, so a hard link counts too."""
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


def _check_outputs(inputs: dict[str, Path], outputs: dict[str, Path]) -> None:
    """Refuse an output that would overwrite an input (or the other output) before anything is read."""
    for out_option, out_path in outputs.items():
        for in_option, in_path in inputs.items():
            if _same_file(out_path, in_path):
                raise BadInput(f"{out_option} {out_path}: is the {in_option} input; choose another file")
    if len(outputs) == 2 and _same_file(*outputs.values()):
        raise BadInput(f"--mask-out {outputs['--mask-out']}: is the --out file; choose another file")


def _window_progress() -> Callable[[int, int], None]:
    shown = {"pct": -1}

    def report(done: int, total: int) -> None:
        pct = 100 * done // max(total, 1)
        if pct // 10 != shown["pct"] // 10 or done == total:
            shown["pct"] = pct
            progress(f"segment: {done}/{total} windows ({pct} %)")

    return report


@click.command("segment")
@click.option("--s2", required=True, type=click.Path(path_type=Path), help="12-band S2 L2A, reflectance ×10 000")
@click.option("--s1", required=True, type=click.Path(path_type=Path), help="2-band S1 GeoTIFF: VV, VH in dB")
@click.option("--dem", required=True, type=click.Path(path_type=Path), help="1-band DEM, metres")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="probability COG (float32, NaN nodata)")
@click.option("--mask-out", default=None, type=click.Path(path_type=Path), help="uint8 mask COG, 255 nodata")
@click.option(
    "--model", default=None, help="default | baseline | PATH | hf://org/repo/path (default GLACIAL_LAKES_MODEL)"
)
@click.option(
    "--threshold",
    default=None,
    type=BoundedFloat(WATER_THRESHOLD_BOUND),
    help=f"water if p > this, {WATER_THRESHOLD_BOUND.describe()} (default GLACIAL_LAKES_THRESHOLD)",
)
@click.option(
    "--s2-offset",
    "s2_offset",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "0", "1000"]),
    help="DN offset in the S2 file (1000: un-harmonised baseline ≥ 04.00; auto: test the file)",
)
@click.option("--tta/--no-tta", default=None, help="flip TTA, 4 passes per window (default GLACIAL_LAKES_TTA, on)")
@guarded
def segment_command(
    s2: Path,
    s1: Path,
    dem: Path,
    out: Path,
    mask_out: Path | None,
    model: str | None,
    threshold: float | None,
    s2_offset: str,
    tta: bool | None,
) -> None:
    """Segment lake water in one scene: S1 and DEM are co-registered onto the S2 grid."""
    settings = load_settings()
    prepare_prefect_environment(settings)  # tasks import prefect, which reads its settings at import
    inputs = {"--s2": s2, "--s1": s1, "--dem": dem}
    for option, path in inputs.items():
        _existing(option, path)
    _check_outputs(inputs, {"--out": out} | ({"--mask-out": mask_out} if mask_out is not None else {}))
    threshold = settings.threshold if threshold is None else threshold  # both checked against one bound
    spec = model or settings.model
    from models.registry import load_segmenter
    from models.segmenter import wants_harmonised_s2
    from tasks.segment import CoregisteredSource, s2_file_offset, segment_files

    with CoregisteredSource(s2, s1, dem):
        pass  # bad inputs fail here, before an expensive model is built
    progress(f"loading model {spec}")
    tta = settings.tta if tta is None else tta
    segmenter = load_segmenter(spec, tta, settings.hub, settings.inference_runtime)
    if s2_offset != "auto":
        offset = int(s2_offset)
    elif wants_harmonised_s2(segmenter):
        offset, reason = s2_file_offset(s2)
        progress(f"S2 offset: {reason}")
    else:
        offset = 0
        progress("S2 offset: none removed (this checkpoint does not declare its S2 convention; see --s2-offset)")
    progress(f"segmenting with {segmenter.name} ({segmenter.version})")
    prob, mask = segment_files(
        s2,
        s1,
        dem,
        out,
        spec,
        mask_path=mask_out,
        threshold=threshold,
        s2_offset=offset,
        tta=tta,
        progress=_window_progress(),
        hub=settings.hub,
        runtime=settings.inference_runtime,
    )
    click.echo(f"probability written to {prob}" + (f"; mask to {mask}" if mask else ""))
