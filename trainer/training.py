"""Fit the TFT with Lightning on sampled windows, then calibrate it on a validation slice.

A full pass over a fleet's history is hundreds of thousands of windows at ~9 ms of CPU each,
so an "epoch" here is a fixed number of randomly sampled batches, and the run stops on early
stopping, ``max_epochs`` or a wall-clock budget, whichever comes first. The best weights (by
validation loss) are kept as a safetensors checkpoint, never as a pickle.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from forecaster.contract.calibration import (
    BREACH_HORIZONS,
    armed_windows,
    breach_features,
    fit_anchor,
    fit_band,
    fit_breach_model,
    present_level,
    pull_to_present,
    reliability_table,
)
from forecaster.contract.features import (
    CycleRule,
    WindowBatch,
    WindowRules,
    breach_within,
    build_windows,
    steps_per_day,
)
from forecaster.contract.model import ForecastModel, ModelSpec, build_network, to_network_input
from forecaster.contract.panel import Panel
from forecaster.contract.schedules import ScheduleSet
from trainer.augment import inject_level_shifts, inject_ramps, level_shift_share_for
from trainer.launch import default_precision

log = logging.getLogger(__name__)


@dataclass
class TrainSettings:
    batch_size: int = 64
    batches_per_epoch: int = 100
    max_epochs: int = 20
    learning_rate: float = 3e-3
    early_stopping_patience: int = 4
    time_budget_seconds: float = 3600.0
    gradient_accumulation: int = 1
    seed: int = 42
    # trainer.augment: share of training windows given a lasting shift; ``auto``: by the network's center
    # (trainer.augment.level_shift_share_for)
    level_shift_share: float | str = "auto"
    ramp_share: float = 0.0  # trainer.augment: share of training windows given a ramp that goes on
    breach_share: float = 0.1  # WindowSampler: share of each batch drawn from the pre-breach windows
    validation_windows: int = 2048
    breach_windows: int = 6000
    accelerator: str = "auto"
    devices: str | int = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str | None = None
    progress: bool = False
    work_dir: Path | None = None
    initial_weights: Path | None = None
    # forecaster.contract.fasttrain: the same network and loss through a forward and backward pass
    # about twice as fast per core (exact algebra, gradients to the library's own parameters; the
    # library's forward where the structure is not covered). False: the library's forward.
    fast_path: bool = True
    # The config's declared windows: the ``scheduled`` input of a model whose spec has ``schedules``.
    schedules: ScheduleSet | None = None


@dataclass
class Split:
    """Per-series time indices: train targets end before ``val_start``; validation origins after."""

    series: np.ndarray  # [S, 2]
    first: np.ndarray  # [S] first observed index
    val_start: np.ndarray  # [S]
    end: np.ndarray  # [S] last index usable (exclusive end of the data used here)


def make_split(panel: Panel, validation_steps: int, end: np.ndarray | None = None,
               min_train_fraction: float = 0.6) -> Split:
    """Hold out the last ``validation_steps`` of every series (at most 40 % of its length)."""
    obs = np.isfinite(panel.values)
    series, firsts, vstarts, ends = [], [], [], []
    for i in range(len(panel.instances)):
        for j in range(len(panel.signals)):
            row = obs[i, j]
            if not row.any():
                continue
            first = int(row.argmax())
            last = int(len(row) - 1 - row[::-1].argmax()) + 1
            if end is not None:
                last = min(last, int(end[i]))
            n = last - first
            if n <= 0:
                continue
            v = min(validation_steps, int(n * (1 - min_train_fraction)))
            series.append((i, j))
            firsts.append(first)
            vstarts.append(last - v)
            ends.append(last)
    return Split(np.array(series, dtype=np.int64).reshape(-1, 2), np.array(firsts), np.array(vstarts),
                 np.array(ends))


def series_thresholds(panel: Panel, series: np.ndarray, default: dict[str, float] | None = None) -> np.ndarray:
    """Threshold per series: the panel's own (benchmark sidecars) or the signal's from config."""
    if panel.thresholds is not None:
        return panel.thresholds[series[:, 0], series[:, 1]].astype(np.float64)
    default = default or {}
    return np.array([default.get(panel.signals[j], np.nan) for j in series[:, 1]], dtype=np.float64)


class WindowSampler:
    """Draws random training windows whose whole horizon lies in the training part.

    With ``breach_share`` > 0, about that share of every batch is drawn from the *pre-breach*
    windows instead: those whose signal is below its threshold at the origin and reaches it within
    the horizon. Uniform draws give them their natural share (under 2 % on a simulated fleet with a
    leak or a filling disk every few days per host), too few for the network to learn that a climb
    towards a threshold goes on: its median flattened on leaks that had climbed for hours, and the
    p50-path alert stayed silent. Measured in docs/TRAINING.md, "Pre-breach windows".
    """

    def __init__(self, panel: Panel, split: Split, rules: WindowRules, codes: dict[str, int],
                 thresholds: np.ndarray, seed: int, breach_share: float = 0.1) -> None:
        self.panel, self.split, self.rules, self.codes = panel, split, rules, codes
        self.thresholds = thresholds
        self.rng = np.random.default_rng(seed)
        lo = split.first + rules.min_history - 1
        hi = split.val_start - rules.horizon  # last origin whose targets end before validation
        self.lo = lo
        self.count = np.maximum(hi - lo, 0)
        self.weights = self.count / max(self.count.sum(), 1)
        self.skipped: Counter[str] = Counter()
        if self.count.sum() == 0:
            raise ValueError("no training windows: history too short for context + horizon "
                             f"(need at least {rules.min_history + rules.horizon} steps per series "
                             "before the validation slice)")
        self.breach_share = breach_share
        self.breach_series, self.breach_origins = (pre_breach_origins(panel, split, thresholds, lo, self.count,
                                                                      rules.horizon)
                                                   if breach_share > 0 else (np.zeros(0, np.int64),) * 2)

    def sample(self, n: int, rng: np.random.Generator | None = None) -> WindowBatch:
        """``n`` windows (fewer only if gaps reject 20 rounds of draws), drawn with ``rng`` or the sampler's own;
        about ``breach_share`` of them pre-breach windows."""
        rng = rng or self.rng
        k = int(rng.binomial(n, self.breach_share)) if len(self.breach_series) else 0
        uniform = self._uniform(n - k, rng)
        if k == 0:
            return uniform
        pick = rng.integers(0, len(self.breach_series), size=k)
        s = self.breach_series[pick]
        breach = build_windows(self.panel, self.split.series[s], self.breach_origins[pick], self.rules, self.codes,
                               self.thresholds[s], self.skipped)
        return WindowBatch.concat([uniform, breach])

    def _uniform(self, n: int, rng: np.random.Generator) -> WindowBatch:
        parts: list[WindowBatch] = []
        have = 0
        for _ in range(20):  # bounded: gaps may reject some draws
            k = max(n - have, 8) * 2
            s = rng.choice(len(self.count), size=k, p=self.weights)
            o = self.lo[s] + (rng.random(k) * self.count[s]).astype(np.int64)
            batch = build_windows(self.panel, self.split.series[s], o, self.rules, self.codes,
                                  self.thresholds[s], self.skipped)
            observed = np.isfinite(batch.target).mean(axis=1) >= 0.5
            batch = batch.take(np.flatnonzero(observed))
            parts.append(batch)
            have += len(batch)
            if have >= n:
                break
        merged = WindowBatch.concat(parts)
        return merged.take(slice(0, n))


def pre_breach_origins(panel: Panel, split: Split, thresholds: np.ndarray, lo: np.ndarray, count: np.ndarray,
                       horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """(series, origin) of every training origin whose value is below the series' threshold and whose
    next ``horizon`` steps reach it; series without a threshold have none."""
    from numpy.lib.stride_tricks import sliding_window_view

    found_s, found_o = [], []
    for s, (i, j) in enumerate(split.series):
        if not np.isfinite(thresholds[s]) or count[s] <= 0:
            continue
        v = np.nan_to_num(panel.values[i, j].astype(np.float64), nan=-np.inf)
        ahead = sliding_window_view(v[1:], horizon).max(axis=1)  # ahead[o]: the max of steps o+1 .. o+horizon
        o = np.arange(lo[s], lo[s] + count[s])
        hit = o[(ahead[o] >= thresholds[s]) & (v[o] < thresholds[s])]
        found_s.append(np.full(len(hit), s, dtype=np.int64))
        found_o.append(hit.astype(np.int64))
    if not found_s:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(found_s), np.concatenate(found_o)


class SampledBatches:
    """This rank's batches of one epoch: its share of ``batches`` draws, each seeded by (seed, epoch, draw).

    Seeding each draw by its index, rather than one random stream per process, gives every rank
    other windows and every epoch new ones, and makes an epoch's windows the same whatever the
    number of ranks: rank r of N takes draws r, r + N, r + 2N, ..., so N ranks together draw what
    one process draws alone (``batches_per_epoch`` counts batches over all ranks). Every rank gets
    the same number of batches, ceil(batches / N): DDP steps the ranks in lockstep, and a rank that
    ran out first would leave the others waiting forever. ``len()`` is that number, which gives
    Lightning's progress bar its total and its ETA.

    A plain iterable, not a torch ``DataLoader``: Lightning takes any iterable with a length, and
    leaves it alone under DDP (it would otherwise try to fit a ``DistributedSampler`` to it).
    """

    def __init__(self, sampler: WindowSampler, batches: int, batch_size: int, seed: int, signals: list[str],
                 seasonal_days: int = 0, level_shift_share: float = 0.0, ramp_share: float = 0.0,
                 rank_and_world: tuple[int, int] | None = None, center: str = "mean",
                 cycle: CycleRule | None = None) -> None:
        self.sampler, self.batches, self.batch_size = sampler, batches, batch_size
        self.seed = seed % 2**64  # SeedSequence takes no negative numbers; --seed may be one
        self.signals, self.seasonal_days, self.level_shift_share = signals, seasonal_days, level_shift_share
        self.ramp_share = ramp_share
        self._rank_and_world = rank_and_world  # None: the process group's, read at each use
        self.center = center
        self.cycle = cycle  # the windows have the cycle inputs (trainer.augment)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def rank_and_world(self) -> tuple[int, int]:
        if self._rank_and_world is not None:
            return self._rank_and_world
        from trainer.launch import rank_and_world

        return rank_and_world()

    def draws(self) -> range:
        """This rank's draw indices in the epoch."""
        rank, world = self.rank_and_world()
        return range(rank, math.ceil(self.batches / world) * world, world)

    def __len__(self) -> int:
        return len(self.draws())

    def __iter__(self) -> Iterator[tuple[dict, Any]]:
        draws = self.draws()
        for index in draws:
            # Spawned children depend only on their index: adding the third left the first two's draws as they were.
            windows, shifts, ramps = np.random.SeedSequence([self.seed, self.epoch, index]).spawn(3)
            batch = self.sampler.sample(self.batch_size, np.random.default_rng(windows))
            batch = inject_level_shifts(batch, self.signals, self.seasonal_days, self.level_shift_share,
                                        np.random.default_rng(shifts), self.center, self.cycle)
            batch = inject_ramps(batch, self.signals, self.seasonal_days, self.ramp_share,
                                 np.random.default_rng(ramps), self.center, self.cycle)
            if index == draws.start and log.isEnabledFor(logging.DEBUG):
                rank, world = self.rank_and_world()
                log.debug("rank %d of %d, epoch %d: %d batches, draws %s seeded (%d, %d, draw); first batch %s",
                          rank, world, self.epoch, len(draws), _span(draws), self.seed, self.epoch,
                          batch_fingerprint(batch))
            yield _to_torch_batch(batch)


