"""``/metrics`` of a fixed snapshot: golden file, promtool lint, and the collector's own contract.

Regenerate the golden file after an intended change with::

    UPDATE_GOLDEN=1 python3 -m pytest tests/test_forecaster_exposition.py
"""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from forecaster.contract.config import DEFAULT_SIGNALS, HORIZON_LABELS
from forecaster.serving.cycle import CycleResult
from forecaster.serving.exposition import (
    ForecastCollector,
    StateCollector,
    Stats,
    View,
    forecast_families,
    parse_textfile,
    render,
    render_forecasts,
)
from forecaster.serving.snapshot import ForecastSet
from forecaster.serving.store import LoadedModel, ModelSet

GOLDEN = Path(__file__).parent / "golden" / "forecaster_metrics.prom"
NOW = 1_750_000_030.0
ORIGIN = 1_750_000_000.0
TRAINER_TEXT = """# HELP tft_trainer_last_run_exit_code Exit status of the last run (0 = promoted; see docs).
# TYPE tft_trainer_last_run_exit_code gauge
tft_trainer_last_run_exit_code 3
# HELP tft_trainer_runs_total Training runs by outcome (kept across runs).
# TYPE tft_trainer_runs_total counter
tft_trainer_runs_total{outcome="kept_current"} 1
tft_trainer_runs_total{outcome="promoted"} 2
"""


# The served global model's breach-probability cut-offs (model.json: calibration.breach.cutoffs).
CUTOFFS = {"30m": 0.42, "1h": 0.35, "2h": 0.3, "4h": 0.275, "8h": 0.25}


def fixed_set() -> ForecastSet:
    """Three series: a global-model one about to breach, a warming-up one, a fallback one."""
    H = 96
    steps = np.arange(1, H + 1, dtype=np.float32)
    base = np.stack([0.5 + 0.005 * steps, 0.3 + 0.0 * steps, 0.2 + 0.001 * steps])  # [3, H]
    q = np.stack([base - 0.05, base, base + 0.05], axis=-1).astype(np.float32)
    q = np.clip(q, 0, 1)
    obj = lambda *v: np.array(v, dtype=object)  # noqa: E731
    prob = np.array([[0.1, 0.2, 0.4, 0.7, 0.9], [0.0, 0.0, 0.01, 0.02, 0.03],
                     [np.nan] * len(HORIZON_LABELS)])
    eta = np.array([[ORIGIN + 81 * 300 - NOW, ORIGIN + 71 * 300 - NOW], [np.nan, np.nan], [np.nan, np.nan]])
    return ForecastSet(
        step_seconds=300, instances=obj("web-01", "db-02", "web-01"), signals=obj("memory", "cpu", "cpu"),
        kinds=obj("global", "global", "fallback"), versions=obj("v1", "v1", "seasonal_naive"),
        warming_up=np.array([False, True, False]), made_at=np.full(3, NOW), origin=np.full(3, ORIGIN),
        threshold=np.array([0.9, 0.9, 0.9]), quantiles=q, eta=eta, probability=prob, cutoffs=dict(CUTOFFS),
        **fixed_drivers())


DRIVERS = ("own", "cpu", "memory", "iowait", "calendar")


def fixed_drivers() -> dict[str, object]:
    """Drivers of the three series: memory driven by its own climb (6 h) and iowait (falling for the last
    hour), cpu mostly by the time of day, none for the fallback; NaN where the driver is the series' own
    signal, and trends only for the signal drivers (own and the other signals) that have a weight."""
    nan = np.nan
    weights = np.array([[0.5, 0.05, nan, 0.3, 0.15], [0.25, nan, 0.05, 0.1, 0.6], [nan] * 5], dtype=np.float32)
    trend = np.array([[6.0, 0.0, nan, -1.0, nan], [0.0, nan, 3.0, 0.0, nan], [nan] * 5])
    return {"drivers": weights, "driver_trend": trend, "driver_names": DRIVERS,
            "attention_lag": np.array([21600.0, 0.0, nan])}


