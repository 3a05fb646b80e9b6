"""Simple forecasters: the flagged fallback when no model loads, and the yardsticks a new model must beat.

They take the same :class:`~forecaster.contract.features.WindowBatch` as the TFT, so the promotion gate
compares like with like. Their bands are the empirical 10 %/90 % quantiles of the method's own
errors inside the encoder window (a split-conformal band that needs no training).
"""

from __future__ import annotations

import numpy as np

from forecaster.contract.features import WindowBatch


def _band(p50: np.ndarray, residuals: np.ndarray) -> np.ndarray:
    """Add a band from residual quantiles (per window, same width at every step)."""
    with np.errstate(all="ignore"):
        lo = np.nanquantile(residuals, 0.1, axis=1)
        hi = np.nanquantile(residuals, 0.9, axis=1)
    lo = np.nan_to_num(lo)[:, None]
    hi = np.nan_to_num(hi)[:, None]
    return np.sort(np.stack([p50 + lo, p50, p50 + hi], axis=-1), axis=-1)


def seasonal_naive(batch: WindowBatch, horizon: int, season: int = 288) -> np.ndarray:
    """``y[o+h-season]`` where the window reaches that far back, else the last value: [B, H, 3]."""
    vals = batch.encoder_values
    E = vals.shape[1]
    h = np.arange(1, horizon + 1)
    src = E - 1 + h - season * np.ceil(h / season).astype(int)
    src = np.clip(src, 0, E - 1)
    p50 = vals[:, src]
    last = batch.last_value[:, None]
    p50 = np.where(np.isfinite(p50), p50, last)
    lagged = np.roll(vals, season, axis=1)
    lagged[:, :season] = np.nan
    residuals = vals - lagged if season < E else vals - np.roll(vals, 1, axis=1)
    return _band(p50, residuals)


def linear_trend(batch: WindowBatch, horizon: int, lookback: int = 12) -> np.ndarray:
    """Prometheus ``predict_linear(x[lookback*step], h)``: a least-squares line, extrapolated."""
    vals = batch.encoder_values[:, -lookback:]
    t = np.arange(lookback, dtype=np.float64)
    ok = np.isfinite(vals)
    n = ok.sum(axis=1).clip(min=1)
    tm = (t * ok).sum(axis=1) / n
    ym = np.nansum(vals, axis=1) / n
    cov = np.nansum((t - tm[:, None]) * (vals - ym[:, None]) * ok, axis=1)
    var = (((t - tm[:, None]) ** 2) * ok).sum(axis=1)
    slope = np.where(var > 0, cov / np.where(var > 0, var, 1), 0.0)
    h = np.arange(1, horizon + 1)
    p50 = ym[:, None] + slope[:, None] * (lookback - 1 - tm[:, None] + h[None, :])
    residuals = np.diff(batch.encoder_values, axis=1)
    return _band(p50, residuals * np.sqrt(6))
