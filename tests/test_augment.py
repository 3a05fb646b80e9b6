"""Training-time augmentation: a shifted or ramped window must be the window of the moved history."""

from __future__ import annotations

import numpy as np
import pytest

from forecaster.contract.features import CYCLE_GATE, CycleRule, WindowRules, build_windows
from tests.modelkit import synthetic_panel
from trainer.augment import (
    KEPT_BEFORE_STEPS,
    LATEST_SHIFT_STEPS,
    RAMP_BEGUN_STEPS,
    RAMP_GOES_ON_STEPS,
    RAMP_SIZE,
    inject_level_shifts,
    inject_ramps,
    level_shift_share_for,
    shift_levels,
)

SIGNALS = ["cpu", "memory", "disk"]
CODES = {s: i + 1 for i, s in enumerate(SIGNALS)}
FIELDS = ("encoder_cont", "decoder_cont", "target", "center", "scale", "last_value", "encoder_max", "encoder_values")


def _random_windows(rules: WindowRules, first_origin: int):  # type: ignore[no-untyped-def]
    """400 windows of a 4-host panel at random origins from ``first_origin`` on."""
    panel = synthetic_panel(hosts=4, days=5, signals=SIGNALS)
    rng = np.random.default_rng(0)
    series = np.array([(i % 4, i % 3) for i in range(400)])
    origins = rng.integers(first_origin, panel.n_times - rules.horizon - 6, size=400)
    return build_windows(panel, series, origins, rules, CODES)


@pytest.mark.parametrize(("seasonal_days", "center", "cycle"),
                         [(0, "mean", None), (2, "mean", None), (2, "last", None), (2, "recent", None),
                          (2, "last", CycleRule(288)), (2, "last", CycleRule(288, CYCLE_GATE))])
def test_a_shifted_window_equals_the_window_built_from_the_shifted_history(seasonal_days: int, center: str,
                                                                           cycle: CycleRule | None) -> None:
    panel = synthetic_panel(hosts=3, days=5, signals=SIGNALS)
    panel.values[0, 1, -150:-140] = np.nan  # a gap before the shift
    rules = WindowRules(144, 24, 72, seasonal_days=seasonal_days, center=center,
                        cycle=cycle is not None, cycle_gate=cycle.gate if cycle else 0.0)
    series = np.array([(0, 1), (1, 0), (2, 2)])  # one host each: a shift moves its host's inputs
    origins = np.full(3, panel.n_times - 30)
    thresholds = np.array([0.9, 0.6, np.nan])
    batch = build_windows(panel, series, origins, rules, CODES, thresholds)
    rows, starts, deltas = np.array([0, 2]), np.array([130, 143]), np.array([0.25, -0.1])

    shifted = shift_levels(batch, SIGNALS, seasonal_days, rows, starts, deltas, center, cycle)

    moved = panel.values.copy()
    for r, start, delta in zip(rows, starts, deltas, strict=True):
        first_step = origins[r] - (batch.encoder_lengths[r] - 1) + start
        moved[series[r, 0], series[r, 1], first_step:] += delta
    panel.values = moved
    expected = build_windows(panel, series, origins, rules, CODES, thresholds)
    for name in FIELDS:
        np.testing.assert_allclose(getattr(shifted, name), getattr(expected, name), rtol=1e-4, atol=1e-4,
                                   err_msg=name)
    assert not np.shares_memory(shifted.encoder_cont, batch.encoder_cont)  # the sampled batch is untouched


def test_injection_moves_about_the_asked_share_late_in_the_context_and_keeps_the_rest() -> None:
    rules = WindowRules(288, 24, 72)
    batch = _random_windows(rules, 300)

    shifted = inject_level_shifts(batch, SIGNALS, 0, 0.25, np.random.default_rng(1))

    delta = (shifted.target - batch.target).mean(axis=1)
    moved = np.abs(delta) > 1e-6
    assert 70 <= moved.sum() <= 130
    np.testing.assert_array_equal(shifted.encoder_cont[~moved], batch.encoder_cont[~moved])
    size = np.abs(delta[moved]) / batch.scale[moved]
    assert size.min() >= 2.0 - 1e-3 and size.max() <= 10.0 + 1e-3 and size.max() > 6.0
    assert (delta[moved] > 0).any() and (delta[moved] < 0).any()
    changed = np.abs(shifted.encoder_values[moved] - batch.encoder_values[moved]) > 1e-9
    first_changed = changed.argmax(axis=1)
    # Up to 16 h back: old shifts as well as fresh ones, never the whole window.
    assert (first_changed >= rules.context - LATEST_SHIFT_STEPS).all()
    assert (rules.context - first_changed > 96).any() and (rules.context - first_changed <= 12).any()
    assert inject_level_shifts(batch, SIGNALS, 0, 0.0, np.random.default_rng(1)) is batch


