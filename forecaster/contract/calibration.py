"""Post-training calibration learned on a validation slice and stored with the model as JSON.

Three things a quantile network does not give by itself:

* a median whose first steps are no noisier than the last value: per-horizon factors that pull the
  p50 (and the band with it) towards the last observed value by as much as the validation slice
  shows it strays too far. Trained on windows whose future is noise around the present, the network's
  first steps wander around the last value with noise of their own; on SMD its p50 five minutes ahead
  was worse than the last value on most series (docs/BENCHMARKS.md, "The median's first steps");
* an 80 % band that really covers 80 % on data it did not train on: per-horizon factors that
  stretch or shrink p10 and p90 around p50 (split-conformal on the validation slice);
* the probability that a signal breaches its threshold (2 consecutive steps above it) within
  30 m .. 8 h. Per-step quantiles cannot give that: when a spike's timing is uncertain, every
  single step's p90 stays below the threshold although a breach somewhere in the next hours is
  likely. A logistic model per horizon maps features of the whole forecast path to that
  probability, fitted on validation windows whose outcome is known.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field

import numpy as np

from forecaster.contract.features import WindowBatch, breach_within

BREACH_HORIZONS: dict[str, int] = {"30m": 6, "1h": 12, "2h": 24, "4h": 48, "8h": 96}
BREACH_FEATURES: tuple[str, ...] = ("p90_over", "p50_over", "now_over", "recent_max_over", "band_over",
                                    "runs_context", "runs_recent", "since_above", "share_above",
                                    "share_above_yesterday", "peak_over_yesterday", "run_yesterday")
#: Breach models saved before the same hours of the day before were features use the first nine;
#: :meth:`BreachModel.probability` reads as many features as a model has weights for.
_FEATURES_BEFORE_YESTERDAY = 9
# Prior the logistic fit shrinks towards: "the higher the p90 path reaches past the threshold,
# the likelier a breach". Used as is only where a validation slice held no breach at all.
_PRIOR = np.array([-3.0, 1.5, 0.5, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -40, 40)))


@dataclass
class BandCalibration:
    """First the anchor, ``p50' = present + anchor[h] * (p50 - present)`` with p10 and p90 moved by as
    much (``present``: :func:`present_level`); then ``p10' = p50' - lower[h] * (p50' - p10')`` and
    ``p90' = p50' + upper[h] * (p90' - p50')``. ``anchor`` None (models saved before it): no pull."""

    lower: list[float]
    upper: list[float]
    coverage_before: float | None = None
    coverage_after: float | None = None
    anchor: list[float] | None = None

    @classmethod
    def identity(cls, horizon: int) -> BandCalibration:
        return cls([1.0] * horizon, [1.0] * horizon)

    def apply(self, q: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
        """q: [B, H, 3] sorted quantiles, ``present`` [B] each window's :func:`present_level` (needed with
        an anchor); returns the calibrated quantiles."""
        if self.anchor is not None:
            if present is None:
                raise ValueError("this calibration pulls the median towards the present level: pass it")
            q = pull_to_present(q, present, self.anchor)
        lo = np.asarray(self.lower, dtype=q.dtype)
        hi = np.asarray(self.upper, dtype=q.dtype)
        out = q.copy()
        out[..., 0] = q[..., 1] - lo * (q[..., 1] - q[..., 0])
        out[..., 2] = q[..., 1] + hi * (q[..., 2] - q[..., 1])
        return out


def fit_band(q: np.ndarray, y: np.ndarray, smooth: int = 9) -> BandCalibration:
    """Choose per-horizon factors so 10 % of outcomes fall below p10 and 10 % above p90."""
    H = q.shape[1]
    ok = np.isfinite(y)
    lower, upper = [], []
    for h in range(H):
        m = ok[:, h]
        p10, p50, p90 = q[m, h, 0], q[m, h, 1], q[m, h, 2]
        yy = y[m, h]
        if m.sum() < 20:
            lower.append(1.0)
            upper.append(1.0)
            continue
        dlo = np.maximum(p50 - p10, 1e-9)
        dhi = np.maximum(p90 - p50, 1e-9)
        lower.append(float(np.quantile((p50 - yy) / dlo, 0.9)))
        upper.append(float(np.quantile((yy - p50) / dhi, 0.9)))
    lo = _smooth(np.clip(lower, 0.25, 6.0), smooth)
    hi = _smooth(np.clip(upper, 0.25, 6.0), smooth)
    cal = BandCalibration([float(v) for v in lo], [float(v) for v in hi])
    cal.coverage_before = coverage(q, y)
    cal.coverage_after = coverage(cal.apply(q), y)
    return cal


def present_level(batch: WindowBatch, center: str) -> np.ndarray:
    """What the median's anchor pulls towards: each window's last value, or with ``center: recent`` its
    center, the median of the last hour, which a spike at the origin does not move."""
    return batch.center if center == "recent" else batch.last_value


def pull_to_present(q: np.ndarray, present: np.ndarray, anchor: list[float]) -> np.ndarray:
    """``q`` [B, H, 3] moved so that ``p50' = present + anchor[h] * (p50 - present)``; p10 and p90 move as much."""
    step = (np.asarray(anchor, dtype=q.dtype) - 1.0) * (q[..., 1] - present[:, None])
    return q + step[..., None]


