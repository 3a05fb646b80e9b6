"""Training-time augmentation: windows whose level moves for good, or starts to climb, before the origin.

Server metrics on typical fleets mostly spike and come back, so a network trained on them
learns that an excursion reverts. After a deploy that doubles memory use, that prior keeps the
median on the old level for hours (on the NAB benchmark both default networks still forecast
the old level 2 h after a synthetic step from 20 to 80, and followed only after about 4 h).
Moving the level of a share of the training windows, 5 minutes to 16 h before the origin and
through the whole horizon, shows the network that a new level can persist. The shifts reach back
most of a working day because that is how long the prior holds: without them, the median for a
CPU that had jumped from 34 % to 99 % (NAB's ``ec2_cpu_utilization_ac20cd``) was 78 % two hours
after the jump and 57 % eight hours after it (docs/BENCHMARKS.md, "Level shifts as old as a working day").

The same prior flattens a ramp: on simulated memory leaks that had climbed steadily for hours,
the shipped network's median one hour ahead sat *below* the last value (it carried none of the
rise that followed, where ``predict_linear`` over the last hour carried all of it), so the p50-path
alert and the ETA series stayed silent. Ramps injected into a share of the windows, begun 2-8 h
before the origin and going on for 1-8 h past it, show the network that a climb that has lasted
hours tends to go on. docs/TRAINING.md has the measured trade-offs of both.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from forecaster.contract.features import (
    Z_CLIP,
    CycleRule,
    WindowBatch,
    recent_level,
    recent_steps,
    set_cycle_inputs,
    window_center,
    window_scale,
    x_reals,
)

#: ``trainer.level_shift_share: auto``: the share for a network centered on the recent level
#: (:func:`level_shift_share_for`).
AUTO_LEVEL_SHIFT_SHARE = 0.1
MIN_CONTEXT_STEPS = 60  # a shorter window has too little "before" to show a shift against
LATEST_SHIFT_STEPS = 192  # the shift starts at most this many steps before the origin (16 h at 5 min)
KEPT_BEFORE_STEPS = 12  # ... and leaves at least this many steps of the window before it
SHIFT_SIZE = (2.0, 10.0)  # in standard deviations of the window before the shift
RAMP_BEGUN_STEPS = (24, 96)  # a ramp has been climbing 2-8 h at the origin (5-minute steps)
RAMP_GOES_ON_STEPS = (12, 96)  # ... and goes on for 1-8 h past it, then holds its level
RAMP_SIZE = (4.0, 10.0)  # its rise by the origin, in standard deviations of the window


def level_shift_share_for(share: float | str, center: str) -> float:
    """The share of training windows given a level shift: ``share``, or for ``auto``
    :data:`AUTO_LEVEL_SHIFT_SHARE` where the network is centered on the recent level and none elsewhere.

    Why by center: the recent center is chosen for fleets whose excursions mostly revert (a spike is
    gone within the hour, trainer/centering.py), which is where a network learns the strongest
    "everything comes back" prior, and there the shifts made every median better over three seeds
    (NAB). On a network centered on the last value (SMD's machines) they made the median worse
    (docs/BENCHMARKS.md, "Level shifts as old as a working day").
    """
    if share != "auto":
        return float(share)
    return AUTO_LEVEL_SHIFT_SHARE if center == "recent" else 0.0


def inject_level_shifts(batch: WindowBatch, signals: list[str], seasonal_days: int, share: float,
                        rng: np.random.Generator, center: str = "mean", cycle: CycleRule | None = None) -> WindowBatch:
    """A copy of ``batch`` where about ``share`` of the windows have a lasting level shift,
    up or down by 2-10 of the window's standard deviations, starting 5 minutes to 16 h before the
    origin (within the window: an hour of it is left before the shift)."""
    if share <= 0 or len(batch) == 0:
        return batch
    rows = np.flatnonzero((rng.random(len(batch)) < share) & (batch.encoder_lengths >= MIN_CONTEXT_STEPS))
    if len(rows) == 0:
        return batch
    back = np.minimum(rng.integers(1, LATEST_SHIFT_STEPS + 1, size=len(rows)),
                      batch.encoder_lengths[rows] - KEPT_BEFORE_STEPS)
    sizes = rng.choice([-1.0, 1.0], size=len(rows)) * rng.uniform(*SHIFT_SIZE, size=len(rows))
    return shift_levels(batch, signals, seasonal_days, rows, batch.encoder_lengths[rows] - back,
                        sizes * batch.scale[rows], center, cycle)


def inject_ramps(batch: WindowBatch, signals: list[str], seasonal_days: int, share: float,
                 rng: np.random.Generator, center: str = "mean", cycle: CycleRule | None = None) -> WindowBatch:
    """A copy of ``batch`` where about ``share`` of the windows have a linear climb that began 2-8 h
    before the origin, had risen 4-10 of the window's standard deviations by then, and goes on at
    the same rate for 1-8 h of the horizon before it holds. Only climbs: the incidents it is for
    (leaks, filling disks, saturating CPUs) climb towards an upper threshold, and falls injected as
    well made the median overshoot recoveries (docs/TRAINING.md)."""
    if share <= 0 or len(batch) == 0:
        return batch
    lengths = batch.encoder_lengths
    rows = np.flatnonzero((rng.random(len(batch)) < share) & (lengths >= MIN_CONTEXT_STEPS + RAMP_BEGUN_STEPS[1]))
    if len(rows) == 0:
        return batch
    begun = rng.integers(RAMP_BEGUN_STEPS[0], RAMP_BEGUN_STEPS[1] + 1, size=len(rows))
    goes_on = rng.integers(RAMP_GOES_ON_STEPS[0], RAMP_GOES_ON_STEPS[1] + 1, size=len(rows))
    rise = rng.uniform(*RAMP_SIZE, size=len(rows)) * batch.scale[rows]
    slope = rise / begun
    horizon = batch.target.shape[1]
    history_adds = [s * np.maximum(np.arange(L) - (L - b) + 1, 0) for s, b, L in
                    zip(slope, begun, lengths[rows], strict=True)]
    future_adds = slope[:, None] * (begun[:, None] + np.minimum(np.arange(1, horizon + 1)[None, :], goes_on[:, None]))
    return move_history(batch, signals, seasonal_days, rows, history_adds, future_adds, center, cycle)


def shift_levels(batch: WindowBatch, signals: list[str], seasonal_days: int, rows: np.ndarray,
                 starts: np.ndarray, deltas: np.ndarray, center_rule: str = "mean",
                 cycle: CycleRule | None = None) -> WindowBatch:
    """Windows ``rows`` rebuilt as if their signal had moved by ``deltas`` (units) from encoder
    position ``starts`` (left-aligned) on, through the whole horizon."""
    horizon = batch.target.shape[1]
    history_adds = [np.where(np.arange(L) >= start, delta, 0.0) for L, start, delta in
                    zip(batch.encoder_lengths[rows], starts, deltas, strict=True)]
    future_adds = np.repeat(np.asarray(deltas, dtype=np.float64)[:, None], horizon, axis=1)
    return move_history(batch, signals, seasonal_days, rows, history_adds, future_adds, center_rule, cycle)


def move_history(batch: WindowBatch, signals: list[str], seasonal_days: int, rows: np.ndarray,
                 history_adds: list[np.ndarray], future_adds: np.ndarray, center_rule: str = "mean",
                 cycle: CycleRule | None = None) -> WindowBatch:
    """Windows ``rows`` rebuilt as if ``history_adds[i]`` (units, one per encoder step, left-aligned)
    had been added to their signal's history and ``future_adds[i]`` to its horizon.

    The result is what :func:`forecaster.contract.features.build_windows` gives for the moved history:
    the target's own encoder column (and its copy among the host's signals) and the future,
    and every input scaled by the window's mean and standard deviation is rescaled by the new
    ones. The other signals of the host keep their values: a deploy or a leak does not move every metric.
    ``cycle``: the windows have the cycle inputs (a model with ``cycle``), recomputed from the moved history.
    """
    names = x_reals(signals, seasonal_days)
    col = {n: i for i, n in enumerate(names)}
    enc, dec = batch.encoder_cont.copy(), batch.decoder_cont.copy()
    if cycle:  # x_reals puts the cycle and its strength last, after any schedule input
        col["cycle"], col["cycle_strength"] = enc.shape[2] - 2, enc.shape[2] - 1
    target, values = batch.target.copy(), batch.encoder_values.copy()
    center, scale = batch.center.copy(), batch.scale.copy()
    last_value, encoder_max = batch.last_value.copy(), batch.encoder_max.copy()
    E = enc.shape[1]
    for j, add, future in zip(rows.tolist(), history_adds, np.asarray(future_adds, dtype=np.float64), strict=True):
        L = int(batch.encoder_lengths[j])
        # The target column holds the gap-filled history scaled by the window's statistics.
        history = enc[j, :L, col["target"]].astype(np.float64) * scale[j] + center[j]
        history += add
        # Position 0 is the first observed step (windows are left-aligned), so ``observed`` is never empty.
        observed = enc[j, :L, col["observed"]] > 0.5
        new_mean = float(history[observed].mean())
        recent = None
        if center_rule == "recent":  # the augmenters' windows are at 5-minute steps (RAMP_BEGUN_STEPS)
            recent = recent_level(np.where(observed, history, np.nan)[None, :], np.array([L]), recent_steps(300),
                                  history[L - 1:L])
        new_center = float(window_center(np.array([new_mean]), history[L - 1:L], center_rule, recent)[0])
        new_scale = float(window_scale(history[observed].std(), new_mean))
        enc[j, :L, col["target"]] = np.clip((history - new_center) / new_scale, -Z_CLIP, Z_CLIP)
        if len(signals) > 1:  # the host's copy of this signal is scaled over all filled steps
            own = col[f"host_{signals[batch.series[j, 1]]}"]
            host_center = history.mean()
            enc[j, :L, own] = np.clip((history - host_center) / window_scale(history.std(), host_center),
                                      -Z_CLIP, Z_CLIP)
        for name in ("season_mean", "season_max"):
            if name in col:
                for part, n in ((enc, L), (dec, dec.shape[1])):
                    known = part[j, :n, col["season_days"]] > 0
                    units = part[j, :n, col[name]].astype(np.float64) * scale[j] + center[j]
                    part[j, :n, col[name]] = np.where(
                        known, np.clip((units - new_center) / new_scale, -Z_CLIP, Z_CLIP), 0.0)
        if np.isfinite(batch.threshold[j]):
            thr_z = np.clip((batch.threshold[j] - new_center) / new_scale, -10, 10)
            enc[j, :L, col["threshold_z"]] = thr_z
            dec[j, :, col["threshold_z"]] = thr_z
        target[j] += future.astype(np.float32)
        values[j, E - L:] += add
        last_value[j] += add[-1]
        encoder_max[j] = float(history[observed].max())
        center[j], scale[j] = new_center, new_scale
        if cycle:
            moved = np.full((1, E), np.nan)
            moved[0, :L] = history
            set_cycle_inputs(enc[j:j + 1], dec[j:j + 1], col, moved, np.array([L]), center[j:j + 1], scale[j:j + 1],
                             cycle)
            enc[j, L:, [col["cycle"], col["cycle_strength"]]] = 0.0
    return replace(batch, encoder_cont=enc, decoder_cont=dec, target=target, encoder_values=values,
                   center=center, scale=scale, last_value=last_value, encoder_max=encoder_max)

