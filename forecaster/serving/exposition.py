"""``/metrics``: forecasts and self-metrics, built from state that a cycle swaps in atomically.

Two collectors, in the client_python style (anything with ``collect()``), both reading only
immutable state, so a scrape never sees half a cycle and never triggers work:

* :class:`ForecastCollector` - the per-series families (``tft_forecast_p10|p50|p90``,
  ``tft_breach_eta_seconds``, ``tft_breach_probability``, ``tft_forecast_model_info``,
  ``tft_forecast_warming_up``, ``tft_forecast_driver_weight``, ``tft_forecast_driver_trend_seconds``,
  ``tft_forecast_attention_peak_lag_seconds``) of one :class:`~forecaster.serving.snapshot.ForecastSet`, plus the
  per-horizon ``tft_breach_probability_cutoff`` the set carries (so that the probabilities and
  their cut-offs always come from the same cycle). A fleet of
  1,000 hosts gives ~100,000 samples; formatting them through ``generate_latest`` takes about
  a second, so the service renders them once per cycle with :func:`render_forecasts` (the same
  families, written straight from the arrays in ~0.1 s) and serves those bytes at every scrape.
  ``tests/test_forecaster_exposition.py`` checks that the two agree.
* :class:`StateCollector` - model info and age, the fallback flag, thresholds, and the
  self-metrics of :class:`Stats` (cycles, stage durations, failures, Prometheus requests),
  plus the trainer's ``trainer_metrics.prom`` re-exported as parsed.

Self-metrics are client_python ``Counter``/``Histogram`` objects in a registry of each
:class:`Stats` (nothing global is registered); every labelled series is created at 0 up front,
and their ``_created`` series are left out, so the output is deterministic, which the
golden-file test relies on.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from forecaster.contract.config import HORIZON_LABELS, Signal
from forecaster.contract.prometheus import ENDPOINT_BUILDINFO, ENDPOINT_QUERY, ENDPOINT_QUERY_RANGE, OUTCOMES
from forecaster.serving.cycle import SKIP_REASONS, STAGES, CycleResult
from forecaster.serving.snapshot import PATHS, QUANTILE_NAMES, ForecastSet
from forecaster.serving.store import FALLBACK_VERSION, GLOBAL_SCOPE, ModelSet

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
FAILURE_STAGES: tuple[str, ...] = (*STAGES, "model_load")
ENDPOINTS: tuple[str, ...] = (ENDPOINT_QUERY_RANGE, ENDPOINT_QUERY, ENDPOINT_BUILDINFO)
CYCLE_BUCKETS: tuple[float, ...] = (0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
REQUEST_BUCKETS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

FORECAST_HELP = {
    "p10": "Forecast 10th percentile of the signal at now + horizon (stored at the time of the scrape).",
    "p50": "Forecast median of the signal at now + horizon (stored at the time of the scrape).",
    "p90": "Forecast 90th percentile of the signal at now + horizon (stored at the time of the scrape).",
}
ETA_HELP = ("Seconds until the forecast path (p50 or p90) first crosses the signal's threshold within "
            "8 hours; absent when it does not.")
PROB_HELP = ("Calibrated probability that the signal breaches its threshold within the horizon "
             "(absent for the fallback).")
CUTOFF_HELP = ("Breach-probability cut-off of the served global model per horizon, chosen on its training "
              "data (F1-optimal): the predicted-breach alerts fire when tft_breach_probability reaches it "
              "(applied to the series of per-host models, too); absent while serving the fallback.")
MODEL_INFO_HELP = "Which model served this series: the host's own, the global model, or the fallback."
WARMING_HELP = "1 while the series has less history than the model's context (forecast, but warming up), else 0."
DRIVER_HELP = ("Weight of each input group in the forecast, from the TFT encoder's variable selection averaged over "
               "its input steps: own (the signal's own history), each other signal of the host, calendar, seasonal; "
               "the weights of one forecast sum to 1 (absent for the fallback).")
DRIVER_TREND_HELP = ("How the signal of each signal driver (own, another signal of the host) moved before the "
                     "forecast: +N climbing for N seconds, -N falling for N (N of 1, 3, 6, 12 hours: the longest "
                     "span over which it moved more than one window standard deviation, the last hour the same "
                     "way), 0 steady; only where tft_forecast_driver_weight is exported for a signal driver "
                     "(see docs/OPERATIONS.md).")
SCHEDULE_ACTIVE_HELP = ("1 while a declared window (config schedules:) of the host covers now and loads the signal, "
                        "else 0; absent where no schedule applies.")
SCHEDULE_PLANNED_HELP = ("1 when a declared window of the host that loads the signal covers now + horizon, else 0 "
                         "(stored at the time of the scrape, like the forecasts); absent where no schedule applies.")
BREACH_SCHEDULED_HELP = ("1 when every step of the forecast (p90 path) above the threshold lies inside a declared "
                         "window or its 15-minute grace and one lies within the forecast: the planned job's own "
                         "breach, on which the predicted-breach alerts do not page; 0 otherwise; absent where no "
                         "schedule applies.")
ATTENTION_LAG_HELP = ("How long before the forecast's last input step lies the input step the TFT's attention weighed "
                      "most (mean over heads and the published horizons); 0 = the latest step.")


# --------------------------------------------------------------------------- per-series families


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _values(a: np.ndarray) -> np.ndarray:
    """Sample values as text: float32's shortest round-trip form (short, and exact enough)."""
    return np.asarray(a, dtype=np.float32).astype(str)