def fit_anchor(q: np.ndarray, y: np.ndarray, present: np.ndarray, scale: np.ndarray,
               min_windows: int = 50) -> list[float]:
    """Per-horizon pull of the p50 towards the present level (:func:`present_level`): the factor ``a``
    in [0, 1] that minimises the validation windows' absolute error of ``present + a * (p50 - present)``
    (in each window's scale, so no series dominates: a weighted median of the ratios
    ``(y - present) / (p50 - present)``).

    The factors are made non-decreasing with the horizon (each at least the one before it): the pull
    is for the first steps, where the network's own noise is large against how far the signal can have
    moved, and a later factor below an earlier one would bend the path back towards the present after
    it was trusted to leave it (a ramp's median would climb, then sag). A horizon with fewer than
    ``min_windows`` usable windows keeps 1.
    """
    H = q.shape[1]
    s = np.where(np.isfinite(scale) & (scale > 0), scale, np.nan)[:, None]
    moved = (q[..., 1] - present[:, None]) / s  # [B, H], in window scales
    outcome = (y - present[:, None]) / s
    factors = np.ones(H)
    for h in range(H):
        d, r = moved[:, h], outcome[:, h]
        ok = np.isfinite(d) & np.isfinite(r) & (np.abs(d) > 1e-9)
        if ok.sum() < min_windows:
            continue
        ratio, weight = r[ok] / d[ok], np.abs(d[ok])
        order = np.argsort(ratio)
        cum = np.cumsum(weight[order])
        factors[h] = float(np.clip(ratio[order][np.searchsorted(cum, cum[-1] / 2)], 0.0, 1.0))
    return [float(v) for v in np.maximum.accumulate(factors)]


def _smooth(values: np.ndarray, width: int) -> np.ndarray:
    if width <= 1 or len(values) < width:
        return np.asarray(values, dtype=np.float64)
    pad = width // 2
    padded = np.pad(values, pad, mode="edge")
    return np.convolve(padded, np.ones(width) / width, mode="valid")


def coverage(q: np.ndarray, y: np.ndarray) -> float | None:
    ok = np.isfinite(y)
    if not ok.any():
        return None
    inside = (q[..., 0] <= y) & (y <= q[..., 2])
    return float(inside[ok].mean())


