"""``glacial-lakes segment``: exit 2 on bad inputs; a release-layout checkpoint reproduces CryoSentinel's protocol."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner

from flows.segment_cli import segment_command
from models.checkpoint import write_release_checkpoint
from tests.helpers.rasters import write_bands


def _inputs(tmp_path: Path, size: int = 224) -> dict[str, np.ndarray | Path]:
    """S2 (uint16, 0 = nodata), S1 (float32 dB, NaN holes), DEM (int16, −32768 nodata) on one grid."""
    rng = np.random.default_rng(7)
    s2 = rng.integers(200, 6000, (12, size, size)).astype(np.uint16)
    s2[:, :8, :8] = 0
    s1 = rng.uniform(-28, -3, (2, size, size)).astype(np.float32)
    s1[:, 100:104, 50:60] = np.nan
    dem = rng.integers(3500, 5200, (1, size, size)).astype(np.int16)
    dem[:, 200:, 200:] = -32768
    return {
        "s2": s2,
        "s1": s1,
        "dem": dem,
        "s2_path": write_bands(tmp_path / "s2.tif", s2, "uint16"),
        "s1_path": write_bands(tmp_path / "s1.tif", s1, "float32"),
        "dem_path": write_bands(tmp_path / "dem.tif", dem, "int16", nodata=-32768),
    }


def _run(tmp_path: Path, s2: Path, s1: Path, dem: Path, *extra: str) -> tuple[int, str]:
    args = ["--s2", str(s2), "--s1", str(s1), "--dem", str(dem), "--out", str(tmp_path / "out" / "prob.tif"), *extra]
    env = {"GLACIAL_LAKES_HOME": str(tmp_path / "home"), "GLACIAL_LAKES_MODEL": "baseline"}
    result = CliRunner().invoke(segment_command, args, env=env)
    return result.exit_code, result.output.strip()


def _last_line(out: str) -> str:
    return out.splitlines()[-1]


def test_bad_inputs_exit_2_with_one_line_naming_the_input(tmp_path: Path) -> None:
    ok = _inputs(tmp_path)
    s2, s1, dem = ok["s2_path"], ok["s1_path"], ok["dem_path"]
    eleven = write_bands(tmp_path / "s2_11.tif", np.asarray(ok["s2"])[:11], "uint16")
    no_crs = write_bands(tmp_path / "s1_nocrs.tif", np.asarray(ok["s1"]), "float32", crs=None)
    far = write_bands(tmp_path / "dem_far.tif", np.asarray(ok["dem"]), "int16", origin=(300_000.0, 1_000_000.0))
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"II*\x00garbage")
    cases = [
        ((eleven, s1, dem), "expected 12 band(s), found 11", eleven),
        ((s2, no_crs, dem), "has no CRS", no_crs),
        ((s2, s1, far), "does not overlap the S2 grid", far),
        ((junk, s1, dem), "cannot be read", junk),
        ((tmp_path / "absent.tif", s1, dem), "no such file", tmp_path / "absent.tif"),
    ]
    for (a, b, c), needle, named in cases:
        code, out = _run(tmp_path, a, b, c)
        assert code == 2, out
        line = _last_line(out)
        assert needle in line and str(named) in line, line
    code, out = _run(tmp_path, s2, s1, dem, "--model", str(tmp_path / "weights.ckpt"))
    assert code == 2 and "weights.ckpt" in _last_line(out)
    assert not (tmp_path / "out" / "prob.tif").exists()


def test_baseline_run_writes_probability_and_mask_cogs(tmp_path: Path) -> None:
    ok = _inputs(tmp_path)
    mask = tmp_path / "out" / "mask.tif"
    code, out = _run(tmp_path, ok["s2_path"], ok["s1_path"], ok["dem_path"], "--mask-out", str(mask))
    assert code == 0, out
    with rasterio.open(tmp_path / "out" / "prob.tif") as ds:
        prob = ds.read(1)
        assert ds.dtypes[0] == "float32" and np.isnan(ds.nodata) and ds.crs.to_epsg() == 32643
    with rasterio.open(mask) as ds:
        m = ds.read(1)
        assert ds.nodata == 255
    invalid = np.zeros((224, 224), bool)
    invalid[:8, :8] = invalid[100:104, 50:60] = invalid[200:, 200:] = True
    assert np.isnan(prob[invalid]).all() and np.isfinite(prob[~invalid]).all()
    assert (m[invalid] == 255).all() and set(np.unique(m[~invalid])) <= {0, 1}


def _published_protocol(ckpt: Path, s2: np.ndarray, s1: np.ndarray, dem: np.ndarray, tta: bool = True) -> np.ndarray:
    """CryoSentinel's inference on one chip, written from the spec alone (§1.5, §1.6, §2.1, §2.5)."""
    from terratorch.models import EncoderDecoderFactory

    model = EncoderDecoderFactory().build_model(
        task="segmentation",
        backbone="terramind_v1_tiny",
        backbone_pretrained=False,
        backbone_modalities=["S2L2A", "S1GRD", "DEM"],
        necks=[
            {"name": "SelectIndices", "indices": [2, 5, 8, 11]},
            {"name": "ReshapeTokensToImage", "remove_cls_token": False},
            {"name": "LearnedInterpolateToPyramidal"},
        ],
        decoder="UperNetDecoder",
        decoder_channels=256,
        decoder_scale_modules=True,
        num_classes=1,
    )
    sd = torch.load(ckpt, weights_only=True)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in sd.items()}, strict=True)
    model.eval()
    s2_mean = [857.6, 1044.0, 1356.7, 1574.4, 1786.2, 2076.5, 2215.2, 2277.8, 2348.5, 2243.7, 2665.0, 2217.2]
    s2_std = [626.3, 709.2, 748.7, 825.5, 773.5, 786.1, 810.8, 834.9, 833.6, 729.6, 875.7, 851.3]
    x2 = np.clip(s2.astype(np.float32), 0, 16000)
    x1 = np.nan_to_num(s1.astype(np.float32), nan=-25.0, posinf=5.0, neginf=-30.0)
    xd = np.clip(dem.astype(np.float32), -500, 9000)

    def z(a: np.ndarray, m: list[float], s: list[float]) -> torch.Tensor:
        return ((torch.from_numpy(a) - torch.tensor(m).view(-1, 1, 1)) / torch.tensor(s).view(-1, 1, 1))[None]

    batch = {
        "S2L2A": z(x2, s2_mean, s2_std),
        "S1GRD": z(x1, [-9.25, -18.0], [5.90, 5.92]),
        "DEM": z(xd, [4299.8], [901.0]),
    }
    flips = ((), (-1,), (-2,), (-2, -1)) if tta else ((),)
    with torch.no_grad():  # the four flipped copies in one batch, un-flipped after
        out = model({k: torch.cat([v.flip(d) if d else v for d in flips]) for k, v in batch.items()}).output
    logits = [o.flip(d) if d else o for o, d in zip(out, flips, strict=True)]
    return torch.sigmoid(torch.stack(logits).mean(0)).numpy()