def batch_fingerprint(batch: WindowBatch) -> str:
    """A short digest of which windows a batch holds (series and origins), to compare ranks in the logs."""
    digest = hashlib.sha256(np.ascontiguousarray(batch.series, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(batch.origins, dtype=np.int64).tobytes())
    return digest.hexdigest()[:12]


def _span(r: range) -> str:
    shown = ", ".join(str(i) for i in r[:3])
    return f"{shown}, ..., {r[-1]}" if len(r) > 4 else ", ".join(str(i) for i in r)


def validation_windows(panel: Panel, split: Split, rules: WindowRules, codes: dict[str, int],
                       thresholds: np.ndarray, every: int = 12, limit: int = 4096,
                       seed: int = 0) -> WindowBatch:
    """Hourly origins inside each series' validation slice (capped at ``limit`` windows)."""
    series, origins, thr = [], [], []
    for s in range(len(split.series)):
        start = split.val_start[s] - 1
        stop = split.end[s] - rules.horizon
        for o in range(int(start), int(stop), every):
            series.append(split.series[s])
            origins.append(o)
            thr.append(thresholds[s])
    if not origins:
        raise ValueError("no validation windows: the validation slice is shorter than the horizon")
    series_a, origins_a, thr_a = np.array(series), np.array(origins), np.array(thr)
    if len(origins_a) > limit:
        pick = np.sort(np.random.default_rng(seed).choice(len(origins_a), limit, replace=False))
        series_a, origins_a, thr_a = series_a[pick], origins_a[pick], thr_a[pick]
    return build_windows(panel, series_a, origins_a, rules, codes, thr_a)


@dataclass
class Slices:
    """How one training run cuts a panel; :func:`train_model` and :func:`recalibrate` share it."""

    rules: WindowRules
    split: Split
    thresholds: np.ndarray  # [S] per series of the split, units
    val: WindowBatch  # hourly windows of the validation slice


def cut_slices(panel: Panel, spec: ModelSpec, settings: TrainSettings, validation_steps: int,
               thresholds_by_signal: dict[str, float] | None = None,
               series_end: np.ndarray | None = None) -> Slices:
    rules = spec.window_rules(schedules=settings.schedules)
    split = make_split(panel, validation_steps, end=series_end)
    thresholds = series_thresholds(panel, split.series, thresholds_by_signal)
    val = validation_windows(panel, split, rules, spec.signal_codes(), thresholds,
                             limit=settings.validation_windows, seed=settings.seed)
    return Slices(rules, split, thresholds, val)


def breach_fit_windows(panel: Panel, split: Split, rules: WindowRules, codes: dict[str, int],
                       thresholds: np.ndarray, limit: int, seed: int, every: int = 12) -> WindowBatch:
    """Hourly origins whose horizon ends inside the training part (capped at ``limit``)."""
    series, origins = [], []
    for s in range(len(split.series)):
        lo = int(split.first[s] + rules.min_history - 1)
        hi = int(split.val_start[s] - rules.horizon)
        for o in range(lo, hi, every):
            series.append(s)
            origins.append(o)
    if not origins or limit <= 0:
        return validation_windows_empty(panel, rules, codes)
    idx, origins_a = np.array(series), np.array(origins)
    if len(origins_a) > limit:
        pick = np.sort(np.random.default_rng(seed + 1).choice(len(origins_a), limit, replace=False))
        idx, origins_a = idx[pick], origins_a[pick]
    return build_windows(panel, split.series[idx], origins_a, rules, codes, thresholds[idx])


def validation_windows_empty(panel: Panel, rules: WindowRules, codes: dict[str, int]) -> WindowBatch:
    return build_windows(panel, np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64), rules, codes)


