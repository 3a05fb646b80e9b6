"""One forecast cycle on recorded ``query_range`` answers (tests/data/forecaster, from a real Prometheus).

The recordings go through the real HTTP client (served by the fake Prometheus), then the
shared pipeline, then the tiny model or the fallback; the clock is the recording's end.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from devkit.fakeprom import QUERY_RANGE, FakePrometheus, Reply
from forecaster.contract.config import DEFAULT_SIGNALS, HORIZON_LABELS, Config
from forecaster.contract.prometheus import PrometheusClient, RangeSeries
from forecaster.serving.cycle import run_cycle
from forecaster.serving.sharding import shard_of
from forecaster.serving.snapshot import horizon_index
from forecaster.serving.store import KIND_FALLBACK, KIND_GLOBAL, ModelSet, ModelStore
from tests.forecaster_harness import forecaster_config, shared_tiny_registry

DATA = Path(__file__).parent / "data" / "forecaster"
META = json.loads((DATA / "meta.json").read_text())
NOW = META["end"] + 42.0
HOSTS = sorted(META["hosts"])


@pytest.fixture(scope="module")
def recorded() -> Iterator[FakePrometheus]:
    bodies = {s.query: (DATA / f"query_range_{s.name}.json").read_bytes() for s in DEFAULT_SIGNALS}
    with FakePrometheus() as fake:
        fake.always(QUERY_RANGE, lambda rec: Reply(200, bodies[rec.params["query"]],
                                                   {"Content-Type": "application/json"}))
        yield fake


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> ModelSet:
    store = ModelStore(shared_tiny_registry(tmp_path_factory), step_seconds=300,
                       signals=[s.name for s in DEFAULT_SIGNALS])
    assert store.refresh() == []
    return store.current()


def _config(url: str, **kw: object) -> Config:
    return forecaster_config(None, url, **kw)


def _check_quantiles(fs: object) -> None:
    q = fs.quantiles  # type: ignore[attr-defined]
    finite = np.isfinite(q[:, :, 1])
    assert (q[:, :, 0][finite] <= q[:, :, 1][finite]).all() and (q[:, :, 1][finite] <= q[:, :, 2][finite]).all()
    assert (q[finite] >= 0).all() and (q[finite] <= 1).all()  # the default signals are ratios


def test_recorded_answers_with_the_tiny_model(recorded: FakePrometheus, tiny_models: ModelSet) -> None:
    config = _config(recorded.url)
    with PrometheusClient.from_config(config.prometheus) as client:
        result = run_cycle(client, tiny_models, config, NOW)
    assert result.ok, result.errors
    fs = result.forecasts
    assert fs is not None and len(fs) == len(HOSTS) * 4
    assert sorted(set(fs.instances)) == HOSTS
    assert set(fs.kinds) == {KIND_GLOBAL}
    assert not fs.warming_up.any()
    _check_quantiles(fs)
    # Horizon labels are step indices: 30m at 300 s is the 6th step.
    assert horizon_index("30m", 300) == 5 and horizon_index("8h", 300) == 95
    np.testing.assert_array_equal(fs.at_horizons()["1h"], fs.quantiles[:, 11, :])
    assert np.isfinite(fs.probability).all() and ((fs.probability >= 0) & (fs.probability <= 1)).all()
    # The set carries the served model's cut-offs, one per horizon label.
    assert dict(fs.cutoffs) == tiny_models.global_model.model.breach.cutoffs  # type: ignore[union-attr]
    assert list(fs.cutoffs) == list(HORIZON_LABELS)
    # Forecasts are "made now" for the grid point at or before now.
    assert (fs.made_at == NOW).all() and (fs.origin == META["end"]).all()
    assert result.stage_seconds["query"] > 0 and result.stage_seconds["inference"] > 0
    assert result.input_staleness is not None and 0 <= result.input_staleness < 900
    # Every signal driver (own, the host's other signals) with a weight has a trend, the other drivers none.
    is_signal = np.array([d == "own" or d in set(fs.signals.tolist()) for d in fs.driver_names])
    has_trend = np.isfinite(fs.driver_trend)
    np.testing.assert_array_equal(has_trend, np.isfinite(fs.drivers) & is_signal[None, :])
    assert set(np.abs(fs.driver_trend[has_trend]).tolist()) <= {0.0, 1.0, 3.0, 6.0, 12.0}


def test_fallback_is_flagged_and_has_no_probability(recorded: FakePrometheus) -> None:
    config = _config(recorded.url)
    models = ModelSet(None, {}, fallback_reason="no model")
    with PrometheusClient.from_config(config.prometheus) as client:
        result = run_cycle(client, models, config, NOW)
    fs = result.forecasts
    assert result.ok and fs is not None and len(fs) == len(HOSTS) * 4
    assert set(fs.kinds) == {KIND_FALLBACK} and set(fs.versions) == {"seasonal_naive"}
    assert np.isnan(fs.probability).all() and dict(fs.cutoffs) == {}  # no probability, no cut-off
    _check_quantiles(fs)


def test_breach_eta_is_the_first_crossing_of_each_path(recorded: FakePrometheus) -> None:
    config = _config(recorded.url)
    with PrometheusClient.from_config(config.prometheus) as client:
        fs = run_cycle(client, ModelSet(None), config, NOW).forecasts
    assert fs is not None
    for row in range(len(fs)):
        for col, qi in enumerate((1, 2)):
            path = fs.quantiles[row, :, qi]
            above = np.flatnonzero(path > fs.threshold[row])
            if len(above):
                want = fs.origin[row] + (above[0] + 1) * 300 - NOW
                assert fs.eta[row, col] == pytest.approx(max(0.0, want))
            else:
                assert math.isnan(fs.eta[row, col])


class _Series:
    """A scriptable in-process client: one callable per signal giving [(labels, ts, values)]."""

    def __init__(self, make: dict[str, list[tuple[dict[str, str], np.ndarray]]]) -> None:
        self.make = make

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[RangeSeries]:
        from forecaster.contract.prometheus import grid

        ts = grid(start, end, step)
        name = next(s.name for s in DEFAULT_SIGNALS if s.query == expr)
        out = []
        for labels, values in self.make.get(name, []):
            v = values[-len(ts):] if len(values) >= len(ts) else values
            out.append(RangeSeries(labels, ts[len(ts) - len(v):], np.asarray(v, dtype=float)))
        return out

    def query(self, expr: str, time: float | None = None) -> list[object]:
        return []


def _wave(n: int, phase: float = 0.0) -> np.ndarray:
    return 0.4 + 0.2 * np.sin(np.arange(n) / 20 + phase)


def test_data_problems_are_skipped_and_counted_not_fatal() -> None:
    n = 288
    gappy = _wave(n)
    gappy[::2] = np.nan  # every other point missing, as NaN
    with_nan = _wave(n, 1)
    with_nan[100:110] = np.nan
    reset = _wave(n, 2)
    reset[200:] = 0.0  # what a raw counter reset looks like: a drop to zero
    fleet = {
        "cpu": [({"instance": "ok"}, _wave(n)), ({"instance": "nans"}, with_nan), ({"instance": "reset"}, reset),
                ({"instance": "gappy"}, gappy),
                ({"instance": "young"}, _wave(30)),  # 30 steps: above min_history (12), warming up
                ({"instance": "newborn"}, _wave(5)),  # below min_history: skipped
                ({"no_instance": "x"}, _wave(n)),
                ({"instance": "twice", "cpu": "0"}, _wave(n)), ({"instance": "twice", "cpu": "1"}, _wave(n))],
        "memory": [({"instance": "ok"}, _wave(n))],
    }
    config = _config("http://127.0.0.1:1")
    result = run_cycle(_Series(fleet), ModelSet(None), config, NOW)
    fs = result.forecasts
    assert fs is not None
    served = {(i, s) for i, s in zip(fs.instances, fs.signals, strict=True)}
    assert {("ok", "cpu"), ("ok", "memory"), ("nans", "cpu"), ("reset", "cpu"), ("young", "cpu")} <= served
    assert fs.warming_up[list(fs.instances).index("young")]
    assert result.skipped["short_history"] == 1
    assert result.skipped["no_instance_label"] == 1
    assert result.skipped["duplicate_instance"] >= 1
    assert result.skipped["no_data"] >= 1  # e.g. "young" has no memory series
    assert np.isfinite(fs.quantiles[:, :96]).all()
    _check_quantiles(fs)
    # filesystem and iowait returned nothing: an error for the cycle, but the others were forecast.
    assert "query" in result.errors and set(result.failed_signals) == {"filesystem", "iowait"}
    assert not result.prometheus_failed


def test_shards_split_the_fleet_like_hashmod() -> None:
    fleet = {"cpu": [({"instance": f"host-{i}"}, _wave(100, i)) for i in range(40)]}
    seen: list[set[str]] = []
    for index in range(3):
        config = _config("http://127.0.0.1:1", forecaster__shard={"count": 3, "index": index})
        fs = run_cycle(_Series(fleet), ModelSet(None), config, NOW).forecasts
        assert fs is not None
        names = set(fs.instances)
        assert all(shard_of(n, 3) == index for n in names)
        seen.append(names)
    assert set.union(*seen) == {f"host-{i}" for i in range(40)}
    assert sum(len(s) for s in seen) == 40


def test_signal_the_model_does_not_know_gets_the_fallback(recorded: FakePrometheus, tiny_models: ModelSet) -> None:
    extra = {"name": "net", "query": DEFAULT_SIGNALS[0].query + " * 0.5", "threshold": 0.9}
    signals = [s.model_dump() for s in DEFAULT_SIGNALS] + [extra]
    config = _config(recorded.url, signals=signals)
    body = (DATA / "query_range_cpu.json").read_bytes()
    recorded.script(QUERY_RANGE, *[Reply(200, (DATA / f"query_range_{s.name}.json").read_bytes(),
                                         {"Content-Type": "application/json"}) for s in DEFAULT_SIGNALS],
                    Reply(200, body, {"Content-Type": "application/json"}))
    with PrometheusClient.from_config(config.prometheus) as client:
        fs = run_cycle(client, tiny_models, config, NOW).forecasts
    assert fs is not None
    kinds = {(s, k) for s, k in zip(fs.signals, fs.kinds, strict=True)}
    assert ("net", KIND_FALLBACK) in kinds and ("cpu", KIND_GLOBAL) in kinds
    assert ("net", KIND_GLOBAL) not in kinds


def test_every_horizon_label_maps_inside_the_default_horizon() -> None:
    for label, seconds in HORIZON_LABELS.items():
        k = horizon_index(label, 300)
        assert (k + 1) * 300 == seconds and 0 <= k < 96
