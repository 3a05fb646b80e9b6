"""A band that keeps covering 80 % when a series drifts from what the model was calibrated on.

The band calibration (:func:`forecaster.contract.calibration.fit_band`) makes p10-p90 cover 80 % of the
validation slice, once, at training time. A series that later gets noisier than it was there gets a band
that is too narrow for as long as the model serves: on SMD's machines the calibrated band covered 0.80 of
the validation windows and 0.73-0.77 of the test parts, 7 of 8 hosts below 0.8; followed, 0.78-0.79
(docs/BENCHMARKS.md, "A band that follows each series").

So each series carries two factors that stretch or shrink its band's lower and upper half-widths around
the p50, learned from its own outcomes as they arrive: quantile tracking (Angelopoulos, Candes and
Tibshirani, "Conformal PID control", 2023). Every realised outcome moves a factor's logarithm by ``rate``
times (1 - 0.1) when it fell outside that side of the band and by ``rate`` times (0 - 0.1) when it did
not, so each side settles where 10 % of the outcomes fall beyond it. Only forecasts whose targets have
been observed count: at a forecast made at time t the factors know nothing after t.

One class serves both places that make forecasts, so that the backtest measures what the service
publishes: the backtest drives it origin by origin over the test part (``trainer.backtest``), the service
once per cycle (``forecaster.serving.cycle``). The model's breach probabilities are computed from the
network's own band (the breach model was fitted on it) and do not change; the published quantiles, the
p90 path and its ETA do. The state lives in memory: a restart starts again from factors of 1, the
calibrated band.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from forecaster.contract.panel import Panel

#: Log-factor step per realised outcome. A forecast brings one outcome per step of its horizon (96 at
#: 8 h of 5 minutes), so an hour of forecasts that all miss moves a factor by about 9 %; measured on
#: NAB and SMD against 0.0005-0.005 (docs/BENCHMARKS.md).
RATE = 0.001
#: The share of outcomes each side of an 80 % band leaves out.
TAIL = 0.1
#: A factor stays within these: the network's band is never widened or narrowed past them.
FACTOR_RANGE = (0.25, 6.0)
#: How often the service keeps a forecast to score later (the backtest keeps every origin, hourly).
RECORD_SECONDS = 3600

#: values_at(series keys [n], target times [k]) -> observed values [n, k], NaN where not observed.
ValuesAt = Callable[[list[Hashable], np.ndarray], np.ndarray]


@dataclass
class _Pending:
    """One kept forecast of many series: scored step by step as its targets are observed."""

    origin: float
    keys: np.ndarray  # int64 [n]: indices into OnlineBand's factors
    quantiles: np.ndarray  # float32 [n, H, 3] as the network gave them (before any factor)
    scored: np.ndarray  # bool [H]: steps already scored


class OnlineBand:
    """Per-series factors on the band's half-widths, learned from outcomes (module docstring)."""

    def __init__(self, step_seconds: int, *, rate: float = RATE, record_seconds: float = RECORD_SECONDS) -> None:
        if step_seconds <= 0 or rate <= 0:
            raise ValueError("step_seconds and rate must be positive")
        self.step_seconds = step_seconds
        self.rate = rate
        self.record_seconds = record_seconds
        self._index: dict[Hashable, int] = {}
        self._keys: list[Hashable] = []
        self._log = np.zeros((0, 2))  # [K, 2] log factors: lower, upper
        self._pending: list[_Pending] = []
        self._last_record: float | None = None

    def __len__(self) -> int:
        return len(self._index)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def factors(self, keys: Sequence[Hashable]) -> np.ndarray:
        """[n, 2] lower and upper factors; 1 for a series never scored."""
        out = np.ones((len(keys), 2))
        for r, key in enumerate(keys):
            i = self._index.get(key)
            if i is not None:
                out[r] = np.exp(self._log[i])
        return out

    def adjust(self, keys: Sequence[Hashable], quantiles: np.ndarray) -> np.ndarray:
        """``quantiles`` [n, H, 3] with each row's band stretched by its series' factors (a new array)."""
        f = self.factors(keys).astype(quantiles.dtype)
        out = quantiles.copy()
        p50 = quantiles[..., 1]
        out[..., 0] = p50 - f[:, 0:1] * (p50 - quantiles[..., 0])
        out[..., 2] = p50 + f[:, 1:2] * (quantiles[..., 2] - p50)
        return out

    def due(self, origin: float) -> bool:
        """Whether the service should keep this cycle's forecasts (one an hour: the backtest's cadence)."""
        return self._last_record is None or origin - self._last_record >= self.record_seconds

    def record(self, keys: Sequence[Hashable], origin: float, quantiles: np.ndarray) -> None:
        """Keep forecasts made at ``origin`` (the network's quantiles, before :meth:`adjust`) to score later."""
        if not len(keys):
            return
        idx = np.fromiter((self._key(k) for k in keys), dtype=np.int64, count=len(keys))
        H = quantiles.shape[1]
        self._pending.append(_Pending(float(origin), idx, np.asarray(quantiles, dtype=np.float32),
                                      np.zeros(H, dtype=bool)))
        self._last_record = float(origin) if self._last_record is None else max(self._last_record, float(origin))

    def observe(self, now: float, values_at: ValuesAt) -> int:
        """Score every kept step whose target time is at or before ``now``; returns how many outcomes counted.

        A target that was never observed (a gap, or older than what ``values_at`` can see) is dropped
        unscored. Each outcome is judged against the factors as they were before this call.
        """
        if not self._pending:
            return 0
        current = self._log.copy()
        step = np.zeros_like(self._log)
        counted = 0
        keep: list[_Pending] = []
        for p in self._pending:
            H = p.quantiles.shape[1]
            times = p.origin + self.step_seconds * np.arange(1, H + 1, dtype=np.float64)
            ready = (times <= now) & ~p.scored
            if ready.any():
                cols = np.flatnonzero(ready)
                y = np.asarray(values_at([self._keys[i] for i in p.keys], times[cols]), dtype=np.float64)
                q = p.quantiles[:, cols].astype(np.float64)
                f = np.exp(current[p.keys])  # [n, 2]
                with np.errstate(invalid="ignore", divide="ignore"):
                    below = (q[..., 1] - y) > f[:, 0:1] * (q[..., 1] - q[..., 0])
                    above = (y - q[..., 1]) > f[:, 1:2] * (q[..., 2] - q[..., 1])
                seen = np.isfinite(y) & np.isfinite(q).all(axis=-1)
                n_seen = seen.sum(axis=1)
                np.add.at(step, (p.keys, 0), (below & seen).sum(axis=1) - TAIL * n_seen)
                np.add.at(step, (p.keys, 1), (above & seen).sum(axis=1) - TAIL * n_seen)
                counted += int(n_seen.sum())
                p.scored[cols] = True
            if not p.scored.all():
                keep.append(p)
        self._pending = keep
        lo, hi = np.log(FACTOR_RANGE[0]), np.log(FACTOR_RANGE[1])
        self._log = np.clip(self._log + self.rate * step, lo, hi)
        return counted

    def summary(self) -> dict[str, float | int | None]:
        """For the status document: how many series have factors, and their medians."""
        if not len(self._index):
            return {"series": 0, "pending_forecasts": self.pending, "median_lower": None, "median_upper": None}
        med = np.exp(np.median(self._log[:len(self._index)], axis=0))
        return {"series": len(self._index), "pending_forecasts": self.pending,
                "median_lower": round(float(med[0]), 3), "median_upper": round(float(med[1]), 3)}

    def _key(self, key: Hashable) -> int:
        i = self._index.get(key)
        if i is None:
            i = self._index[key] = len(self._index)
            self._keys.append(key)
            if i >= len(self._log):
                grown = np.zeros((max(16, 2 * len(self._log)), 2))
                grown[:len(self._log)] = self._log
                self._log = grown
        return i


def panel_values_at(panel: Panel, cells: Mapping[Hashable, tuple[int, int]]) -> ValuesAt:
    """A :data:`ValuesAt` reading ``panel``: ``cells`` maps a series key to its (host row, signal column).

    A time off the panel's grid window, or a key the panel does not hold, reads as not observed.
    """

    def values_at(keys: list[Hashable], times: np.ndarray) -> np.ndarray:
        out = np.full((len(keys), len(times)), np.nan)
        if not len(keys) or not panel.n_times:
            return out
        col = np.rint((np.asarray(times, dtype=np.float64) - panel.timestamps[0]) / panel.step_seconds).astype(np.int64)
        inside = np.flatnonzero((col >= 0) & (col < panel.n_times))
        where = [(r, cells[k]) for r, k in enumerate(keys) if k in cells]
        if not where or not len(inside):
            return out
        rows = np.array([r for r, _ in where], dtype=np.int64)
        inst = np.array([c[0] for _, c in where], dtype=np.int64)
        sig = np.array([c[1] for _, c in where], dtype=np.int64)
        out[np.ix_(rows, inside)] = panel.values[inst[:, None], sig[:, None], col[inside][None, :]]
        return out

    return values_at