def fixed_models() -> ModelSet:
    fake_model = SimpleNamespace(spec=SimpleNamespace(signals=["cpu", "memory", "filesystem", "iowait"],
                                                      context_steps=48))
    glob = LoadedModel(fake_model, "global", "v1", "2025-06-15T00:00:00Z", Path("/models/global/versions/v1"), ())
    return ModelSet(glob, {})


def fixed_stats() -> Stats:
    stats = Stats()
    for seconds in (0.02, 0.03, 0.2, 0.02):
        stats.on_request("query_range", seconds, "success")
    stats.on_request("query_range", 5.0, "timeout")
    stats.count_cycle(1.5, True, [])
    stats.count_cycle(6.0, False, ["query"])
    return stats


def fixed_view(models: ModelSet | None = None) -> View:
    cycle = CycleResult(started=NOW, step_seconds=300)
    cycle.stage_seconds.update(query=0.25, preprocess=0.1, inference=1.0, publish=0.05)
    cycle.skipped = Counter({"short_history": 2, "stale": 1, "no_data": 0})
    cycle.input_staleness = 60.0
    return View(now=NOW, version="1.2.3", signals=DEFAULT_SIGNALS, models=models or fixed_models(),
                forecasts=fixed_set(), last_cycle=cycle, last_success=NOW - 10,
                trainer_families=parse_textfile(TRAINER_TEXT))


def page(view: View | None = None, stats: Stats | None = None) -> str:
    view = view or fixed_view()
    return (render_forecasts(view.forecasts) + render(StateCollector(lambda: view, stats or fixed_stats()))).decode()


def test_golden_metrics_page() -> None:
    text = page()
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "golden /metrics changed; rerun with UPDATE_GOLDEN=1 if intended"


def test_promtool_finds_nothing_to_lint(promtool: str) -> None:
    proc = subprocess.run([promtool, "check", "metrics"], input=GOLDEN.read_text(), capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), proc.stdout + proc.stderr


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_fast_renderer_equals_the_collector() -> None:
    fs = fixed_set()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ForecastCollector(lambda: fs))
    from prometheus_client.exposition import generate_latest

    slow = generate_latest(registry).decode()
    fast = render_forecasts(fs).decode()
    assert _samples(fast) == _samples(slow)
    assert [f.name for f in text_string_to_metric_families(fast)] == [f.name for f in forecast_families(fs)]


def test_forecast_series_contract() -> None:
    fs = fixed_set()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ForecastCollector(lambda: fs))
    get = registry.get_sample_value
    for h in HORIZON_LABELS:
        lo, mid, hi = (get(f"tft_forecast_{q}", {"instance": "web-01", "signal": "memory", "horizon": h})
                       for q in ("p10", "p50", "p90"))
        assert lo is not None and lo <= mid <= hi <= 1.0
    assert get("tft_forecast_p50", {"instance": "web-01", "signal": "memory", "horizon": "1h"}) == pytest.approx(
        0.5 + 0.005 * 12, abs=1e-6)
    assert get("tft_breach_eta_seconds", {"instance": "web-01", "signal": "memory", "path": "p50"}) == \
        pytest.approx(81 * 300 - 30)
    assert get("tft_breach_eta_seconds", {"instance": "db-02", "signal": "cpu", "path": "p50"}) is None
    assert get("tft_breach_probability", {"instance": "web-01", "signal": "memory", "horizon": "8h"}) == \
        pytest.approx(0.9)
    # The fallback series gets no probability and is flagged.
    assert get("tft_breach_probability", {"instance": "web-01", "signal": "cpu", "horizon": "8h"}) is None
    assert get("tft_forecast_model_info", {"instance": "web-01", "signal": "cpu", "model": "fallback",
                                           "version": "seasonal_naive"}) == 1
    assert get("tft_forecast_warming_up", {"instance": "db-02", "signal": "cpu"}) == 1
    assert get("tft_forecast_warming_up", {"instance": "web-01", "signal": "memory"}) == 0
    # One cut-off per horizon, with no instance or signal: the alert rules join it on horizon.
    for h, cut in CUTOFFS.items():
        assert get("tft_breach_probability_cutoff", {"horizon": h}) == pytest.approx(cut)
    text = render_forecasts(fs).decode()
    assert 'quantile="' not in text
    for line in text.splitlines():  # no explicit timestamps: Prometheus stamps samples at scrape time
        if not line.startswith("#"):
            assert len(line.rsplit("} ", 1)[1].split()) == 1, line