def _order(fs: ForecastSet) -> list[int]:
    return sorted(range(len(fs)), key=lambda r: (fs.instances[r], fs.signals[r]))


def _per_series(fs: ForecastSet) -> Iterator[tuple[str, str, str, list[tuple[str, dict[str, str], str]]]]:
    """(name, type, help, [(sample name, labels, value text), ...]) of every family of the set.

    Samples are ordered by host, signal, then horizon (or path) in their natural order. Every
    per-series sample carries the labels that name its host: ``instance`` and the configured cluster
    labels (``fs.hosts``), so equal instance names in two clusters stay two series. The
    cut-off family (one sample per horizon, no instance or signal) follows the probabilities.
    """
    order = _order(fs)
    host = [fs.hosts.host_labels(str(fs.instances[r])) for r in order]
    sig = [str(fs.signals[r]) for r in order]
    horizons = fs.at_horizons()
    labels = list(HORIZON_LABELS)

    def by_row(name: str, values: np.ndarray, key: str, names: list[str]) -> list[tuple[str, dict[str, str], str]]:
        """values [N(sorted), C]: one sample per finite cell, labelled ``key=names[c]``."""
        text = _values(values)
        ok = np.isfinite(values)
        return [(name, {**host[k], "signal": sig[k], key: names[c]}, text[k, c])
                for k in range(len(order)) for c in np.flatnonzero(ok[k]).tolist()]

    for qi, qname in enumerate(QUANTILE_NAMES):
        values = np.stack([horizons[h][order, qi] for h in labels], axis=1) if order else np.zeros((0, len(labels)))
        yield (f"tft_forecast_{qname}", "gauge", FORECAST_HELP[qname],
               by_row(f"tft_forecast_{qname}", values, "horizon", labels))
    yield ("tft_breach_eta_seconds", "gauge", ETA_HELP,
           by_row("tft_breach_eta_seconds", fs.eta[order], "path", list(PATHS)))
    yield ("tft_breach_probability", "gauge", PROB_HELP,
           by_row("tft_breach_probability", fs.probability[order], "horizon", labels))
    cut = list(fs.cutoffs.items())
    cut_text = _values(np.array([v for _, v in cut], dtype=np.float64))
    yield ("tft_breach_probability_cutoff", "gauge", CUTOFF_HELP,
           [("tft_breach_probability_cutoff", {"horizon": label}, cut_text[k]) for k, (label, _) in enumerate(cut)])
    yield ("tft_forecast_model_info", "gauge", MODEL_INFO_HELP,
           [("tft_forecast_model_info", {**host[k], "signal": sig[k], "model": str(fs.kinds[r]),
                                         "version": str(fs.versions[r])}, "1")
            for k, r in enumerate(order)])
    yield ("tft_forecast_warming_up", "gauge", WARMING_HELP,
           [("tft_forecast_warming_up", {**host[k], "signal": sig[k]},
             "1" if fs.warming_up[r] else "0") for k, r in enumerate(order)])
    yield ("tft_forecast_driver_weight", "gauge", DRIVER_HELP,
           by_row("tft_forecast_driver_weight", fs.drivers[order], "driver", list(fs.driver_names)))
    yield ("tft_forecast_driver_trend_seconds", "gauge", DRIVER_TREND_HELP,
           by_row("tft_forecast_driver_trend_seconds", fs.driver_trend[order] * 3600.0, "driver",
                  list(fs.driver_names)))
    planned = fs.planned[order] if order else np.zeros((0, 1 + len(labels)))
    if np.isfinite(planned).any():  # only with declared schedules: without them the output is as before
        yield ("tft_schedule_active", "gauge", SCHEDULE_ACTIVE_HELP,
               [(n, {k: v for k, v in lab.items() if k != "horizon"}, text)
                for n, lab, text in by_row("tft_schedule_active", planned[:, :1], "horizon", ["now"])])
        yield ("tft_schedule_planned", "gauge", SCHEDULE_PLANNED_HELP,
               by_row("tft_schedule_planned", planned[:, 1:], "horizon", labels))
        scheduled = fs.breach_scheduled[order]
        yield ("tft_breach_scheduled", "gauge", BREACH_SCHEDULED_HELP,
               [(n, {k: v for k, v in lab.items() if k != "horizon"}, text)
                for n, lab, text in by_row("tft_breach_scheduled", scheduled[:, None], "horizon", ["all"])])
    lag_text = _values(fs.attention_lag[order])
    yield ("tft_forecast_attention_peak_lag_seconds", "gauge", ATTENTION_LAG_HELP,
           [("tft_forecast_attention_peak_lag_seconds", {**host[k], "signal": sig[k]}, lag_text[k])
            for k, r in enumerate(order) if np.isfinite(fs.attention_lag[r])])


