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
from forecaster.contract.features import DRIVER_WORDS
from forecaster.contract.hosts import INSTANCE_ONLY, HostIdentity

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
    instances: np.ndarray  # object [N]: host keys (``hosts`` turns one into its labels)
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
    # Not per series: how ``instances`` (host keys) map to labels, for /metrics and the JSON API; the
    # configured cluster labels, so that hosts of one instance name in two clusters are told apart.
    hosts: HostIdentity = INSTANCE_ONLY
    # What drove each forecast (the encoder's variable selection, grouped; forecaster.contract.features.
    # driver_of): float32 [N, len(driver_names)], a row's finite weights sum to 1, NaN where the driver
    # does not apply (the signal itself, another model's signals, the fallback). None: no drivers.
    drivers: np.ndarray | None = None
    # float64 [N]: seconds before the origin of the input step the attention weighed most; NaN: none.
    attention_lag: np.ndarray | None = None
    # Not per series: the names of the drivers columns (bounded: own, the signals, calendar, ...).
    driver_names: tuple[str, ...] = ()
    # How each signal driver (own, another signal) moved before the forecast (forecaster.contract.features.
    # driver_trend_hours): float64 [N, len(driver_names)], signed hours (+ climbing, - falling, 0 steady);
    # NaN where the driver is no signal or has no weight. None: no trends.
    driver_trend: np.ndarray | None = None
    # Declared windows (config ``schedules:``) of the row's host and signal: float64 [N, 1 + len(HORIZON_LABELS)],
    # 1 where one covers now, then the time of each horizon, else 0; NaN where no schedule applies.
    planned: np.ndarray | None = None
    # float64 [N]: 1 when the forecast breach lies wholly inside declared windows (the alerts do not page
    # on it), 0 when it does not; NaN where no schedule applies.
    breach_scheduled: np.ndarray | None = None

    def __post_init__(self) -> None:
        # Sets made without drivers (the fallback, older callers) get all-NaN columns, so every row
        # operation below treats the two arrays like any other.
        n = len(self.instances)
        if self.drivers is None:
            object.__setattr__(self, "drivers", np.full((n, len(self.driver_names)), np.nan, dtype=np.float32))
        if self.driver_trend is None:
            object.__setattr__(self, "driver_trend", np.full((n, len(self.driver_names)), np.nan))
        if self.attention_lag is None:
            object.__setattr__(self, "attention_lag", np.full(n, np.nan))
        if self.planned is None:
            object.__setattr__(self, "planned", np.full((n, 1 + len(HORIZON_LABELS)), np.nan))
        if self.breach_scheduled is None:
            object.__setattr__(self, "breach_scheduled", np.full(n, np.nan))

    def __len__(self) -> int:
        return int(self.instances.shape[0])

    @property
    def horizon_steps(self) -> int:
        return int(self.quantiles.shape[1])

    @classmethod
    def empty(cls, step_seconds: int, horizon_steps: int = 1, hosts: HostIdentity = INSTANCE_ONLY) -> ForecastSet:
        obj = np.empty(0, dtype=object)
        return cls(step_seconds, obj, obj.copy(), obj.copy(), obj.copy(), np.zeros(0, dtype=bool),
                   np.zeros(0), np.zeros(0), np.zeros(0), np.zeros((0, horizon_steps, 3), dtype=np.float32),
                   np.zeros((0, len(PATHS))), np.zeros((0, len(HORIZON_LABELS))), hosts=hosts)

    def take(self, rows: np.ndarray) -> ForecastSet:
        """The rows selected by an index or boolean array (the cut-offs stay)."""
        values = {f.name: getattr(self, f.name)[rows] for f in fields(self) if f.name not in _NOT_ROWS}
        return ForecastSet(step_seconds=self.step_seconds, cutoffs=self.cutoffs, hosts=self.hosts,
                           driver_names=self.driver_names, **values)

    def with_cutoffs(self, cutoffs: Mapping[str, float]) -> ForecastSet:
        """The same rows with these cut-offs (finite ones of known horizon labels, in their order)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NOT_ROWS}
        known = {label: float(cutoffs[label]) for label in HORIZON_LABELS
                 if label in cutoffs and math.isfinite(float(cutoffs[label]))}
        return ForecastSet(step_seconds=self.step_seconds, cutoffs=known, hosts=self.hosts,
                           driver_names=self.driver_names, **values)

    @classmethod
    def concat(cls, parts: list[ForecastSet], step_seconds: int,
               cutoffs: Mapping[str, float] | None = None, hosts: HostIdentity | None = None) -> ForecastSet:
        """Rows of all parts, in order; quantile curves are NaN-padded to the longest horizon.

        The result carries ``cutoffs`` (default: none), whatever the parts carry, and ``hosts`` (default:
        the first part's; the parts of one service share it, the config's).
        """
        cut = dict(cutoffs or {})
        if hosts is None:
            hosts = parts[0].hosts if parts else INSTANCE_ONLY
        parts = [p for p in parts if len(p)]
        if any(p.hosts != hosts for p in parts):
            raise ValueError("cannot join forecasts whose hosts are keyed by different labels")
        if not parts:
            return cls.empty(step_seconds, hosts=hosts).with_cutoffs(cut)
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
            if f.name in _NOT_ROWS or f.name in ("quantiles", "drivers", "driver_trend"):
                continue
            values[f.name] = np.concatenate([getattr(p, f.name) for p in parts])
        names, drivers = _join_drivers(parts)
        _, trend = _join_drivers(parts, "driver_trend")
        return cls(step_seconds=step_seconds, quantiles=np.concatenate(padded), hosts=hosts,
                   drivers=drivers, driver_trend=trend, driver_names=names,
                   **values).with_cutoffs(cut)

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


_NOT_ROWS = ("step_seconds", "cutoffs", "hosts", "driver_names")


def _join_drivers(parts: list[ForecastSet], what: str = "drivers") -> tuple[tuple[str, ...], np.ndarray]:
    """The drivers (or ``what``: another per-driver array, e.g. ``driver_trend``) of several sets on the
    union of their names (first seen first), NaN where a part has no such driver: a per-host model may
    know other signals than the global one."""
    names = tuple(dict.fromkeys(n for p in parts for n in p.driver_names))
    col = {n: c for c, n in enumerate(names)}
    dtype = parts[0].drivers.dtype if what == "drivers" else np.float64  # type: ignore[union-attr]
    out = np.full((sum(len(p) for p in parts), len(names)), np.nan, dtype=dtype)
    row = 0
    for p in parts:
        if p.driver_names:
            out[row:row + len(p), [col[n] for n in p.driver_names]] = getattr(p, what)
        row += len(p)
    return names, out


# --------------------------------------------------------------------------- JSON documents


def _num(v: Any) -> float | None:
    f = float(v)
    return round(f, 6) if math.isfinite(f) else None


def _curve(values: np.ndarray) -> list[float | None]:
    return [round(float(v), 6) if math.isfinite(v) else None for v in values.tolist()]


def _host(fs: ForecastSet, row: int) -> dict[str, str]:
    """``instance`` (the label, not the host key) and ``labels`` (instance and the cluster labels) of a row."""
    labels = fs.hosts.host_labels(str(fs.instances[row]))
    return {"instance": labels["instance"], "labels": labels}


#: The "because" text names at most this many drivers, and only those weighing at least BECAUSE_MIN_WEIGHT
#: (the top one always): a short sentence, not the whole table ("drivers" has that).
BECAUSE_DRIVERS = 3
BECAUSE_MIN_WEIGHT = 0.1


def trend_words(hours: float | None) -> str:
    """", climbing for 6 h" / ", falling for 1 h" for a signed trend (driver_trend_hours); "" when steady or none."""
    if hours is None or hours == 0:
        return ""
    return f", {'climbing' if hours > 0 else 'falling'} for {abs(hours):g} h"


def drivers_document(fs: ForecastSet, row: int) -> dict[str, Any]:
    """What drove one forecast: ``drivers`` (every driver with a weight, heaviest first, each with
    ``trend_hours``: how its signal moved before the forecast, + climbing / - falling for that many hours,
    0 steady, null for the drivers that are no signal), ``because`` (the top ones in words, e.g. "memory
    (62 %, climbing for 6 h), iowait (21 %)"; null for the fallback) and ``attention_peak_lag_seconds``
    (how far before the origin the attention looked most)."""
    weights = fs.drivers[row]
    trend = fs.driver_trend[row]
    ok = np.flatnonzero(np.isfinite(weights))
    ranked = sorted(ok.tolist(), key=lambda c: (-float(weights[c]), fs.driver_names[c]))
    drivers = [{"driver": fs.driver_names[c], "weight": round(float(weights[c]), 4), "trend_hours": _num(trend[c])}
               for c in ranked]
    named = [d for k, d in enumerate(drivers[:BECAUSE_DRIVERS]) if k == 0 or d["weight"] >= BECAUSE_MIN_WEIGHT]
    because = ", ".join(f"{DRIVER_WORDS.get(d['driver'], d['driver'])} ({d['weight'] * 100:.0f} %"
                        f"{trend_words(d['trend_hours'])})" for d in named)
    return {"drivers": drivers, "because": because or None,
            "attention_peak_lag_seconds": _num(fs.attention_lag[row])}


def series_document(fs: ForecastSet, row: int) -> dict[str, Any]:
    """One series with its full p10/p50/p90 curves.

    ``instance`` is the instance label; ``labels`` every label that names the host (with
    ``prometheus.cluster_labels``, the cluster too), as the exported series carry them.
    """
    q = fs.quantiles[row]
    n = int(np.isfinite(q[:, 1]).sum())
    step = fs.step_seconds
    eta = fs.eta[row]
    prob = fs.probability[row]
    return {
        **_host(fs, row),
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
        **drivers_document(fs, row),
    }


def forecasts_document(fs: ForecastSet, instance: str | None = None, signal: str | None = None) -> dict[str, Any]:
    """``/api/v1/forecasts`` (and ``--output``): the full curves of the served forecasts.

    The ``k``-th value of a curve is the forecast for ``origin + (k + 1) * step_seconds``.
    ``instance`` selects by the instance label: the hosts of that name in every cluster.
    """
    rows = np.ones(len(fs), dtype=bool)
    if instance:
        if fs.hosts.labels:
            rows &= np.array([fs.hosts.instance(str(k)) == instance for k in fs.instances], dtype=bool)
        else:
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
            **_host(fs, r), "signal": str(fs.signals[r]),
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
            **drivers_document(fs, r),
        })

    def order(b: dict[str, Any]) -> tuple[Any, ...]:
        if b["eta_seconds"] is not None:
            return (0, b["eta_seconds"], b["eta_seconds_p50"] is None, 0.0, *b["labels"].values(), b["signal"])
        return (1, HORIZON_LABELS[b["horizon"]], 0, -b["probability"], *b["labels"].values(), b["signal"])

    out.sort(key=order)
    return out
