"""The window's center (model.center): what the network's zero means."""

from __future__ import annotations

import numpy as np
import pytest

from forecaster.contract.features import WindowRules, build_windows, x_reals
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
