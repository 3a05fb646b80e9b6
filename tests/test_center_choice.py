"""``model.center: auto``: the center a fresh network gets is chosen from its training history."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from forecaster.contract.model import ModelSpec
from forecaster.contract.panel import Panel
from tests.modelkit import one_signal_panel, tiny_registry
from trainer.centering import AUTO, RECENT_WINS_BELOW, choose_center, recent_over_last, resolve_center


def _spiky(hosts: int = 6, T: int = 2000, seed: int = 0) -> Panel:
    """A steady level with small noise and one-step spikes on 5 % of the steps: NAB's AWS metrics."""
    rng = np.random.default_rng(seed)
    y = 0.4 + 0.01 * rng.standard_normal((hosts, T))
    y += 0.4 * (rng.random((hosts, T)) < 0.05)
    return one_signal_panel(y)


def _wandering(hosts: int = 6, T: int = 2000, seed: int = 0) -> Panel:
    """A random walk: where the signal is now is the best guess of where it goes next (SMD, leaks)."""
    rng = np.random.default_rng(seed)
    return one_signal_panel(0.5 + np.cumsum(0.01 * rng.standard_normal((hosts, T)), axis=1))


def test_spiky_histories_choose_the_recent_median_and_wandering_ones_the_last_value() -> None:
    spiky, wandering = _spiky(), _wandering()
    end = np.full(6, 2000)
    ratio, n = recent_over_last(spiky, end)
    assert n == 6 and ratio is not None and ratio < RECENT_WINS_BELOW
    choice = choose_center(spiky, end)
    assert choice.center == "recent" and "better than the last value" in choice.reason
    choice = choose_center(wandering, end)
    assert choice.center == "last" and choice.ratio is not None and choice.ratio > 1
    assert "worse than the last value" in choice.reason and "recent needs 10% better" in choice.reason


def test_only_the_training_part_decides() -> None:
    """A history that wanders before ``series_end`` and turns spiky after it is judged on its first part."""
    spiky, wandering = _spiky(T=1200), _wandering(T=1200)
    joined = one_signal_panel(np.concatenate([wandering.values[:, 0], spiky.values[:, 0]], axis=1))
    assert choose_center(joined, np.full(6, 1200)).center == "last"
    assert choose_center(joined, np.full(6, 2400)).center == "recent"


def test_too_little_or_constant_history_keeps_the_last_value() -> None:
    short = choose_center(_spiky(T=30), np.full(6, 30))  # under an hour plus two hours
    assert (short.center, short.ratio, short.series) == ("last", None, 0)
    flat = choose_center(one_signal_panel(np.full((2, 500), 0.5)), np.full(2, 500))  # no error to compare
    assert (flat.center, flat.ratio) == ("last", None)
    gappy = _spiky().values.copy()
    gappy[:, :, ::2] = np.nan  # every other step missing: still compared on what is there
    assert choose_center(dataclasses.replace(_spiky(), values=gappy), np.full(6, 2000)).center == "recent"
    late = _spiky().values.copy()
    late[:3, :, :1500] = np.nan  # three hosts that joined late: compared on their last 500 steps
    choice = choose_center(dataclasses.replace(_spiky(), values=late), np.full(6, 2000))
    assert (choice.center, choice.series) == ("recent", 6)


def test_auto_takes_the_center_of_the_network_it_continues_from() -> None:
    spec = ModelSpec(signals=["cpu"], center=AUTO)
    spiky = _spiky()
    end = np.full(6, 2000)
    assert resolve_center(spec, spiky, end).center == "recent"
    # Weights trained around the last value keep it, whatever this history favours.
    assert resolve_center(spec, spiky, end, start=dataclasses.replace(spec, center="last")).center == "last"
    # A center set in the configuration is used as it is.
    assert resolve_center(dataclasses.replace(spec, center="mean"), spiky, end).center == "mean"
    with pytest.raises(ValueError, match="center must be one of"):  # a saved model never says auto
        ModelSpec.from_json({**spec.to_json(), "center": AUTO})


def test_the_default_configuration_is_auto_and_train_resolves_it(tmp_path: Path) -> None:
    from forecaster.contract.config import load_config
    from forecaster.contract.registry import GLOBAL_SCOPE
    from trainer.cli import _parser, _resolved_auto, _starting_weights

    assert load_config(None, {}).model.center == AUTO
    registry, model, _ = tiny_registry(tmp_path)
    current = registry.latest_path()
    assert current is not None
    spiky = _spiky()
    spec = dataclasses.replace(model.spec, center=AUTO)
    end = np.full(6, 2000)
    # train continues from the current model by default: its center, and its weights fit.
    continued = _resolved_auto(_parser().parse_args(["train"]), registry, spec, spiky, end)
    assert continued.center == model.spec.center
    assert _starting_weights(_parser().parse_args(["train"]), registry, GLOBAL_SCOPE, continued) == \
        current / "model.safetensors"
    # --from-scratch: the history decides.
    fresh = _resolved_auto(_parser().parse_args(["train", "--from-scratch"]), registry, spec, spiky, end)
    assert fresh.center == "recent"
    # --init-from: that model's center.
    init = _resolved_auto(_parser().parse_args(["train", "--init-from", str(current)]), registry, spec, spiky, end)
    assert init.center == model.spec.center
    # A current model of another shape is not continued from, so the history decides.
    other = dataclasses.replace(spec, hidden_size=spec.hidden_size * 2)
    assert _resolved_auto(_parser().parse_args(["train"]), registry, other, spiky, end).center == "recent"
