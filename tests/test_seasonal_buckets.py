"""A week of context at a flat cost: the bucketed same-time inputs (forecaster/contract/seasonal.py).

Unit tests pin the bucket arithmetic and the lookup against hand-computed values; the integration
test backfills nine days into a real Prometheus and checks that the coarse queries the forecaster
serves with give the same buckets, and the same model inputs, as the 5-minute history that
training reads from Parquet.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecaster.contract.config import check_bucket_seconds
from forecaster.contract.features import WindowBatch, WindowRules, build_windows, known_reals, x_reals
from forecaster.contract.panel import Panel, panel_from_frame, panel_from_range_results
from forecaster.contract.seasonal import (
    Buckets,
    bucket_queries,
    buckets_from_panel,
    buckets_from_range_results,
    cached_buckets,
    same_time_earlier,
)
from tests.promserver import PrometheusServer, free_port

STEP = 300
HOUR = 3600
DAY = 86400


def _panel(values: np.ndarray, first: int, signals: tuple[str, ...] = ("cpu",)) -> Panel:
    times = first + STEP * np.arange(values.shape[2], dtype=np.int64)
    return Panel([f"h{i}" for i in range(values.shape[0])], list(signals), times, values.astype(np.float32), STEP)


def test_bucket_width_must_be_whole_steps_dividing_a_day() -> None:
    check_bucket_seconds(3600, 300)
    check_bucket_seconds(900, 300)
    for bad in (0, 1000, 7 * 3600, 172800):
        with pytest.raises(ValueError, match="seasonal_bucket_seconds"):
            check_bucket_seconds(bad, 300)


def test_buckets_hold_the_mean_and_max_of_the_steps_in_each_hour() -> None:
    """A bucket ending at E covers (E - 1h, E]: the panel's first step 00:10 falls in the bucket ending 01:00
    with the eleven steps to 01:00 (its first, 00:05, is before the panel: a partial bucket)."""
    first = 10 * DAY + 600  # 00:10
    T = 3 * 12 + 2
    values = np.arange(T, dtype=np.float64)[None, None, :]
    values[0, 0, 5] = np.nan
    b = buckets_from_panel(_panel(values, first), HOUR)
    assert list(b.ends) == [10 * DAY + HOUR * k for k in (1, 2, 3, 4)]
    # steps 0..10 (00:10 .. 01:00) without the NaN at step 5; then 11..22, 23..34, 35..37
    assert b.mean[0, 0, 0] == pytest.approx(np.mean([v for v in range(11) if v != 5]))
    assert b.peak[0, 0, 0] == 10
    assert b.mean[0, 0, 1] == pytest.approx(np.mean(range(11, 23))) and b.peak[0, 0, 1] == 22
    assert b.mean[0, 0, 3] == pytest.approx(np.mean(range(35, 38))) and b.peak[0, 0, 3] == 37
    on_the_hour = buckets_from_panel(_panel(values, 10 * DAY), HOUR)  # first step is a bucket's last
    assert on_the_hour.ends[0] == 10 * DAY and on_the_hour.mean[0, 0, 0] == 0.0
    assert on_the_hour.mean[0, 0, 1] == pytest.approx(np.mean([v for v in range(1, 13) if v != 5]))


def test_buckets_of_a_panel_are_computed_once() -> None:
    panel = _panel(np.random.default_rng(0).random((2, 1, 400)), 5 * DAY)
    assert cached_buckets(panel, HOUR) is cached_buckets(panel, HOUR)
    assert cached_buckets(panel, 2 * HOUR) is not cached_buckets(panel, HOUR)


def test_same_time_earlier_averages_the_days_that_had_data_and_never_looks_past_the_origin() -> None:
    days, K = 3, 4 * 24
    ends = 10 * DAY + HOUR * (1 + np.arange(K, dtype=np.int64))
    mean = np.full((1, 1, K), np.nan)
    peak = np.full((1, 1, K), np.nan)
    mean[0, 0] = np.arange(K)
    peak[0, 0] = np.arange(K) + 0.5
    mean[0, 0, 24 + 5] = np.nan  # day 2 at 05:00-06:00 is missing
    peak[0, 0, 24 + 5] = np.nan
    b = Buckets(["h0"], ["cpu"], HOUR, ends, mean, peak)
    t = 13 * DAY + 5 * HOUR + 1200  # day 3, 05:20: in the buckets ending 06:00 of each day
    origin = 13 * DAY + 8 * HOUR
    m, p, share = same_time_earlier(b, ["h0", "h0", "zz"], ["cpu", "cpu", "cpu"],
                                    np.array([[t], [t + 2 * DAY], [t]]), np.array([origin, origin, origin]), days)
    k = [(10 + d) * 24 + 5 - 240 for d in (0, 1, 2)]  # index of the bucket ending 06:00 of days 10, 11, 12
    got = [k[0], k[2]]  # day 11's is missing
    assert m[0, 0] == pytest.approx(np.mean(got)) and p[0, 0] == pytest.approx(max(got) + 0.5)
    assert share[0, 0] == pytest.approx(2 / 3)
    # Two days later the lookback reaches days 12-14; day 14's bucket ends after the origin.
    assert m[1, 0] == pytest.approx(np.mean([k[2], k[2] + 24])) and share[1, 0] == pytest.approx(2 / 3)
    assert np.isnan(m[2, 0]) and share[2, 0] == 0.0  # an unknown host


def test_build_windows_reads_the_bucketed_inputs_from_the_panel_or_from_given_buckets() -> None:
    """Serving passes buckets (from Prometheus) with a panel that holds only the context: the inputs are the
    ones a long panel gives."""
    rng = np.random.default_rng(1)
    T = 9 * 288
    t = np.arange(T)
    values = (0.5 + 0.3 * np.sin(2 * np.pi * t / 288) + 0.05 * rng.standard_normal((2, 1, T))).clip(0, 1)
    long = _panel(values, 20 * DAY)
    rules = WindowRules(context=288, horizon=96, min_history=72, seasonal_days=7, seasonal_bucket_seconds=HOUR,
                        center="last")
    series = np.array([[0, 0], [1, 0]])
    origins = np.array([T - 1, T - 1])
    from_long = build_windows(long, series, origins, rules, {"cpu": 1})
    short = Panel(long.instances, long.signals, long.timestamps[-288:], long.values[:, :, -288:], STEP)
    served = build_windows(short, series, np.array([287, 287]), rules, {"cpu": 1},
                           buckets=buckets_from_panel(long, HOUR))
    np.testing.assert_array_equal(served.encoder_cont, from_long.encoder_cont)
    np.testing.assert_array_equal(served.decoder_cont, from_long.decoder_cont)
    col = x_reals(["cpu"], 7).index("season_days")
    assert from_long.decoder_cont[:, :, col].min() == pytest.approx(1.0)  # seven whole days behind every step
    assert known_reals(7)[-3:] == ["season_mean", "season_max", "season_days"]
    # Without them the short panel alone knows at most the day before for the horizon.
    alone = build_windows(short, series, np.array([287, 287]), rules, {"cpu": 1})
    assert alone.decoder_cont[:, :, col].max() == pytest.approx(1 / 7) and alone.encoder_cont[:, 0, col].max() == 0


def test_bucket_queries_put_the_panel_bounds_rule_into_promql() -> None:
    mean, peak = bucket_queries("up", HOUR, STEP, (0.0, 1.0))
    assert mean == "avg_over_time((clamp_max(clamp_min((up) >= -0.01, 0.0) <= 1.01, 1.0))[3599s:300s])"
    assert peak.startswith("max_over_time(") and peak.endswith("[3599s:300s])")
    assert bucket_queries("x", 900, 300)[0] == "avg_over_time(((x))[899s:300s])"


# --------------------------------------------------------------------------- a real Prometheus

HISTORY_DAYS = 9


def _history(now: int) -> pd.DataFrame:
    """Two hosts, one-minute samples: a daily wave, noise, a gap, and values beyond the signal's bounds."""
    rng = np.random.default_rng(7)
    times = np.arange(now - HISTORY_DAYS * DAY, now, 60, dtype=np.int64)
    rows = []
    for i, inst in enumerate(("web-01", "db-01")):
        v = 0.4 + 0.1 * i + 0.3 * np.sin(2 * np.pi * times / DAY) + 0.05 * rng.standard_normal(len(times))
        v[rng.random(len(times)) < 0.01] = 1.5  # beyond max + tolerance: masked
        v[rng.random(len(times)) < 0.01] = 1.005  # within the tolerance: clipped to 1
        keep = ~((times > now - 5 * DAY) & (times < now - 5 * DAY + 3 * HOUR))  # a three-hour gap
        rows.append(pd.DataFrame({"instance": inst, "timestamp": times[keep], "load": v[keep]}))
    return pd.concat(rows, ignore_index=True)


