"""One forecast cycle as a function of its inputs: Prometheus, the models, the config and "now".

``run_cycle`` queries, preprocesses and infers; it does not publish and keeps no state, so tests
drive it with a fake Prometheus, a fixed clock and any model set, and the service decides what
to do with the result (swap it in, carry old forecasts over, count the failure).

Stages, each timed:

* **query** - one range query per signal for the whole fleet over the context window, aligned
  to the step grid (never one query per host: that is N times the load on Prometheus). If
  Prometheus is unreachable or times out, the remaining signals are not tried: each would wait
  out its own timeout and retries for the same answer. Then one range query per query schedule
  (config ``schedules:`` with ``query:``) over the same window, resolved into window starts per host;
  such a query failing is counted in ``CycleResult.schedule_errors`` but does not fail the cycle: the
  forecasts go on with the windows that are known (the cron schedules, the other queries).
* **preprocess** - the shared input pipeline (:mod:`forecaster.contract.panel`, then
  :func:`forecaster.contract.features.build_windows`), after dropping the hosts of other shards;
  values outside a signal's ``min``/``max`` are masked as missing and counted.
* **inference** - all series served by one model run as one batch, cut into blocks that bound
  memory; the network is called directly in chunks. Series no model can serve (no model
  loaded, a signal the model does not know, or an inference error) get the seasonal-naive
  fallback, flagged as such. With an :class:`~forecaster.contract.online_band.OnlineBand` (the
  service's, ``forecaster.online_band``), each model-served band is stretched by its series' factors,
  which first learn from the outcomes this cycle's panel shows; the band is the one input the cycle
  changes, and only through the band's own methods.

Errors are collected per stage as one line each (never one per series), for the caller to log
and count once.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from forecaster.contract.config import HORIZON_LABELS, Config
from forecaster.contract.features import (
    OWN_DRIVER,
    WindowBatch,
    WindowRules,
    build_windows,
    driver_trend_hours,
    first_crossing,
)
from forecaster.contract.hosts import HostIdentity
from forecaster.contract.model import Forecast, clip_to_bounds
from forecaster.contract.online_band import OnlineBand, panel_values_at
from forecaster.contract.panel import Panel, panel_from_range_results
from forecaster.contract.prometheus import PrometheusAPI, PrometheusError, RangeSeries, align
from forecaster.contract.schedules import ScheduleSet, query_planned
from forecaster.contract.seasonal import DAY, Buckets, bucket_queries, buckets_from_range_results
from forecaster.serving.sharding import in_shard
from forecaster.serving.snapshot import MAX_HORIZON_SECONDS, ForecastSet
from forecaster.serving.store import FALLBACK_VERSION, KIND_FALLBACK, KIND_GLOBAL, KIND_HOST, LoadedModel, ModelSet

log = logging.getLogger(__name__)

STAGES: tuple[str, ...] = ("query", "preprocess", "inference", "publish")
#: Every reason a series can be skipped; exported at 0 from the start.
SKIP_REASONS: tuple[str, ...] = ("no_data", "short_history", "stale", "gappy", "no_instance_label",
                                 "duplicate_instance")
#: Series per build_windows + predict block: bounds the memory of one block to ~100 MB at the
#: default size whatever the fleet size, at no cost in speed.
BLOCK_SERIES = 2048
_ABORT_KINDS = ("unreachable", "timeout")


@dataclass
class CycleResult:
    """What one cycle produced; ``forecasts`` is None when there is nothing new to serve."""

    started: float
    step_seconds: int
    forecasts: ForecastSet | None = None
    failed_signals: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # stage -> one line
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    skipped: Counter[str] = field(default_factory=Counter)
    out_of_bounds: Counter[str] = field(default_factory=Counter)  # input samples masked, by signal
    input_staleness: float | None = None
    prometheus_failed: bool = False
    instances: int = 0
    # Query schedules whose query failed this cycle (one line each): counted, not a failed stage.
    schedule_errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def fail(self, stage: str, message: str) -> None:
        self.errors[stage] = f"{self.errors[stage]}; {message}" if stage in self.errors else message


def query_window(models: ModelSet, config: Config) -> tuple[int, int]:
    """(step, steps) to query: the longest history any loaded model reads."""
    contexts = [m.model.spec.served_steps for m in models.loaded()]
    if models.in_fallback or not contexts:
        contexts.append(config.model.context_steps)
    return config.model.step_seconds, max(contexts)


def run_cycle(client: PrometheusAPI, models: ModelSet, config: Config, now: float, *,
              chunk: int | None = None, monotonic: Callable[[], float] = time.monotonic,
              band: OnlineBand | None = None) -> CycleResult:
    """Query, preprocess and infer for every series of this shard; never raises for data problems."""
    step, context = query_window(models, config)
    result = CycleResult(started=now, step_seconds=step)
    end = align(now, step)
    start = end - (context - 1) * step

    t0 = monotonic()
    results = _query(client, config, start, end, step, result)
    schedules = _schedules(client, config, start, end, step, result) if results else config.schedule_set
    buckets = _seasonal_buckets(client, config, models, start, end, step, result) if results else {}
    result.stage_seconds["query"] = monotonic() - t0
    if not results:
        return result

    t0 = monotonic()
    shard = config.forecaster.shard
    hosts = config.hosts
    try:
        if shard.count > 1:
            results = {sig: [s for s in series if _in_shard(hosts, s.labels, shard.count, shard.index)]
                       for sig, series in results.items()}
        panel = panel_from_range_results(results, [s.name for s in config.signals], start, end, step,
                                         hosts=hosts, bounds=config.signal_bounds())
    except Exception as exc:  # the pipeline must never take the service down
        log.exception("preprocessing failed")
        result.fail("preprocess", f"{type(exc).__name__}: {exc}")
        result.stage_seconds["preprocess"] = monotonic() - t0
        return result
    result.stage_seconds["preprocess"] = monotonic() - t0
    result.skipped.update(panel.dropped)
    result.out_of_bounds.update(panel.out_of_bounds)
    result.instances = len(panel.instances)
    _Forecaster(panel, models, config, result, now, chunk or config.forecaster.inference_batch_size,
                [s for s in results], monotonic, schedules, buckets, band).run()
    return result


def bucket_range(start: float, end: float, days: int, ahead: int, width: int) -> tuple[int, int]:
    """The bucket ends a cycle queries for a context ``[start, end]``, ``days`` of same-time inputs and a horizon
    of ``ahead`` seconds: from the bucket of the context's first step ``days`` back to that of the horizon's
    last step one day back (none after ``end``: they have not ended)."""
    first = int(start - days * DAY) // width * width
    last = min(int(end) // width, -(-int(end + ahead - DAY) // width)) * width
    return first, last


def _seasonal_buckets(client: PrometheusAPI, config: Config, models: ModelSet, start: float, end: float, step: int,
                      result: CycleResult) -> dict[int, Buckets]:
    """The coarse history of the models whose same-time inputs read buckets, by bucket width: a mean and a
    maximum query per signal at the bucket's step, reaching back the most days any of them reads (see
    forecaster/contract/seasonal.py). A failed query is a query problem of the cycle, never its end: the
    windows then see the earlier days the 24 h panel holds, and say so in their ``season_days`` share."""
    reach: dict[int, tuple[int, int]] = {}  # width -> (most days back, longest horizon in seconds)
    for lm in models.loaded():
        spec = lm.model.spec
        if spec.seasonal_days and spec.seasonal_bucket_seconds:
            days, ahead = reach.get(spec.seasonal_bucket_seconds, (0, 0))
            reach[spec.seasonal_bucket_seconds] = (max(days, spec.seasonal_days),
                                                   max(ahead, spec.horizon_steps * spec.step_seconds))
    out: dict[int, Buckets] = {}
    names = [s.name for s in config.signals]
    for width, (days, ahead) in reach.items():
        first, last = bucket_range(start, end, days, ahead, width)
        means: dict[str, list[RangeSeries]] = {}
        peaks: dict[str, list[RangeSeries]] = {}
        for signal in config.signals:
            mean_q, peak_q = bucket_queries(signal.query, width, step, (signal.min, signal.max))
            try:
                means[signal.name] = client.query_range(mean_q, first, last, width)
                peaks[signal.name] = client.query_range(peak_q, first, last, width)
            except PrometheusError as exc:
                result.fail("query", f"seasonal buckets of {signal.name}: {exc}")
                if exc.kind in _ABORT_KINDS:
                    break
        out[width] = buckets_from_range_results(means, peaks, names, first, last, width, hosts=config.hosts)
    return out


def _schedules(client: PrometheusAPI, config: Config, start: float, end: float, step: int,
               result: CycleResult) -> ScheduleSet:
    """The declared schedules with the query ones resolved over this cycle's window (their past runs for the
    history, the next planned start for the horizon). A failed query leaves its schedule without windows:
    one warning per cycle and ``result.schedule_errors``, never a failed cycle, since the forecasts are
    still worth serving without a hint."""
    plan = config.schedule_set
    planned: dict[str, dict[str, np.ndarray]] = {}
    for n, sched in enumerate(plan.queried):
        try:
            planned[sched.name] = query_planned(client, sched, config.hosts, start, end, step)
        except PrometheusError as exc:
            result.schedule_errors.append(f"schedule {sched.name}: {exc}")
            if exc.kind in _ABORT_KINDS:  # as for the signals: the others would wait out the same timeout
                result.schedule_errors += [f"schedule {s.name}: not tried" for s in plan.queried[n + 1:]]
                break
        except Exception as exc:  # a client bug: the same, the cycle goes on
            result.schedule_errors.append(f"schedule {sched.name}: {type(exc).__name__}: {exc}")
    if result.schedule_errors:
        log.warning("schedule queries failed, forecasting without their windows: %s",
                    "; ".join(result.schedule_errors))
    return plan.resolved(planned)


def _in_shard(hosts: HostIdentity, labels: dict[str, str], count: int, index: int) -> bool:
    """Whether this shard forecasts the series' host; a series naming no host is kept, for the panel to count."""
    key = hosts.key(labels)
    return key is None or in_shard(hosts.hash_source(key), count, index)