def pinball(pred_z: Any, target_z: Any, quantiles: list[float]) -> Any:
    """Mean pinball loss over quantiles and observed targets (torch tensors, scaled units)."""
    import torch

    mask = torch.isfinite(target_z)
    # Beyond ten standard deviations of its own window a step is an unforeseeable level shift;
    # clamping keeps such outliers from dominating the gradient.
    y = torch.nan_to_num(target_z).clamp(-10, 10)
    losses = []
    for i, q in enumerate(quantiles):
        err = y - pred_z[..., i]
        losses.append(torch.maximum(q * err, (q - 1) * err))
    per = torch.stack(losses, dim=-1).mean(-1)
    return (per * mask).sum() / mask.sum().clamp(min=1)


def _adam(params: list[Any], lr: float, precision: str) -> Any:
    """Adam as one fused kernel over all parameters where that is allowed, else one batched loop.

    The same update as the default per-parameter loop, which cost 12-20 ms a step on one core at
    the default size (356 parameter tensors), 2-4 % of a fast-path step; fused 2-3 ms, batched
    (``foreach``) 7-8 ms. Not fused under mixed precision: Lightning refuses to clip the gradients
    of an optimizer that unscales them itself, which the fused ones do.
    """
    import torch

    if "mixed" not in precision:
        try:
            return torch.optim.Adam(params, lr=lr, fused=True)
        except (RuntimeError, TypeError, ValueError):  # an older torch, or a device without the kernel
            pass
    return torch.optim.Adam(params, lr=lr, foreach=True)