def forecast_families(fs: ForecastSet | None) -> list[Metric]:
    """The per-series families as client_python metric objects."""
    if fs is None:
        return []
    out = []
    for name, kind, help_text, samples in _per_series(fs):
        family = GaugeMetricFamily(name, help_text) if kind == "gauge" else Metric(name, help_text, kind)
        for sample_name, labels, value in samples:
            family.add_sample(sample_name, labels, float(value))
        out.append(family)
    return out


def render_forecasts(fs: ForecastSet | None) -> bytes:
    """The per-series families in text format 0.0.4, straight from the arrays (no objects per sample)."""
    if fs is None:
        return b""
    lines: list[str] = []
    for name, kind, help_text, samples in _per_series(fs):
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for sample_name, labels, value in samples:
            body = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            lines.append(f"{sample_name}{{{body}}} {value}")
    return ("\n".join(lines) + "\n").encode("utf-8")


class ForecastCollector:
    """Collector of the per-series families of whatever set ``source()`` returns now."""

    def __init__(self, source: Callable[[], ForecastSet | None]) -> None:
        self._source = source

    def collect(self) -> Iterable[Metric]:
        return forecast_families(self._source())


# --------------------------------------------------------------------------- self-metrics


class Stats:
    """Counters and histograms of the service; also the Prometheus client's observer.

    The lock is not for the metric objects (each is thread-safe) but for the scrape: it sees all
    of them at one moment, so a cycle counted in ``tft_forecaster_cycles_total`` is also in the
    duration histogram's count.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._registry = CollectorRegistry(auto_describe=False)
        # Registered in the order they are exposed.
        self._cycle_seconds = Histogram("tft_forecaster_cycle_duration_seconds",
                                        "Duration of whole forecast cycles (query to publish).",
                                        buckets=CYCLE_BUCKETS, registry=self._registry)
        self._cycles = Counter("tft_forecaster_cycles", "Forecast cycles by outcome.", ["outcome"],
                               registry=self._registry)
        self._failures = Counter("tft_forecaster_failures", "Failed cycle stages (each counted once per cycle).",
                                 ["stage"], registry=self._registry)
        # Not a failed stage: the cycle forecasts on without that schedule's windows (docs/FORECASTER.md).
        self._schedule_errors = Counter("tft_schedule_query_errors", "Failed queries of query schedules (config "
                                        "schedules: with query:); the cycle went on without their windows.",
                                        registry=self._registry)
        self._requests = Counter("tft_forecaster_prometheus_requests",
                                 "HTTP requests to Prometheus (retries and chunks included), by outcome.",
                                 ["endpoint", "outcome"], registry=self._registry)
        self._request_seconds = Histogram("tft_forecaster_prometheus_request_duration_seconds",
                                          "Duration of HTTP requests to Prometheus.", ["endpoint"],
                                          buckets=REQUEST_BUCKETS, registry=self._registry)
        # Every series at 0 from the start (an alert on a rate needs the series before the first
        # failure), created in the order they are exposed: series appear in creation order.
        for outcome in ("success", "failure"):
            self._cycles.labels(outcome)
        for stage in FAILURE_STAGES:
            self._failures.labels(stage)
        for endpoint, outcome in sorted(itertools.product(ENDPOINTS, OUTCOMES)):
            self._requests.labels(endpoint, outcome)
        for endpoint in sorted(ENDPOINTS):
            self._request_seconds.labels(endpoint)

    def on_request(self, endpoint: str, seconds: float, outcome: str) -> None:
        with self._lock:
            self._requests.labels(endpoint, outcome if outcome in OUTCOMES else "error").inc()
            self._request_seconds.labels(endpoint).observe(seconds)

    def count_cycle(self, seconds: float, success: bool, failed_stages: Iterable[str]) -> None:
        with self._lock:
            self._cycles.labels("success" if success else "failure").inc()
            self._cycle_seconds.observe(seconds)
            for stage in failed_stages:
                self._failures.labels(stage).inc()

    def count_failure(self, stage: str) -> None:
        with self._lock:
            self._failures.labels(stage).inc()

    def count_schedule_errors(self, n: int) -> None:
        if n:
            with self._lock:
                self._schedule_errors.inc(n)

    def families(self) -> list[Metric]:
        """The self-metric families, without client_python's ``_created`` series.

        ``_created`` adds a series per counter and histogram series whose value changes at every
        restart. client_python can only switch it off for the whole process
        (``disable_created_metrics()`` or ``PROMETHEUS_DISABLE_CREATED_SERIES``), which is not this
        module's decision to make, so the samples are dropped from these families only.
        """
        with self._lock:
            families = list(self._registry.collect())
        for family in families:
            created = f"{family.name}_created"
            family.samples = [sample for sample in family.samples if sample.name != created]
        return families


@dataclass(frozen=True)
class View:
    """Everything :class:`StateCollector` reads, captured at once by the service."""

    now: float
    version: str
    signals: tuple[Signal, ...]
    models: ModelSet | None = None
    forecasts: ForecastSet | None = None
    last_cycle: CycleResult | None = None
    last_success: float | None = None
    trainer_families: tuple[Metric, ...] = ()


class StateCollector:
    """Model, cycle and service metrics from ``view()`` and ``stats`` (everything but per-series)."""

    def __init__(self, view: Callable[[], View], stats: Stats) -> None:
        self._view = view
        self._stats = stats

    def collect(self) -> Iterable[Metric]:
        v = self._view()
        out: list[Metric] = []
        g = GaugeMetricFamily("tft_forecaster_build_info", "A metric with a constant '1' value labeled by the "
                              "forecaster's version.", labels=["version"])
        g.add_metric([v.version], 1)
        out.append(g)
        out += _model_families(v)
        g = GaugeMetricFamily("tft_signal_threshold", "The configured breach threshold of each signal.",
                              labels=["signal"])
        for s in v.signals:
            g.add_metric([s.name], s.threshold)
        out.append(g)
        out += self._stats.families()
        out += _cycle_families(v)
        out += list(v.trainer_families)
        return out


def _model_families(v: View) -> list[Metric]:
    info = GaugeMetricFamily("tft_model_info", "The models being served (source=\"fallback\": no model could "
                             "be loaded, seasonal-naive forecasts).",
                             labels=["version", "trained_at", "scope", "source"])
    fallback = GaugeMetricFamily("tft_model_fallback", "1 while the forecaster serves the seasonal-naive "
                                 "fallback because no model could be loaded, else 0.")
    fast = GaugeMetricFamily("tft_model_fast_path", "1 while the model is served through the fast TFT forward, 0 "
                             "through the library's (fast path switched off, or its load-time parity check failed).",
                             labels=["scope", "version"])
    parity = CounterMetricFamily("tft_forecaster_fast_path_parity_failures", "Model loads whose check of the fast "
                                 "TFT forward against the library's failed, so the library's serves the model.")
    out: list[Metric] = [info, fallback, fast, parity]
    models = v.models
    parity.add_metric([], models.fast_path_parity_failures if models is not None else 0)
    if models is None:
        return out
    for m in models.loaded():
        info.add_metric([m.version, m.trained_at, m.scope, "model"], 1)
        fast.add_metric([m.scope, m.version], 1 if m.fast_path else 0)
    if models.in_fallback:
        info.add_metric([FALLBACK_VERSION, "", GLOBAL_SCOPE, "fallback"], 1)
    fallback.add_metric([], 1 if models.in_fallback else 0)
    if models.global_model is not None and models.global_model.trained_at_unix is not None:
        age = GaugeMetricFamily("tft_model_age_seconds", "Seconds since the served global model was trained.")
        age.add_metric([], max(0.0, v.now - models.global_model.trained_at_unix))
        out.append(age)
    return out


def _cycle_families(v: View) -> list[Metric]:
    out: list[Metric] = []
    cycle = v.last_cycle
    g = GaugeMetricFamily("tft_forecaster_stage_duration_seconds", "Duration of each stage in the last cycle.",
                          labels=["stage"])
    for stage in STAGES:
        g.add_metric([stage], cycle.stage_seconds.get(stage, 0.0) if cycle else 0.0)
    out.append(g)
    g = GaugeMetricFamily("tft_forecaster_last_success_timestamp_seconds",
                          "Unix time the last successful cycle ended (0: none yet).")
    g.add_metric([], v.last_success or 0.0)
    out.append(g)
    fs = v.forecasts
    g = GaugeMetricFamily("tft_forecaster_series", "Series being served: forecast (full history) and "
                          "warming_up (forecast from a shorter history).", labels=["state"])
    warming = int(fs.warming_up.sum()) if fs is not None else 0
    g.add_metric(["forecast"], (len(fs) - warming) if fs is not None else 0)
    g.add_metric(["warming_up"], warming)
    out.append(g)
    g = GaugeMetricFamily("tft_forecaster_series_skipped", "Series not forecast in the last cycle, by reason.",
                          labels=["reason"])
    skipped = cycle.skipped if cycle else {}
    for reason in sorted(set(SKIP_REASONS) | set(skipped)):
        g.add_metric([reason], skipped.get(reason, 0))
    out.append(g)
    g = GaugeMetricFamily("tft_forecaster_input_out_of_bounds_samples", "Input samples of the last cycle outside "
                          "their signal's min/max, masked as missing.", labels=["signal"])
    masked = cycle.out_of_bounds if cycle else {}
    for s in v.signals:
        g.add_metric([s.name], masked.get(s.name, 0))
    out.append(g)
    oldest = fs.oldest() if fs is not None else None
    if oldest is not None:
        g = GaugeMetricFamily("tft_forecaster_forecast_age_seconds",
                              "Seconds since the oldest forecast being served was made (staleness).")
        g.add_metric([], max(0.0, v.now - oldest))
        out.append(g)
    if cycle is not None and cycle.input_staleness is not None and math.isfinite(cycle.input_staleness):
        g = GaugeMetricFamily("tft_forecaster_input_staleness_seconds", "In the last cycle: now minus the newest "
                              "sample of each forecast series, the maximum over series.")
        g.add_metric([], cycle.input_staleness)
        out.append(g)
    return out


def parse_textfile(text: str) -> tuple[Metric, ...]:
    """Families of a Prometheus text file (the trainer's); raises ValueError when unparsable."""
    return tuple(text_string_to_metric_families(text))


def render(*collectors: Any) -> bytes:
    """Text format of the given collectors (for everything but the pre-rendered forecasts)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import generate_latest

    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry)
