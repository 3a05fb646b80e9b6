"""The median's anchor: a per-horizon pull of the p50 towards the present level, fitted on validation windows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from forecaster.contract.artifacts import ModelLoadError, load_model_dir, save_model_dir
from forecaster.contract.calibration import BandCalibration, fit_anchor, present_level, pull_to_present
from forecaster.contract.features import WindowRules, build_windows
from tests.modelkit import synthetic_panel, train_tiny

B, H = 600, 12


def _paths(rng: np.random.Generator, pull_until: int, pull: float) -> tuple[np.ndarray, ...]:
    """Windows whose p50 moves ``d`` from the last value and whose outcome moves ``pull * d`` over the first
    ``pull_until`` steps and ``d`` after them, with noise; scales spread over four orders of magnitude."""
    last = rng.uniform(-50, 50, B)
    scale = 10.0 ** rng.uniform(-2, 2, B)
    d = rng.standard_normal((B, H)) * scale[:, None]
    q = np.stack([last[:, None] + d - scale[:, None], last[:, None] + d, last[:, None] + d + scale[:, None]], axis=-1)
    share = np.where(np.arange(H) < pull_until, pull, 1.0)[None, :]
    y = last[:, None] + share * d + 0.05 * scale[:, None] * rng.standard_normal((B, H))
    return q, y, last, scale


def test_the_pull_is_what_the_validation_windows_show_and_never_shrinks_with_the_horizon() -> None:
    q, y, last, scale = _paths(np.random.default_rng(0), pull_until=4, pull=0.3)
    anchor = np.array(fit_anchor(q, y, last, scale))
    np.testing.assert_allclose(anchor[:4], 0.3, atol=0.03)
    np.testing.assert_allclose(anchor[4:], 1.0, atol=0.03)
    assert (np.diff(anchor) >= 0).all()
    # Scale-free: the same windows in units a thousand times larger give the same pull.
    np.testing.assert_allclose(fit_anchor(q * 1000, y * 1000, last * 1000, scale * 1000), anchor, atol=1e-9)


def test_a_network_that_undershoots_is_not_pushed_and_a_thin_horizon_keeps_its_path() -> None:
    q, y, last, scale = _paths(np.random.default_rng(1), pull_until=H, pull=2.0)
    assert fit_anchor(q, y, last, scale) == [1.0] * H  # the factor is at most 1: a pull, never a push
    q, y, last, scale = _paths(np.random.default_rng(2), pull_until=H, pull=0.0)
    y[20:, 5:] = np.nan  # only 20 windows know their outcome from the sixth step on
    anchor = fit_anchor(q, y, last, scale)
    assert max(anchor[:5]) < 0.05 and anchor[5:] == [1.0] * (H - 5)


def test_the_pull_moves_the_whole_band_and_needs_the_present_level() -> None:
    q = np.array([[[8.0, 10.0, 13.0], [7.0, 12.0, 20.0]]])
    last = np.array([6.0])
    moved = pull_to_present(q, last, [0.5, 1.0])
    np.testing.assert_allclose(moved, [[[6.0, 8.0, 11.0], [7.0, 12.0, 20.0]]])
    band = BandCalibration([1.0, 2.0], [1.0, 0.5], anchor=[0.5, 1.0])
    np.testing.assert_allclose(band.apply(q, last), [[[6.0, 8.0, 11.0], [2.0, 12.0, 16.0]]])
    with pytest.raises(ValueError, match="pass it"):
        band.apply(q)
    # A calibration saved before the anchor existed leaves the median where the network put it.
    np.testing.assert_allclose(BandCalibration([1.0, 1.0], [1.0, 1.0]).apply(q), q)


def test_training_fits_it_the_model_applies_it_and_models_saved_before_it_load_without(tmp_path: Path) -> None:
    panel = synthetic_panel()
    model = train_tiny(panel, tmp_path / "work")
    anchor = model.band.anchor
    assert anchor is not None and len(anchor) == model.spec.horizon_steps
    assert all(0.0 <= a <= 1.0 for a in anchor) and (np.diff(anchor) >= 0).all()

    series = np.array([(i, j) for i in range(len(panel.instances)) for j in range(len(panel.signals))])
    origins = np.full(len(series), panel.n_times - 1)
    batch = build_windows(panel, series, origins, model.spec.window_rules(), model.spec.signal_codes())
    raw = model.raw_quantiles(batch)
    expected = np.sort(model.band.apply(raw, batch.last_value), axis=-1)
    np.testing.assert_allclose(model.predict(batch, explain=False).quantiles, expected, rtol=1e-6)

    path = save_model_dir(model, tmp_path / "registry" / "global" / "versions" / "v1")
    assert load_model_dir(path).band.anchor == anchor
    meta = json.loads((path / "model.json").read_text())
    del meta["calibration"]["band"]["anchor"]
    (path / "model.json").write_text(json.dumps(meta))
    old = load_model_dir(path)
    assert old.band.anchor is None
    np.testing.assert_allclose(old.predict(batch, explain=False).quantiles,
                               np.sort(old.band.apply(raw), axis=-1), rtol=1e-6)
    for wrong in (anchor[:-1], []):  # an empty list is a wrong length too, not "no anchor"
        meta["calibration"]["band"]["anchor"] = wrong
        (path / "model.json").write_text(json.dumps(meta))
        with pytest.raises(ModelLoadError, match="does not match horizon_steps"):
            load_model_dir(path)


def test_the_present_level_is_the_last_value_or_with_a_recent_center_the_last_hours_median() -> None:
    panel = synthetic_panel(hosts=2, days=3)
    o = panel.n_times - 10
    panel.values[:, 0, o] = 50.0  # a spike at the origin
    series = np.array([(0, 0), (1, 0)])
    for center in ("mean", "last", "recent"):
        batch = build_windows(panel, series, np.full(2, o), WindowRules(144, 24, 72, center=center),
                              {panel.signals[0]: 1})
        present = present_level(batch, center)
        if center == "recent":
            np.testing.assert_allclose(present, batch.center)
            assert (present < 50.0).all()
        else:
            np.testing.assert_allclose(present, 50.0)  # the last value, whatever the network's zero