def _lightning_module(network: Any, settings: TrainSettings, quantiles: list[float]) -> Any:
    import lightning.pytorch as pl
    import torch

    from forecaster.contract.fasttrain import supports_training, train_forward

    class TFTTrainingModule(pl.LightningModule):
        """Wraps the TFT: loss on per-window scaled targets, Adam with plateau decay.

        (An exponential moving average of the weights was tried for validation and checkpoints:
        on the NAB benchmark its validation loss was worse at every epoch, so it is not used.)
        """

        def __init__(self) -> None:
            super().__init__()
            self.network = network
            self.fast = settings.fast_path and supports_training(network)
            log.info("training forward: %s", "fast path (forecaster/contract/fasttrain.py)" if self.fast
                     else "the library's" + (" (fast path switched off)" if not settings.fast_path else
                                              " (structure not covered by the fast path)"))

        def _step(self, batch: tuple[dict, Any]) -> Any:
            x, y = batch
            pred = train_forward(self.network, x) if self.fast else self.network(x)["prediction"]
            return pinball(pred, y, quantiles)

        def training_step(self, batch: tuple[dict, Any], batch_idx: int) -> Any:
            loss = self._step(batch)
            self.log("train_loss", loss, prog_bar=True, batch_size=len(batch[1]))
            return loss

        def validation_step(self, batch: tuple[dict, Any], batch_idx: int) -> None:
            loss = self._step(batch)
            # Averaged over ranks (each validates its shard): early stopping, the learning-rate
            # schedule and the best checkpoint must decide on one number, or the ranks part ways.
            self.log("val_loss", loss, prog_bar=True, batch_size=len(batch[1]), sync_dist=True)

        def configure_optimizers(self) -> Any:
            opt = _adam(list(self.network.parameters()), settings.learning_rate, str(self.trainer.precision))
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=1)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_loss"}}

    return TFTTrainingModule()


