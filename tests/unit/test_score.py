"""Agreement scoring used by the demo."""

from __future__ import annotations

import math
from datetime import date

from shapely.geometry import box

from demo.score import Outline, score

D1, D2 = date(2024, 7, 4), date(2024, 7, 24)


def test_perfect_match_scores_one() -> None:
    truth = [Outline(D1, box(0, 0, 100, 100)), Outline(D2, box(200, 0, 300, 100))]
    a = score(truth, truth)
    assert (a.recall, a.precision, a.median_area_error) == (1.0, 1.0, 0.0)


def test_miss_false_alarm_and_area_error_counted() -> None:
    truth = [Outline(D1, box(0, 0, 100, 100)), Outline(D1, box(500, 500, 600, 600))]
    mapped = [Outline(D1, box(0, 0, 110, 100)), Outline(D1, box(1000, 1000, 1100, 1100))]
    a = score(truth, mapped)
    assert a.recall == 0.5 and a.precision == 0.5
    assert math.isclose(a.median_area_error, 0.1)


def test_dates_do_not_mix() -> None:
    """A lake mapped on another date does not count as found."""
    a = score([Outline(D1, box(0, 0, 100, 100))], [Outline(D2, box(0, 0, 100, 100))])
    assert a.found == 0 and a.correct == 0