@pytest.mark.integration
def test_prometheus_buckets_and_inputs_equal_the_parquet_ones(
        prometheus_factory: Callable[..., PrometheusServer], promtool: str, tmp_path: Path) -> None:
    from forecaster.contract.config import PrometheusSection
    from forecaster.contract.prometheus import PrometheusClient

    now = (int(pd.Timestamp.now(tz="UTC").timestamp()) // HOUR - 1) * HOUR - 120
    raw = _history(now)
    lines = ["# TYPE test_load gauge"]
    lines += [f'test_load{{instance="{r.instance}"}} {r.load:.6f} {r.timestamp}' for r in raw.itertuples()]
    om = tmp_path / "load.om"
    om.write_text("\n".join([*lines, "# EOF"]) + "\n")
    server = prometheus_factory(port=free_port())
    server.workdir.mkdir(parents=True)
    server.data_dir.mkdir()
    proc = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", "--max-block-duration=240h",
                           str(om), str(server.data_dir)], capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    server.start()
    bounds = {"load": (0.0, 1.0)}
    end = now // STEP * STEP
    start = end - (HISTORY_DAYS - 1) * DAY - 2 * HOUR  # the first hour a served window looks back to is whole
    with PrometheusClient(PrometheusSection(url=server.url)) as client:
        fine = client.query_range("test_load", start, end, STEP)
        hour_end = end // HOUR * HOUR
        hour_start = hour_end - 7 * DAY - 2 * DAY
        mean_q, peak_q = bucket_queries("test_load", HOUR, STEP, bounds["load"])
        coarse = buckets_from_range_results({"load": client.query_range(mean_q, hour_start, hour_end, HOUR)},
                                            {"load": client.query_range(peak_q, hour_start, hour_end, HOUR)},
                                            ["load"], hour_start, hour_end, HOUR)
    # The history training reads: the 5-minute range through a Parquet file.
    history = panel_from_range_results({"load": fine}, ["load"], start, end, STEP)
    frame = pd.DataFrame([{"instance": inst, "timestamp": int(ts), "load": float(v)}
                          for i, inst in enumerate(history.instances)
                          for ts, v in zip(history.timestamps, history.values[i, 0], strict=True) if np.isfinite(v)])
    frame.to_parquet(tmp_path / "history.parquet")
    parquet = panel_from_frame(pd.read_parquet(tmp_path / "history.parquet"), ["load"], STEP, bounds=bounds)
    assert parquet.out_of_bounds["load"] > 0  # the bounds rule had work to do
    from_parquet = buckets_from_panel(parquet, HOUR)

    assert coarse.instances == from_parquet.instances == ["db-01", "web-01"]
    # Compare the buckets both sources hold whole (the Parquet history starts inside its first one).
    first = int(parquet.timestamps[0]) + HOUR
    k_p = (coarse.ends[(coarse.ends >= first)] - from_parquet.ends[0]) // HOUR
    k_c = np.flatnonzero(coarse.ends >= first)
    k_c, k_p = k_c[k_p < len(from_parquet.ends)], k_p[k_p < len(from_parquet.ends)]
    assert len(k_c) > 6 * 24
    np.testing.assert_allclose(coarse.mean[:, :, k_c], from_parquet.mean[:, :, k_p], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(coarse.peak[:, :, k_c], from_parquet.peak[:, :, k_p], rtol=1e-5, atol=1e-6)
    gap = np.isnan(coarse.mean[0, 0, k_c])
    assert gap.sum() >= 2 and np.array_equal(gap, np.isnan(from_parquet.mean[0, 0, k_p]))

    # The model's inputs: served from 24 h at 5 minutes plus the coarse buckets, trained from the Parquet panel.
    rules = WindowRules(context=288, horizon=96, min_history=72, seasonal_days=7, seasonal_bucket_seconds=HOUR,
                        center="last")
    series = np.array([[0, 0], [1, 0]])
    trained = build_windows(parquet, series, np.full(2, parquet.n_times - 1), rules, {"load": 1})
    served_panel = panel_from_range_results({"load": fine}, ["load"], end - 287 * STEP, end, STEP, bounds=bounds)
    served = build_windows(served_panel, series, np.full(2, 287), rules, {"load": 1}, buckets=coarse)
    cols = [x_reals(["load"], 7).index(n) for n in ("season_mean", "season_max", "season_days")]
    np.testing.assert_allclose(served.encoder_cont[:, :, cols], trained.encoder_cont[:, :, cols], atol=1e-4)
    np.testing.assert_allclose(served.decoder_cont[:, :, cols], trained.decoder_cont[:, :, cols], atol=1e-4)
    np.testing.assert_allclose(served.encoder_cont, trained.encoder_cont, atol=1e-4)


# --------------------------------------------------------------------------- a serving cycle


class _Aggregating:
    """An in-process Prometheus over one function per host and signal: answers the signal queries step by step
    and the bucket queries as Prometheus would (the mean or maximum of the steps in each bucket)."""

    def __init__(self, signals: dict[str, str], hosts: list[str], fail_buckets: bool = False) -> None:
        self.by_query = {q: name for name, q in signals.items()}
        self.hosts = hosts
        self.fail_buckets = fail_buckets
        self.asked: list[tuple[str, float, float, float]] = []

    @staticmethod
    def value(host: int, signal: str, t: np.ndarray) -> np.ndarray:
        phase = host + len(signal)
        return 0.45 + 0.3 * np.sin(2 * np.pi * t / DAY + phase) + 0.05 * np.sin(2 * np.pi * t / 7200)

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[object]:
        from forecaster.contract.prometheus import PrometheusTimeout, RangeSeries, grid

        self.asked.append((expr, start, end, step))
        ts = grid(start, end, int(step)).astype(np.float64)
        if expr in self.by_query:
            name, agg = self.by_query[expr], None
        else:
            agg = expr.split("(", 1)[0]
            if self.fail_buckets:
                raise PrometheusTimeout("query timed out after 5 s")
            name = next(n for q, n in self.by_query.items() if f"({q})" in expr)
        out = []
        for i, host in enumerate(self.hosts):
            if agg is None:
                values = self.value(i, name, ts)
            else:  # the inner steps (E - 1h, E] of each bucket end E, as the subquery evaluates them
                inner = ts[:, None] - STEP * np.arange(HOUR // STEP)[None, :]
                v = self.value(i, name, inner)
                values = v.mean(axis=1) if agg == "avg_over_time" else v.max(axis=1)
            out.append(RangeSeries({"instance": host}, ts, values))
        return out

    def query(self, expr: str, time: float | None = None) -> list[object]:
        return []


def _bucket_model_registry(root: Path, signals: list[str]) -> Path:
    from forecaster.contract.model import ForecastModel, ModelSpec, build_network
    from forecaster.contract.registry import Registry

    spec = ModelSpec(signals=signals, context_steps=48, horizon_steps=12, hidden_size=4, attention_heads=1,
                     hidden_continuous_size=4, min_history_steps=24, seasonal_days=2, seasonal_bucket_seconds=HOUR,
                     center="last")
    registry = Registry(root)
    registry.promote(registry.add(ForecastModel(spec, build_network(spec),
                                                metadata={"trained_at": "2025-01-01T00:00:00Z"})))
    return root


@pytest.mark.parametrize("fail", [False, True], ids=["served", "bucket-queries-fail"])
def test_a_cycle_serves_the_inputs_training_would_cut_from_the_long_history(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: bool) -> None:
    """The cycle queries 4 h of 5-minute steps plus hourly buckets reaching two days back, and the model sees
    the same-time inputs a long panel gives; when the bucket queries fail it still forecasts, with what the
    short panel knows, and the failure is the cycle's query problem."""
    import forecaster.serving.cycle as cycle
    from forecaster.contract.config import DEFAULT_SIGNALS
    from forecaster.serving.store import ModelStore
    from tests.forecaster_harness import forecaster_config

    names = [s.name for s in DEFAULT_SIGNALS]
    root = _bucket_model_registry(tmp_path / "models", names)
    store = ModelStore(root, step_seconds=STEP, signals=names)
    assert store.refresh() == []
    config = forecaster_config(root, "http://127.0.0.1:1", model__min_history_steps=24)
    client = _Aggregating({s.name: s.query for s in DEFAULT_SIGNALS}, ["web-01", "db-02"], fail_buckets=fail)
    seen: list[WindowBatch] = []
    real = cycle.build_windows

    def spy(*args: object, **kw: object) -> WindowBatch:
        batch = real(*args, **kw)  # type: ignore[arg-type]
        seen.append(batch)
        return batch

    monkeypatch.setattr(cycle, "build_windows", spy)
    now = 1_750_000_000.0 + 17  # not on a step
    result = cycle.run_cycle(client, store.current(), config, now)
    assert result.forecasts is not None and len(result.forecasts) == 2 * len(names)

    end = now // STEP * STEP
    fine = [a for a in client.asked if a[3] == STEP]
    coarse = [a for a in client.asked if a[3] == HOUR]
    assert len(fine) == len(names) and all(a[2] - a[1] == 47 * STEP for a in fine)  # the context only
    assert len(coarse) == (1 if fail else 2 * len(names))  # a timeout ends the bucket queries of the cycle
    first, last = cycle.bucket_range(end - 47 * STEP, end, 2, 12 * STEP, HOUR)
    assert (coarse[0][1], coarse[0][2]) == (first, last) and last <= end

    # The same windows cut from three days of 5-minute history, as training and backtests cut them.
    from forecaster.contract.panel import panel_from_range_results

    long_start = end - 3 * DAY
    long_results = {n: client.query_range(s.query, long_start, end, STEP) for n, s in zip(names, DEFAULT_SIGNALS,
                                                                                           strict=True)}
    long = panel_from_range_results(long_results, names, long_start, end, STEP)
    served = seen[0]
    spec = store.current().loaded()[0].model.spec
    trained = build_windows(long, served.series, np.full(len(served), long.n_times - 1), spec.window_rules(24),
                            spec.signal_codes(), served.threshold)
    cols = [x_reals(names, 2).index(n) for n in ("season_mean", "season_max", "season_days")]
    if fail:
        assert "seasonal buckets of cpu" in result.errors["query"]
        assert served.decoder_cont[:, :, cols[2]].max() <= 0.5  # at most the day before, from the panel
        assert not np.allclose(served.decoder_cont[:, :, cols], trained.decoder_cont[:, :, cols])
    else:
        assert result.ok, result.errors
        assert trained.decoder_cont[:, :, cols[2]].min() == 1.0
        np.testing.assert_allclose(served.encoder_cont, trained.encoder_cont, atol=1e-5)
        np.testing.assert_allclose(served.decoder_cont, trained.decoder_cont, atol=1e-5)