def _to_torch_batch(batch: WindowBatch) -> tuple[dict, Any]:
    import torch

    return to_network_input(batch), torch.as_tensor(batch.scaled_target())


@dataclass
class TrainResult:
    model: ForecastModel
    epochs: int
    samples_seen: int  # windows trained on, over all ranks
    seconds: float
    best_val_loss: float
    stopped_because: str
    validation: dict[str, Any] = field(default_factory=dict)
    level_shift_share: float = 0.0  # as trained (``auto`` resolved)


def train_model(panel: Panel, spec: ModelSpec, settings: TrainSettings, validation_steps: int,
                thresholds_by_signal: dict[str, float] | None = None,
                series_end: np.ndarray | None = None) -> TrainResult | None:
    """Train, keep the best weights, calibrate band and breach model on the validation slice.

    Under a distributed strategy every rank calls this and trains; only global rank 0 keeps a
    checkpoint, calibrates and returns the result. The other ranks return None once the fit is
    over: their copy of the network is rank 0's (DDP keeps them equal), so there is nothing else
    for them to do.
    """
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import Callback, EarlyStopping, LearningRateMonitor
    from lightning.pytorch.loggers import CSVLogger
    from safetensors.torch import load_model, save_model

    started = time.monotonic()
    if not log.isEnabledFor(logging.DEBUG):
        # Lightning installs its own INFO handler at import (tips, device summaries).
        for name in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
            logging.getLogger(name).setLevel(logging.WARNING)
    pl.seed_everything(settings.seed, workers=True, verbose=False)
    slices = cut_slices(panel, spec, settings, validation_steps, thresholds_by_signal, series_end)
    val = slices.val
    sampler = WindowSampler(panel, slices.split, slices.rules, spec.signal_codes(), slices.thresholds,
                            settings.seed, settings.breach_share)
    shift_share = level_shift_share_for(settings.level_shift_share, spec.center)
    log.info("training on %d series; %d candidate windows (%d pre-breach, drawn as %.0f %% of each batch; "
             "%.0f %% given a level shift); %d validation windows", len(slices.split.series), int(sampler.count.sum()),
             len(sampler.breach_series), 100 * settings.breach_share, 100 * shift_share, len(val))

    network = build_network(spec)
    if settings.initial_weights is not None:
        load_model(network, str(settings.initial_weights), strict=True)
        log.info("starting from weights %s", settings.initial_weights)
    module = _lightning_module(network, settings, spec.quantiles)
    cycle = CycleRule(steps_per_day(spec.step_seconds), spec.cycle_gate) if spec.reads_cycle else None
    batches = SampledBatches(sampler, settings.batches_per_epoch * settings.gradient_accumulation, settings.batch_size,
                             settings.seed, panel.signals, spec.seasonal_days, shift_share,
                             settings.ramp_share, center=spec.center, cycle=cycle)

    val_batches = [_to_torch_batch(val.take(slice(i, i + 256)))
                   for i in range(0, len(val), 256)]
    work = Path(settings.work_dir) if settings.work_dir else Path("runs") / "train"

    class KeepBest(Callback):
        """Checkpoint the best weights as safetensors (no pickle), count the windows, log each epoch.

        Only global rank 0 writes the checkpoint (the weights are the same on every rank, and one
        file must have one writer); every rank keeps the same best loss, since val_loss is synced.
        """

        def __init__(self) -> None:
            self.best = math.inf
            self.epochs = 0
            self.samples = 0  # windows this rank trained on
            self.path: Path | None = None

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            batches.set_epoch(trainer.current_epoch)  # new windows each epoch, the same on a rerun

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            self.samples += len(batch[1])

        def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            if trainer.sanity_checking:
                return
            loss = float(trainer.callback_metrics.get("val_loss", math.inf))
            self.epochs = trainer.current_epoch + 1
            if loss < self.best:
                self.best = loss
                if trainer.is_global_zero:
                    if self.path is None:
                        # One file per run: two runs sharing a work directory (two backtests, a backtest
                        # beside a training) once loaded each other's checkpoint, and a stale one from an
                        # earlier run could be loaded by a run that never reached a finite validation loss.
                        work.mkdir(parents=True, exist_ok=True)
                        fd, name = tempfile.mkstemp(prefix="best-", suffix=".safetensors", dir=work)
                        os.close(fd)
                        self.path = Path(name)
                    save_model(network, str(self.path))
            if trainer.is_global_zero:
                log.info("epoch %d: val_loss %.4f (best %.4f), %.0fs elapsed", self.epochs, loss, self.best,
                         time.monotonic() - started)

    keep = KeepBest()
    precision = settings.precision or default_precision(settings.accelerator)
    early = EarlyStopping(monitor="val_loss", patience=settings.early_stopping_patience, mode="min")
    budget = max(settings.time_budget_seconds - (time.monotonic() - started), 1.0)
    trainer = pl.Trainer(
        max_epochs=settings.max_epochs,
        max_time=timedelta(seconds=budget),
        accelerator=settings.accelerator,
        devices=settings.devices,
        strategy=settings.strategy,
        num_nodes=settings.num_nodes,
        precision=precision,
        accumulate_grad_batches=settings.gradient_accumulation,
        gradient_clip_val=0.5,
        callbacks=[keep, early, LearningRateMonitor(logging_interval="epoch")],
        logger=CSVLogger(str(work), name="logs"),
        enable_checkpointing=False,
        enable_progress_bar=settings.progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=False,
    )
    try:
        trainer.fit(module, train_dataloaders=batches,
                    val_dataloaders=torch.utils.data.DataLoader(val_batches, batch_size=None))
        if not trainer.is_global_zero:
            log.debug("rank %d of %d: fit done after %d epochs, %d windows; rank 0 keeps the model",
                      trainer.global_rank, trainer.world_size, keep.epochs, keep.samples)
            return None
        if early.stopped_epoch:
            why = "early_stopping"
        elif time.monotonic() - started >= settings.time_budget_seconds * 0.98:
            why = "time_budget"
        else:
            why = "max_epochs"
        if keep.path is not None:
            load_model(network, str(keep.path))
    finally:
        # However the fit ends: an error, or a SIGTERM the CLI turns into an exception
        # (trainer.cron.stop_on_signals). Stopped runs once left their checkpoint in the work directory.
        if keep.path is not None:
            keep.path.unlink(missing_ok=True)
    network.eval()
    network.cpu()

    model = ForecastModel(spec, network)
    validation = calibrate(model, panel, slices, settings)
    seconds = time.monotonic() - started
    # Counted, not computed from the settings: a run stopped by its time budget ends mid-epoch, and
    # every rank trains as many batches of the same size as rank 0 did.
    samples = keep.samples * trainer.world_size
    log.info("trained %d epochs (%s), %d samples in %.0fs; validation coverage %.3f -> %.3f",
             keep.epochs, why, samples, seconds, model.band.coverage_before or float("nan"),
             model.band.coverage_after or float("nan"))
    return TrainResult(model, keep.epochs, samples, seconds, keep.best, why, validation, shift_share)