def _query(client: PrometheusAPI, config: Config, start: float, end: float, step: int,
           result: CycleResult) -> dict[str, list[RangeSeries]]:
    results: dict[str, list[RangeSeries]] = {}
    problems: list[str] = []
    for n, signal in enumerate(config.signals):
        try:
            series = client.query_range(signal.query, start, end, step)
        except PrometheusError as exc:
            result.prometheus_failed = True
            problems.append(f"signal {signal.name}: {exc}")
            result.failed_signals.append(signal.name)
            if exc.kind in _ABORT_KINDS:
                rest = [s.name for s in config.signals[n + 1:]]
                result.failed_signals += rest
                if rest:
                    problems.append(f"not tried: {', '.join(rest)}")
                break
            continue
        except Exception as exc:  # a client bug: count it like a failed query, keep going
            result.prometheus_failed = True
            problems.append(f"signal {signal.name}: {type(exc).__name__}: {exc}")
            result.failed_signals.append(signal.name)
            continue
        if not series:
            problems.append(f"signal {signal.name}: the query returned no series")
            result.failed_signals.append(signal.name)
            continue
        results[signal.name] = series
    if problems:
        result.fail("query", "; ".join(problems))
    return results


def _windows(panel: Panel, series: np.ndarray, rules: WindowRules, codes: dict[str, int],
             thresholds: np.ndarray, skipped: Counter[str], buckets: Buckets | None = None) -> WindowBatch:
    """build_windows at the last grid point; a host lacking a signal makes numpy warn about empty
    means (the features treat that case), which is noise here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return build_windows(panel, series, np.full(len(series), panel.n_times - 1), rules, codes, thresholds,
                             skipped, buckets=buckets)


def _series_panel(panel: Panel, signals: list[str]) -> tuple[Panel, np.ndarray]:
    """The panel with the model's signal order (NaN for signals it lacks); and panel->model index."""
    if list(panel.signals) == list(signals):
        return panel, np.arange(len(signals))
    values = np.full((len(panel.instances), len(signals), panel.n_times), np.nan, dtype=np.float32)
    to_model = np.full(len(panel.signals), -1)
    for j, name in enumerate(panel.signals):
        if name in signals:
            k = signals.index(name)
            values[:, k] = panel.values[:, j]
            to_model[j] = k
    return Panel(panel.instances, list(signals), panel.timestamps, values, panel.step_seconds), to_model


