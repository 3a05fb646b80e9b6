"""A week of context at a flat cost: the same time on earlier days, read from coarse buckets.

A model with ``seasonal_days`` > 0 sees, for every step of its window and horizon, what the series
did at that time of day on each of the previous days (their mean and maximum, and the share of
days with data; :func:`forecaster.contract.features.build_windows`). Read at the model's 5-minute
step that costs the forecaster ``seasonal_days`` more days of every series at every cycle (8 days
instead of 24 h for a week: 25.7 s instead of 12.7 s a cycle for 1,000 hosts, measured). Read from
buckets (by default an hour: ``model.seasonal_bucket_seconds``) it costs 2 x 24 values per day:
each bucket holds the mean and the maximum of the series' steps in ``(end - width, end]``.

Both sources give the same numbers, which is what keeps training and serving one pipeline:

* training, backtests and Parquet: :func:`buckets_from_panel` aggregates the 5-minute panel;
* serving: :func:`bucket_queries` asks Prometheus (or VictoriaMetrics) for
  ``avg_over_time((<signal query>)[3599s:300s])`` and ``max_over_time`` of the same subquery at a
  1-hour step, which evaluate the signal's query at the same 5-minute-aligned times the panel
  holds; the signal's bounds go into the expression so that Prometheus drops and clips exactly
  the samples the panel masks and clips (:func:`forecaster.contract.panel.mask_out_of_bounds`).
  :func:`buckets_from_range_results` turns the answers into :class:`Buckets`.

``tests/test_seasonal_buckets.py`` checks the two against a real Prometheus.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from forecaster.contract.config import check_bucket_seconds
from forecaster.contract.hosts import INSTANCE_ONLY, HostIdentity
from forecaster.contract.panel import Panel, bound_tolerance, panel_from_range_results

DAY = 86400


@dataclass(frozen=True)
class Buckets:
    """Mean and maximum of each series over consecutive buckets of ``seconds`` (NaN: no data).

    Bucket ``k`` covers ``(ends[k] - seconds, ends[k]]``; ``ends`` are multiples of ``seconds``.
    """

    instances: list[str]
    signals: list[str]
    seconds: int
    ends: np.ndarray  # int64 [K], ascending, regular
    mean: np.ndarray  # float64 [I, S, K]
    peak: np.ndarray  # float64 [I, S, K]

    def __post_init__(self) -> None:
        expected = (len(self.instances), len(self.signals), len(self.ends))
        if self.mean.shape != expected or self.peak.shape != expected:
            raise ValueError(f"bucket arrays {self.mean.shape}/{self.peak.shape} do not match {expected}")


def buckets_from_panel(panel: Panel, seconds: int) -> Buckets:
    """Aggregate every series of ``panel`` into buckets of ``seconds`` (a whole number of steps).

    Partial buckets at either end hold what the panel has of them, as Prometheus's
    ``*_over_time`` does over a range that starts in the middle of a bucket.
    """
    check_bucket_seconds(seconds, panel.step_seconds)
    per = seconds // panel.step_seconds
    n_inst, n_sig, T = panel.values.shape
    if T == 0:
        empty = np.zeros((n_inst, n_sig, 0))
        return Buckets(list(panel.instances), list(panel.signals), seconds, np.zeros(0, np.int64), empty, empty)
    first = int(panel.timestamps[0])
    first_end = -(-first // seconds) * seconds
    lead = per - ((first_end - first) // panel.step_seconds + 1)  # missing steps before the panel's first
    total = -(-(lead + T) // per) * per
    padded = np.full((n_inst, n_sig, total), np.nan, dtype=np.float64)
    padded[:, :, lead:lead + T] = panel.values
    blocks = padded.reshape(n_inst, n_sig, total // per, per)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN bucket is NaN, on purpose
        mean = np.nanmean(blocks, axis=3)
        peak = np.nanmax(blocks, axis=3)
    ends = first_end + seconds * np.arange(total // per, dtype=np.int64)
    return Buckets(list(panel.instances), list(panel.signals), seconds, ends, mean, peak)


_CACHE: dict[tuple[int, int], tuple[weakref.ref, Buckets]] = {}


def cached_buckets(panel: Panel, seconds: int) -> Buckets:
    """:func:`buckets_from_panel`, once per panel: training cuts thousands of batches from one panel."""
    key = (id(panel.values), seconds)
    hit = _CACHE.get(key)
    if hit is not None and hit[0]() is panel.values:
        return hit[1]
    buckets = buckets_from_panel(panel, seconds)
    _CACHE[key] = (weakref.ref(panel.values, lambda _ref, key=key: _CACHE.pop(key, None)), buckets)
    return buckets


def bucket_queries(query: str, seconds: int, step_seconds: int,
                   bounds: tuple[float | None, float | None] = (None, None)) -> tuple[str, str]:
    """PromQL for the (mean, maximum) buckets of one signal, to be run as range queries at a step of
    ``seconds``: the signal's query evaluated every ``step_seconds`` inside each bucket, with the
    panel's bounds rule (drop beyond the tolerance, clip within it) applied to every sample first."""
    inner = f"({query})"
    lo, hi = bounds
    if lo is not None or hi is not None:
        tol = bound_tolerance(lo, hi)
        if lo is not None:
            inner = f"clamp_min({inner} >= {lo - tol!r}, {float(lo)!r})"
        if hi is not None:
            inner = f"clamp_max({inner} <= {hi + tol!r}, {float(hi)!r})"
    # One second short of the bucket: Prometheus 2 includes a range's start, 3 and VictoriaMetrics do not;
    # a range that starts between two steps holds the bucket's steps under either rule.
    sub = f"({inner})[{seconds - 1}s:{step_seconds}s]"
    return f"avg_over_time({sub})", f"max_over_time({sub})"


