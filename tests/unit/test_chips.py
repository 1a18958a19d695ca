"""Training chips: stack layout and scales, labels that follow the water, randomisation ranges, seeds."""

from __future__ import annotations

import numpy as np
import pytest

from demo.synthetic.chips import IGNORE, WATER_TYPES, Scenario, make_training_chips
from models.segmenter import STACK_BANDS, band_index

B03, B08, B11, VV = (band_index(b) for b in ("B03", "B08", "B11", "VV"))


@pytest.fixture(scope="module")
def many():
    """60 small chips: enough draws to see every randomised factor."""
    return make_training_chips(60, size=48, seed=3, split="train")


def test_shapes_bands_and_scales():
    """15 bands in stack order, reflectance × 10 000, dB, metres; NaN and IGNORE only outside valid."""
    cs = make_training_chips(6, size=64, seed=0, split="train")
    assert len(STACK_BANDS) == 15
    assert cs.stack.shape == (6, 15, 64, 64) and cs.stack.dtype == np.float32
    assert cs.valid.shape == cs.label.shape == (6, 64, 64)
    assert cs.valid.dtype == bool and cs.label.dtype == np.uint8
    assert set(np.unique(cs.label)) <= {0, 1, IGNORE}
    assert ((cs.label == IGNORE) == ~cs.valid).all()
    v = np.broadcast_to(cs.valid[:, None], cs.stack.shape)
    assert np.isfinite(cs.stack[v]).all(), "valid pixels are finite in every band"
    s2, s1, dem = cs.stack[:, :12][v[:, :12]], cs.stack[:, 12:14][v[:, 12:14]], cs.stack[:, 14][cs.valid]
    assert s2.min() >= 0 and 300 < np.median(s2) < 6000 and s2.max() < 20_000, "reflectance × 10 000, no offset"
    assert -40 <= s1.min() and s1.max() <= 15 and -25 < np.median(s1) < -5, "backscatter in dB"
    assert -100 < dem.min() and dem.max() < 9000, "elevation in metres"


def test_labels_follow_the_water():
    """Labelled water is dark in NIR and SWIR and in SAR; land-only chips have no water at all."""
    cs = make_training_chips(12, size=96, seed=1, split="train", scenario=Scenario(clouds=False))
    water, land = cs.label == 1, cs.label == 0
    assert water.sum() > 200 and land.sum() > 1000
    for band, gap in ((B08, 1000.0), (B11, 1000.0)):
        assert np.median(cs.stack[:, band][land]) - np.median(cs.stack[:, band][water]) > gap
    assert np.median(cs.stack[:, VV][land]) - np.median(cs.stack[:, VV][water]) > 5.0
    g, n = cs.stack[:, B03][water], cs.stack[:, B08][water]
    assert np.median((g - n) / (g + n)) > 0, "water has a positive NDWI"
    for p in cs.params:
        share = p.water_fraction
        assert 0.0 <= share <= 1.0
    dry = make_training_chips(4, size=64, seed=1, split="train", scenario=Scenario(water=False))
    assert not (dry.label == 1).any()
    assert all(p.lake_states == () and p.river_width_px == 0 and not p.flood for p in dry.params)


def test_snow_covered_alpine_chips_freeze_their_lakes():
    """Under full snow cover every lake is snow-covered and labelled not water."""
    cs = make_training_chips(6, size=64, seed=5, split="train", scenario=Scenario(kind="alpine", snow_cover=0.95))
    states = [s for p in cs.params for s in p.lake_states]
    assert states and set(states) == {"snow_covered"}
    for p in cs.params:
        assert p.kind == "alpine" and p.snow_cover == 0.95
        if p.river_width_px == 0:
            assert p.water_fraction == 0.0, "frozen lakes are not water"


def test_randomisation_spans_the_stated_ranges(many):
    """Sun, gain, haze, water types, lake ice, snow, clouds, wind, speckle and DEM noise all vary."""
    ps = many.params
    el = [p.sun_elevation_deg for p in ps]
    az = [p.sun_azimuth_deg for p in ps]
    gain = [p.gain for p in ps]
    assert 15 <= min(el) < 25 and 60 < max(el) <= 70
    assert 0 <= min(az) and max(az) < 360 and max(az) - min(az) > 200
    assert 0.7 <= min(gain) < 0.8 and 1.2 < max(gain) <= 1.3, "global gain ±30 %"
    assert any(p.haze > 0 for p in ps) and any(p.haze == 0 for p in ps)
    assert {p.kind for p in ps} == {"alpine", "lowland"}
    assert {t for p in ps for t in p.water_types} == set(WATER_TYPES), "clear, dark, milky and muddy water"
    states = {s for p in ps for s in p.lake_states}
    assert "open" in states and states & {"partly_frozen", "frozen", "snow_covered"}
    assert any(p.river_width_px > 0 for p in ps) and any(p.flood for p in ps)
    assert any(p.snow_cover > 0.5 for p in ps) and any(p.wet_snow_share > 0.3 and p.snow_cover > 0 for p in ps)
    assert any(p.glacier for p in ps)
    assert {p.cloud_mode for p in ps} == {"none", "masked", "distractor", "both"}
    assert any(p.wind_db > 0 for p in ps) and any(p.wind_db == 0 for p in ps)
    assert all(3 <= p.enl <= 20 for p in ps) and all(0.3 <= p.dem_noise_m <= 4 for p in ps)
    assert any(p.shadow_fraction > 0.05 for p in ps), "terrain shadow occurs"
    assert (many.label == IGNORE).any(), "some chips have masked cloud or nodata"


def test_same_seed_same_chips_and_splits_differ():
    """Chips are a pure function of (seed, split, index); splits and seeds give other chips."""
    a = make_training_chips(3, size=48, seed=11, split="train")
    b = make_training_chips(3, size=48, seed=11, split="train")
    np.testing.assert_array_equal(a.stack, b.stack)
    np.testing.assert_array_equal(a.label, b.label)
    assert a.params == b.params
    test = make_training_chips(3, size=48, seed=11, split="test")
    other = make_training_chips(3, size=48, seed=12, split="train")
    assert not np.array_equal(np.nan_to_num(a.stack), np.nan_to_num(test.stack))
    assert not np.array_equal(np.nan_to_num(a.stack), np.nan_to_num(other.stack))
    with pytest.raises(ValueError, match="split"):
        make_training_chips(1, split="holdout")
