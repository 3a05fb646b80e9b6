"""``model.center: auto``: the window's center chosen from the training history, once per network.

Which present level a network is built around matters more than any other single choice measured on
real data (docs/BENCHMARKS.md, "The center chosen from the history"), and the best one depends on the
fleet. On spiky metrics (NAB's AWS series) a spike of a few steps is gone half an hour later, so the
median of the last hour is nearer the next two hours than the last value is, and ``recent`` gave
the best NAB figures measured. On smooth or trending metrics (SMD's machines, the simulator's leaks
and filling disks) the last value is the better present, and ``recent`` made the next step and the
median path on ramps worse. Choosing per window did worse than either (the two geometries mixed in
one network); choosing per network, from the same comparison on the training history, keeps each
fleet on its better side.

The comparison: for each series, the mean absolute error of the last hour's median and of the last
value as forecasts of every step 5 minutes to 2 hours ahead, at origins spread over the series'
training part; their ratio, median over series. ``recent`` only where the median is clearly better
(ratio below :data:`RECENT_WINS_BELOW`); a tie keeps ``last``, which the median path's ramps and the
next-step goal were built on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from forecaster.contract.features import recent_level, recent_steps
from forecaster.contract.model import ModelSpec
from forecaster.contract.panel import Panel

log = logging.getLogger(__name__)

AUTO = "auto"
#: ``recent`` when the hour's median forecasts the next two hours at least 10 % better than the last
#: value does, median over series. On the training parts (2026-12-02, the ratio this module computes):
#: NAB 0.73, SMD 1.01, a simulated fleet (``exporter`` degrading scenario, 20 hosts) 1.19.
RECENT_WINS_BELOW = 0.9
AHEAD_SECONDS = 7200  # the horizons compared: 1 step .. 2 h
MAX_SERIES = 256  # a sample is enough for a median over series, and keeps a 5,000-host fleet cheap
MAX_ORIGINS = 256  # per series, spread evenly over its training part


@dataclass(frozen=True)
class CenterChoice:
    """What ``auto`` chose and why: the median ratio (None: too little history to compare)."""

    center: str
    ratio: float | None
    series: int
    reason: str


def ratio_to_last(panel: Panel, series_end: np.ndarray, warmup: int, ahead: int, min_end: int,
                  candidate: Callable[[np.ndarray, np.ndarray], np.ndarray],
                  seed: int = 0) -> tuple[float | None, int]:
    """Median over series of MAE(candidate) / MAE(last value) as forecasts 1 .. ``ahead`` steps ahead,
    on each series' history before ``series_end[instance]`` (exclusive), at up to :data:`MAX_ORIGINS`
    origins from ``warmup`` steps after its first value; and how many series entered it (a series with
    too little or a constant training part has no ratio). ``candidate(y, origins)`` gives the
    candidate's forecasts [origins, ahead] (NaN: none); ``min_end``: the shortest ``series_end`` a
    series may have to be drawn among the :data:`MAX_SERIES` compared.

    The comparison both ``auto`` choices make: the center (:func:`recent_over_last`) and the week
    (trainer/week_choice.py)."""
    ends = np.asarray(series_end, dtype=np.int64)
    pairs = [(i, s) for i in range(len(panel.instances)) for s in range(len(panel.signals)) if ends[i] >= min_end]
    rng = np.random.default_rng(seed)
    if len(pairs) > MAX_SERIES:
        pairs = [pairs[k] for k in sorted(rng.choice(len(pairs), MAX_SERIES, replace=False))]
    ratios = []
    for i, s in pairs:
        y = panel.values[i, s, : ends[i]].astype(np.float64)
        seen = np.flatnonzero(np.isfinite(y))
        if len(seen) == 0:
            continue
        first = int(seen[0]) + warmup  # a series that starts late (a new host) is compared where it has values
        last_origin = len(y) - ahead - 1
        if last_origin - first < 10:
            continue
        origins = np.unique(np.linspace(first, last_origin, min(MAX_ORIGINS, last_origin - first + 1)).astype(np.int64))
        origins = origins[np.isfinite(y[origins])]  # an origin is the last observed value
        if len(origins) < 10:
            continue
        future = y[origins[:, None] + np.arange(1, ahead + 1)[None, :]]
        err_last = np.abs(future - y[origins][:, None])
        err_candidate = np.abs(future - candidate(y, origins))
        both = np.isfinite(err_last) & np.isfinite(err_candidate)
        if not both.any():
            continue
        mae_last, mae_candidate = err_last[both].mean(), err_candidate[both].mean()
        if not mae_last > 0:
            continue
        ratios.append(mae_candidate / mae_last)
    if not ratios:
        return None, 0
    return float(np.median(ratios)), len(ratios)


def recent_over_last(panel: Panel, series_end: np.ndarray, seed: int = 0) -> tuple[float | None, int]:
    """:func:`ratio_to_last` of the last hour's median (the `recent` center itself), 1 step .. 2 h ahead."""
    steps = recent_steps(panel.step_seconds)
    ahead = max(1, round(AHEAD_SECONDS / panel.step_seconds))

    def hour_median(y: np.ndarray, origins: np.ndarray) -> np.ndarray:
        tail = y[origins[:, None] - np.arange(steps)[None, ::-1]]  # the hour up to the origin, NaN where unobserved
        median = recent_level(tail, np.full(len(origins), steps), steps, y[origins])
        return np.broadcast_to(median[:, None], (len(origins), ahead))

    return ratio_to_last(panel, series_end, steps - 1, ahead, steps + ahead + 1, hour_median, seed)


def choose_center(panel: Panel, series_end: np.ndarray) -> CenterChoice:
    """``recent`` or ``last`` for a network trained from scratch on this history (module docstring)."""
    ratio, n = recent_over_last(panel, series_end)
    if ratio is None:
        return CenterChoice("last", None, 0, "too little history to compare the last hour's median with the last value")
    compared = f"{1 - ratio:.0%} better" if ratio < 1 else f"{ratio - 1:.0%} worse"
    said = f"the last hour's median forecast the next 2 h {compared} than the last value (median over {n} series"
    if ratio < RECENT_WINS_BELOW:
        return CenterChoice("recent", ratio, n, said + ")")
    return CenterChoice("last", ratio, n, said + f"; recent needs {1 - RECENT_WINS_BELOW:.0%} better)")


def resolve_center(spec: ModelSpec, panel: Panel, series_end: np.ndarray, start: ModelSpec | None = None,
                   scope: str = "training") -> ModelSpec:
    """``spec`` with ``center: auto`` replaced: by the center of ``start``, the network the run continues
    from (its weights were trained around it), else by :func:`choose_center` on this history. Any other
    center is returned as it is."""
    if spec.center != AUTO:
        return spec
    if start is not None:
        log.info("%s: center %s, as the network it continues from (model.center: auto)", scope, start.center)
        return replace(spec, center=start.center)
    choice = choose_center(panel, series_end)
    log.info("%s: center %s (model.center: auto): %s", scope, choice.center, choice.reason)
    return replace(spec, center=choice.center)
