"""The benchmark protocol (``shared/bench/PROTOCOL.md``) for any dataset in its format.

Parameters are fitted on each series' training part only (one global model over all training
parts; the last slice of each training part is the validation slice for early stopping and
calibration) and frozen; at every origin the model sees only values up to that origin. The
output is the forecasts file ``score.py`` reads, with the model's own early-warning decision as
``warn_2h``/``warn_8h`` (breach probability against a cut-off chosen on the training part).

A multivariate dataset (a ``host`` column in the sidecar, PROTOCOL.md section 1) becomes the panel
serving builds from a fleet: one row per host, one signal per metric kind, so each series' windows
carry its host's other metrics as observed inputs up to the origin, exactly as in production. Without
a ``host`` column (or with ``univariate=True``, the ablation) every series is its own one-signal row.
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

from forecaster.contract.features import WindowBatch, WindowRules, build_windows
from forecaster.contract.model import ModelSpec
from forecaster.contract.online_band import RATE, OnlineBand, panel_values_at
from forecaster.contract.panel import Panel, PanelError
from trainer.training import TrainSettings, train_model

log = logging.getLogger(__name__)

HORIZON = 96
ORIGIN_EVERY = 12
TRAIN_FRACTION = 0.7
SIGNAL = "value"


@dataclass
class BenchmarkData:
    """A protocol dataset on one grid; the per-series arrays follow ``series_ids``."""

    panel: Panel
    series_ids: list[str]
    timestamps: list[np.ndarray]  # original timestamps per series (naive datetime64)
    offsets: np.ndarray  # grid index of each series' first row
    lengths: np.ndarray
    n_train: np.ndarray
    thresholds: np.ndarray
    cells: np.ndarray  # [S, 2] (panel instance, panel signal) holding each series
    train_end: np.ndarray  # [instances] grid index one past the training part of every series in that row

    @property
    def multivariate(self) -> bool:
        return len(self.panel.signals) > 1


def _signal_of(series_id: str, host: str) -> str:
    """The metric kind of a series: what follows its host in the id (``smd/machine-1-6/m01`` -> ``m01``),
    so the same metric on two hosts shares one signal (and its embedding); the whole id otherwise."""
    parts = series_id.split("/")
    if host in parts[:-1]:
        k = len(parts) - 1 - parts[::-1].index(host)
        return "/".join(parts[k + 1:])
    return series_id


def _series_hosts(series_ids: list[str], meta: pd.DataFrame | None) -> list[str] | None:
    """Each series' host from the sidecar's ``host`` column; None for a univariate dataset.
    A series the sidecar does not place on a host is a host of its own."""
    if meta is None or "host" not in meta.columns:
        return None
    hosts = []
    for sid in series_ids:
        host = meta.loc[sid, "host"] if sid in meta.index else None
        hosts.append(str(host) if host is not None and pd.notna(host) and str(host) else sid)
    return hosts


def read_protocol(path: Path, meta_path: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """A protocol dataset's rows (timestamps parsed, ``imputed`` False where the file has no such column)
    and its sidecar indexed by ``series_id`` (``<dataset>.series.csv`` unless ``meta_path``), None without one."""
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
    return frame, meta


def training_length(series_id: str, n: int, meta: pd.DataFrame | None) -> int:
    """The series' ``n_train``: the sidecar's where it has the series, else the protocol's ``floor(0.7 n)``."""
    if meta is not None and series_id in meta.index:
        return int(meta.loc[series_id, "n_train"])
    return math.floor(TRAIN_FRACTION * n)