def recalibrate(model: ForecastModel, panel: Panel, validation_steps: int, settings: TrainSettings,
                thresholds_by_signal: dict[str, float] | None = None,
                series_end: np.ndarray | None = None) -> dict[str, Any]:
    """Refit a trained network's band and breach model on this history; the weights stay.

    Cheap (inference only), so a calibration change or a drifted fleet does not need a retrain.
    The slices are cut exactly as :func:`train_model` cuts them.
    """
    slices = cut_slices(panel, model.spec, settings, validation_steps, thresholds_by_signal, series_end)
    return calibrate(model, panel, slices, settings)


def calibrate(model: ForecastModel, panel: Panel, slices: Slices, settings: TrainSettings) -> dict[str, Any]:
    """Fit the band on the validation slice and the breach model; returns the validation report."""
    val = slices.val
    raw = model.raw_quantiles(val)
    y = val.target.astype(np.float64)
    present = present_level(val, model.spec.center)
    anchor = fit_anchor(raw, y, present, val.scale)
    model.band = fit_band(pull_to_present(raw, present, anchor), y)
    model.band.anchor = anchor
    log.info("median pulled towards the %s by factors %s at 5 min, 30 min, 1 h, 2 h, 8 h (1: no pull)",
             "last hour's median" if model.spec.center == "recent" else "last value",
             " / ".join(f"{anchor[min(h, len(anchor)) - 1]:.2f}" for h in (1, 6, 12, 24, 96)))
    calibrated = model.band.apply(raw, present)
    # Breaches are rare (a threshold is a level seldom passed), so the validation slice alone
    # holds few of them: the breach model also learns from hourly windows of the training part.
    extra = breach_fit_windows(panel, slices.split, slices.rules, model.spec.signal_codes(), slices.thresholds,
                               limit=settings.breach_windows, seed=settings.seed)
    if len(extra):
        fit_set = WindowBatch.concat([val, extra])
        extra_q = model.band.apply(model.raw_quantiles(extra), present_level(extra, model.spec.center))
        fit_q = np.concatenate([calibrated, extra_q])
    else:
        fit_set, fit_q = val, calibrated
    model.breach = fit_breach_model(fit_q, fit_set, steps_per_day(model.spec.step_seconds))
    return validation_report(model, val, calibrated)


def validation_report(model: ForecastModel, val: WindowBatch, q: np.ndarray) -> dict[str, Any]:
    """Calibration evidence stored with the model: coverage and breach reliability per horizon."""
    y = val.target.astype(np.float64)
    day_steps = steps_per_day(model.spec.step_seconds)
    report: dict[str, Any] = {"windows": len(val), "coverage_p10_p90": model.band.coverage_after,
                              "coverage_before_calibration": model.band.coverage_before, "breach": {}}
    for label, H in BREACH_HORIZONS.items():
        if q.shape[1] < H:
            continue
        known = armed_windows(val, H)
        if not known.any():
            continue
        feats = breach_features(q[known], val.take(known), H, day_steps)
        prob = model.breach.probability(label, feats)
        outcome = breach_within(y[known], val.threshold[known], H).astype(np.float64)
        report["breach"][label] = {"reliability": reliability_table(prob, outcome),
                                   **model.breach.fit_stats.get(label, {})}
    return report
