"""The promotion gate: a candidate replaces the current model only if a recent backtest says so.

Every model is scored on the same held-out recent window (data that neither training nor
calibration saw) with the benchmark's scale-free metrics: the pinball loss over p10/p50/p90
divided by each series' seasonal-naive error (sQL), MASE and p10-p90 coverage. The candidate
must beat the seasonal-naive and ``predict_linear``-style baselines and improve on the current
model by the configured margin.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum

import numpy as np

from forecaster.contract.baselines import linear_trend, seasonal_naive
from forecaster.contract.features import WindowBatch, WindowRules, build_windows
from forecaster.contract.model import ForecastModel
from forecaster.contract.panel import Panel
from forecaster.contract.schedules import ScheduleSet

QUANTILES = (0.1, 0.5, 0.9)


@dataclass
class Scores:
    sql: float
    mase: float
    coverage: float
    series: int

    def as_dict(self) -> dict[str, float]:
        return {"sql": self.sql, "mase": self.mase, "coverage": self.coverage, "series": self.series}


class Verdict(Enum):
    """Why the gate decided as it did: the trainer's exit status follows from this, never from the wording."""

    PROMOTE = "promote"
    UNSCORED = "unscored"  # no finite score on the holdout window: nothing shows it beats the baselines
    WORSE_THAN_BASELINE = "worse_than_baseline"  # does not beat seasonal-naive / linear
    NOT_BETTER = "not_better"  # beats the baselines, but not the current model by the margin


@dataclass
class GateDecision:
    verdict: Verdict
    reason: str
    scores: dict[str, Scores] = field(default_factory=dict)

    @property
    def promote(self) -> bool:
        return self.verdict is Verdict.PROMOTE


def series_scale(panel: Panel, series: np.ndarray, end: np.ndarray, season: int = 288) -> np.ndarray:
    """Seasonal-naive MAE before ``end`` per series (naive-1 when history is short or flat)."""
    out = np.empty(len(series))
    for k, (i, j) in enumerate(series):
        y = panel.values[i, j, : end[k]].astype(np.float64)
        y = y[np.isfinite(y)] if np.isnan(y).all() else y
        s = np.nanmean(np.abs(y[season:] - y[:-season])) if len(y) > 2 * season else np.nan
        if not np.isfinite(s) or s == 0:
            s = np.nanmean(np.abs(np.diff(y))) if len(y) > 1 else np.nan
        out[k] = s if np.isfinite(s) and s > 0 else 1.0
    return out


def score(q: np.ndarray, y: np.ndarray, scale: np.ndarray, owner: np.ndarray) -> Scores:
    """Per-series means first, then the mean over series (the benchmark's aggregation)."""
    ok = np.isfinite(y)
    pin = np.zeros_like(y)
    for k, qq in enumerate(QUANTILES):
        e = y - q[..., k]
        pin += np.maximum(qq * e, (qq - 1) * e)
    pin /= len(QUANTILES)
    ae = np.abs(y - q[..., 1])
    cov = (q[..., 0] <= y) & (y <= q[..., 2])
    sqls, mases, covs = [], [], []
    for s in np.unique(owner):
        m = (owner == s)[:, None] & ok
        if not m.any():
            continue
        sc = scale[owner == s][0]
        sqls.append(pin[m].mean() / sc)
        mases.append(ae[m].mean() / sc)
        covs.append(cov[m].mean())
    if not sqls:
        return Scores(float("nan"), float("nan"), float("nan"), 0)
    return Scores(float(np.mean(sqls)), float(np.mean(mases)), float(np.mean(covs)), len(sqls))


def holdout_windows(panel: Panel, holdout_steps: int, rules: WindowRules, codes: dict[str, int],
                    thresholds: dict[str, float] | None = None, every: int = 12) -> tuple[WindowBatch, np.ndarray]:
    """Hourly origins in the last ``holdout_steps`` of the panel; returns windows and owner ids."""
    T = panel.n_times
    series, origins = [], []
    first_origin = T - holdout_steps - 1
    for i in range(len(panel.instances)):
        for j in range(len(panel.signals)):
            for o in range(first_origin, T - rules.horizon, every):
                series.append((i, j))
                origins.append(o)
    if not origins:
        raise ValueError("holdout window shorter than the horizon")
    series_a = np.array(series)
    thr = None
    if thresholds:
        thr = np.array([thresholds.get(panel.signals[j], np.nan) for j in series_a[:, 1]])
    batch = build_windows(panel, series_a, np.array(origins), rules, codes, thr)
    owner = batch.series[:, 0] * len(panel.signals) + batch.series[:, 1]
    return batch, owner


def evaluate(panel: Panel, batch: WindowBatch, owner: np.ndarray, models: dict[str, ForecastModel],
             horizon: int, rules: WindowRules | None = None) -> dict[str, Scores]:
    """Scores of the baselines and of each model on the same holdout windows.

    ``rules`` are the ones ``batch`` was cut with; a model that reads other same-time-of-day
    inputs (``seasonal_days``) gets the same windows cut its own way, so a current model and a
    candidate that differ in that setting are still compared on equal terms.
    """
    end = np.full(len(batch), panel.n_times)
    scale = series_scale(panel, batch.series, np.minimum(batch.origins + 1, end))
    y = batch.target.astype(np.float64)
    results = {
        "seasonal_naive": score(seasonal_naive(batch, horizon), y, scale, owner),
        "linear": score(linear_trend(batch, horizon), y, scale, owner),
    }
    for name, model in models.items():
        results[name] = score(model.predict(_windows_for(model, panel, batch, rules)).quantiles, y, scale, owner)
    return results


def _windows_for(model: ForecastModel, panel: Panel, batch: WindowBatch, rules: WindowRules | None) -> WindowBatch:
    if rules is None:
        return batch
    spec = model.spec
    # A model with the schedule input reads the same declared windows (none, if the candidate has no such input).
    schedules = (rules.schedules or ScheduleSet()) if spec.schedules else None
    own_rules = replace(rules, seasonal_days=spec.seasonal_days, center=spec.center,
                        seasonal_bucket_seconds=spec.seasonal_bucket_seconds, schedules=schedules,
                        cycle=spec.reads_cycle, cycle_gate=spec.cycle_gate)
    if own_rules == rules:
        return batch
    own = build_windows(panel, batch.series, batch.origins, own_rules, spec.signal_codes(), batch.threshold)
    if len(own) != len(batch):  # the usability rules do not depend on seasonal_days; guard anyway
        raise ValueError("holdout windows differ between the candidate and the current model")
    return own


def decide(scores: dict[str, Scores], margin: float) -> GateDecision:
    cand = scores["candidate"].sql
    best_base = min(scores["seasonal_naive"].sql, scores["linear"].sql)
    if not np.isfinite(cand):
        return GateDecision(Verdict.UNSCORED, "candidate could not be scored on the holdout window", scores)
    if cand >= best_base:
        return GateDecision(Verdict.WORSE_THAN_BASELINE,
                            f"candidate sQL {cand:.4f} does not beat the best baseline ({best_base:.4f})", scores)
    current = scores.get("current")
    if current is not None and np.isfinite(current.sql) and cand > current.sql * (1 - margin):
        return GateDecision(Verdict.NOT_BETTER, f"candidate sQL {cand:.4f} is not {margin:.0%} better than the "
                            f"current model's {current.sql:.4f}", scores)
    base = f"current {current.sql:.4f}" if current is not None else "no current model"
    return GateDecision(Verdict.PROMOTE, f"candidate sQL {cand:.4f} beats baselines ({best_base:.4f}) and {base}",
                        scores)