def test_a_shift_leaves_an_hour_of_a_short_window_before_it() -> None:
    rules = WindowRules(144, 24, 72)
    batch = _random_windows(rules, 200)

    shifted = inject_level_shifts(batch, SIGNALS, 0, 0.5, np.random.default_rng(2))

    moved = np.abs((shifted.target - batch.target).mean(axis=1)) > 1e-6
    changed = np.abs(shifted.encoder_values[moved] - batch.encoder_values[moved]) > 1e-9
    assert changed.any(axis=1).all()  # every moved window shows the shift in its context
    assert (changed.argmax(axis=1) >= KEPT_BEFORE_STEPS).all()
    assert (changed.argmax(axis=1) == KEPT_BEFORE_STEPS).any()  # a shift older than the window starts an hour in


@pytest.mark.parametrize(("seasonal_days", "center", "cycle"),
                         [(0, "mean", None), (2, "last", None), (2, "recent", None), (0, "last", CycleRule(288)),
                          (0, "last", CycleRule(288, CYCLE_GATE))])
def test_a_ramped_window_equals_the_window_built_from_the_ramped_history(seasonal_days: int, center: str,
                                                                         cycle: CycleRule | None) -> None:
    panel = synthetic_panel(hosts=3, days=5, signals=SIGNALS)
    rules = WindowRules(288, 24, 72, seasonal_days=seasonal_days, center=center,
                        cycle=cycle is not None, cycle_gate=cycle.gate if cycle else 0.0)
    series = np.array([(0, 1), (1, 0), (2, 2)])
    origins = np.full(3, panel.n_times - 30)
    thresholds = np.array([0.9, 0.6, np.nan])
    batch = build_windows(panel, series, origins, rules, CODES, thresholds)

    shifted = inject_ramps(batch, SIGNALS, seasonal_days, 0.5, np.random.default_rng(3), center, cycle)

    moved_rows = np.flatnonzero(np.abs(shifted.target - batch.target).max(axis=1) > 1e-9)
    assert len(moved_rows) > 0
    ramped = panel.values.copy()
    for r in moved_rows:  # read each ramp back from what it added, then rebuild from the ramped history
        added = np.concatenate([shifted.encoder_values[r] - batch.encoder_values[r],
                                shifted.target[r] - batch.target[r]])
        first = origins[r] - (batch.encoder_values.shape[1] - 1)
        ramped[series[r, 0], series[r, 1], first:first + len(added)] += added
    panel.values = ramped
    expected = build_windows(panel, series, origins, rules, CODES, thresholds)
    for name in FIELDS:
        np.testing.assert_allclose(getattr(shifted, name)[moved_rows], getattr(expected, name)[moved_rows],
                                   rtol=1e-4, atol=1e-4, err_msg=name)


def test_ramps_climb_for_hours_before_the_origin_and_go_on_past_it_then_hold() -> None:
    rules = WindowRules(288, 96, 72)
    batch = _random_windows(rules, 400)

    ramped = inject_ramps(batch, SIGNALS, 0, 0.25, np.random.default_rng(1))

    before = ramped.encoder_values - batch.encoder_values
    after = (ramped.target - batch.target).astype(np.float64)
    moved = np.abs(after).max(axis=1) > 1e-6
    assert 70 <= moved.sum() <= 130
    np.testing.assert_array_equal(ramped.encoder_cont[~moved], batch.encoder_cont[~moved])
    slope = before[moved, -1] - before[moved, -2]
    begun = np.rint(before[moved, -1] / slope)  # steps since the ramp began, at the origin
    assert begun.min() >= RAMP_BEGUN_STEPS[0] and begun.max() <= RAMP_BEGUN_STEPS[1]
    size = np.abs(before[moved, -1]) / batch.scale[moved]
    assert size.min() >= RAMP_SIZE[0] - 1e-3 and size.max() <= RAMP_SIZE[1] + 1e-3
    assert (slope > 0).all()  # climbs only
    # Past the origin: the same rate for 1-8 h (within float32 targets), then a flat level.
    steps = np.diff(np.concatenate([before[moved, -1:], after[moved]], axis=1), axis=1) / slope[:, None]
    going = np.abs(steps - 1) < 1e-3
    held = np.abs(steps) < 1e-3
    assert (going | held).all()
    goes_on = going.sum(axis=1)
    assert goes_on.min() >= min(RAMP_GOES_ON_STEPS[0], rules.horizon)
    assert (going[:, :RAMP_GOES_ON_STEPS[0]]).all()  # no hold before the first hour is over
    assert inject_ramps(batch, SIGNALS, 0, 0.0, np.random.default_rng(1)) is batch


def test_auto_shifts_the_levels_of_networks_centered_on_the_recent_level_only() -> None:
    assert level_shift_share_for("auto", "recent") == 0.1
    assert level_shift_share_for("auto", "last") == 0.0 and level_shift_share_for("auto", "mean") == 0.0
    assert level_shift_share_for(0.3, "last") == 0.3 and level_shift_share_for(0.0, "recent") == 0.0
