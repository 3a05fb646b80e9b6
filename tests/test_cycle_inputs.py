"""The window's short-cycle inputs (``model.cycle``): period, profile, strength, layout, old models."""

from __future__ import annotations

import numpy as np
import pytest

from forecaster.contract.features import (
    CYCLE_GATE,
    WindowRules,
    build_windows,
    cycle_inputs,
    cycle_lags,
    driver_of,
    x_reals,
)
from forecaster.contract.model import ModelSpec, build_network
from tests.modelkit import TINY, synthetic_panel

CYCLE = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])


def test_candidate_lags_are_a_days_divisors_up_to_half_the_context() -> None:
    assert cycle_lags(288, 288).tolist() == [2, 3, 4, 6, 8, 9, 12, 16, 18, 24, 32, 36, 48, 72, 96, 144]
    assert cycle_lags(48, 288).tolist() == [2, 3, 4, 6, 8, 9, 12, 16, 18, 24]


def test_a_noisy_cycle_is_found_and_continued_from_the_origins_phase() -> None:
    rng = np.random.default_rng(0)
    full = np.tile(CYCLE, 48) + 0.05 * rng.standard_normal(288)
    short = np.full(288, np.nan)
    short[:200] = full[:200]  # left-aligned, 200 steps long: its origin is at phase 200 % 6 = 2
    past, ahead, strength = cycle_inputs(np.stack([full, short]), np.array([288, 200]), 10, 288)
    assert (strength < 0.1).all()
    np.testing.assert_allclose(ahead[0], np.tile(CYCLE, 2)[:10], atol=0.03)  # origin at 6: next is 1
    np.testing.assert_allclose(ahead[1], np.tile(CYCLE, 3)[2:12], atol=0.03)  # origin at 2: next is 3
    # Over the context the profile is the cycle without its noise; past a window's end it is not read.
    np.testing.assert_allclose(past[0], np.tile(CYCLE, 48), atol=0.03)
    assert np.abs(past[0] - full).max() > 0.1


def test_a_multiple_of_the_cycle_is_not_taken_for_it() -> None:
    """Lags 6, 12, 18, ... fit a 6-step cycle equally well: the shortest wins."""
    values = np.tile(CYCLE, 48)[None, :]
    _, ahead, _ = cycle_inputs(values, np.array([288]), 12, 288)
    np.testing.assert_allclose(ahead[0], np.tile(CYCLE, 2))


def test_one_spike_does_not_come_back_every_period() -> None:
    values = np.tile(CYCLE, 48)[None, :].copy()
    values[0, 200] = 100.0
    past, ahead, _ = cycle_inputs(values, np.array([288]), 12, 288)
    np.testing.assert_allclose(ahead[0], np.tile(CYCLE, 2))
    assert past.max() == 6.0


def test_noise_reads_as_its_middle_and_a_short_window_has_no_cycle() -> None:
    rng = np.random.default_rng(1)
    noise = 10 + rng.standard_normal((20, 288))
    _, ahead, strength = cycle_inputs(noise, np.full(20, 288), 24, 288)
    assert 0.8 < float(np.median(strength)) < 1.1
    # The profile of noise is a median over many cycles: close to the window's mean, far inside its spread.
    assert float(np.median(np.abs(ahead - noise.mean(axis=1, keepdims=True)))) < 0.5
    tiny = np.full((1, 288), np.nan)
    tiny[0, :3] = [1.0, 5.0, 3.0]  # too short for two cycles of any lag: the profile is the median
    _, ahead, strength = cycle_inputs(tiny, np.array([3]), 4, 288)
    np.testing.assert_allclose(ahead[0], 3.0)
    assert strength[0] == 1.0


def test_gaps_are_left_out_of_the_profile() -> None:
    values = np.tile(CYCLE, 48)[None, :].copy()
    values[0, 100:130] = np.nan
    _, ahead, strength = cycle_inputs(values, np.array([288]), 6, 288)
    np.testing.assert_allclose(ahead[0], CYCLE)
    assert strength[0] == pytest.approx(0.0)


