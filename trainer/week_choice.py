"""``model.seasonal_days: auto``: whether a fresh network reads a week of same-time inputs, chosen
from the training history, once per network (as ``model.center: auto`` chooses its center).

The week of same-time inputs (forecaster/contract/seasonal.py) was the strongest single lever measured
on SMD's real machines, on every seed (docs/BENCHMARKS.md, "A week where the history has one"), and it
costs the forecaster about a third more per cycle. It only pays where two things hold, and both can
be read from the training history before any training:

* **enough history to learn from.** A training window sees the days before it, so in a training part
  of ``T`` days the windows of its first week see only part of their week. With ``T`` at least
  ``2 x 7 + 1`` days most training windows see most of their week (three quarters on average); NAB's
  AWS series have 9.8 days of training part (median), SMD's machines 23, a simulated month 28.
* **a daily pattern worth reading.** The mean of the same time on the previous seven days must
  forecast the next 5 minutes .. 8 hours clearly better than the last value does (median over
  series, ratio below :data:`WEEK_WINS_BELOW`). On series without a daily pattern (NAB: 1.00, compared
  regardless of its length) the week's inputs are noise the network has to learn to ignore; on SMD the
  ratio is 0.60, on the simulator 0.41.

A network that continues from another keeps that network's choice (its weights were trained on it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from forecaster.contract.features import steps_per_day
from forecaster.contract.model import AUTO_SEASONAL_DAYS, ModelSpec
from forecaster.contract.panel import Panel
from trainer.centering import ratio_to_last

log = logging.getLogger(__name__)

WEEK = 7  # ``auto`` chooses between no same-time days and this many
#: The week only where the same time on the previous seven days forecasts 5 minutes .. 8 hours ahead at
#: least 10 % better than the last value, median over series (2026-12-02, the ratio this module computes
#: on the training parts: NAB 1.00 (compared regardless of its length), SMD 0.60, a simulated fleet 0.41).
WEEK_WINS_BELOW = 0.9
AHEAD_SECONDS = 8 * 3600


@dataclass(frozen=True)
class WeekChoice:
    """What ``auto`` chose and why (``days`` 0 or :data:`WEEK`)."""

    days: int
    history_days: float | None  # median training part over series, in days (None: no series)
    ratio: float | None  # median over series of the week's error over the last value's (None: not compared)
    reason: str


def training_days(panel: Panel, series_end: np.ndarray) -> float | None:
    """Median over series of the training part's length in days, from its first observed value to
    ``series_end[instance]`` (a host that joined late has the days since it joined)."""
    day = steps_per_day(panel.step_seconds)
    ends = np.asarray(series_end, dtype=np.int64)
    lengths = []
    for i in range(len(panel.instances)):
        for s in range(len(panel.signals)):
            seen = np.flatnonzero(np.isfinite(panel.values[i, s, : ends[i]]))
            if len(seen):
                lengths.append((ends[i] - seen[0]) / day)
    return float(np.median(lengths)) if lengths else None


def week_over_last(panel: Panel, series_end: np.ndarray, seed: int = 0) -> tuple[float | None, int]:
    """:func:`~trainer.centering.ratio_to_last` of the mean of the same time on the previous 7 days,
    1 step .. 8 h ahead, at origins at least a week into each series' training part (a series with
    under a week and a day of training part has no ratio)."""
    day = steps_per_day(panel.step_seconds)
    ahead = max(1, round(AHEAD_SECONDS / panel.step_seconds))
    h = np.arange(1, ahead + 1)

    def same_time_mean(y: np.ndarray, origins: np.ndarray) -> np.ndarray:
        earlier = np.stack([y[origins[:, None] + h[None, :] - k * day] for k in range(1, WEEK + 1)])
        seen_days = np.isfinite(earlier).sum(axis=0)
        return np.where(seen_days > 0, np.nansum(earlier, axis=0) / np.maximum(seen_days, 1), np.nan)

    return ratio_to_last(panel, series_end, WEEK * day, ahead, WEEK * day + ahead + 10, same_time_mean, seed)


def choose_week(panel: Panel, series_end: np.ndarray) -> WeekChoice:
    """0 or :data:`WEEK` same-time days for a network trained from scratch on this history (module docstring)."""
    days = training_days(panel, series_end)
    need = 2 * WEEK + 1
    if days is None or days < need:
        have = "no training history" if days is None else f"{days:.1f} days of training history (median over series)"
        return WeekChoice(0, days, None, f"{have}; the week needs {need}")
    ratio, n = week_over_last(panel, series_end)
    if ratio is None:
        return WeekChoice(0, days, None, "no series to compare the previous days' same time with the last value")
    compared = f"{1 - ratio:.0%} better" if ratio < 1 else f"{ratio - 1:.0%} worse"
    said = (f"{days:.1f} days of training history; the same time on the previous {WEEK} days forecast the next "
            f"8 h {compared} than the last value (median over {n} series")
    if ratio < WEEK_WINS_BELOW:
        return WeekChoice(WEEK, days, ratio, said + ")")
    return WeekChoice(0, days, ratio, said + f"; the week needs {1 - WEEK_WINS_BELOW:.0%} better)")


def resolve_week(spec: ModelSpec, panel: Panel, series_end: np.ndarray, start: ModelSpec | None = None,
                 scope: str = "training") -> ModelSpec:
    """``spec`` with ``seasonal_days: auto`` replaced: by the same-time days of ``start``, the network
    the run continues from (and its buckets), else by :func:`choose_week` on this history. Any other
    value is returned as it is; a chosen week reads the spec's buckets (``model.seasonal_bucket_seconds``)."""
    if spec.seasonal_days != AUTO_SEASONAL_DAYS:
        return spec
    if start is not None:
        log.info("%s: %d same-time days, as the network it continues from (model.seasonal_days: auto)",
                 scope, start.seasonal_days)
        return replace(spec, seasonal_days=start.seasonal_days, seasonal_bucket_seconds=start.seasonal_bucket_seconds)
    choice = choose_week(panel, series_end)
    log.info("%s: %d same-time days (model.seasonal_days: auto): %s", scope, choice.days, choice.reason)
    return replace(spec, seasonal_days=choice.days,
                   seasonal_bucket_seconds=spec.seasonal_bucket_seconds if choice.days else 0)
