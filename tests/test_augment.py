"""Level-shift augmentation: a shifted window must be the window of the shifted history."""

from __future__ import annotations

import numpy as np
import pytest

from forecaster.contract.features import WindowRules, build_windows
from tests.modelkit import synthetic_panel
from trainer.augment import LATEST_SHIFT_STEPS, inject_level_shifts, shift_levels

SIGNALS = ["cpu", "memory", "disk"]
CODES = {s: i + 1 for i, s in enumerate(SIGNALS)}


@pytest.mark.parametrize(("seasonal_days", "center"), [(0, "mean"), (2, "mean"), (2, "last")])
def test_a_shifted_window_equals_the_window_built_from_the_shifted_history(seasonal_days: int, center: str) -> None:
    panel = synthetic_panel(hosts=3, days=5, signals=SIGNALS)
    panel.values[0, 1, -150:-140] = np.nan  # a gap before the shift
    rules = WindowRules(144, 24, 72, seasonal_days=seasonal_days, center=center)
    series = np.array([(0, 1), (1, 0), (2, 2)])  # one host each: a shift moves its host's inputs
    origins = np.full(3, panel.n_times - 30)
    thresholds = np.array([0.9, 0.6, np.nan])
    batch = build_windows(panel, series, origins, rules, CODES, thresholds)
    rows, starts, deltas = np.array([0, 2]), np.array([130, 143]), np.array([0.25, -0.1])

    shifted = shift_levels(batch, SIGNALS, seasonal_days, rows, starts, deltas, center)

    moved = panel.values.copy()
    for r, start, delta in zip(rows, starts, deltas, strict=True):
        first_step = origins[r] - (batch.encoder_lengths[r] - 1) + start
        moved[series[r, 0], series[r, 1], first_step:] += delta
    panel.values = moved
    expected = build_windows(panel, series, origins, rules, CODES, thresholds)
    for name in ("encoder_cont", "decoder_cont", "target", "center", "scale", "last_value", "encoder_max",
                 "encoder_values"):
        np.testing.assert_allclose(getattr(shifted, name), getattr(expected, name), rtol=1e-4, atol=1e-4,
                                   err_msg=name)
    assert not np.shares_memory(shifted.encoder_cont, batch.encoder_cont)  # the sampled batch is untouched


def test_injection_moves_about_the_asked_share_late_in_the_context_and_keeps_the_rest() -> None:
    panel = synthetic_panel(hosts=4, days=5, signals=SIGNALS)
    rules = WindowRules(144, 24, 72)
    rng = np.random.default_rng(0)
    series = np.array([(i % 4, i % 3) for i in range(400)])
    origins = rng.integers(200, panel.n_times - 30, size=400)
    batch = build_windows(panel, series, origins, rules, CODES)

    shifted = inject_level_shifts(batch, SIGNALS, 0, 0.25, np.random.default_rng(1))

    delta = (shifted.target - batch.target).mean(axis=1)
    moved = np.abs(delta) > 1e-6
    assert 70 <= moved.sum() <= 130
    np.testing.assert_array_equal(shifted.encoder_cont[~moved], batch.encoder_cont[~moved])
    size = np.abs(delta[moved]) / batch.scale[moved]
    assert size.min() >= 2.0 - 1e-3 and size.max() <= 6.0 + 1e-3
    assert (delta[moved] > 0).any() and (delta[moved] < 0).any()
    changed = np.abs(shifted.encoder_values[moved] - batch.encoder_values[moved]) > 1e-9
    first_changed = changed.argmax(axis=1)
    assert (first_changed >= rules.context - LATEST_SHIFT_STEPS).all()
    assert inject_level_shifts(batch, SIGNALS, 0, 0.0, np.random.default_rng(1)) is batch
