"""The RSS-by-labelled-requests summary of ``canary bench evaluator --rss-labelled``: growth
from the first mark to the last, the fitted slope, and the flat-within-10% verdict (on the
lowest and highest RSS of a window before each mark when the marks carry them)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from model_canary.agents.bench.evaluator_bench import EvaluatorBenchOptions
from model_canary.agents.bench.rss_marks import RSS_FLAT_TOLERANCE, rss_summary
from model_canary.streams.errors import ConfigError

M = 1_000_000


def _marks(evaluator: Sequence[float], *joiners: Sequence[float]) -> dict[str, dict[str, object]]:
    """Readings at 0, 1 M, 2 M, ... (one list per process)."""
    return {
        str(i * M): {"evaluator": e, "joiners": [j[i] for j in joiners]}
        for i, e in enumerate(evaluator)
    }


def test_flat_processes_meet_the_target() -> None:
    s = rss_summary(_marks([140, 180, 185, 183, 189, 190], [150, 160, 160, 161, 159, 162]))
    assert s["evaluator_rss_growth_from_1m"] == pytest.approx(190 / 180)
    assert s["joiner_rss_growth_from_1m"] == pytest.approx(162 / 160)
    assert s["rss_flat_met"] is True
    assert s["rss_flat_on"] == "reading"
    assert s["rss_flat_target"] == RSS_FLAT_TOLERANCE


def test_the_start_is_not_a_mark() -> None:
    # Start-up memory (0 -> 1 M) is not growth with labelled requests.
    s = rss_summary(_marks([50, 180, 181], [60, 160, 161]))
    assert s["rss_flat_met"] is True


def test_an_evaluator_that_keeps_requests_misses_it() -> None:
    # 0.9 KB per labelled request (the first evaluator's predictions table): 900 MB per M.
    growing = [150 + 900 * i for i in range(6)]
    s = rss_summary(_marks(growing, [150] * 6))
    assert s["rss_flat_met"] is False
    slopes = s["rss_mb_per_million_labelled"]
    assert isinstance(slopes, dict)
    assert slopes["evaluator"] == pytest.approx(900)
    assert slopes["joiners"] == [pytest.approx(0)]


def test_the_joiner_that_grows_most_decides() -> None:
    s = rss_summary(_marks([180] * 6, [150] * 6, [150, 150, 160, 170, 180, 190]))
    assert s["joiner_rss_growth_from_1m"] == pytest.approx(190 / 150)
    assert s["rss_flat_met"] is False


def test_growth_at_the_tolerance_is_flat_and_beyond_it_is_not() -> None:
    edge = 100 * (1 + RSS_FLAT_TOLERANCE)
    assert rss_summary(_marks([0, 100, edge], [0, 100, 100]))["rss_flat_met"] is True
    assert rss_summary(_marks([0, 100, edge + 0.5], [0, 100, 100]))["rss_flat_met"] is False


def test_no_verdict_without_two_marks_or_with_a_reading_missing() -> None:
    assert rss_summary(_marks([140, 180], [150, 160]))["rss_flat_met"] is None
    missing = _marks([140, 180, 190], [150, 160, 160])
    missing["2000000"]["evaluator"] = None
    s = rss_summary(missing)
    assert s["rss_flat_met"] is None and s["evaluator_rss_growth_from_1m"] is None


def test_marks_at_another_step() -> None:
    marks = {
        str(k): {"evaluator": e, "joiners": [100.0]}
        for k, e in [(0, 90.0), (1000, 100.0), (2000, 104.0), (3000, 130.0)]
    }
    s = rss_summary(marks, every=1000)
    assert s["evaluator_rss_growth_from_1m"] == pytest.approx(1.3)
    assert s["rss_flat_met"] is False


def _windowed(
    readings: Sequence[float],
    evaluator: Sequence[tuple[float, float]],
    *joiners: Sequence[tuple[float, float]],
) -> dict[str, dict[str, object]]:
    """Marks at 0, 1 M, 2 M, ...: the evaluator's single reading and window (low, high) at
    each, and each joiner's window (its single reading: the window's high)."""
    return {
        str(i * M): {
            "evaluator": e,
            "evaluator_window_low_high": list(evaluator[i]),
            "joiners": [j[i][1] for j in joiners],
            "joiners_window_low_high": [list(j[i]) for j in joiners],
        }
        for i, e in enumerate(readings)
    }


FLAT = [(150.0, 160.0)] * 6


def test_a_cycle_read_at_a_trough_then_a_peak_is_flat_on_windows() -> None:
    # The reading at 1 M lands at the bottom of a 35 MB cycle, the one at 5 M at its top.
    cycle = [(170.0, 205.0)] * 6
    s = rss_summary(_windowed([140, 170, 190, 180, 200, 205], cycle, FLAT))
    assert s["evaluator_rss_growth_from_1m"] == pytest.approx(205 / 170)  # kept in the JSON
    assert s["evaluator_rss_low_growth_from_1m"] == pytest.approx(1.0)
    assert s["evaluator_rss_high_growth_from_1m"] == pytest.approx(1.0)
    assert s["joiner_rss_low_growth_from_1m"] == pytest.approx(1.0)
    assert (s["rss_flat_on"], s["rss_flat_met"]) == ("window", True)
    # The same readings without windows: judged on them, and missed.
    single = rss_summary(_marks([140, 170, 190, 180, 200, 205], [150] * 6))
    assert (single["rss_flat_on"], single["rss_flat_met"]) == ("reading", False)


@pytest.mark.parametrize(
    "last",
    [(190.0, 206.0), (171.0, 230.0)],
    ids=["the floor rises (memory kept)", "the peak rises"],
)
def test_either_end_of_the_evaluator_window_growing_misses_it(
    last: tuple[float, float],
) -> None:
    windows = [(170.0, 205.0)] * 5 + [last]
    s = rss_summary(_windowed([140, 180, 180, 180, 180, 180], windows, FLAT))
    assert s["rss_flat_on"] == "window"
    assert s["rss_flat_met"] is False


def test_a_joiner_window_growing_misses_it() -> None:
    growing = [(150.0, 160.0)] * 5 + [(170.0, 180.0)]
    s = rss_summary(_windowed([180] * 6, [(170.0, 200.0)] * 6, FLAT, growing))
    assert s["joiner_rss_low_growth_from_1m"] == pytest.approx(170 / 150)
    assert s["joiner_rss_high_growth_from_1m"] == pytest.approx(180 / 160)
    assert s["rss_flat_met"] is False


def test_a_window_at_the_tolerance_is_flat_and_beyond_it_is_not() -> None:
    edge = 100 * (1 + RSS_FLAT_TOLERANCE)
    at = rss_summary(_windowed([0, 100, 100], [(0, 0), (100, 100), (edge, edge)], FLAT[:3]))
    assert at["rss_flat_met"] is True
    beyond = [(0.0, 0.0), (100.0, 100.0), (edge + 0.5, edge)]
    assert rss_summary(_windowed([0, 100, 100], beyond, FLAT[:3]))["rss_flat_met"] is False


def test_no_verdict_with_a_window_missing() -> None:
    marks = _windowed([140, 180, 180], [(170.0, 200.0)] * 3, FLAT[:3])
    marks["2000000"]["evaluator_window_low_high"] = None
    s = rss_summary(marks)
    assert s["rss_flat_on"] == "window"
    assert s["rss_flat_met"] is None and s["evaluator_rss_low_growth_from_1m"] is None


def test_options_refuse_a_step_below_one() -> None:
    with pytest.raises(ConfigError):
        EvaluatorBenchOptions(labels=True, rss_labelled=10, rss_every=0)
