"""Co-registration of S1 and the DEM against S2: phase-correlation accuracy and the pipeline's rule.

Acceptance: a synthetic S2-like field and an S1/DEM copy misregistered by a known sub-pixel offset
come onto the S2 grid through ``prepare_stack`` with a residual ≤ 0.25 px; an offset the
estimator is not confident about is recorded and left alone.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from tasks.coregister import (
    MAX_SHIFT_PX,
    MIN_PIXELS,
    best_window,
    feature_image,
    measure_shift,
)
from tasks.preprocess import read_s1
from tasks.scene import prepare_stack
from tasks.stack import StackReader
from tests.helpers.coregistration import field, write_pair

OFFSET = (0.37, -0.62)


def _image(seed: int = 3, n: int = 200) -> np.ndarray:
    return 1000.0 * field(n - 32, seed)  # field() adds a 16 px margin on each side


@pytest.mark.parametrize("offset", [OFFSET, (1.25, 0.4), (-0.9, -1.6), (0.0, 0.0)])
def test_measure_shift_recovers_a_known_subpixel_offset(offset: tuple[float, float]) -> None:
    """The moving copy's content ``offset`` px south/east is read as ``offset`` to 0.05 px."""
    ref = _image()
    moving = ndimage.shift(ref, offset, order=3, mode="nearest")
    est = measure_shift(ref, moving, np.ones(ref.shape, bool))
    assert est is not None
    assert math.hypot(est.dy - offset[0], est.dx - offset[1]) <= 0.05
    assert est.confident, est


def test_agrees_with_scikit_image_where_it_is_installed() -> None:
    """The numpy upsampled-DFT refinement gives scikit-image's answer (with the opposite sign)."""
    registration = pytest.importorskip("skimage.registration")
    ref = _image(seed=5)
    moving = ndimage.shift(ref, (-0.43, 0.71), order=3, mode="nearest")
    ok = np.ones(ref.shape, bool)
    window = np.outer(np.hanning(ref.shape[0]), np.hanning(ref.shape[1]))
    theirs, _, _ = registration.phase_cross_correlation(
        feature_image(ref, ok) * window, feature_image(moving, ok) * window, upsample_factor=100, normalization=None
    )
    est = measure_shift(ref, moving, ok)
    assert est is not None
    np.testing.assert_allclose([est.dy, est.dx], -np.asarray(theirs), atol=0.011)


def test_a_shared_nodata_border_does_not_pull_the_offset_to_zero() -> None:
    """NaN strips at the same place in both images draw no edge of their own (no false zero peak)."""
    ref = _image()
    moving = ndimage.shift(ref, (0.6, 0.8), order=3, mode="nearest")
    for a in (ref, moving):
        a[:, :40] = np.nan
        a[150:, :] = np.nan
    est = measure_shift(ref, moving, np.ones(ref.shape, bool))
    assert est is not None and math.hypot(est.dy - 0.6, est.dx - 0.8) <= 0.05


def test_too_few_usable_pixels_measure_nothing() -> None:
    ref = _image()
    usable = np.zeros(ref.shape, bool)
    usable[:10, : MIN_PIXELS // 10 - 1] = True
    assert measure_shift(ref, ref, usable) is None


def test_best_window_picks_the_covered_part() -> None:
    usable = np.zeros((3000, 3000), bool)
    usable[2000:, 2000:] = True
    rows, cols = best_window(usable, 1024)
    assert (rows.start, cols.start) == (3000 - 1024, 3000 - 1024)
    assert best_window(np.ones((300, 500), bool), 1024) == (slice(0, 300), slice(0, 500))


def _stack(pair, out: Path) -> tuple[dict[str, dict[str, object]], dict[str, np.ndarray]]:
    info = prepare_stack(pair.plan, pair.grid, out)
    record = json.loads(dict(info.quality)["coregistration"])
    with StackReader(info) as stack:
        bands = {b: stack.read_band(b) for b in ("B08", "VV", "DEM")}
    return record, bands


def test_pipeline_brings_a_shifted_s1_and_dem_onto_the_s2_grid(tmp_path: Path) -> None:
    """S1 and DEM misregistered by (0.37, −0.62) px leave prepare_stack with a residual ≤ 0.25 px."""
    pair = write_pair(tmp_path / "in", OFFSET, (-0.55, 0.48))
    record, bands = _stack(pair, tmp_path / "out")
    # Georeferencing alone leaves the offset (this is what the correction has to remove).
    plain = read_s1(pair.plan.s1.asset("vv"), pair.plan.s1.asset("vh"), pair.grid)
    before = measure_shift(bands["B08"], plain[0], np.isfinite(bands["B08"]))
    assert before is not None and math.hypot(before.dy - OFFSET[0], before.dx - OFFSET[1]) <= 0.1
    for name, band, true in (("s1", "VV", pair.offset_s1), ("dem", "DEM", pair.offset_dem)):
        rec = record[name]
        assert rec["applied"] is True, rec
        measured = rec["measured"]
        assert isinstance(measured, dict)
        # The residual from the truth: what was applied against what was there.
        residual = math.hypot(float(measured["dy"]) - true[0], float(measured["dx"]) - true[1])
        assert residual <= 0.25, (name, residual)
        # … and as the estimator sees it in the written stack.
        seen = measure_shift(bands["B08"], bands[band], np.isfinite(bands["B08"]))
        assert seen is not None and seen.magnitude <= 0.25, (name, seen)
        assert rec["residual"] is not None


def test_unrelated_s1_is_recorded_and_not_corrected(tmp_path: Path) -> None:
    """S1 from another field: a measurement without confidence is recorded, the data left as read."""
    pair = write_pair(tmp_path / "in", (0.0, 0.0), s1_unrelated=True)
    record, bands = _stack(pair, tmp_path / "out")
    s1 = record["s1"]
    assert s1["applied"] is False and s1["reason"].startswith("not confident")
    assert s1["measured"] is not None and s1["residual"] is None
    plain = read_s1(pair.plan.s1.asset("vv"), pair.plan.s1.asset("vh"), pair.grid)
    # As read, within the stack's stored precision (0.05 dB steps: ±0.025 dB).
    np.testing.assert_allclose(bands["VV"], plain[0], rtol=0, atol=0.025 + 1e-5)


def test_an_offset_above_the_cap_is_measured_not_corrected(tmp_path: Path) -> None:
    """A 2.5 px offset is read correctly but above MAX_SHIFT_PX: recorded, not applied."""
    pair = write_pair(tmp_path / "in", (2.5, 0.5), (0.0, 0.0))
    record, _ = _stack(pair, tmp_path / "out")
    s1, dem = record["s1"], record["dem"]
    assert math.hypot(2.5, 0.5) > MAX_SHIFT_PX
    assert s1["applied"] is False and s1["measured"] is not None
    assert math.hypot(float(s1["measured"]["dy"]) - 2.5, float(s1["measured"]["dx"]) - 0.5) <= 0.1
    assert dem["applied"] is False and dem["reason"].startswith("under")