class _Forecaster:
    """The preprocess + inference stages of one cycle (a class only to share their many inputs)."""

    def __init__(self, panel: Panel, models: ModelSet, config: Config, result: CycleResult, now: float,
                 chunk: int, answered: list[str], monotonic: Callable[[], float], schedules: ScheduleSet,
                 buckets: dict[int, Buckets] | None = None, band: OnlineBand | None = None) -> None:
        self.panel = panel
        self.models = models
        self.config = config
        self.result = result
        self.now = now
        self.chunk = chunk
        self.monotonic = monotonic
        self.step = panel.step_seconds
        sigs = [config.signal(name) for name in panel.signals]
        self.thresholds = np.array([s.threshold for s in sigs], dtype=np.float64)
        self.bounds = [(s.min, s.max) for s in sigs]
        self.answered = {panel.signals.index(name) for name in answered}
        self.schedules = schedules
        self.buckets = buckets or {}
        self.band = band
        self.keep_for_band = False
        self.parts: list[ForecastSet] = []

    def _time(self, stage: str, began: float) -> None:
        self.result.stage_seconds[stage] += self.monotonic() - began

    def run(self) -> None:
        began = self.monotonic()
        panel = self.panel
        finite = np.isfinite(panel.values)  # [I, S, T]
        has = finite.any(axis=2)
        cols = np.array(sorted(self.answered), dtype=np.int64)
        self.result.skipped["no_data"] += int((~has[:, cols]).sum()) if len(cols) else 0
        inst, sig = np.nonzero(has)
        keep = np.isin(sig, cols)
        inst, sig = inst[keep], sig[keep]
        # Longest histories first, so a chunk's encoders have similar lengths (less padding).
        first = finite[inst, sig].argmax(axis=1)
        order = np.argsort(first, kind="stable")
        series = np.stack([inst[order], sig[order]], axis=1).astype(np.int64)
        last = panel.n_times - 1 - finite[:, :, ::-1].argmax(axis=2)  # [I, S] last observed index
        self._last_seen = np.where(has, panel.timestamps[np.clip(last, 0, panel.n_times - 1)], np.nan)
        if self.band is not None and panel.n_times:
            origin = float(panel.timestamps[-1])
            cells = {(name, sig): (i, j) for i, name in enumerate(panel.instances)
                     for j, sig in enumerate(panel.signals)}
            self.band.observe(origin, panel_values_at(panel, cells))
            self.keep_for_band = self.band.due(origin)
        groups = self._assign(series)
        self._time("preprocess", began)
        for key, (model, rows) in groups.items():
            if model is None:
                self._fallback(series[rows])
            else:
                self._model(key, model, series[rows])
        # The cut-offs travel with the forecasts: the probabilities and the cut-offs they are
        # judged against are published (and carried over) together.
        fs = ForecastSet.concat(self.parts, self.step, cutoffs=self.models.cutoffs, hosts=self.config.hosts)
        self.result.forecasts = fs
        self._staleness(fs)

    def _staleness(self, fs: ForecastSet) -> None:
        index = {name: i for i, name in enumerate(self.panel.instances)}
        sig_index = {name: j for j, name in enumerate(self.panel.signals)}
        if len(fs):
            rows = np.array([index[i] for i in fs.instances], dtype=np.int64)
            cols = np.array([sig_index[s] for s in fs.signals], dtype=np.int64)
            seen = self._last_seen[rows, cols]
        else:
            seen = self._last_seen[np.isfinite(self._last_seen)]
        if len(seen):
            self.result.input_staleness = max(0.0, float(self.now - np.nanmin(seen)))

    def _assign(self, series: np.ndarray) -> dict[str, tuple[LoadedModel | None, np.ndarray]]:
        """Group series by the model that serves them: scope name -> (model or None, row indices)."""
        models = self.models
        names = self.panel.signals
        glob = models.global_model
        default = [glob.scope if glob is not None and name in glob.model.spec.signals else KIND_FALLBACK
                   for name in names]
        keys = np.array(default, dtype=object)[series[:, 1]]
        if models.host_models:
            for r, (i, j) in enumerate(series.tolist()):
                kind, model = models.for_series(self.panel.instances[i], names[j])
                if kind == KIND_HOST and model is not None:
                    keys[r] = model.scope
        lookup: dict[str, LoadedModel | None] = {m.scope: m for m in models.loaded()}
        lookup[KIND_FALLBACK] = None
        groups: dict[str, tuple[LoadedModel | None, np.ndarray]] = {}
        for key in dict.fromkeys(keys.tolist()):
            groups[key] = (lookup[key], np.flatnonzero(keys == key))
        return groups

    def _blocks(self, series: np.ndarray) -> list[np.ndarray]:
        return [series[lo:lo + BLOCK_SERIES] for lo in range(0, len(series), BLOCK_SERIES)]

    def _model(self, scope: str, lm: LoadedModel, series: np.ndarray) -> None:
        spec = lm.model.spec
        mpanel, to_model = _series_panel(self.panel, list(spec.signals))
        min_history = min(self.config.model.min_history_steps, spec.context_steps)
        rules = spec.window_rules(min_history, schedules=self.schedules)
        kind = KIND_HOST if scope.startswith("hosts/") else KIND_GLOBAL
        back = np.full(len(spec.signals), -1, dtype=np.int64)  # model signal index -> panel signal index
        for j, k in enumerate(to_model):
            if k >= 0:
                back[k] = j
        failed: list[np.ndarray] = []
        for block in self._blocks(series):
            began = self.monotonic()
            mseries = np.stack([block[:, 0], to_model[block[:, 1]]], axis=1)
            batch = _windows(mpanel, mseries, rules, spec.signal_codes(), self.thresholds[block[:, 1]],
                             self.result.skipped, self.buckets.get(spec.seasonal_bucket_seconds))
            self._time("preprocess", began)
            if not len(batch):
                continue
            began = self.monotonic()
            psig = back[batch.series[:, 1]]
            try:
                fc = lm.model.predict(batch, [self.bounds[j] for j in psig], chunk=self.chunk)
            except Exception as exc:
                log.exception("inference with model %s failed", scope)
                self.result.fail("inference", f"model {scope} version {lm.version}: {type(exc).__name__}: {exc}")
                failed.append(np.stack([batch.series[:, 0], psig], axis=1))
                self._time("inference", began)
                continue
            probs = np.full((len(batch), len(HORIZON_LABELS)), np.nan)
            for c, label in enumerate(HORIZON_LABELS):
                if label in fc.breach_probability:
                    probs[:, c] = fc.breach_probability[label]
            q = self._follow_band(batch.series[:, 0], psig, fc.quantiles)
            self.parts.append(self._rows(batch.series[:, 0], psig, batch, rules, q, probs, kind, lm.version, fc))
            self._time("inference", began)
        if failed:  # dashboards must not go blank because a model broke at run time
            self._fallback(np.concatenate(failed), count_skips=False)

    def _follow_band(self, inst: np.ndarray, sig: np.ndarray, q: np.ndarray) -> np.ndarray:
        """The model's quantiles with each series' band factors (kept for scoring once an hour), clipped to the
        signal's bounds again; unchanged without an online band."""
        if self.band is None:
            return q
        keys = list(zip(np.array(self.panel.instances, dtype=object)[inst].tolist(),
                        np.array(self.panel.signals, dtype=object)[sig].tolist(), strict=True))
        if self.keep_for_band:
            self.band.record(keys, float(self.panel.timestamps[-1]), q)
        return clip_to_bounds(self.band.adjust(keys, q), [self.bounds[j] for j in sig])

    def _fallback(self, series: np.ndarray, count_skips: bool = True) -> None:
        from forecaster.contract.baselines import seasonal_naive

        m = self.config.model
        context = min(m.context_steps, self.panel.n_times)
        rules = WindowRules(context, m.horizon_steps, min(m.min_history_steps, context))
        codes = {s: i + 1 for i, s in enumerate(self.panel.signals)}
        season = max(1, 86400 // self.step)
        skipped = self.result.skipped if count_skips else Counter()
        for block in self._blocks(series):
            began = self.monotonic()
            batch = _windows(self.panel, block, rules, codes, self.thresholds[block[:, 1]], skipped)
            self._time("preprocess", began)
            if not len(batch):
                continue
            began = self.monotonic()
            q = seasonal_naive(batch, m.horizon_steps, season=season)
            q = np.sort(clip_to_bounds(q, [self.bounds[j] for j in batch.series[:, 1]]), axis=-1)
            probs = np.full((len(batch), len(HORIZON_LABELS)), np.nan)
            self.parts.append(self._rows(batch.series[:, 0], batch.series[:, 1], batch, rules, q, probs,
                                         KIND_FALLBACK, FALLBACK_VERSION))
            self._time("inference", began)

    def _rows(self, inst: np.ndarray, sig: np.ndarray, batch: WindowBatch, rules: WindowRules, q: np.ndarray,
              probs: np.ndarray, kind: str, version: str, fc: Forecast | None = None) -> ForecastSet:
        """One block's rows; ``fc``, the model's forecast, brings what drove each one (none for the fallback)."""
        n = len(inst)
        explained = fc is not None and fc.drivers is not None and fc.attention_peak_lag is not None
        drivers = {} if not explained else {  # type: ignore[union-attr]
            "drivers": fc.drivers, "driver_names": tuple(fc.driver_names),
            "driver_trend": self._driver_trend(inst, sig, batch, fc.drivers, tuple(fc.driver_names)),
            "attention_lag": np.where(fc.attention_peak_lag >= 0, fc.attention_peak_lag * float(self.step), np.nan)}
        q = np.nan_to_num(q, nan=np.nan, posinf=np.nan, neginf=np.nan).astype(np.float32)
        threshold = self.thresholds[sig]
        origin = float(self.panel.timestamps[-1])
        reach = min(q.shape[1], MAX_HORIZON_SECONDS // self.step)
        eta = np.full((n, 2), np.nan)
        for c, qi in enumerate((1, 2)):  # p50, p90 paths
            idx = first_crossing(q[:, :reach, qi], threshold)
            at = origin + (idx + 1) * self.step
            eta[:, c] = np.where(idx >= 0, np.maximum(0.0, at - self.now), np.nan)
        instances = np.array(self.panel.instances, dtype=object)[inst]
        signals = np.array(self.panel.signals, dtype=object)[sig]
        planned, scheduled = self._planned(instances, signals, origin, q[:, :reach, 2], threshold)
        return ForecastSet(
            step_seconds=self.step, instances=instances, signals=signals,
            kinds=np.full(n, kind, dtype=object), versions=np.full(n, version, dtype=object),
            warming_up=batch.encoder_lengths < rules.context, made_at=np.full(n, self.now),
            origin=np.full(n, origin), threshold=threshold, quantiles=q, eta=eta, probability=probs,
            hosts=self.config.hosts, planned=planned, breach_scheduled=scheduled, **drivers)

    def _driver_trend(self, inst: np.ndarray, sig: np.ndarray, batch: WindowBatch, weights: np.ndarray,
                      names: tuple[str, ...]) -> np.ndarray:
        """How each signal driver of each row moved before the forecast: float64 [n, len(names)], signed hours
        (forecaster.contract.features.driver_trend_hours) of ``own`` (the row's signal) and of every other signal
        of the host, read from the panel over the same window as the forecast (its encoder length up to its
        origin); NaN for the other drivers and where the weight is NaN (no weight series, no trend series)."""
        n, E = len(inst), batch.encoder_cont.shape[1]
        out = np.full((n, len(names)), np.nan)
        if not n:
            return out
        T = self.panel.n_times
        idx = batch.origins[:, None] + np.arange(-E + 1, 1)[None, :]  # [n, E], column -1 = origin
        inside = (idx >= 0) & (idx > batch.origins[:, None] - batch.encoder_lengths[:, None])
        sig_index = {name: j for j, name in enumerate(self.panel.signals)}
        for c, name in enumerate(names):
            if name != OWN_DRIVER and name not in sig_index:
                continue  # calendar, seasonal, schedule, other: no signal to follow
            rows = np.asarray(sig, dtype=np.int64) if name == OWN_DRIVER else np.full(n, sig_index[name])
            values = self.panel.values[inst[:, None], rows[:, None], np.clip(idx, 0, T - 1)].astype(np.float64)
            values[~inside] = np.nan
            out[:, c] = driver_trend_hours(values, self.step)
        out[~np.isfinite(weights)] = np.nan
        return out

    def _planned(self, instances: np.ndarray, signals: np.ndarray, origin: float, p90: np.ndarray,
                 threshold: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The declared windows of each row's host and signal: [N, 1 + horizons] (1 where one covers now,
        then origin + each horizon; NaN where no schedule applies), and whether the forecast breach is
        wholly theirs (forecaster.contract.schedules.ScheduleSet.breach_explained). None without schedules."""
        if not self.schedules:
            return None, None
        keys, sigs = [str(k) for k in instances], [str(s) for s in signals]
        applies = np.array([bool(self.schedules.applying(k, s)) for k, s in zip(keys, sigs, strict=True)])
        at = np.array([self.now, *(origin + seconds for seconds in HORIZON_LABELS.values())])
        planned = self.schedules.active(keys, sigs, np.broadcast_to(at, (len(keys), len(at)))).astype(np.float64)
        planned[~applies] = np.nan
        times = origin + (np.arange(p90.shape[1]) + 1.0) * self.step
        above = np.nan_to_num(p90, nan=-np.inf) > threshold[:, None]
        scheduled = self.schedules.breach_explained(keys, sigs, np.broadcast_to(times, p90.shape), above)
        return planned, scheduled
