"""``model.seasonal_days: auto``: a fresh network reads a week of same-time inputs only where its training
history is long enough and has a daily pattern; a continued one keeps its own."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from forecaster.contract.model import AUTO_SEASONAL_DAYS, ModelSpec
from forecaster.contract.panel import Panel
from tests.modelkit import one_signal_panel, tiny_registry
from trainer.week_choice import WEEK, WEEK_WINS_BELOW, choose_week, resolve_week, training_days, week_over_last

DAY = 86400 // 300


def _daily(hosts: int = 4, days: float = 20, seed: int = 0) -> Panel:
    """A load that rises and falls every day, with noise: what the previous days' same time forecasts."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(days * DAY))
    phase = rng.uniform(0, 2 * np.pi, (hosts, 1))
    noise = 0.02 * rng.standard_normal((hosts, len(t)))
    return one_signal_panel(0.5 + 0.3 * np.sin(2 * np.pi * t / DAY + phase) + noise)


def _wandering(hosts: int = 4, days: float = 20, seed: int = 0) -> Panel:
    """A random walk: no time of day says anything, the last value says most."""
    rng = np.random.default_rng(seed)
    return one_signal_panel(0.5 + np.cumsum(0.01 * rng.standard_normal((hosts, int(days * DAY))), axis=1))


def test_a_long_daily_history_chooses_the_week_and_a_wandering_one_does_not() -> None:
    daily, wandering = _daily(), _wandering()
    end = np.full(4, 20 * DAY)
    ratio, n = week_over_last(daily, end)
    assert n == 4 and ratio is not None and ratio < WEEK_WINS_BELOW
    choice = choose_week(daily, end)
    assert choice.days == WEEK and "better than the last value" in choice.reason
    choice = choose_week(wandering, end)
    assert choice.days == 0 and choice.ratio is not None and choice.ratio > 1
    assert "worse than the last value" in choice.reason and "the week needs 10% better" in choice.reason


def test_too_short_a_history_reads_no_week_however_daily() -> None:
    short = _daily(days=12)
    assert training_days(short, np.full(4, 12 * DAY)) == pytest.approx(12)
    choice = choose_week(short, np.full(4, 12 * DAY))
    assert choice.days == 0 and choice.ratio is None and "the week needs 15" in choice.reason
    # A host that joined late counts from its first value: two of four hosts with 10 of 20 days.
    late = _daily(days=20).values.copy()
    late[:3, :, : 10 * DAY] = np.nan
    assert choose_week(dataclasses.replace(_daily(days=20), values=late), np.full(4, 20 * DAY)).days == 0
    assert choose_week(one_signal_panel(np.full((2, 0), 0.5)), np.zeros(2, dtype=np.int64)).days == 0


def test_only_the_training_part_decides() -> None:
    """Daily for 16 days, then a random walk: judged before the walk it is daily, with the walk it is not."""
    daily, walk = _daily(days=16).values[:, 0], 5 + _wandering(days=30).values[:, 0]
    joined = one_signal_panel(np.concatenate([daily, walk], axis=1))
    assert choose_week(joined, np.full(4, 16 * DAY)).days == WEEK
    assert choose_week(joined, np.full(4, 46 * DAY)).days == 0


def test_resolve_keeps_explicit_days_follows_the_network_continued_from_and_otherwise_chooses() -> None:
    daily, end = _daily(), np.full(4, 20 * DAY)
    spec = ModelSpec(signals=["cpu"], seasonal_days=AUTO_SEASONAL_DAYS, seasonal_bucket_seconds=3600)
    with pytest.raises(ValueError, match="chosen by the trainer"):
        _ = spec.lookback_steps  # nothing may build a network before the choice
    chosen = resolve_week(spec, daily, end)
    assert (chosen.seasonal_days, chosen.seasonal_bucket_seconds) == (WEEK, 3600)
    assert chosen.lookback_steps == spec.context_steps + WEEK * DAY
    none = resolve_week(spec, _wandering(), end)
    assert (none.seasonal_days, none.seasonal_bucket_seconds) == (0, 0)
    start = dataclasses.replace(spec, seasonal_days=3, seasonal_bucket_seconds=7200)
    continued = resolve_week(spec, daily, end, start=dataclasses.replace(start))
    assert (continued.seasonal_days, continued.seasonal_bucket_seconds) == (3, 7200)
    explicit = dataclasses.replace(spec, seasonal_days=2)
    assert resolve_week(explicit, _wandering(), end) is explicit
    with pytest.raises(ValueError, match="seasonal_days"):
        ModelSpec.from_json({**spec.to_json(), "seasonal_days": AUTO_SEASONAL_DAYS})  # never saved unresolved


def test_the_configuration_takes_auto_by_default_and_refuses_other_words(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from forecaster.contract.config import load_config
    from trainer.cli import _parser, _spec, main

    config = load_config(None, {})
    assert config.model.seasonal_days == "auto"
    assert _spec(config, ["cpu"]).seasonal_days == AUTO_SEASONAL_DAYS
    assert load_config(None, {"model.seasonal_days": 7}).model.seasonal_days == 7
    args = _parser().parse_args(["backtest", "--data", "d", "--out", "o.csv", "--seasonal-days", "auto"])
    assert args.seasonal_days == "auto"
    data = tmp_path / "d.parquet"
    data.write_bytes(b"")
    assert main(["backtest", "--data", str(data), "--out", str(tmp_path / "o.csv"), "--seasonal-days", "29"]) == 2
    assert "model.seasonal_days: must be auto or a whole number of days from 0 to 28, not 29" in capsys.readouterr().err
    assert main(["backtest", "--data", str(data), "--out", str(tmp_path / "o.csv"), "--seasonal-days", "week"]) == 2
    assert "'week' is neither auto nor a whole number of days" in capsys.readouterr().err


def test_train_continues_the_current_model_with_its_days_and_chooses_only_from_scratch(tmp_path: Path) -> None:
    from forecaster.contract.registry import GLOBAL_SCOPE
    from trainer.cli import _parser, _resolved_auto, _starting_weights

    registry, model, _ = tiny_registry(tmp_path)
    current = registry.latest_path()
    assert current is not None and model.spec.seasonal_days == 0
    daily = _daily(hosts=4)
    spec = dataclasses.replace(model.spec, seasonal_days=AUTO_SEASONAL_DAYS, seasonal_bucket_seconds=3600)
    end = np.full(4, 20 * DAY)
    continued = _resolved_auto(_parser().parse_args(["train"]), registry, spec, daily, end)
    assert (continued.seasonal_days, continued.seasonal_bucket_seconds) == (0, 0)
    assert _starting_weights(_parser().parse_args(["train"]), registry, GLOBAL_SCOPE, continued) == \
        current / "model.safetensors"
    fresh = _resolved_auto(_parser().parse_args(["train", "--from-scratch"]), registry, spec, daily, end)
    assert (fresh.seasonal_days, fresh.seasonal_bucket_seconds) == (WEEK, 3600)
    # A week asked for explicitly differs from the current model's shape: fresh weights, as before.
    week = dataclasses.replace(model.spec, seasonal_days=WEEK, seasonal_bucket_seconds=3600)
    assert _starting_weights(_parser().parse_args(["train"]), registry, GLOBAL_SCOPE, week) is None