def test_windows_carry_the_inputs_last_and_scaled_as_the_target_and_only_when_asked() -> None:
    panel = synthetic_panel(hosts=2, days=3)
    series, origins = np.array([(0, 0), (1, 1)]), np.array([300, 500])
    plain = build_windows(panel, series, origins, WindowRules(144, 24, 12), {})
    rules = WindowRules(144, 24, 12, cycle=True, center="last")
    with_cycle = build_windows(panel, series, origins, rules, {})
    names = x_reals(list(panel.signals), cycle=True)
    assert names[-2:] == ["cycle", "cycle_strength"] and names[:-2] == x_reals(list(panel.signals))
    assert with_cycle.encoder_cont.shape[2] == plain.encoder_cont.shape[2] + 2
    col = {n: i for i, n in enumerate(names)}
    for b, (i, j) in enumerate(series):
        raw = panel.values[i, j, origins[b] - 143:origins[b] + 1].astype(np.float64)
        past, ahead, strength = cycle_inputs(raw[None, :], np.array([144]), 24, 288)
        z = (ahead[0] - with_cycle.center[b]) / with_cycle.scale[b]
        np.testing.assert_allclose(with_cycle.decoder_cont[b, :, col["cycle"]], z, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(with_cycle.encoder_cont[b, :, col["cycle"]],
                                   (past[0] - with_cycle.center[b]) / with_cycle.scale[b], rtol=1e-5, atol=1e-5)
        assert with_cycle.encoder_cont[b, 0, col["cycle_strength"]] == pytest.approx(strength[0])


def test_under_the_gate_a_window_that_does_not_repeat_has_no_cycle_and_one_that_does_keeps_it() -> None:
    """A wandering series repeats no better than it persists: its profile would be a spurious one near its
    median, so the gated model reads its center (0) instead; a cyclic series keeps its profile."""
    panel = synthetic_panel(hosts=2, days=3)
    rng = np.random.default_rng(2)
    T = panel.n_times
    panel.values[0, 0] = np.tile(CYCLE, T // 6 + 1)[:T] + 0.1 * rng.standard_normal(T)
    panel.values[1, 0] = 50 + np.cumsum(rng.standard_normal(T))
    series, origins = np.array([(0, 0), (1, 0)]), np.array([400, 400])
    names = x_reals(list(panel.signals), cycle=True)
    col = {n: i for i, n in enumerate(names)}
    ungated = build_windows(panel, series, origins, WindowRules(144, 24, 12, cycle=True, center="last"), {})
    gated = build_windows(panel, series, origins,
                          WindowRules(144, 24, 12, cycle=True, center="last", cycle_gate=CYCLE_GATE), {})
    strength = gated.encoder_cont[:, 0, col["cycle_strength"]]
    assert strength[0] < 0.2 and strength[1] >= CYCLE_GATE
    np.testing.assert_array_equal(gated.decoder_cont[0], ungated.decoder_cont[0])
    np.testing.assert_array_equal(gated.encoder_cont[0], ungated.encoder_cont[0])
    assert np.abs(ungated.decoder_cont[1, :, col["cycle"]]).max() > 0.1  # a profile it would have read
    assert not gated.decoder_cont[1, :, col["cycle"]].any() and not gated.encoder_cont[1, :, col["cycle"]].any()
    # Only the cycle column differs: the strength, the target and every other input are the same.
    others = [i for n, i in col.items() if n != "cycle"]
    np.testing.assert_array_equal(gated.encoder_cont[1][:, others], ungated.encoder_cont[1][:, others])


def test_a_model_saved_before_the_inputs_existed_has_none_and_a_new_one_reads_them() -> None:
    spec = ModelSpec(signals=["cpu", "memory"], **TINY)
    old = spec.to_json()
    del old["cycle"], old["cycle_gate"]
    assert ModelSpec.from_json(old).cycle is False
    # A model trained with the cycle before the gate existed keeps reading every window's profile.
    assert ModelSpec.from_json({**old, "cycle": True}).window_rules().cycle_gate == 0.0
    with pytest.raises(ValueError, match="cycle_gate must be between 0 and 3"):
        ModelSpec.from_json({**old, "cycle": True, "cycle_gate": 5})
    with_cycle = ModelSpec.from_json({**spec.to_json(), "cycle": True})
    assert with_cycle.window_rules().cycle and "cycle" in with_cycle.encoder_variables
    net = build_network(with_cycle)
    assert "cycle" in net.decoder_variables and "cycle_strength" in net.static_variables
    assert "cycle" not in build_network(spec).encoder_variables
    assert driver_of("cycle", "cpu") == "own"  # the signal's own history, seen through its cycle


@pytest.mark.parametrize(("flag", "expected"), [([], "auto"), (["--cycle"], True), (["--no-cycle"], False)])
def test_the_backtest_flag_turns_the_inputs_on(flag: list[str], expected: bool | str) -> None:
    from trainer.cli import _load_config, _model_overrides, _parser, _spec

    args = _parser().parse_args(["backtest", "--data", "x.parquet", "--out", "y.csv", *flag])
    config = _load_config(args, _model_overrides(args))
    spec = _spec(config, ["value"]) if config is not None else None
    assert spec is not None and spec.cycle is expected
    assert spec.cycle_gate == (CYCLE_GATE if expected is True else 0.0)  # a new model with the cycle is gated