@pytest.mark.parametrize("tta", [True, False])
def test_release_checkpoint_reproduces_the_published_protocol(tmp_path: Path, tta: bool) -> None:
    """``segment --model FILE.ckpt`` (release layout) equals their normalisation + flip TTA + sigmoid (or one pass)."""
    ok = _inputs(tmp_path)
    ckpt = write_release_checkpoint(tmp_path / "soup.ckpt", "tiny", seed=5)
    extra = () if tta else ("--no-tta",)
    code, out = _run(tmp_path, ok["s2_path"], ok["s1_path"], ok["dem_path"], "--model", str(ckpt), *extra)
    assert code == 0, out
    assert "segment: 1/1 windows" in out and "terramind-tiny" in out
    with rasterio.open(tmp_path / "out" / "prob.tif") as ds:
        ours = ds.read(1)
    expected = _published_protocol(ckpt, np.asarray(ok["s2"]), np.asarray(ok["s1"]), np.asarray(ok["dem"]), tta)
    valid = np.isfinite(ours)
    assert valid.sum() == 224 * 224 - 64 - 40 - 24 * 24
    assert np.abs(ours[valid] - expected[valid]).max() < 1e-4
    assert expected[valid].std() > 1e-4  # a non-constant map: the comparison means something


@pytest.mark.parametrize("offset", ["1000", "auto"])
def test_s2_offset_option_removes_the_baseline_offset(tmp_path: Path, offset: str) -> None:
    """With --s2-offset 1000 (or found by auto) a product carrying +1000 DN gives its harmonised twin's result."""
    ok = _inputs(tmp_path)
    code, _ = _run(tmp_path, ok["s2_path"], ok["s1_path"], ok["dem_path"])
    with rasterio.open(tmp_path / "out" / "prob.tif") as ds:
        harmonised = ds.read(1)
    raw = np.asarray(ok["s2"]).astype(np.int32)
    shifted = write_bands(tmp_path / "s2_raw.tif", np.where(raw > 0, raw + 1000, 0), "uint16")
    code2, out = _run(tmp_path, shifted, ok["s1_path"], ok["dem_path"], "--s2-offset", offset)
    assert code == code2 == 0, out
    assert ("1000 removed" in out) == (offset == "auto")  # auto says what it decided and why
    with rasterio.open(tmp_path / "out" / "prob.tif") as ds:
        np.testing.assert_allclose(ds.read(1), harmonised, equal_nan=True, atol=1e-6)


def test_auto_offset_leaves_a_harmonised_file_alone(tmp_path: Path) -> None:
    ok = _inputs(tmp_path)
    code, out = _run(tmp_path, ok["s2_path"], ok["s1_path"], ok["dem_path"])
    assert code == 0 and "no +1000 offset in S2" in out, out


def test_auto_offset_never_touches_a_release_checkpoints_input(tmp_path: Path) -> None:
    """A checkpoint that does not declare its S2 convention gets the file as it is, even if it looks offset."""
    ok = _inputs(tmp_path)
    raw = np.asarray(ok["s2"]).astype(np.int32)
    shifted = np.where(raw > 0, raw + 1000, 0)
    s2_path = write_bands(tmp_path / "s2_raw.tif", shifted, "uint16")
    ckpt = write_release_checkpoint(tmp_path / "soup.ckpt", "tiny", seed=5)
    code, out = _run(tmp_path, s2_path, ok["s1_path"], ok["dem_path"], "--model", str(ckpt))
    assert code == 0 and "none removed" in out, out
    with rasterio.open(tmp_path / "out" / "prob.tif") as ds:
        ours = ds.read(1)
    expected = _published_protocol(ckpt, shifted, np.asarray(ok["s1"]), np.asarray(ok["dem"]))
    valid = np.isfinite(ours)
    assert np.abs(ours[valid] - expected[valid]).max() < 1e-4