def breach_history(batch: WindowBatch) -> np.ndarray:
    """How often the signal was above its threshold in the context window: [B, 4].

    A signal that breached recently tends to breach again (a recurring job, a saturated disk,
    a host under sustained load), and the forecast path alone says that only weakly. Columns:
    log1p of the number of breach runs (>= 2 steps above) in the whole context and in its
    last third; log1p of the time since the last step above the threshold, in 24ths of the
    context (hours at the default 24 h), 10 contexts when there was none; the share above.
    """
    values = batch.encoder_values
    E = values.shape[1]
    above = np.nan_to_num(values, nan=-np.inf) > batch.threshold[:, None]
    before = np.zeros_like(above)
    before[:, 1:] = above[:, :-1]
    starts = above[:, :-1] & above[:, 1:] & ~before[:, :-1]
    runs_context = starts.sum(axis=1)
    runs_recent = starts[:, -max(E // 3, 1):].sum(axis=1)
    ever = above.any(axis=1)
    since = np.where(ever, np.argmax(above[:, ::-1], axis=1), 10 * E)
    return np.stack([np.log1p(runs_context), np.log1p(runs_recent), np.log1p(24.0 * since / E),
                     above.mean(axis=1)], axis=1)


def same_hours_yesterday(batch: WindowBatch, horizon: int, day_steps: int) -> np.ndarray:
    """The signal over the same hours one day earlier, ``(o - 1 day, o - 1 day + horizon]``: [B, 3].

    Breaches that recur at similar hours (a nightly batch job, a daily peak of traffic) are announced
    by the day before, which the forecast path reflects only weakly: a network trained to be right
    on average pulls a once-a-day peak towards the level around it. Columns: the share of those steps
    above the threshold, how far their peak reached past it (in window scales, ``arcsinh``), and
    whether they held a breach (2 steps above). The context holds those hours when it is at least a
    day long (288 steps at 5 minutes, the default); otherwise the columns are "no breach" (0, -3, 0).
    """
    values = batch.encoder_values
    E = values.shape[1]
    if E >= day_steps >= horizon:
        seg = values[:, E - day_steps:E - day_steps + horizon]
    else:
        seg = np.full((len(batch), max(horizon, 1)), np.nan)
    seg = np.nan_to_num(seg, nan=-np.inf)  # an unobserved step is below any threshold
    above = seg > batch.threshold[:, None]
    peak = seg.max(axis=1)
    with np.errstate(invalid="ignore"):
        over = (peak - batch.threshold) / batch.scale
    over = np.arcsinh(np.nan_to_num(over, nan=-10.0, posinf=10.0, neginf=-10.0))
    run = (above[:, 1:] & above[:, :-1]).any(axis=1)
    return np.stack([above.mean(axis=1), over, run.astype(np.float64)], axis=1)


def breach_features(q: np.ndarray, batch: WindowBatch, horizon: int, day_steps: int) -> np.ndarray:
    """Scale-free features of a forecast path against the threshold, for one horizon, plus the
    signal's recent breach history (:func:`breach_history`) and the same hours of the day before
    (:func:`same_hours_yesterday`; ``day_steps``: steps per day at the model's step).

    (The day before, measured 2026-12-02 on saved backtest models, the breach model refitted on the
    same windows with and without it: SMD's 8 h own-rule F1 0.466 -> 0.524, its 2 h 0.318 -> 0.336;
    NAB's 8 h 0.698 -> 0.690, one warning's difference on 18 incidents. docs/BENCHMARKS.md, "Breaches
    at the same hours the day before".)
    """
    s = batch.scale[:, None]
    thr = batch.threshold[:, None]
    qh = q[:, :horizon]
    p90_over = np.max((qh[..., 2] - thr) / s, axis=1)
    p50_over = np.max((qh[..., 1] - thr) / s, axis=1)
    now_over = (batch.last_value - batch.threshold) / batch.scale
    recent_over = (batch.encoder_max - batch.threshold) / batch.scale
    band = np.max((qh[..., 2] - qh[..., 1]) / s, axis=1)
    feats = np.stack([p90_over, p50_over, now_over, recent_over, band], axis=1)
    path = np.arcsinh(np.nan_to_num(feats, nan=-10.0, posinf=10.0, neginf=-10.0))
    return np.hstack([path, breach_history(batch), same_hours_yesterday(batch, horizon, day_steps)])


@dataclass
class BreachModel:
    """Logistic regression per horizon label, with the warning cut-off chosen on the same slice."""

    weights: dict[str, list[float]] = field(default_factory=dict)
    cutoffs: dict[str, float] = field(default_factory=dict)
    fit_stats: dict[str, dict[str, float]] = field(default_factory=dict)

    def probability(self, label: str, features: np.ndarray) -> np.ndarray:
        """``features``: :func:`breach_features`' columns; a model fitted on fewer reads the first ones."""
        w = np.asarray(self.weights.get(label, _PRIOR), dtype=np.float64)
        return _sigmoid(w[0] + features[:, :len(w) - 1] @ w[1:])

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> BreachModel:
        model = cls(weights={k: [float(x) for x in v] for k, v in data.get("weights", {}).items()},
                    cutoffs={k: float(v) for k, v in data.get("cutoffs", {}).items()},
                    fit_stats=data.get("fit_stats", {}))
        for label, w in model.weights.items():
            if len(w) - 1 not in (len(BREACH_FEATURES), _FEATURES_BEFORE_YESTERDAY):
                raise ValueError(f"breach weights for {label} have {len(w)} values, expected "
                                 f"{len(BREACH_FEATURES) + 1} (fitted with another feature set: "
                                 f"refit them with 'tft-trainer recalibrate')")
        return model


def _fit_logistic(X: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 100) -> np.ndarray:
    """Damped Newton for L2-penalised logistic regression, shrunk towards ``_PRIOR``.

    A step is halved until the penalised log-likelihood improves: plain Newton diverges when
    a feature nearly separates the classes, which rare-event data makes likely.
    """
    A = np.hstack([np.ones((len(X), 1)), X])
    penalty = np.full(A.shape[1], l2)
    penalty[0] = 1e-3

    def loss(w: np.ndarray) -> float:
        z = A @ w
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * np.sum(penalty * (w - _PRIOR) ** 2))

    w = _PRIOR.copy()
    current = loss(w)
    for _ in range(iters):
        p = _sigmoid(A @ w)
        grad = A.T @ (p - y) + penalty * (w - _PRIOR)
        hess = (A * (p * (1 - p))[:, None]).T @ A + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-6:
            candidate = w - t * step
            new = loss(candidate)
            if new <= current:
                break
            t /= 2
        else:
            break
        w, improvement, current = candidate, current - new, new
        if improvement < 1e-8 * max(1.0, abs(current)):
            break
    return w


def best_f1_cutoff(prob: np.ndarray, label: np.ndarray) -> tuple[float, float]:
    """The probability cut-off with the best F1 on these windows and that F1 (0.5 when no positives)."""
    if label.sum() == 0:
        return 0.5, 0.0
    best = (0.5, 0.0)
    for cut in np.unique(np.round(prob, 3)):
        warn = prob >= cut
        tp = float((warn & label).sum())
        if tp == 0:
            continue
        precision = tp / warn.sum()
        recall = tp / label.sum()
        f1 = 2 * precision * recall / (precision + recall)
        if f1 > best[1]:
            best = (float(cut), f1)
    return best


def warning_cutoff(prob: np.ndarray, label: np.ndarray) -> tuple[float, float]:
    """The warning cut-off chosen on the fitting windows, and the best F1 reached there.

    Two estimates of the F1-optimal cut-off: the empirical arg-max on these windows, and half
    the best F1 — for calibrated probabilities the optimal cut-off is exactly that (Lipton,
    Elkan and Naryanaswamy, "Optimal thresholding of classifiers to maximize F1", 2014). The
    arg-max is a noisy in-sample estimate: on the NAB benchmark (replayed on a saved network)
    it sat at 0.23-0.42 where half the best F1 was 0.16-0.22, and it cost more than half of the
    8 h recall on the test parts (0.22-0.28 against 0.61). The lower of the two is used: a missed incident costs
    more than an extra warning.
    """
    cut, f1 = best_f1_cutoff(prob, label)
    if f1 <= 0.0:
        return cut, f1
    return float(np.clip(min(cut, f1 / 2.0), 0.01, 0.99)), f1


def armed_windows(batch: WindowBatch, horizon: int) -> np.ndarray:
    """Windows a breach model is fitted and judged on, for one horizon (a boolean mask).

    "Armed": the signal has a threshold and sits at or below it, so a breach is still ahead (a
    window already above it is in breach, not warning of one); and every target step up to
    ``horizon`` is known, so whether it breached is a fact, not a guess. Fitting (here) and
    the validation report (the trainer) must agree on this, or the reliability tables judge the
    model on windows it was not fitted for.
    """
    armed = np.isfinite(batch.threshold) & (batch.last_value <= batch.threshold)
    return armed & np.isfinite(batch.target[:, :horizon]).all(axis=1)


def fit_breach_model(q: np.ndarray, batch: WindowBatch, day_steps: int) -> BreachModel:
    """Fit one logistic per horizon on armed windows (see :func:`armed_windows`)."""
    model = BreachModel()
    y = batch.target.astype(np.float64)
    for label, H in BREACH_HORIZONS.items():
        if q.shape[1] < H:
            continue
        known = armed_windows(batch, H)
        X = breach_features(q[known], batch.take(known), H, day_steps)
        outcome = breach_within(y[known], batch.threshold[known], H).astype(np.float64)
        w = _fit_logistic(X, outcome) if len(X) else _PRIOR.copy()
        model.weights[label] = [float(v) for v in w]
        prob = _sigmoid(np.hstack([np.ones((len(X), 1)), X]) @ w) if len(X) else np.zeros(0)
        model.cutoffs[label], f1 = warning_cutoff(prob, outcome.astype(bool))
        model.fit_stats[label] = {"windows": float(len(X)), "positives": float(outcome.sum()),
                                  "best_f1": float(f1),
                                  "brier": float(np.mean((prob - outcome) ** 2)) if len(X) else float("nan")}
    return model


def reliability_table(prob: np.ndarray, outcome: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Observed breach frequency per predicted-probability bin: the calibration check."""
    edges = np.linspace(0, 1, bins + 1)
    rows = []
    for lo, hi in itertools.pairwise(edges):
        m = (prob >= lo) & ((prob < hi) | (hi == 1.0))
        if m.sum() == 0:
            continue
        rows.append({"bin": f"{lo:.1f}-{hi:.1f}", "windows": int(m.sum()),
                     "predicted": float(prob[m].mean()), "observed": float(outcome[m].mean())})
    return rows
