"""The benchmark protocol (``shared/bench/PROTOCOL.md``) for any dataset in its format.

Parameters are fitted on each series' training part only (one global model over all training
parts; the last slice of each training part is the validation slice for early stopping and
calibration) and frozen; at every origin the model sees only values up to that origin. The
output is the forecasts file ``score.py`` reads, with the model's own early-warning decision as
``warn_2h``/``warn_8h`` (breach probability against a cut-off chosen on the training part).
"""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from forecaster.contract.features import build_windows
from forecaster.contract.model import ModelSpec
from forecaster.contract.panel import Panel, PanelError
from trainer.training import TrainSettings, train_model

log = logging.getLogger(__name__)

HORIZON = 96
ORIGIN_EVERY = 12
TRAIN_FRACTION = 0.7
SIGNAL = "value"


@dataclass
class BenchmarkData:
    panel: Panel
    series_ids: list[str]
    timestamps: list[np.ndarray]  # original timestamps per series (naive datetime64)
    offsets: np.ndarray  # grid index of each series' first row
    lengths: np.ndarray
    n_train: np.ndarray
    thresholds: np.ndarray


def load_benchmark(path: Path, meta_path: Path | None = None) -> BenchmarkData:
    """Read a protocol dataset; imputed points become missing values, as the protocol asks."""
    path = Path(path)
    try:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise PanelError(f"cannot read {path}: {exc}") from exc
    missing = {"series_id", "timestamp", "value"} - set(frame.columns)
    if missing:
        raise PanelError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    if "imputed" not in frame.columns:
        frame["imputed"] = False
    meta_path = meta_path or path.with_name(path.name.rsplit(".", 1)[0] + ".series.csv")
    meta = pd.read_csv(meta_path).set_index("series_id") if Path(meta_path).exists() else None

    step = 300
    groups = [(sid, d.sort_values("timestamp")) for sid, d in frame.groupby("series_id", sort=True)]
    t0 = min(d["timestamp"].iloc[0] for _, d in groups)
    offsets, lengths, n_train, thresholds, stamps = [], [], [], [], []
    for sid, d in groups:
        n = len(d)
        offsets.append(round((d["timestamp"].iloc[0] - t0).total_seconds() / step))
        lengths.append(n)
        values = d["value"].to_numpy(np.float64)
        if meta is not None and sid in meta.index:
            nt, thr = int(meta.loc[sid, "n_train"]), float(meta.loc[sid, "threshold"])
        else:
            nt = math.floor(TRAIN_FRACTION * n)
            thr = float(np.percentile(values[:nt], 99))
        n_train.append(nt)
        thresholds.append(thr)
        stamps.append(d["timestamp"].to_numpy())
    T = max(o + n for o, n in zip(offsets, lengths, strict=True))
    values = np.full((len(groups), 1, T), np.nan, dtype=np.float32)
    for i, (_, d) in enumerate(groups):
        v = d["value"].to_numpy(np.float64).copy()
        v[d["imputed"].to_numpy(bool)] = np.nan
        values[i, 0, offsets[i]:offsets[i] + len(v)] = v
    base = int(pd.Timestamp(t0).timestamp()) // step * step
    panel = Panel([sid for sid, _ in groups], [SIGNAL], base + step * np.arange(T, dtype=np.int64),
                  values, step, thresholds=np.array(thresholds, dtype=np.float32)[:, None])
    return BenchmarkData(panel, panel.instances, stamps, np.array(offsets), np.array(lengths),
                         np.array(n_train), np.array(thresholds))


def origins_for(n: int, n_train: int) -> np.ndarray:
    return np.arange(n_train - 1, n - HORIZON, ORIGIN_EVERY)


