"""Same-time-of-day inputs: what the window holds, and that nothing after the origin leaks in."""

from __future__ import annotations

import numpy as np
import pytest

from forecaster.contract.features import SEASONAL_REALS, WindowRules, build_windows, x_reals
from forecaster.contract.panel import Panel

STEP = 3600  # one step an hour: a day is 24 steps, so a horizon can reach past it
DAY = 24


def _panel(values: np.ndarray) -> Panel:
    T = len(values)
    ts = 1_750_000_000 - STEP * np.arange(T - 1, -1, -1, dtype=np.int64)
    return Panel(["h0"], ["cpu"], ts, values[None, None, :].astype(np.float32), STEP)


def _window(values: np.ndarray, origin: int, days: int, E: int = 12, H: int = 30):
    rules = WindowRules(E, H, min_history=4, max_stale_steps=10**6, min_observed_fraction=0.0, seasonal_days=days)
    batch = build_windows(_panel(values), np.array([[0, 0]]), np.array([origin]), rules, {"cpu": 1})
    col = {n: i for i, n in enumerate(x_reals(["cpu"], days))}
    return batch, col


def test_the_daily_spike_shows_at_its_time_of_day_in_the_decoder() -> None:
    T = 6 * DAY
    values = 10.0 + 4.0 * (np.arange(T) % 2)  # a wiggle, so the window's scale is not degenerate
    spike_hour = 5
    for d in range(6):
        if d != 3:  # one day without the spike: the max still shows it, the mean is diluted
            values[d * DAY + spike_hour] = 50.0
    values[3 * DAY + spike_hour] = 10.0
    origin = 4 * DAY + 1  # decoder step h is hour (origin + h) % 24; the next hour 5 is h = 4
    batch, col = _window(values, origin, days=3)
    dec = batch.decoder_cont[0]
    c, s = batch.center[0], batch.scale[0]
    h = spike_hour - origin % DAY - 1  # 0-based decoder row of the next hour 5
    assert dec[h, col["season_max"]] == pytest.approx((50.0 - c) / s, rel=1e-5)
    # lags 1, 2, 3 days: hour 5 of days 3 (no spike), 2 and 1 (spike) -> mean (10 + 50 + 50) / 3
    assert dec[h, col["season_mean"]] == pytest.approx((110.0 / 3 - c) / s, rel=1e-5)
    assert dec[h, col["season_days"]] == pytest.approx(1.0)
    assert dec[h + 1, col["season_max"]] == pytest.approx((10.0 - c) / s, rel=1e-5)  # hour 6: no spike, even hour


def test_no_lag_after_the_origin_is_used() -> None:
    """A horizon longer than a day: one day back from a late step is still in the future."""
    T = 4 * DAY
    values = np.full(T, 10.0)
    origin = 2 * DAY
    values[origin + 1:] = 1000.0  # the future is loud; none of it may reach the inputs
    batch, col = _window(values, origin, days=2, H=30)
    dec = batch.decoder_cont[0]
    assert np.abs(dec[:, col["season_max"]]).max() < 1.0
    # steps origin + 25 .. origin + 30 have their 1-day lag after the origin: only the 2-day lag is used
    assert dec[24:, col["season_days"]] == pytest.approx(0.5)
    assert dec[:24, col["season_days"]] == pytest.approx(1.0)


def test_missing_days_are_counted_not_invented() -> None:
    values = np.full(3 * DAY, 10.0)
    values[:DAY] = np.nan  # the first day was never scraped
    batch, col = _window(values, 2 * DAY + 3, days=3)
    dec = batch.decoder_cont[0]
    # three days back is before the data, two days back falls in the unscraped day, one day back is there
    assert dec[0, col["season_days"]] == pytest.approx(1 / 3)
    assert set(SEASONAL_REALS) <= set(col)


def test_without_seasonal_days_the_layout_is_unchanged() -> None:
    assert not set(SEASONAL_REALS) & set(x_reals(["cpu"], 0))
    batch, _ = _window(np.full(3 * DAY, 10.0), 2 * DAY, days=0)
    assert batch.decoder_cont.shape[-1] == len(x_reals(["cpu"], 0))


def test_a_seasonal_model_trains_saves_and_reloads(tmp_path) -> None:
    from forecaster.contract.artifacts import load_model_dir, save_model_dir
    from tests.modelkit import synthetic_panel, train_tiny

    panel = synthetic_panel(hosts=2, days=3)
    model = train_tiny(panel, tmp_path / "work", seasonal_days=1)
    assert model.spec.lookback_steps == model.spec.context_steps + 288
    assert not list((tmp_path / "work").glob("best-*.safetensors"))  # the run's checkpoint is its own, and gone
    save_model_dir(model, tmp_path / "m")
    again = load_model_dir(tmp_path / "m")
    assert again.spec.seasonal_days == 1
    series = np.array([(i, j) for i in range(2) for j in range(len(panel.signals))])
    batch = build_windows(panel, series, np.full(len(series), panel.n_times - 1), model.spec.window_rules(),
                          model.spec.signal_codes(), np.full(len(series), 0.9))
    assert batch.decoder_cont.shape[-1] == len(x_reals(panel.signals, 1))
    np.testing.assert_allclose(again.predict(batch).quantiles, model.predict(batch).quantiles, rtol=1e-6)


def test_a_bad_seasonal_days_flag_is_a_usage_error(tmp_path, capsys) -> None:
    from trainer.cli import main

    data = tmp_path / "d.parquet"
    data.write_bytes(b"")
    code = main(["backtest", "--data", str(data), "--out", str(tmp_path / "fc.parquet"), "--seasonal-days", "-1"])
    assert code == 2
    assert "model.seasonal_days" in capsys.readouterr().err
