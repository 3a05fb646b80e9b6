"""The window's center (model.center): what the network's zero means."""

from __future__ import annotations

import numpy as np
import pytest

from forecaster.contract.features import WindowRules, build_windows, recent_level, x_reals
from forecaster.contract.model import ModelSpec
from tests.modelkit import synthetic_panel

SIGNALS = ["cpu", "memory"]
CODES = {s: i + 1 for i, s in enumerate(SIGNALS)}


def test_a_last_value_center_measures_the_window_from_its_last_observation() -> None:
    """``center: last``: the network's zero is persistence, the threshold input the distance to it."""
    panel = synthetic_panel(hosts=2, days=3, signals=SIGNALS)
    series = np.array([(0, 0), (1, 1)])
    origins = np.full(2, panel.n_times - 10)
    thresholds = np.array([0.9, 0.95])
    by_mean = build_windows(panel, series, origins, WindowRules(144, 24, 72), CODES, thresholds)
    by_last = build_windows(panel, series, origins, WindowRules(144, 24, 72, center="last"), CODES, thresholds)
    np.testing.assert_allclose(by_last.center, by_last.last_value)
    np.testing.assert_allclose(by_last.scale, by_mean.scale)  # one scale rule for both centers
    assert not np.allclose(by_last.center, by_mean.center)
    names = x_reals(SIGNALS)
    target, thr = names.index("target"), names.index("threshold_z")
    lengths = by_last.encoder_lengths
    np.testing.assert_allclose(by_last.encoder_cont[np.arange(2), lengths - 1, target], 0.0, atol=1e-6)
    np.testing.assert_allclose(by_last.encoder_cont[:, 0, thr], (thresholds - by_last.last_value) / by_last.scale,
                               rtol=1e-5)
    # The same history either way: only the reference point moves.
    np.testing.assert_allclose(by_last.encoder_cont[:, :, target] * by_last.scale[:, None] + by_last.center[:, None],
                               by_mean.encoder_cont[:, :, target] * by_mean.scale[:, None] + by_mean.center[:, None],
                               rtol=1e-4, atol=1e-4)


def test_the_center_is_part_of_the_spec_and_older_models_read_as_mean() -> None:
    spec = ModelSpec(signals=SIGNALS, center="last")
    assert spec.window_rules().center == "last"
    data = spec.to_json()
    assert ModelSpec.from_json(data) == spec
    del data["center"]  # a model.json written before the setting existed
    assert ModelSpec.from_json(data).center == "mean"
    with pytest.raises(ValueError, match="center must be one of mean, last"):
        ModelSpec.from_json({**data, "center": "median"})


def test_a_recent_center_is_the_median_of_the_last_hour_and_ignores_a_spike() -> None:
    """``center: recent``: the network's zero is the present level, which a spike of a few steps does not move."""
    panel = synthetic_panel(hosts=2, days=3, signals=SIGNALS)
    o = panel.n_times - 10
    panel.values[0, 0, o - 1:o + 1] = 50.0  # a two-step spike at the origin
    panel.values[1, 1, o - 5] = np.nan  # a gap inside the last hour
    series = np.array([(0, 0), (1, 1)])
    batch = build_windows(panel, series, np.full(2, o), WindowRules(144, 24, 72, center="recent"), CODES)
    hour = [panel.values[i, j, o - 11:o + 1] for i, j in series]
    np.testing.assert_allclose(batch.center, [np.nanmedian(h) for h in hour])
    assert batch.center[0] < 5.0 < batch.last_value[0]
    target = x_reals(SIGNALS).index("target")
    last_step = batch.encoder_lengths[0] - 1
    np.testing.assert_allclose(batch.encoder_cont[0, last_step, target],
                               min((50.0 - batch.center[0]) / batch.scale[0], 10.0), rtol=1e-5)


def test_the_recent_level_falls_back_to_the_last_value_where_the_hour_is_empty() -> None:
    values = np.array([[1.0, 2.0, 3.0, 100.0, 5.0, np.nan], [np.nan] * 6, [7.0] + [np.nan] * 5])
    level = recent_level(values, np.array([5, 6, 1]), 3, np.array([0.0, 8.0, 9.0]))
    np.testing.assert_allclose(level, [5.0, 8.0, 7.0])  # median of (3, 100, 5); empty: last value; one step: itself

