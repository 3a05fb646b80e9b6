"""How a driving signal moved before the forecast (forecaster.contract.features.driver_trend_hours) and
how serving reads it from the panel window the forecast read (tft_forecast_driver_trend_seconds)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from forecaster.contract.features import WindowRules, build_windows, driver_trend_hours
from forecaster.contract.panel import Panel
from forecaster.serving.cycle import _Forecaster
from forecaster.serving.snapshot import trend_words

STEP = 300  # 5 minutes: 12 steps an hour
DAY = 288


def _ramp(last_hours: float, rise: float = 10.0, level: float = 10.0, n: int = DAY) -> np.ndarray:
    """Flat at ``level``, then a straight climb of ``rise`` over the last ``last_hours``."""
    x = np.full(n, level)
    k = round(last_hours * 12)
    x[-k:] = level + np.linspace(rise / k, rise, k)
    return x


@pytest.mark.parametrize(("hours", "expected"), [(1, 1.0), (3, 3.0), (6, 6.0), (12, 12.0), (24, 12.0)])
def test_a_ramp_climbs_for_as_long_as_it_rose(hours: float, expected: float) -> None:
    rng = np.random.default_rng(1)
    clean = _ramp(hours)
    noisy = clean + rng.normal(0, 0.1, len(clean))
    assert driver_trend_hours(np.stack([clean, noisy]), STEP).tolist() == [expected, expected]


def test_a_ramp_scaled_or_shifted_reads_the_same() -> None:
    x = _ramp(6)
    rows = np.stack([x, 1e9 * x, x + 100, 1e-6 * x])
    assert driver_trend_hours(rows, STEP).tolist() == [6.0] * 4


def test_noise_around_a_flat_level_is_steady() -> None:
    rng = np.random.default_rng(7)
    noise = 10 + rng.normal(0, 1, (4000, DAY))
    trend = driver_trend_hours(noise, STEP)
    # A move must beat 4 standard errors of the noise: about 1 window in 4,000 reads a 1 h move by chance.
    assert np.count_nonzero(trend) <= 4 and set(np.abs(trend[trend != 0]).tolist()) <= {1.0}
    assert np.all(driver_trend_hours(noise[:100] * 1e-3, STEP) == 0)
    assert driver_trend_hours(np.full((1, DAY), 3.0), STEP).tolist() == [0.0]


def test_a_falling_step_is_negative_and_only_while_the_last_hour_moves() -> None:
    recent = np.full(DAY, 20.0)
    recent[-6:] = 10.0  # dropped 30 minutes ago
    assert driver_trend_hours(recent[None], STEP).tolist() == [-1.0]
    assert driver_trend_hours(_ramp(6, rise=-10.0)[None], STEP).tolist() == [-6.0]
    earlier = np.full(DAY, 20.0)
    earlier[-30:] = 10.0  # dropped 2.5 h ago, flat since: the last hour does not move
    assert driver_trend_hours(earlier[None], STEP).tolist() == [0.0]


def test_missing_values_are_handled() -> None:
    gappy = _ramp(6)
    gappy[::7] = np.nan
    young = _ramp(6)
    young[:-40] = np.nan  # a window of 40 steps (3 h 20 min): the spans end at 3 h
    empty = np.full(DAY, np.nan)
    single = empty.copy()
    single[-1] = 5.0
    hole = _ramp(6)
    hole[-80:-70] = np.nan  # nothing in the half hour ending 6 h before: no level there, the trend stops at 3 h
    out = driver_trend_hours(np.stack([gappy, young, empty, single, hole]), STEP)
    assert out[:2].tolist() == [6.0, 3.0]
    assert np.isnan(out[2]) and np.isnan(out[3])
    assert out[4] == 3.0
    assert driver_trend_hours(np.zeros((0, DAY)), STEP).shape == (0,)


def test_coarse_steps_use_the_spans_they_can_hold() -> None:
    hourly = np.concatenate([np.full(12, 1.0), np.linspace(2, 13, 12)])  # 1 h steps, a 12 h climb
    assert driver_trend_hours(hourly[None], 3600).tolist() == [12.0]


def test_trend_words() -> None:
    assert trend_words(6.0) == ", climbing for 6 h" and trend_words(-1.0) == ", falling for 1 h"
    assert trend_words(0.0) == "" and trend_words(None) == ""


def test_serving_reads_each_signal_driver_over_the_forecast_window() -> None:
    """own follows the row's signal, another driver that signal of the same host, over the window's length;
    drivers without a signal or a weight get none."""
    signals = ["cpu", "memory", "iowait"]
    T = DAY + 24
    values = np.full((2, 3, T), 0.5)
    values[0, 1] = _ramp(6, n=T)  # host 0: memory climbing for 6 h
    values[0, 2] = _ramp(1, rise=-10.0, n=T)  # host 0: iowait falling in the last hour
    values[1, 1] = _ramp(3, n=T)  # host 1: memory climbing for 3 h
    values[1, :, : T - 40] = np.nan  # host 1 is young: its window holds 40 steps
    panel = Panel(["h0", "h1"], signals, 1_750_000_000.0 + STEP * np.arange(T, dtype=np.float64),
                  values.astype(np.float32), STEP)
    series = np.array([(0, 1), (0, 0), (1, 0)])  # memory of h0, cpu of h0, cpu of h1
    rules = WindowRules(context=DAY, horizon=12, min_history=4)
    batch = build_windows(panel, series, np.full(3, T - 1), rules, {s: i + 1 for i, s in enumerate(signals)})
    names = ("own", "cpu", "memory", "iowait", "calendar")
    nan = np.nan
    weights = np.array([[0.5, 0.1, nan, 0.3, 0.1], [0.4, nan, 0.3, 0.2, 0.1], [0.4, nan, 0.3, nan, 0.3]])
    me = SimpleNamespace(panel=panel, step=STEP)
    trend = _Forecaster._driver_trend(me, batch.series[:, 0], batch.series[:, 1], batch, weights, names)  # type: ignore[arg-type]
    expected = np.array([[6.0, 0.0, nan, -1.0, nan], [0.0, nan, 6.0, -1.0, nan], [0.0, nan, 3.0, nan, nan]])
    np.testing.assert_array_equal(trend, expected)