def test_state_metrics_exist_from_the_start() -> None:
    view = View(now=NOW, version="x", signals=DEFAULT_SIGNALS)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(lambda: view, Stats()))
    get = registry.get_sample_value
    for outcome in ("success", "failure"):
        assert get("tft_forecaster_cycles_total", {"outcome": outcome}) == 0
    for stage in ("query", "preprocess", "inference", "publish", "model_load"):
        assert get("tft_forecaster_failures_total", {"stage": stage}) == 0
    for outcome in ("success", "unreachable", "timeout", "bad_response", "query_error", "error"):
        assert get("tft_forecaster_prometheus_requests_total", {"endpoint": "query_range", "outcome": outcome}) == 0
    assert get("tft_forecaster_series_skipped", {"reason": "short_history"}) == 0
    assert get("tft_forecaster_last_success_timestamp_seconds") == 0
    assert get("tft_signal_threshold", {"signal": "iowait"}) == 0.3
    assert get("tft_forecaster_build_info", {"version": "x"}) == 1
    assert get("tft_forecaster_cycle_duration_seconds_count") == 0


def test_model_and_fallback_flags() -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(fixed_view, Stats()))
    get = registry.get_sample_value
    assert get("tft_model_fallback") == 0
    assert get("tft_model_info", {"version": "v1", "trained_at": "2025-06-15T00:00:00Z", "scope": "global",
                                  "source": "model"}) == 1
    assert get("tft_model_age_seconds") == pytest.approx(NOW - 1_749_945_600)
    assert get("tft_forecaster_forecast_age_seconds") == 0
    assert get("tft_forecaster_series", {"state": "warming_up"}) == 1
    assert get("tft_forecaster_series", {"state": "forecast"}) == 2
    assert get("tft_trainer_last_run_exit_code") == 3
    assert get("tft_trainer_runs_total", {"outcome": "promoted"}) == 2

    view = fixed_view(ModelSet(None, {}, fallback_reason="no model"))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(lambda: view, Stats()))
    get = registry.get_sample_value
    assert get("tft_model_fallback") == 1
    assert get("tft_model_info", {"version": "seasonal_naive", "trained_at": "", "scope": "global",
                                  "source": "fallback"}) == 1
    assert get("tft_model_age_seconds") is None


def test_cutoffs_are_absent_without_a_global_model() -> None:
    """In fallback (no cut-offs in the set) the family is there, without samples; per-host rows
    and carried-over rows keep the set's cut-offs."""
    fs = fixed_set().with_cutoffs({})
    text = render_forecasts(fs).decode()
    assert "# TYPE tft_breach_probability_cutoff gauge" in text
    assert "tft_breach_probability_cutoff{" not in text
    kept = fixed_set().take(np.array([0, 2]))
    assert dict(kept.cutoffs) == CUTOFFS
    assert dict(ForecastSet.concat([kept, fs], 300, cutoffs=kept.cutoffs).cutoffs) == CUTOFFS
    assert dict(fixed_set().with_cutoffs({"1h": 0.2, "3h": 0.1, "8h": float("nan")}).cutoffs) == {"1h": 0.2}
