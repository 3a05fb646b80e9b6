"""The forecasts being served: one columnar, immutable set, and the JSON documents made from it.

A :class:`ForecastSet` holds every served series as parallel numpy arrays (no Python object per
series), because a fleet of thousands of hosts means tens of thousands of series and the
publish step, the ``/metrics`` text and the JSON API all walk them. A set is never modified
after it is built: the service swaps in a new one at the end of a cycle, so a reader holding
the old one always sees one whole cycle.

Besides the per-series arrays a set carries the per-horizon breach-probability cut-offs of the
global model that served the cycle (``cutoffs``, chosen F1-optimally on its training run's
validation windows; empty when the cycle ran on the fallback), so the probabilities and the
cut-offs they are judged against are always published together.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import numpy as np

from forecaster.contract.config import HORIZON_LABELS

PATHS: tuple[str, ...] = ("p50", "p90")
QUANTILE_NAMES: tuple[str, ...] = ("p10", "p50", "p90")
MAX_HORIZON_SECONDS = max(HORIZON_LABELS.values())
#: Why a series is listed by :func:`breaches`, strongest first.
BREACH_REASONS: tuple[str, ...] = ("p50_path", "p90_path", "probability")


def horizon_index(label: str, step_seconds: int) -> int:
    """0-based step index of a horizon label: ``seconds // step - 1`` (30m at 300 s is index 5)."""
    return HORIZON_LABELS[label] // step_seconds - 1


