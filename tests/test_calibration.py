"""Breach probability: history features, the warning cut-off rule, and refitting an old model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from forecaster.contract.artifacts import ModelLoadError, load_model_dir, save_model_dir
from forecaster.contract.calibration import (
    BREACH_FEATURES,
    BreachModel,
    armed_windows,
    best_f1_cutoff,
    breach_features,
    breach_history,
    fit_breach_model,
    same_hours_yesterday,
    warning_cutoff,
)
from forecaster.contract.features import WindowRules, breach_within, build_windows
from forecaster.contract.panel import Panel
from tests.modelkit import synthetic_panel, train_tiny
from tests.test_trainer import _config, _parquet
from trainer.cli import main

E, H = 48, 24


def _panel(values: np.ndarray) -> Panel:
    T = values.shape[-1]
    ts = 1_750_000_000 - 300 * np.arange(T - 1, -1, -1, dtype=np.int64)
    return Panel([f"h{i}" for i in range(len(values))], ["cpu"], ts, values[:, None, :].astype(np.float32), 300)


def _windows(panel: Panel, origins: list[int], threshold: float = 0.9):
    rules = WindowRules(E, H, min_history=12, max_stale_steps=10**6, min_observed_fraction=0.0)
    series = np.array([(i, 0) for i in range(len(panel.instances))] * len(origins))
    orig = np.repeat(origins, len(panel.instances))
    return build_windows(panel, series, orig, rules, {"cpu": 0}, np.full(len(orig), threshold))


def test_breach_history_counts_runs_and_time_since() -> None:
    T = 100
    quiet = np.full(T, 0.5)
    spiky = quiet.copy()
    spiky[[20, 21, 30, 31, 32, 40, 60, 61]] = 0.95  # runs at 20, 30, 60; step 40 is a one-step blip
    batch = _windows(_panel(np.stack([quiet, spiky])), [70])
    hist = breach_history(batch)
    # Context covers steps 23..70: the runs at 30 and 60 (the one at 20 is outside, 40 is too short).
    assert hist[0].tolist() == [0.0, 0.0, pytest.approx(np.log1p(24.0 * 10)), 0.0]
    assert hist[1, 0] == pytest.approx(np.log1p(2))
    assert hist[1, 1] == pytest.approx(np.log1p(1))  # only the run at 60 lies in the last third (55..70)
    assert hist[1, 2] == pytest.approx(np.log1p(24.0 * 9 / E))  # last step above: 61, nine steps ago
    assert hist[1, 3] == pytest.approx(6 / E)  # 30, 31, 32, 40, 60, 61 above


def test_same_hours_yesterday_reads_the_context_one_day_back() -> None:
    """A day of 24 steps (hourly data): the origin's context (48 steps) holds yesterday's next hours."""
    T, origin, day = 100, 70, 24
    values = np.full((3, T), 0.5)
    values[1, origin - day + 3:origin - day + 5] = 0.95  # a 2-step breach yesterday, 3-4 steps after the hour
    values[2, origin - day + 7] = 0.93  # one step above, yesterday, beyond a 6-step horizon
    batch = _windows(_panel(values), [origin])
    feats = same_hours_yesterday(batch, 6, day)
    scale = batch.scale
    assert feats[0].tolist() == [0.0, pytest.approx(np.arcsinh(-0.4 / scale[0])), 0.0]
    assert feats[1].tolist() == [pytest.approx(2 / 6), pytest.approx(np.arcsinh(0.05 / scale[1])), 1.0]
    assert feats[2].tolist() == [0.0, pytest.approx(np.arcsinh(-0.4 / scale[2])), 0.0]
    assert same_hours_yesterday(batch, 8, day)[2, 0] == pytest.approx(1 / 8)  # now within the horizon
    # A context shorter than a day does not reach back: "no breach".
    assert same_hours_yesterday(batch, 6, E + 1).tolist() == [[0.0, pytest.approx(np.arcsinh(-10.0)), 0.0]] * 3


def test_breaches_at_the_same_hour_each_day_raise_the_probability() -> None:
    """Half the fleet breaches at one hour every day. Every series also jumps above the threshold for one
    step (not a breach) at a random hour each day, so the time since it was last above says little;
    the day before says when the next breach comes."""
    rng = np.random.default_rng(5)
    day, T, n = 24, 24 * 40, 12
    values = 0.5 + 0.03 * rng.standard_normal((n, T))
    for i in range(n):
        hour = int(rng.integers(0, day - 2))
        for start in range(0, T - day, day):
            values[i, start + int(rng.integers(0, day - 2))] = 0.97
            if i < n // 2:
                values[i, start + hour:start + hour + 2] = 0.97
    batch = _windows(_panel(values), list(range(E, T - H, 1)))
    q = np.repeat(batch.last_value[:, None, None], H, axis=1) + np.array([-0.05, 0.0, 0.05])
    armed = armed_windows(batch, 6)
    coming = breach_within(batch.target.astype(np.float64), batch.threshold, 6)
    fixed = batch.series[:, 0] < n // 2

    def fitted(day_steps: int) -> np.ndarray:
        return fit_breach_model(q, batch, day_steps).probability("30m", breach_features(q, batch, 6, day_steps))

    p, p_without = fitted(day), fitted(E + 1)  # E + 1: the context does not reach back a day
    g = fixed & armed
    # With the day before the coming breaches are near-certain and the quiet hours near-zero.
    assert p[g & coming].mean() > 0.9 > 0.75 > p_without[g & coming].mean()
    assert p[g & ~coming].mean() < 0.02 < 0.05 < p_without[g & ~coming].mean()
    assert np.mean((p[armed] - coming[armed]) ** 2) < 0.2 * np.mean((p_without[armed] - coming[armed]) ** 2)


def test_a_breach_model_fitted_before_the_day_before_reads_its_nine_features() -> None:
    batch = _windows(_panel(np.full((2, 120), 0.5)), [80])
    q = np.repeat(batch.last_value[:, None, None], H, axis=1) + np.array([-0.05, 0.0, 0.05])
    feats = breach_features(q, batch, 24, 24)
    assert feats.shape == (2, len(BREACH_FEATURES))
    weights = [-3.0, 1.5, 0.5, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0]
    old = BreachModel.from_json({"weights": {"2h": weights}, "cutoffs": {"2h": 0.3}})
    w = np.array(weights)
    assert old.probability("2h", feats) == pytest.approx(1 / (1 + np.exp(-(w[0] + feats[:, :9] @ w[1:]))))


def test_armed_windows_are_below_the_threshold_with_a_known_outcome() -> None:
    T, origin = 120, 80
    values = np.full((4, T), 0.5)
    values[1, origin] = 0.95  # already above the threshold at the origin
    values[2, origin + 7] = np.nan  # unknown 7 steps after the origin
    batch = _windows(_panel(values), [origin])
    batch.threshold[3] = np.nan  # no threshold: nothing to breach
    assert armed_windows(batch, 6).tolist() == [True, False, True, False]
    assert armed_windows(batch, 7).tolist() == [True, False, False, False]


def test_recurring_breaches_raise_the_probability() -> None:
    """Series that breached in their recent past breach again: the fit must learn it."""
    rng = np.random.default_rng(3)
    T, n = 2000, 12
    values = 0.5 + 0.03 * rng.standard_normal((n, T))
    for i in range(n // 2):  # half the fleet has a two-step spike every ~3 hours
        for start in range(int(rng.integers(0, 36)), T - 2, 36):
            values[i, start:start + 2] = 0.97
    panel = _panel(values)
    batch = _windows(panel, list(range(E, T - H, 6)))
    q = np.repeat(batch.last_value[:, None, None], H, axis=1) + np.array([-0.05, 0.0, 0.05])
    model = fit_breach_model(q, batch, 288)
    p = model.probability("2h", breach_features(q, batch, 24, 288))
    recurring = batch.series[:, 0] < n // 2
    armed = batch.last_value <= 0.9
    assert p[recurring & armed].mean() > 0.5 > p[~recurring & armed].mean()
    assert 0 < model.cutoffs["2h"] <= model.fit_stats["2h"]["best_f1"] / 2 + 1e-9
    assert len(model.weights["2h"]) == len(BREACH_FEATURES) + 1


def test_warning_cutoff_is_the_lower_estimate_of_the_f1_optimum() -> None:
    rng = np.random.default_rng(0)
    prob = rng.beta(0.5, 4.0, 20_000)
    label = rng.random(20_000) < prob  # calibrated by construction
    cut, f1 = warning_cutoff(prob, label)
    argmax, best = best_f1_cutoff(prob, label)
    assert f1 == pytest.approx(best)
    assert cut == pytest.approx(min(argmax, f1 / 2))
    assert abs(argmax - f1 / 2) < 0.05  # on calibrated probabilities the two estimates agree
    # The theory behind the rule: on calibrated probabilities the F1 at f1/2 is near the best.
    warn = prob >= cut
    tp = (warn & label).sum()
    assert 2 * tp / (warn.sum() + label.sum()) > f1 - 0.02
    assert warning_cutoff(prob, np.zeros_like(label)) == (0.5, 0.0)


def test_old_breach_weights_are_refused_then_recalibrated(tmp_path: Path) -> None:
    model = train_tiny(synthetic_panel(), tmp_path / "work")
    registry = tmp_path / "registry"
    path = save_model_dir(model, registry / "global" / "versions" / "old")
    meta_path = path / "model.json"
    meta = json.loads(meta_path.read_text())
    for label in meta["calibration"]["breach"]["weights"]:
        meta["calibration"]["breach"]["weights"][label] = [-3.0, 1.5, 0.5, 0.0, 0.5, 0.0]  # 5-feature era
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="recalibrate"):
        load_model_dir(path)
    with pytest.raises(ValueError, match="expected 13"):
        BreachModel.from_json(meta["calibration"]["breach"])

    config = _config(tmp_path)
    code = main(["--config.file", str(config), "recalibrate", "--model", str(path),
                 "--parquet", str(_parquet(tmp_path))])
    assert code == 0
    latest = (registry / "global" / "latest").read_text().strip()
    assert latest != "old"
    fresh = load_model_dir(registry / "global" / "versions" / latest)
    assert set(fresh.breach.weights) == {"30m", "1h", "2h", "4h", "8h"}
    assert fresh.metadata["recalibrated_from"] == str(path)
    # The network is the same one: only the calibration was refitted.
    before, after = model.network.state_dict(), fresh.network.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_recalibrate_without_a_model_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["--config.file", str(_config(tmp_path)), "recalibrate", "--parquet", str(_parquet(tmp_path))])
    assert code == 2
    assert "no model" in capsys.readouterr().err


def test_recalibrating_a_host_model_keeps_its_scope(tmp_path: Path) -> None:
    from forecaster.contract.registry import Registry, host_scope

    panel = synthetic_panel(hosts=2, days=5)
    model = train_tiny(panel.select_instances(["host-0"]), tmp_path / "work")
    model.metadata["training"] = {"instances": ["host-0"]}
    registry = Registry(tmp_path / "registry")
    scope = host_scope("host-0")
    old = registry.add(model, scope)
    registry.promote(old, scope)
    config = _config(tmp_path)
    code = main(["--config.file", str(config), "recalibrate", "--model", str(registry.latest_path(scope)),
                 "--parquet", str(_parquet(tmp_path))])
    assert code == 0
    assert registry.latest_version(scope) != old
    assert registry.latest_version() is None  # nothing was written to the global scope
    assert load_model_dir(registry.latest_path(scope)).metadata["scope"] == scope

    model.metadata["training"] = {"instances": ["host-9"]}
    stray = registry.add(model, host_scope("host-9"))
    code = main(["--config.file", str(config), "recalibrate", "--parquet", str(_parquet(tmp_path)),
                 "--model", str(registry.root / host_scope("host-9") / "versions" / stray)])
    assert code == 6