def load_benchmark(path: Path, meta_path: Path | None = None, univariate: bool = False) -> BenchmarkData:
    """Read a protocol dataset; imputed points become missing values, as the protocol asks.

    With a ``host`` column in the sidecar (and not ``univariate``) the panel is hosts x metric kinds,
    NaN where a host lacks a metric; otherwise one row per series with the single signal ``value``.
    """
    frame, meta = read_protocol(Path(path), meta_path)

    step = 300
    groups = [(sid, d.sort_values("timestamp")) for sid, d in frame.groupby("series_id", sort=True)]
    t0 = min(d["timestamp"].iloc[0] for _, d in groups)
    offsets, lengths, n_train, thresholds, stamps = [], [], [], [], []
    for sid, d in groups:
        n = len(d)
        offsets.append(round((d["timestamp"].iloc[0] - t0).total_seconds() / step))
        lengths.append(n)
        values = d["value"].to_numpy(np.float64)
        nt = training_length(sid, n, meta)
        if meta is not None and sid in meta.index:
            thr = float(meta.loc[sid, "threshold"])
        else:
            thr = float(np.percentile(values[:nt], 99))
        n_train.append(nt)
        thresholds.append(thr)
        stamps.append(d["timestamp"].to_numpy())
    series_ids = [sid for sid, _ in groups]
    hosts = None if univariate else _series_hosts(series_ids, meta)
    if hosts is None:
        instances, signals = series_ids, [SIGNAL]
        cells = np.array([(i, 0) for i in range(len(series_ids))], dtype=np.int64).reshape(-1, 2)
    else:
        names = [_signal_of(sid, host) for sid, host in zip(series_ids, hosts, strict=True)]
        instances, signals = sorted(set(hosts)), sorted(set(names))
        cells = np.array([(instances.index(h), signals.index(m)) for h, m in zip(hosts, names, strict=True)],
                         dtype=np.int64).reshape(-1, 2)
        seen: dict[tuple[int, int], str] = {}
        for sid, cell in zip(series_ids, map(tuple, cells.tolist()), strict=True):
            if cell in seen:
                raise PanelError(f"{path}: series {seen[cell]} and {sid} are both metric {signals[cell[1]]!r} "
                                 f"of host {instances[cell[0]]!r}")
            seen[cell] = sid
    T = max(o + n for o, n in zip(offsets, lengths, strict=True))
    values = np.full((len(instances), len(signals), T), np.nan, dtype=np.float32)
    thr_cells = np.full((len(instances), len(signals)), np.nan, dtype=np.float32)
    # A host's row may only be trained on up to the earliest training end among its series:
    # its windows carry every metric of the host, so nothing of any series' test part may reach them.
    train_end = np.full(len(instances), np.iinfo(np.int64).max, dtype=np.int64)
    for k, (_, d) in enumerate(groups):
        v = d["value"].to_numpy(np.float64).copy()
        v[d["imputed"].to_numpy(bool)] = np.nan
        i, j = cells[k]
        values[i, j, offsets[k]:offsets[k] + len(v)] = v
        thr_cells[i, j] = thresholds[k]
        train_end[i] = min(train_end[i], offsets[k] + n_train[k])
    base = int(pd.Timestamp(t0).timestamp()) // step * step
    panel = Panel(list(instances), list(signals), base + step * np.arange(T, dtype=np.int64),
                  values, step, thresholds=thr_cells)
    return BenchmarkData(panel, series_ids, stamps, np.array(offsets), np.array(lengths),
                         np.array(n_train), np.array(thresholds), cells, train_end)


def origins_for(n: int, n_train: int) -> np.ndarray:
    return np.arange(n_train - 1, n - HORIZON, ORIGIN_EVERY)