def iso(t: float | None) -> str | None:
    if t is None or not math.isfinite(t):
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class ForecastSet:
    """Forecasts for N series (one row each); arrays are never written after construction."""

    step_seconds: int
    instances: np.ndarray  # object [N]
    signals: np.ndarray  # object [N]
    kinds: np.ndarray  # object [N]: "host" | "global" | "fallback"
    versions: np.ndarray  # object [N]
    warming_up: np.ndarray  # bool [N]
    made_at: np.ndarray  # float64 [N], unix time the forecast was made
    origin: np.ndarray  # float64 [N], time of the last input step (the forecast starts one step later)
    threshold: np.ndarray  # float64 [N], NaN when the signal has none
    quantiles: np.ndarray  # float32 [N, H, 3] p10/p50/p90 in units; NaN beyond a model's horizon
    eta: np.ndarray  # float64 [N, 2] seconds until the p50 / p90 path first crosses the threshold; NaN: never
    probability: np.ndarray  # float64 [N, len(HORIZON_LABELS)]; NaN: not available (fallback)
    # Not per series: horizon label -> the served global model's breach-probability cut-off
    # (a subset of HORIZON_LABELS, in its order); empty when no global model served the cycle.
    cutoffs: Mapping[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.instances.shape[0])

    @property
    def horizon_steps(self) -> int:
        return int(self.quantiles.shape[1])

    @classmethod
    def empty(cls, step_seconds: int, horizon_steps: int = 1) -> ForecastSet:
        obj = np.empty(0, dtype=object)
        return cls(step_seconds, obj, obj.copy(), obj.copy(), obj.copy(), np.zeros(0, dtype=bool),
                   np.zeros(0), np.zeros(0), np.zeros(0), np.zeros((0, horizon_steps, 3), dtype=np.float32),
                   np.zeros((0, len(PATHS))), np.zeros((0, len(HORIZON_LABELS))))

    def take(self, rows: np.ndarray) -> ForecastSet:
        """The rows selected by an index or boolean array (the cut-offs stay)."""
        values = {f.name: getattr(self, f.name)[rows] for f in fields(self) if f.name not in _NOT_ROWS}
        return ForecastSet(step_seconds=self.step_seconds, cutoffs=self.cutoffs, **values)

    def with_cutoffs(self, cutoffs: Mapping[str, float]) -> ForecastSet:
        """The same rows with these cut-offs (finite ones of known horizon labels, in their order)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NOT_ROWS}
        known = {label: float(cutoffs[label]) for label in HORIZON_LABELS
                 if label in cutoffs and math.isfinite(float(cutoffs[label]))}
        return ForecastSet(step_seconds=self.step_seconds, cutoffs=known, **values)

    @classmethod
    def concat(cls, parts: list[ForecastSet], step_seconds: int,
               cutoffs: Mapping[str, float] | None = None) -> ForecastSet:
        """Rows of all parts, in order; quantile curves are NaN-padded to the longest horizon.

        The result carries ``cutoffs`` (default: none), whatever the parts carry.
        """
        cut = dict(cutoffs or {})
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty(step_seconds).with_cutoffs(cut)
        if len(parts) == 1:
            return parts[0].with_cutoffs(cut)
        H = max(p.horizon_steps for p in parts)
        padded = []
        for p in parts:
            q = p.quantiles
            if q.shape[1] < H:
                q = np.concatenate([q, np.full((len(p), H - q.shape[1], 3), np.nan, dtype=np.float32)], axis=1)
            padded.append(q)
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in _NOT_ROWS or f.name == "quantiles":
                continue
            values[f.name] = np.concatenate([getattr(p, f.name) for p in parts])
        return cls(step_seconds=step_seconds, quantiles=np.concatenate(padded), **values).with_cutoffs(cut)

    def at_horizons(self) -> dict[str, np.ndarray]:
        """Label -> [N, 3] quantiles at that horizon (NaN where a series' horizon is shorter)."""
        out = {}
        for label in HORIZON_LABELS:
            k = horizon_index(label, self.step_seconds)
            if 0 <= k < self.horizon_steps:
                out[label] = self.quantiles[:, k, :]
            else:
                out[label] = np.full((len(self), 3), np.nan, dtype=np.float32)
        return out

    def oldest(self) -> float | None:
        return float(self.made_at.min()) if len(self) else None


_NOT_ROWS = ("step_seconds", "cutoffs")


# --------------------------------------------------------------------------- JSON documents


def _num(v: Any) -> float | None:
    f = float(v)
    return round(f, 6) if math.isfinite(f) else None


def _curve(values: np.ndarray) -> list[float | None]:
    return [round(float(v), 6) if math.isfinite(v) else None for v in values.tolist()]


def series_document(fs: ForecastSet, row: int) -> dict[str, Any]:
    """One series with its full p10/p50/p90 curves."""
    q = fs.quantiles[row]
    n = int(np.isfinite(q[:, 1]).sum())
    step = fs.step_seconds
    eta = fs.eta[row]
    prob = fs.probability[row]
    return {
        "instance": str(fs.instances[row]),
        "signal": str(fs.signals[row]),
        "model": str(fs.kinds[row]),
        "version": str(fs.versions[row]),
        "warming_up": bool(fs.warming_up[row]),
        "made_at": iso(float(fs.made_at[row])),
        "origin": iso(float(fs.origin[row])),
        "origin_unix": float(fs.origin[row]),
        "step_seconds": step,
        "threshold": _num(fs.threshold[row]),
        "p10": _curve(q[:n, 0]),
        "p50": _curve(q[:n, 1]),
        "p90": _curve(q[:n, 2]),
        "breach_eta_seconds": {path: _num(eta[i]) for i, path in enumerate(PATHS)},
        "breach_probability": (None if not np.isfinite(prob).any()
                               else {label: _num(prob[i]) for i, label in enumerate(HORIZON_LABELS)}),
    }


def forecasts_document(fs: ForecastSet, instance: str | None = None, signal: str | None = None) -> dict[str, Any]:
    """``/api/v1/forecasts`` (and ``--output``): the full curves of the served forecasts.

    The ``k``-th value of a curve is the forecast for ``origin + (k + 1) * step_seconds``.
    """
    rows = np.ones(len(fs), dtype=bool)
    if instance:
        rows &= fs.instances == instance
    if signal:
        rows &= fs.signals == signal
    idx = np.flatnonzero(rows)
    order = sorted(idx.tolist(), key=lambda r: (fs.instances[r], fs.signals[r]))
    return {"status": "success",
            "data": {"step_seconds": fs.step_seconds, "horizons": dict(HORIZON_LABELS),
                     "series": [series_document(fs, r) for r in order]}}


def breaches(fs: ForecastSet) -> list[dict[str, Any]]:
    """Series predicted to breach: a forecast path crosses the threshold within the horizon, or
    the breach probability at some horizon is at or above that horizon's cut-off (``fs.cutoffs``,
    the served global model's, applied to every series as the alert rules do).

    ``reason`` is the strongest of ``reasons`` (``p50_path`` > ``p90_path`` > ``probability``);
    ``horizon``, ``probability`` and ``cutoff`` name the shortest horizon whose probability
    reaches its cut-off (null when none does). Soonest first: series with a path crossing by
    ETA, then series with only a probability warning by horizon, highest probability first.
    """
    labels = list(HORIZON_LABELS)
    cut = np.array([fs.cutoffs.get(label, np.nan) for label in labels], dtype=np.float64)
    with np.errstate(invalid="ignore"):
        warned = np.isfinite(fs.probability) & np.isfinite(cut) & (fs.probability >= cut)  # [N, L]
    crossing = np.isfinite(fs.eta)  # [N, 2]
    out = []
    for r in np.flatnonzero(crossing.any(axis=1) | warned.any(axis=1)).tolist():
        eta = fs.eta[r]
        prob = fs.probability[r]
        reasons = [path for path, hit in zip(BREACH_REASONS[:2], crossing[r].tolist(), strict=True) if hit]
        first = np.flatnonzero(warned[r])
        c = int(first[0]) if len(first) else None  # the shortest horizon at or above its cut-off
        horizon = labels[c] if c is not None else None
        if horizon is not None:
            reasons.append("probability")
        soonest = float(np.nanmin(eta)) if crossing[r].any() else None
        out.append({
            "instance": str(fs.instances[r]), "signal": str(fs.signals[r]),
            "reason": reasons[0], "reasons": reasons,
            "threshold": _num(fs.threshold[r]),
            "eta_seconds": _num(soonest) if soonest is not None else None,
            "eta_seconds_p50": _num(eta[0]), "eta_seconds_p90": _num(eta[1]),
            "breach_at": iso(float(fs.made_at[r] + soonest)) if soonest is not None else None,
            "horizon": horizon,
            "probability": _num(prob[c]) if c is not None else None,
            "cutoff": _num(cut[c]) if c is not None else None,
            "probability_8h": _num(prob[labels.index("8h")]),
            "model": str(fs.kinds[r]), "warming_up": bool(fs.warming_up[r]),
        })

    def order(b: dict[str, Any]) -> tuple[Any, ...]:
        if b["eta_seconds"] is not None:
            return (0, b["eta_seconds"], b["eta_seconds_p50"] is None, 0.0, b["instance"], b["signal"])
        return (1, HORIZON_LABELS[b["horizon"]], 0, -b["probability"], b["instance"], b["signal"])

    out.sort(key=order)
    return out