def run_backtest(data: BenchmarkData, spec: ModelSpec, settings: TrainSettings,
                 validation_steps: int = 576) -> tuple[pd.DataFrame, dict]:
    """Train on the training parts, forecast every origin; returns (forecasts, report)."""
    started = time.monotonic()
    series, origins, owners = [], [], []
    for i, _sid in enumerate(data.series_ids):
        for o in origins_for(int(data.lengths[i]), int(data.n_train[i])):
            series.append((i, 0))
            origins.append(data.offsets[i] + o)
            owners.append((i, int(o)))
    # Serving rules relaxed for the benchmark: every origin must be forecast, so stale ends
    # (imputed runs) are forward-filled rather than skipped.
    rules = spec.window_rules(min_history=1, max_stale_steps=10**6, min_observed_fraction=0.0)
    batch = build_windows(data.panel, np.array(series), np.array(origins), rules, spec.signal_codes(),
                          data.thresholds[np.array(series)[:, 0]])
    if len(batch) != len(origins):  # checked before training: minutes of it would be wasted
        kept = set(zip(batch.series[:, 0].tolist(), batch.origins.tolist(), strict=True))
        missing = sorted({data.series_ids[i] for (i, _), o in zip(series, origins, strict=True) if (i, o) not in kept})
        raise ValueError(f"{len(origins) - len(batch)} origin(s) have no observed value at or before them, so they "
                         f"cannot be forecast (series: {', '.join(missing)}); every origin needs one")
    series_end = data.offsets + data.n_train  # grid index one past each training part
    result = train_model(data.panel, spec, settings, validation_steps, series_end=series_end)
    model = result.model
    t_inf = time.monotonic()
    fc = model.predict(batch)
    inference_s = time.monotonic() - t_inf

    cut2 = model.breach.cutoffs.get("2h", 0.5)
    cut8 = model.breach.cutoffs.get("8h", 0.5)
    rows = []
    h = np.arange(1, HORIZON + 1)
    for b, (i, o) in enumerate(owners):
        origin_ts = data.timestamps[i][o]
        q = fc.quantiles[b]
        rows.append(pd.DataFrame({
            "series_id": data.series_ids[i], "origin": origin_ts, "h": h,
            "p10": q[:, 0], "p50": q[:, 1], "p90": q[:, 2],
            "warn_2h": bool(fc.breach_probability["2h"][b] >= cut2),
            "warn_8h": bool(fc.breach_probability["8h"][b] >= cut8),
        }))
    forecasts = pd.concat(rows, ignore_index=True)
    report = {
        "fit": "once on each series' training part (global model), frozen for all origins",
        "initial_weights": str(settings.initial_weights) if settings.initial_weights else "none (from scratch)",
        "level_shift_share": settings.level_shift_share,
        "epochs": result.epochs, "samples_seen": result.samples_seen,
        "train_seconds": round(result.seconds, 1), "stopped_because": result.stopped_because,
        "best_val_loss": result.best_val_loss, "origins": len(owners),
        "inference_seconds": round(inference_s, 2),
        "inference_ms_per_window": round(1000 * inference_s / max(len(owners), 1), 2),
        "total_seconds": round(time.monotonic() - started, 1),
        "validation": result.validation, "cutoffs": model.breach.cutoffs,
        "model": model,
    }
    return forecasts, report


def write_forecasts(forecasts: pd.DataFrame, out: Path) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if out.suffix == ".csv":
        forecasts.to_csv(tmp, index=False)
    else:
        forecasts.to_parquet(tmp, index=False)
    tmp.replace(out)


def find_scorer(dataset: Path) -> Path | None:
    """``score.py`` next to the dataset's folder (the bench layout), if it is there."""
    for candidate in (dataset.parent.parent / "score.py", dataset.parent / "score.py"):
        if candidate.is_file():
            return candidate
    return None


def score(scorer: Path, dataset: Path, forecasts: Path, name: str, json_out: Path | None = None) -> int:
    cmd = [sys.executable, str(scorer), str(dataset), str(forecasts), "--name", name]
    if json_out is not None:
        cmd += ["--json", str(json_out)]
    return subprocess.call(cmd)