def follow_band(data: BenchmarkData, series: np.ndarray, origins: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """The forecasts with each series' band stretched by the factors the service would have at each origin.

    ``series`` [B] indexes ``data.series_ids``, ``origins`` [B] are grid indices. Origins are visited in time
    order; at each, the factors have learned from the outcomes observed up to it and no later
    (forecaster.contract.online_band), then its forecasts are kept to be scored as their targets arrive.
    """
    panel = data.panel
    band = OnlineBand(panel.step_seconds)
    values_at = panel_values_at(panel, {i: (int(c[0]), int(c[1])) for i, c in enumerate(data.cells)})
    times = panel.timestamps[origins].astype(np.float64)
    out = np.empty_like(quantiles)
    order = np.argsort(times, kind="stable")
    bounds = np.flatnonzero(np.diff(times[order])) + 1
    for rows in np.split(order, bounds):
        t = float(times[rows[0]])
        keys = series[rows].tolist()
        band.observe(t, values_at)
        out[rows] = band.adjust(keys, quantiles[rows])
        band.record(keys, t, quantiles[rows])
    return out


@dataclass
class ProtocolOrigins:
    """Every (series, origin) the protocol forecasts, in the order of the forecasts file."""

    cells: np.ndarray  # [N, 2] the panel cell (instance, signal) holding each series
    at: np.ndarray  # [N] grid index of each origin
    owners: list[tuple[int, int]]  # (series index in ``data.series_ids``, origin index in that series)
    thresholds: np.ndarray  # [N]


def protocol_origins(data: BenchmarkData) -> ProtocolOrigins:
    cells, at, owners = [], [], []
    for i in range(len(data.series_ids)):
        for o in origins_for(int(data.lengths[i]), int(data.n_train[i])):
            cells.append(tuple(data.cells[i]))
            at.append(data.offsets[i] + o)
            owners.append((i, int(o)))
    cells_a = np.array(cells, dtype=np.int64).reshape(-1, 2)
    at_a = np.array(at, dtype=np.int64)
    thresholds = data.panel.thresholds[cells_a[:, 0], cells_a[:, 1]] if data.panel.thresholds is not None \
        else np.full(len(at_a), np.nan)
    return ProtocolOrigins(cells_a, at_a, owners, thresholds)


def protocol_rules(spec: ModelSpec) -> WindowRules:
    """Serving's window rules relaxed for the benchmark: every origin must be forecast, so stale ends
    (imputed runs) are forward-filled rather than skipped."""
    return spec.window_rules(min_history=1, max_stale_steps=10**6, min_observed_fraction=0.0)


def run_backtest(data: BenchmarkData, spec: ModelSpec, settings: TrainSettings,
                 validation_steps: int = 576, chunk: int = 2048,
                 online_band: bool = True) -> tuple[pd.DataFrame, dict] | None:
    """Train on the training parts, forecast every origin; returns (forecasts, report).

    None on a rank other than 0 of a distributed run: it trained its share, rank 0 forecasts.

    Windows are cut and forecast ``chunk`` at a time: with a host's metrics as inputs a window of
    SMD's 24 metric kinds holds 24 context rows, and all 11,000 origins at once would take gigabytes.
    ``online_band``: each series' band follows its outcomes as the service's does (:func:`follow_band`).
    """
    started = time.monotonic()
    protocol = protocol_origins(data)
    series_a, origins_a, owners, thresholds_a = protocol.cells, protocol.at, protocol.owners, protocol.thresholds
    rules = protocol_rules(spec)

    def windows(part: slice) -> WindowBatch:
        return build_windows(data.panel, series_a[part], origins_a[part], rules, spec.signal_codes(),
                             thresholds_a[part])

    missing: set[str] = set()
    n_missing = 0
    for start in range(0, len(origins_a), chunk):  # checked before training: minutes of it would be wasted
        part = slice(start, start + chunk)
        batch = windows(part)
        if len(batch) != len(origins_a[part]):
            kept = set(zip(map(tuple, batch.series.tolist()), batch.origins.tolist(), strict=True))
            for b in range(start, min(start + chunk, len(origins_a))):
                if (tuple(series_a[b].tolist()), int(origins_a[b])) not in kept:
                    missing.add(data.series_ids[owners[b][0]])
                    n_missing += 1
    if n_missing:
        raise ValueError(f"{n_missing} origin(s) have no observed value at or before them, so they "
                         f"cannot be forecast (series: {', '.join(sorted(missing))}); every origin needs one")
    series_end = data.train_end  # per panel row: one past the training part of each of its series
    result = train_model(data.panel, spec, settings, validation_steps, series_end=series_end)
    if result is None:
        return None
    model = result.model
    t_inf = time.monotonic()
    parts = [model.predict(windows(slice(start, start + chunk))) for start in range(0, len(origins_a), chunk)]
    quantiles = np.concatenate([f.quantiles for f in parts])
    probability = {label: np.concatenate([f.breach_probability[label] for f in parts])
                   for label in ("2h", "8h")}
    if online_band:
        quantiles = follow_band(data, np.array([i for i, _ in owners], dtype=np.int64), origins_a, quantiles)
    inference_s = time.monotonic() - t_inf

    cut2 = model.breach.cutoffs.get("2h", 0.5)
    cut8 = model.breach.cutoffs.get("8h", 0.5)
    rows = []
    h = np.arange(1, HORIZON + 1)
    for b, (i, o) in enumerate(owners):
        origin_ts = data.timestamps[i][o]
        q = quantiles[b]
        rows.append(pd.DataFrame({
            "series_id": data.series_ids[i], "origin": origin_ts, "h": h,
            "p10": q[:, 0], "p50": q[:, 1], "p90": q[:, 2],
            "warn_2h": bool(probability["2h"][b] >= cut2),
            "warn_8h": bool(probability["8h"][b] >= cut8),
        }))
    forecasts = pd.concat(rows, ignore_index=True)
    report = {
        "fit": "once on each series' training part (global model), frozen for all origins",
        "band": (f"each series' p10-p90 half-widths scaled by factors learned from its outcomes up to each origin "
                 f"(quantile tracking, rate {RATE})" if online_band else "as calibrated on the validation slice"),
        "inputs": ("each series with its host's other metrics (hosts x metric kinds: "
                   f"{len(data.panel.instances)} x {len(data.panel.signals)})" if data.multivariate
                   else "each series on its own (univariate)"),
        "initial_weights": str(settings.initial_weights) if settings.initial_weights else "none (from scratch)",
        # What `auto` chose for this network (trainer/centering.py, trainer/week_choice.py, trainer/cycle_choice.py).
        "center": spec.center, "seasonal_days": spec.seasonal_days,
        "seasonal_bucket_seconds": spec.seasonal_bucket_seconds, "cycle": spec.cycle,
        "level_shift_share": result.level_shift_share, "ramp_share": settings.ramp_share,
        "breach_share": settings.breach_share,
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
