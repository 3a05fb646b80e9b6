"""``/metrics``: forecasts and self-metrics, built from state that a cycle swaps in atomically.

Two collectors, in the client_python style (anything with ``collect()``), both reading only
immutable state, so a scrape never sees half a cycle and never triggers work:

* :class:`ForecastCollector` - the per-series families (``tft_forecast_p10|p50|p90``,
  ``tft_breach_eta_seconds``, ``tft_breach_probability``, ``tft_forecast_model_info``,
  ``tft_forecast_warming_up``) of one :class:`~forecaster.serving.snapshot.ForecastSet`, plus the
  per-horizon ``tft_breach_probability_cutoff`` the set carries (so that the probabilities and
  their cut-offs always come from the same cycle). A fleet of
  1,000 hosts gives ~100,000 samples; formatting them through ``generate_latest`` takes about
  a second, so the service renders them once per cycle with :func:`render_forecasts` (the same
  families, written straight from the arrays in ~0.1 s) and serves those bytes at every scrape.
  ``tests/test_forecaster_exposition.py`` checks that the two agree.
* :class:`StateCollector` - model info and age, the fallback flag, thresholds, and the
  self-metrics of :class:`Stats` (cycles, stage durations, failures, Prometheus requests),
  plus the trainer's ``trainer_metrics.prom`` re-exported as parsed.

Self-metrics are plain numbers behind a lock rather than client_python ``Counter`` objects:
every labelled series exists at 0 from the start, nothing global is registered, and the
output is deterministic (no ``_created`` series), which the golden-file test relies on.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

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

    Samples are ordered by instance, signal, then horizon (or path) in their natural order. The
    cut-off family (one sample per horizon, no instance or signal) follows the probabilities.
    """
    order = _order(fs)
    inst = [str(fs.instances[r]) for r in order]
    sig = [str(fs.signals[r]) for r in order]
    horizons = fs.at_horizons()
    labels = list(HORIZON_LABELS)

    def by_row(name: str, values: np.ndarray, key: str, names: list[str]) -> list[tuple[str, dict[str, str], str]]:
        """values [N(sorted), C]: one sample per finite cell, labelled ``key=names[c]``."""
        text = _values(values)
        ok = np.isfinite(values)
        return [(name, {"instance": inst[k], "signal": sig[k], key: names[c]}, text[k, c])
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
           [("tft_forecast_model_info", {"instance": inst[k], "signal": sig[k], "model": str(fs.kinds[r]),
                                         "version": str(fs.versions[r])}, "1")
            for k, r in enumerate(order)])
    yield ("tft_forecast_warming_up", "gauge", WARMING_HELP,
           [("tft_forecast_warming_up", {"instance": inst[k], "signal": sig[k]},
             "1" if fs.warming_up[r] else "0") for k, r in enumerate(order)])


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


@dataclass
class _Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.count += 1

    def add_to(self, family: HistogramMetricFamily, values: list[str]) -> HistogramMetricFamily:
        buckets = [(floatToGoString(b), float(c)) for b, c in zip(self.buckets, self.counts, strict=True)]
        buckets.append(("+Inf", float(self.count)))
        family.add_metric(values, buckets, self.total)
        return family


class Stats:
    """Counters and histograms of the service; also the Prometheus client's observer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.cycles = dict.fromkeys(("success", "failure"), 0)
        self.failures = dict.fromkeys(FAILURE_STAGES, 0)
        self.requests = {(e, o): 0 for e in ENDPOINTS for o in OUTCOMES}
        self.request_seconds = {e: _Histogram(REQUEST_BUCKETS) for e in ENDPOINTS}
        self.cycle_seconds = _Histogram(CYCLE_BUCKETS)

    def on_request(self, endpoint: str, seconds: float, outcome: str) -> None:
        with self._lock:
            key = (endpoint, outcome if outcome in OUTCOMES else "error")
            self.requests[key] = self.requests.get(key, 0) + 1
            self.request_seconds.setdefault(endpoint, _Histogram(REQUEST_BUCKETS)).observe(seconds)

    def count_cycle(self, seconds: float, success: bool, failed_stages: Iterable[str]) -> None:
        with self._lock:
            self.cycles["success" if success else "failure"] += 1
            self.cycle_seconds.observe(seconds)
            for stage in failed_stages:
                self.failures[stage] = self.failures.get(stage, 0) + 1

    def count_failure(self, stage: str) -> None:
        with self._lock:
            self.failures[stage] = self.failures.get(stage, 0) + 1

    def families(self) -> list[Metric]:
        with self._lock:
            out: list[Metric] = [self.cycle_seconds.add_to(HistogramMetricFamily(
                "tft_forecaster_cycle_duration_seconds", "Duration of whole forecast cycles (query to publish)."), [])]
            c = CounterMetricFamily("tft_forecaster_cycles", "Forecast cycles by outcome.", labels=["outcome"])
            for outcome, n in self.cycles.items():
                c.add_metric([outcome], n)
            out.append(c)
            c = CounterMetricFamily("tft_forecaster_failures", "Failed cycle stages (each counted once per cycle).",
                                    labels=["stage"])
            for stage, n in self.failures.items():
                c.add_metric([stage], n)
            out.append(c)
            c = CounterMetricFamily("tft_forecaster_prometheus_requests",
                                    "HTTP requests to Prometheus (retries and chunks included), by outcome.",
                                    labels=["endpoint", "outcome"])
            for (endpoint, outcome), n in sorted(self.requests.items()):
                c.add_metric([endpoint, outcome], n)
            out.append(c)
            h = HistogramMetricFamily("tft_forecaster_prometheus_request_duration_seconds",
                                      "Duration of HTTP requests to Prometheus.", labels=["endpoint"])
            for endpoint, hist in sorted(self.request_seconds.items()):
                hist.add_to(h, [endpoint])
            out.append(h)
            return out


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
    out: list[Metric] = [info, fallback]
    models = v.models
    if models is None:
        return out
    for m in models.loaded():
        info.add_metric([m.version, m.trained_at, m.scope, "model"], 1)
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