def buckets_from_range_results(means: Mapping[str, Iterable[object]], peaks: Mapping[str, Iterable[object]],
                               signals: Sequence[str], start: float, end: float, seconds: int,
                               hosts: HostIdentity = INSTANCE_ONLY) -> Buckets:
    """:class:`Buckets` from the answers to :func:`bucket_queries` (range queries from ``start`` to ``end``
    at a step of ``seconds``), keyed by host as the signal panel is."""
    mean = panel_from_range_results(means, signals, start, end, seconds, hosts=hosts)
    peak = panel_from_range_results(peaks, signals, start, end, seconds, hosts=hosts)
    instances = sorted(set(mean.instances) | set(peak.instances))
    row_of = {key: i for i, key in enumerate(instances)}
    out = {}
    for name, part in (("mean", mean), ("peak", peak)):
        values = np.full((len(instances), len(signals), len(part.timestamps)), np.nan)
        rows = [row_of[i] for i in part.instances]
        values[rows] = part.values
        out[name] = values
    return Buckets(instances, list(signals), seconds, mean.timestamps.astype(np.int64), out["mean"], out["peak"])


def same_time_earlier(buckets: Buckets, instances: Sequence[str], signals: Sequence[str], times: np.ndarray,
                      origins: np.ndarray, days: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each row's series (``instances[b]``, ``signals[b]``) and unix time ``times[b, n]``: the mean of
    the bucket means and the maximum of the bucket maxima at that time on each of the previous ``days``
    days (NaN where no day had data), and the share of those days with data. A bucket counts only when
    it ended at or before the row's origin (``origins[b]``, unix seconds): nothing after it is known."""
    t = np.asarray(times, dtype=np.int64)
    B = t.shape[0]
    row_of = {k: i for i, k in enumerate(buckets.instances)}
    sig_of = {s: j for j, s in enumerate(buckets.signals)}
    inst = np.array([row_of.get(k, -1) for k in instances], dtype=np.int64)
    sig = np.array([sig_of.get(s, -1) for s in signals], dtype=np.int64)
    known = (inst >= 0) & (sig >= 0)
    total = np.zeros(t.shape)
    count = np.zeros(t.shape)
    peak = np.full(t.shape, -np.inf)
    K = len(buckets.ends)
    if K and B and known.any():
        sec = buckets.seconds
        end_now = -(-t // sec) * sec  # the end of the bucket holding each time
        for d in range(1, days + 1):
            end = end_now - d * DAY
            k = (end - int(buckets.ends[0])) // sec
            ok = known[:, None] & (k >= 0) & (k < K) & (end <= np.asarray(origins, dtype=np.int64)[:, None])
            kk = np.clip(k, 0, K - 1)
            ii, jj = np.maximum(inst, 0)[:, None], np.maximum(sig, 0)[:, None]
            m = buckets.mean[ii, jj, kk]
            p = buckets.peak[ii, jj, kk]
            ok &= np.isfinite(m)
            total += np.where(ok, m, 0.0)
            count += ok
            peak = np.where(ok, np.maximum(peak, p), peak)
    have = count > 0
    return (np.where(have, total / np.maximum(count, 1), np.nan), np.where(have, peak, np.nan),
            count / max(days, 1))
