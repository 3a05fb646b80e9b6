"""Each series' band follows its own outcomes (forecaster/contract/online_band.py), in the backtest and in a cycle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from devkit.fakeprom import QUERY_RANGE, FakePrometheus, Reply
from forecaster.contract.config import DEFAULT_SIGNALS
from forecaster.contract.online_band import OnlineBand, panel_values_at
from forecaster.contract.panel import Panel
from forecaster.contract.prometheus import PrometheusClient
from forecaster.serving.cycle import run_cycle
from forecaster.serving.store import ModelStore
from tests.forecaster_harness import forecaster_config, shared_tiny_registry

STEP = 300
H = 96
HOUR = 3600


def _panel(values: np.ndarray, start: int = 0) -> Panel:
    """One host, one signal per row of ``values`` [S, T]."""
    S, T = values.shape
    return Panel(["h"], [f"s{j}" for j in range(S)], start + STEP * np.arange(T, dtype=np.int64),
                 values[None].astype(np.float32), STEP)


def _replay(band: OnlineBand, panel: Panel, keys: list[str], q: np.ndarray, origins: np.ndarray) -> np.ndarray:
    """Hourly origins as the backtest visits them: observe, adjust, record; returns the adjusted forecasts."""
    values_at = panel_values_at(panel, {k: (0, j) for j, k in enumerate(keys)})
    out = []
    for t in origins:
        band.observe(float(t), values_at)
        out.append(band.adjust(keys, q))
        band.record(keys, float(t), q)
    return np.stack(out)


def test_factors_settle_where_each_side_leaves_out_a_tenth() -> None:
    # The network's band says +-1.28 (a standard normal's 80 %); one series is twice as noisy, one half.
    rng = np.random.default_rng(0)
    T = 24 * 12 * 20
    sd = np.array([2.0, 0.5])
    panel = _panel(rng.normal(0.0, 1.0, (2, T)) * sd[:, None])
    q = np.zeros((2, H, 3), dtype=np.float32)
    q[..., 0], q[..., 2] = -1.2816, 1.2816
    band = OnlineBand(STEP)
    origins = panel.timestamps[::12][: T // 12 - 8]
    adjusted = _replay(band, panel, ["wide", "narrow"], q, origins)
    f = band.factors(["wide", "narrow", "never seen"])
    np.testing.assert_allclose(f[0], [2.0, 2.0], rtol=0.15)
    np.testing.assert_allclose(f[1], [0.5, 0.5], rtol=0.15)
    np.testing.assert_array_equal(f[2], [1.0, 1.0])
    assert (adjusted[..., 1] == 0).all()  # the median never moves
    # Over the last ten days the adjusted bands cover about 80 % of both series; the network's band did not.
    late = slice(len(origins) // 2, None)
    for s in range(2):
        y = np.stack([panel.values[0, s, i + 1:i + 1 + H] for i in range(0, 12 * len(origins), 12)])[late]
        band_q = adjusted[late, s]
        inside = (band_q[..., 0] <= y) & (y <= band_q[..., 2])
        assert 0.75 <= inside.mean() <= 0.85
    assert len(band) == 2 and band.summary()["series"] == 2


def test_no_factor_knows_an_outcome_after_its_origin() -> None:
    rng = np.random.default_rng(1)
    T = 24 * 12 * 4
    values = rng.normal(0.0, 1.0, (1, T))
    future_blown_up = values.copy()
    cut = T // 2
    future_blown_up[0, cut + 1:] *= 50  # after the origin at `cut`, the series explodes
    q = np.zeros((1, H, 3), dtype=np.float32)
    q[..., 0], q[..., 2] = -1.0, 1.0
    factors = []
    for v in (values, future_blown_up):
        band = OnlineBand(STEP)
        panel = _panel(v)
        origins = panel.timestamps[: cut + 1: 12]
        assert origins[-1] == panel.timestamps[cut]
        _replay(band, panel, ["a"], q, origins)
        factors.append(band.factors(["a"]))
    np.testing.assert_array_equal(factors[0], factors[1])


def test_gaps_and_targets_off_the_panel_count_as_nothing_and_are_dropped() -> None:
    panel = _panel(np.full((1, 200), np.nan))
    band = OnlineBand(STEP)
    q = np.zeros((1, H, 3), dtype=np.float32)
    q[..., 0], q[..., 2] = -1.0, 1.0
    band.record(["a"], float(panel.timestamps[0]), q)
    assert band.observe(float(panel.timestamps[-1]), panel_values_at(panel, {"a": (0, 0)})) == 0
    assert band.pending == 0  # every target was at or before now: scored or dropped, not kept
    np.testing.assert_array_equal(band.factors(["a"]), [[1.0, 1.0]])


def test_the_service_keeps_one_forecast_an_hour() -> None:
    band = OnlineBand(STEP)
    q = np.zeros((1, H, 3), dtype=np.float32)
    assert band.due(1000.0)
    band.record(["a"], 1000.0, q)
    assert not band.due(1000.0 + HOUR - STEP) and band.due(1000.0 + HOUR)
    with pytest.raises(ValueError):
        OnlineBand(0)


def test_a_cycle_stretches_each_band_by_what_its_series_did_since_an_earlier_cycle(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    data = Path(__file__).parent / "data" / "forecaster"
    meta = json.loads((data / "meta.json").read_text())
    now = meta["end"] + 42.0
    bodies = {s.query: (data / f"query_range_{s.name}.json").read_bytes() for s in DEFAULT_SIGNALS}
    store = ModelStore(shared_tiny_registry(tmp_path_factory), step_seconds=STEP,
                       signals=[s.name for s in DEFAULT_SIGNALS])
    assert store.refresh() == []
    models = store.current()
    band = OnlineBand(STEP)
    with FakePrometheus() as fake:
        fake.always(QUERY_RANGE, lambda rec: Reply(200, bodies[rec.params["query"]],
                                                   {"Content-Type": "application/json"}))
        config = forecaster_config(None, fake.url)
        with PrometheusClient.from_config(config.prometheus) as client:
            earlier = run_cycle(client, models, config, now - 4 * HOUR, band=band)
            assert earlier.ok, earlier.errors
            assert band.pending >= 1 and len(band) == len(earlier.forecasts)  # type: ignore[arg-type]
            plain = run_cycle(client, models, config, now)
            followed = run_cycle(client, models, config, now, band=band)
    assert followed.ok and plain.ok
    a, b = plain.forecasts, followed.forecasts
    assert a is not None and b is not None
    keys = list(zip(b.instances.tolist(), b.signals.tolist(), strict=True))
    assert list(zip(a.instances.tolist(), a.signals.tolist(), strict=True)) == keys
    f = band.factors(keys)
    assert (f != 1).any(axis=1).all()  # four hours of outcomes moved every series' factors
    np.testing.assert_array_equal(a.quantiles[..., 1], b.quantiles[..., 1])
    np.testing.assert_array_equal(a.probability, b.probability)  # the breach model reads the network's band
    p50 = a.quantiles[..., 1]
    want_hi = np.clip(p50 + f[:, 1:2] * (a.quantiles[..., 2] - p50), 0, 1)  # the signals are ratios in [0, 1]
    want_lo = np.clip(p50 - f[:, 0:1] * (p50 - a.quantiles[..., 0]), 0, 1)
    np.testing.assert_allclose(b.quantiles[..., 2], want_hi, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b.quantiles[..., 0], want_lo, rtol=1e-5, atol=1e-6)
