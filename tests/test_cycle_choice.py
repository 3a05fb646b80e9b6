"""``model.cycle: auto``: a fresh network reads its window's short cycle only where the training history's
windows repeat clearly better than they persist; a continued one keeps its own choice."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from forecaster.contract.features import CYCLE_GATE
from forecaster.contract.model import AUTO_CYCLE, ModelSpec, build_network
from forecaster.contract.panel import Panel
from tests.modelkit import one_signal_panel, tiny_registry
from trainer.cycle_choice import CYCLE_WINS_BELOW, choose_cycle, cycle_over_last, resolve_cycle

DAY = 86400 // 300


def _cron(hosts: int = 4, days: float = 6, seed: int = 0) -> Panel:
    """A job every 30 minutes: ten minutes high, twenty low, with noise (what the cycle profile forecasts)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(days * DAY))
    phase = rng.integers(0, 6, (hosts, 1))
    high = ((t[None, :] + phase) % 6) < 2
    return one_signal_panel(0.3 + 0.4 * high + 0.02 * rng.standard_normal((hosts, len(t))))


def _wandering(hosts: int = 4, days: float = 6, seed: int = 0) -> Panel:
    """A random walk: no period repeats, the last value says most."""
    rng = np.random.default_rng(seed)
    return one_signal_panel(0.5 + np.cumsum(0.01 * rng.standard_normal((hosts, int(days * DAY))), axis=1))


def test_a_repeating_history_chooses_the_cycle_and_a_wandering_one_does_not() -> None:
    end = np.full(4, 6 * DAY)
    ratio, n = cycle_over_last(_cron(), end)
    assert n == 4 and ratio is not None and ratio < 0.5  # the profile knows the next job; the last value does not
    choice = choose_cycle(_cron(), end)
    assert choice.cycle and "better than the last value" in choice.reason
    # Gated off (no window repeats 10 % better than it persists): exactly the last value's error.
    choice = choose_cycle(_wandering(), end)
    assert not choice.cycle and choice.ratio == pytest.approx(1.0)
    assert "no better than the last value" in choice.reason and "the cycle needs 10% better" in choice.reason
    assert CYCLE_WINS_BELOW == 0.9


def test_too_little_history_reads_no_cycle_and_only_the_training_part_decides() -> None:
    short = choose_cycle(_cron(days=1), np.full(4, DAY))  # a day: no origin with a full context and 2 h after it
    assert not short.cycle and short.ratio is None and "too little history" in short.reason
    assert not choose_cycle(one_signal_panel(np.full((2, 0), 0.5)), np.zeros(2, dtype=np.int64)).cycle
    # A random walk for 6 days, then the job: judged before the job there is no cycle, with it there is.
    joined = one_signal_panel(np.concatenate([_wandering().values[:, 0], _cron(days=12).values[:, 0]], axis=1))
    assert not choose_cycle(joined, np.full(4, 6 * DAY)).cycle
    assert choose_cycle(joined, np.full(4, 18 * DAY)).cycle


def test_a_window_with_gaps_is_read_as_the_network_reads_it() -> None:
    """Scrape gaps are carried forward, as in the network's windows; the cycle is still found."""
    values = _cron().values.copy()
    values[:, :, np.random.default_rng(1).random(values.shape[2]) < 0.05] = np.nan
    ratio, n = cycle_over_last(dataclasses.replace(_cron(), values=values), np.full(4, 6 * DAY))
    assert n == 4 and ratio is not None and ratio < CYCLE_WINS_BELOW


def test_resolve_keeps_an_explicit_choice_follows_the_network_continued_from_and_otherwise_chooses() -> None:
    end = np.full(4, 6 * DAY)
    spec = ModelSpec(signals=["cpu"], cycle=AUTO_CYCLE)
    with pytest.raises(ValueError, match="chosen by the trainer"):
        build_network(spec)  # nothing may build a network before the choice
    chosen = resolve_cycle(spec, _cron(), end)
    assert (chosen.cycle, chosen.cycle_gate) == (True, CYCLE_GATE)
    assert "cycle" in chosen.encoder_variables
    none = resolve_cycle(spec, _wandering(), end)
    assert (none.cycle, none.cycle_gate) == (False, 0.0)
    start = dataclasses.replace(spec, cycle=True, cycle_gate=0.0)  # trained with the cycle before the gate
    continued = resolve_cycle(spec, _wandering(), end, start=start)
    assert (continued.cycle, continued.cycle_gate) == (True, 0.0)
    explicit = dataclasses.replace(spec, cycle=False)
    assert resolve_cycle(explicit, _cron(), end) is explicit
    with pytest.raises(ValueError, match="cycle must be true or false"):
        ModelSpec.from_json({**chosen.to_json(), "cycle": AUTO_CYCLE})  # never saved unresolved


def test_the_configuration_takes_auto_by_default_and_refuses_other_words(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from forecaster.contract.config import load_config
    from trainer.cli import _spec, main

    config = load_config(None, {})
    assert config.model.cycle == "auto"
    assert _spec(config, ["cpu"]).cycle == AUTO_CYCLE and _spec(config, ["cpu"]).cycle_gate == 0.0
    assert load_config(None, {"model.cycle": "true"}).model.cycle is True
    assert load_config(None, {"model.cycle": False}).model.cycle is False
    config_file = tmp_path / "c.yml"
    config_file.write_text("model:\n  cycle: sometimes\n")
    data = tmp_path / "d.parquet"
    data.write_bytes(b"")
    assert main(["--config.file", str(config_file), "backtest", "--data", str(data), "--out",
                 str(tmp_path / "o.csv")]) == 2
    assert "model.cycle: must be auto, true or false, not 'sometimes'" in capsys.readouterr().err


def test_train_continues_the_current_model_with_its_choice_and_chooses_only_from_scratch(tmp_path: Path) -> None:
    from forecaster.contract.registry import GLOBAL_SCOPE
    from trainer.cli import _parser, _resolved_auto, _starting_weights

    registry, model, _ = tiny_registry(tmp_path)
    current = registry.latest_path()
    assert current is not None and model.spec.cycle is False
    cron = _cron(hosts=4)
    cron = dataclasses.replace(cron, signals=list(model.spec.signals[:1]))
    spec = dataclasses.replace(model.spec, cycle=AUTO_CYCLE)
    end = np.full(4, 6 * DAY)
    continued = _resolved_auto(_parser().parse_args(["train"]), registry, spec, cron, end)
    assert continued.cycle is False
    assert _starting_weights(_parser().parse_args(["train"]), registry, GLOBAL_SCOPE, continued) == \
        current / "model.safetensors"
    fresh = _resolved_auto(_parser().parse_args(["train", "--from-scratch"]), registry, spec, cron, end)
    assert (fresh.cycle, fresh.cycle_gate) == (True, CYCLE_GATE)
    # The cycle asked for explicitly differs from the current model's shape: fresh weights, as before.
    explicit = dataclasses.replace(model.spec, cycle=True, cycle_gate=CYCLE_GATE)
    assert _starting_weights(_parser().parse_args(["train"]), registry, GLOBAL_SCOPE, explicit) is None
