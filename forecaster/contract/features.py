"""Windows of a panel become TFT inputs: the feature layout shared by training and serving.

Each window is one (instance, signal) series cut at an origin (index of the last observed
step). The encoder holds up to ``context`` steps, left-aligned as pytorch-forecasting expects
for variable encoder lengths; the decoder holds ``horizon`` steps of known-future calendar
features. Every series is scaled by its own encoder mean and standard deviation *before* the
loss, so a byte-count series and a CPU ratio weigh the same in training.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np

from forecaster.contract.panel import Panel
from forecaster.contract.schedules import ScheduleSet
from forecaster.contract.seasonal import Buckets, cached_buckets, same_time_earlier

DAY = 86400.0
WEEK = 7 * DAY
KNOWN_REALS: tuple[str, ...] = ("tod_sin", "tod_cos", "dow_sin", "dow_cos", "rel_time")
SEASONAL_REALS: tuple[str, ...] = ("season_mean", "season_max", "season_days")
#: 1 inside a declared window (config ``schedules:``) for the series' host and signal, else 0: known ahead.
SCHEDULE_REALS: tuple[str, ...] = ("scheduled",)
STATIC_REALS: tuple[str, ...] = ("threshold_z",)
#: The window's own short cycle (:func:`cycle_inputs`), with ``model.cycle``: its profile, known for every
#: step ahead, and how strongly the window repeats with it (static).
CYCLE_REALS: tuple[str, ...] = ("cycle",)
CYCLE_STATIC_REALS: tuple[str, ...] = ("cycle_strength",)
#: A window whose best cycle repeats less than 10 % better than it persists (strength at or above this) is
#: given no cycle: its profile input is its center. Without the gate a noisy or wandering window got a
#: spurious profile near its median (measured in docs/BENCHMARKS.md, "Short cycles": SMD, which has
#: almost no short cycles, lost 0.07 of MASE_med to it and got 0.03 of it back with the gate).
CYCLE_GATE = 0.9
Z_CLIP = 50.0


def unknown_reals(signals: list[str]) -> list[str]:
    """Encoder-only inputs: the target, its observed mask, and every signal of the same host."""
    names = ["target", "observed"]
    if len(signals) > 1:
        names += [f"host_{s}" for s in signals]
    return names


def steps_per_day(step_seconds: int) -> int:
    return max(1, round(DAY / step_seconds))


def known_reals(seasonal_days: int = 0, schedules: bool = False, cycle: bool = False) -> list[str]:
    """Inputs known for every step, past and future: calendar, with ``seasonal_days`` the
    same time of day on the previous days (their mean and max, and how many days were there), with
    ``schedules`` whether a declared window covers the step, and with ``cycle`` the window's cycle
    profile. The optional inputs come last, so every other column keeps its index whether a model has
    them or not."""
    return [*KNOWN_REALS, *(SEASONAL_REALS if seasonal_days > 0 else ()), *(SCHEDULE_REALS if schedules else ()),
            *(CYCLE_REALS if cycle else ())]


def x_reals(signals: list[str], seasonal_days: int = 0, schedules: bool = False, cycle: bool = False) -> list[str]:
    """Every real input column of a window, in order (the cycle's strength last, so again no other moves)."""
    return [*STATIC_REALS, *unknown_reals(signals), *known_reals(seasonal_days, schedules, cycle),
            *(CYCLE_STATIC_REALS if cycle else ())]


def static_reals(cycle: bool = False) -> list[str]:
    return [*STATIC_REALS, *(CYCLE_STATIC_REALS if cycle else ())]


def encoder_variables(signals: list[str], seasonal_days: int = 0, schedules: bool = False,
                      cycle: bool = False) -> list[str]:
    """The encoder's time-varying inputs in the network's order (its variable selection weights follow it)."""
    return [*unknown_reals(signals), *known_reals(seasonal_days, schedules, cycle)]


#: Driver groups of a forecast besides one per other signal of the host (see :func:`driver_of`).
OWN_DRIVER, CALENDAR_DRIVER, SEASONAL_DRIVER, OTHER_DRIVER = "own", "calendar", "seasonal", "other"
SCHEDULE_DRIVER = "schedule"


#: How the non-signal drivers read in a sentence ("because" in the JSON API); a signal reads as its name.
#: monitoring/alerts.py writes the same words into the alert templates (tests/test_forecast_drivers.py checks).
DRIVER_WORDS: dict[str, str] = {OWN_DRIVER: "own history", CALENDAR_DRIVER: "time of day and week",
                                SEASONAL_DRIVER: "same time on earlier days", SCHEDULE_DRIVER: "declared schedules",
                                OTHER_DRIVER: "other inputs"}


def driver_names(signals: list[str], variables: list[str]) -> list[str]:
    """Every driver the forecasts of a model with these encoder ``variables`` can name, in a fixed
    order (own, the host's signals, calendar, seasonal, other): bounded by the number of signals,
    never by hosts or steps."""
    found = {driver_of(v, own) for v in variables for own in signals}
    order = [OWN_DRIVER, *signals, CALENDAR_DRIVER, SEASONAL_DRIVER, SCHEDULE_DRIVER, OTHER_DRIVER]
    return [d for d in order if d in found]


def driver_of(variable: str, own_signal: str) -> str:
    """The driver group of one encoder input in a forecast of ``own_signal``.

    Why groups and not variables: an operator asks "is this the signal's own trend, another
    signal of the host, or the time of day?", not which of ``tod_sin``/``tod_cos`` weighed
    more; and a fixed set of groups keeps the exported series bounded. ``host_<own signal>``
    is the forecast signal's own history again (scaled over the window as the other host
    signals are), so it counts as ``own``.
    """
    if variable in ("target", "observed", *CYCLE_REALS) or variable == f"host_{own_signal}":
        return OWN_DRIVER
    if variable.startswith("host_"):
        return variable[len("host_"):]
    if variable in KNOWN_REALS:
        return CALENDAR_DRIVER
    if variable in SEASONAL_REALS:
        return SEASONAL_DRIVER
    if variable in SCHEDULE_REALS:
        return SCHEDULE_DRIVER
    return OTHER_DRIVER


def driver_matrix(variables: list[str], signals: list[str], drivers: list[str]) -> np.ndarray:
    """float32 [S, V, G]: row ``s`` sums the V encoder variable weights of a forecast of
    ``signals[s]`` into the G ``drivers`` (one 1 per variable), so grouped weights still sum to 1.

    A variable whose driver is missing from ``drivers`` raises (:func:`driver_names` lists them
    all), so no weight is ever silently dropped.
    """
    out = np.zeros((len(signals), len(variables), len(drivers)), dtype=np.float32)
    col = {d: g for g, d in enumerate(drivers)}
    for s, own in enumerate(signals):
        for v, name in enumerate(variables):
            out[s, v, col[driver_of(name, own)]] = 1.0
    return out


#: The spans (hours before the latest input) over which :func:`driver_trend_hours` judges a driver's course.
TREND_SPANS_HOURS: tuple[int, ...] = (1, 3, 6, 12)
#: A "level" is the mean of the observations of this many seconds (at least one step), so no single noisy
#: point decides a trend.
TREND_LEVEL_SECONDS = 1800
#: A move counts only when larger than this many standard errors of a level difference (from step-to-step noise).
TREND_NOISE_SE = 4.0


def driver_trend_hours(values: np.ndarray, step_seconds: int) -> np.ndarray:
    """How a driving signal has moved over its recent history: float64 [R], hours, signed.

    ``values`` float [R, W] are each row's observations in the forecast's window, right-aligned (column
    -1 = the origin), NaN where nothing was observed or before the window starts. The rule, in the
    signal's own units relative to the window's standard deviation ``sd`` (so it is scale-free):

    - the level at a time is the mean of the observations of the :data:`TREND_LEVEL_SECONDS` ending then;
      a move between two levels counts when it exceeds ``margin`` = :data:`TREND_NOISE_SE` standard errors
      of a level difference, the noise estimated from the step-to-step differences (median absolute
      deviation), 0 for a clean line;
    - the spans are :data:`TREND_SPANS_HOURS` (those of at least one step, bounded by the window: a level
      outside it is missing); the direction is that of the shortest span's move (the last hour), 0 when it
      does not count;
    - the result is that direction times the longest span H such that every piece between consecutive
      spans up to H (0-1 h, 1-3 h, 3-6 h, 6-12 h before the origin) moved that way by more than ``margin``
      and the level moved by more than 1 ``sd`` over H. 0: steady (or no span qualifies); NaN: fewer than
      two observations.

    So +6 reads "climbing for 6 h": over the last 6 hours every piece rose and the whole rose by more than
    one window standard deviation, while the piece before (6-12 h) did not, or the window is shorter.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError("values must be [rows, steps]")
    R, W = x.shape
    out = np.zeros(R)
    if R == 0:
        return out
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(x, axis=1)
        sd = window_scale(np.nan_to_num(np.nanstd(x, axis=1)), np.nan_to_num(mean))
        diffs = np.diff(x, axis=1)  # NaN where either step is missing
        med = np.nanmedian(diffs, axis=1) if W > 1 else np.full(R, np.nan)
        mad = np.nanmedian(np.abs(diffs - med[:, None]), axis=1) if W > 1 else np.full(R, np.nan)
    noise = np.nan_to_num(1.4826 * mad / np.sqrt(2.0))
    q = max(1, round(TREND_LEVEL_SECONDS / step_seconds))
    margin = TREND_NOISE_SE * noise * np.sqrt(2.0 / q)

    def level(back: int) -> np.ndarray:
        hi = W - back
        if hi - q < 0:
            return np.full(R, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(x[:, hi - q:hi], axis=1)

    now = prev = level(0)
    direction: np.ndarray | None = None
    alive = np.ones(R, dtype=bool)
    best = np.zeros(R)
    prev_back = 0
    for hours in TREND_SPANS_HOURS:
        back = round(hours * 3600 / step_seconds)
        if back < 1 or back <= prev_back:
            continue
        then = level(back)
        piece = prev - then  # NaN where a level is missing: the comparisons below are then False
        if direction is None:
            direction = np.where(piece > margin, 1.0, np.where(piece < -margin, -1.0, 0.0))
        with np.errstate(invalid="ignore"):
            alive &= (direction != 0) & (direction * piece > margin)
            best = np.where(alive & (direction * (now - then) > sd), float(hours), best)
        prev, prev_back = then, back
    if direction is not None:
        out = direction * best
    out[np.isfinite(x).sum(axis=1) < 2] = np.nan
    return out + 0.0  # no -0.0


@dataclass
class WindowBatch:
    """Model inputs for B windows plus what is needed to map outputs back to units."""

    series: np.ndarray  # [B, 2] (instance index, signal index) into the panel
    origins: np.ndarray  # [B] panel time index of the last observed step
    encoder_cont: np.ndarray  # float32 [B, E, F]
    decoder_cont: np.ndarray  # float32 [B, H, F]
    signal_code: np.ndarray  # int64 [B]
    encoder_lengths: np.ndarray  # int64 [B]
    center: np.ndarray  # float64 [B]
    scale: np.ndarray  # float64 [B]
    last_value: np.ndarray  # float64 [B], last observed value in units
    threshold: np.ndarray  # float64 [B], NaN when none
    target: np.ndarray  # float32 [B, H] future values in units, NaN where unknown
    encoder_max: np.ndarray  # float64 [B], max observed value in the encoder (units)
    encoder_values: np.ndarray  # float64 [B, E] right-aligned (column -1 = origin), gaps filled

    def __len__(self) -> int:
        return len(self.origins)

    def take(self, index: np.ndarray | slice) -> WindowBatch:
        """The windows selected by a boolean mask, an index array or a slice."""
        return WindowBatch(**{name: getattr(self, name)[index] for name in self.__dataclass_fields__})

    @classmethod
    def concat(cls, parts: list[WindowBatch]) -> WindowBatch:
        return cls(**{name: np.concatenate([getattr(p, name) for p in parts]) for name in cls.__dataclass_fields__})

    def scaled_target(self) -> np.ndarray:
        return ((self.target - self.center[:, None]) / self.scale[:, None]).astype(np.float32)


def forward_fill(rows: np.ndarray) -> np.ndarray:
    """Forward-fill NaN along the last axis (leading NaN stay NaN)."""
    mask = np.isfinite(rows)
    idx = np.where(mask, np.arange(rows.shape[-1]), 0)
    np.maximum.accumulate(idx, axis=-1, out=idx)
    return np.take_along_axis(rows, idx, axis=-1)


def _calendar(seconds: np.ndarray) -> np.ndarray:
    """Time of day and day of week as sine/cosine pairs (UTC)."""
    tod = 2 * np.pi * (seconds % DAY) / DAY
    # 1970-01-01 was a Thursday; shift so that the cycle starts on Monday.
    dow = 2 * np.pi * ((seconds + 3 * DAY) % WEEK) / WEEK
    return np.stack([np.sin(tod), np.cos(tod), np.sin(dow), np.cos(dow)], axis=-1).astype(np.float32)


@dataclass(frozen=True)
class WindowRules:
    """When a window is usable; the counters in :func:`build_windows` say why one was not."""

    context: int
    horizon: int
    min_history: int
    max_stale_steps: int = 3
    min_observed_fraction: float = 0.5
    seasonal_days: int = 0
    # None: no ``scheduled`` input (a model trained without it); a set, even an empty one: the input,
    # computed from these declared windows (forecaster.contract.schedules).
    schedules: ScheduleSet | None = None
    center: str = "mean"  # what a window's values are measured from: CENTERS
    # 0: the same-time inputs read the value at each earlier day's step; > 0: the mean and maximum of the
    # bucket of this many seconds holding it (forecaster.contract.seasonal: a week at a flat serving cost).
    seasonal_bucket_seconds: int = 0
    cycle: bool = False  # the cycle inputs (cycle_inputs)
    cycle_gate: float = 0.0  # > 0: windows with a cycle strength at least this have none (CYCLE_GATE)


def build_windows(
    panel: Panel,
    series: np.ndarray,
    origins: np.ndarray,
    rules: WindowRules,
    signal_codes: dict[str, int],
    thresholds: np.ndarray | None = None,
    skipped: Counter[str] | None = None,
    buckets: Buckets | None = None,
) -> WindowBatch:
    """Cut windows for ``series[b] = (instance, signal)`` at ``origins[b]``.

    Windows with too little history, a stale end, or mostly gaps are removed and counted in
    ``skipped`` under ``short_history``, ``stale`` and ``gappy``; the returned batch holds only
    usable windows. ``thresholds`` (per window, units) default to NaN. ``buckets``: where the
    bucketed same-time inputs come from when the panel holds only the context (serving: from
    Prometheus); by default they are aggregated from the panel.
    """
    skipped = skipped if skipped is not None else Counter()
    E, H = rules.context, rules.horizon
    series = np.asarray(series, dtype=np.int64).reshape(-1, 2)
    origins = np.asarray(origins, dtype=np.int64)
    thr = np.full(len(origins), np.nan) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    inst, sig = series[:, 0], series[:, 1]
    T = panel.n_times

    rel = np.arange(-E + 1, 1)
    enc_idx = origins[:, None] + rel[None, :]
    enc_ok = enc_idx >= 0
    raw = panel.values[inst[:, None], sig[:, None], np.clip(enc_idx, 0, T - 1)].astype(np.float64)
    raw[~enc_ok] = np.nan
    observed = np.isfinite(raw)
    empty = np.flatnonzero(~observed.any(axis=1))
    if len(empty):
        _carry_last_seen(panel, inst, sig, enc_idx[:, 0], raw, empty)
        observed[empty] = np.isfinite(raw[empty])
    has_any = observed.any(axis=1)
    first = np.where(has_any, observed.argmax(axis=1), E)
    lengths = E - first
    last_obs = np.where(has_any, E - 1 - observed[:, ::-1].argmax(axis=1), -1)
    stale = (E - 1 - last_obs) > rules.max_stale_steps
    n_obs = observed.sum(axis=1)
    short = lengths < rules.min_history
    gappy = n_obs < rules.min_observed_fraction * np.maximum(lengths, 1)
    keep = ~(short | stale | gappy)
    skipped["short_history"] += int(short.sum())
    skipped["stale"] += int((stale & ~short).sum())
    skipped["gappy"] += int((gappy & ~short & ~stale).sum())

    series, origins, thr = series[keep], origins[keep], thr[keep]
    inst, sig = series[:, 0], series[:, 1]
    raw, observed, first, lengths = raw[keep], observed[keep], first[keep], lengths[keep]
    B = len(origins)
    n_sig = len(panel.signals)

    # Left-align: position k holds encoder step first+k; positions >= length are padding.
    k = np.arange(E)[None, :]
    src = np.clip(first[:, None] + k, 0, E - 1)
    pad = k >= lengths[:, None]
    target_raw = np.take_along_axis(raw, src, axis=1)
    obs_aligned = np.take_along_axis(observed, src, axis=1) & ~pad
    target_filled = forward_fill(np.where(pad, np.nan, target_raw))

    with np.errstate(invalid="ignore", divide="ignore"):
        vals_for_stats = np.where(obs_aligned, target_filled, np.nan)
        mean = np.nanmean(vals_for_stats, axis=1) if B else np.zeros(0)
        std = np.nanstd(vals_for_stats, axis=1) if B else np.zeros(0)
        enc_max = np.nanmax(vals_for_stats, axis=1) if B else np.zeros(0)
    last_value = target_filled[np.arange(B), np.maximum(lengths - 1, 0)] if B else np.zeros(0)
    recent = (recent_level(vals_for_stats, lengths, recent_steps(panel.step_seconds), last_value)
              if rules.center == "recent" else None)
    center = window_center(mean, last_value, rules.center, recent)
    scale = window_scale(std, mean)

    unknown = unknown_reals(panel.signals)
    names = x_reals(panel.signals, rules.seasonal_days, rules.schedules is not None, rules.cycle)
    F = len(names)
    enc = np.zeros((B, E, F), dtype=np.float32)
    dec = np.zeros((B, H, F), dtype=np.float32)
    col = {n: i for i, n in enumerate(names)}

    def z(values: np.ndarray, c: np.ndarray, s: np.ndarray) -> np.ndarray:
        return np.clip((values - c[:, None]) / s[:, None], -Z_CLIP, Z_CLIP)

    enc[:, :, col["target"]] = np.nan_to_num(z(target_filled, center, scale))
    enc[:, :, col["observed"]] = obs_aligned
    if len(unknown) > 2:
        host = panel.values[inst[:, None, None], np.arange(n_sig)[None, :, None],
                            np.clip(origins[:, None, None] - E + 1 + first[:, None, None] + k[:, None, :],
                                    0, T - 1)].astype(np.float64)
        host[np.broadcast_to(pad[:, None, :], host.shape)] = np.nan
        host = forward_fill(host)
        # A signal the host does not have (a fleet or a benchmark where hosts differ in metrics) is
        # all NaN here and becomes a zero input; numpy's warning about it would repeat every batch.
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            hc = np.nanmean(host, axis=2)
            hs = np.nanstd(host, axis=2)
        hs = window_scale(np.nan_to_num(hs), np.nan_to_num(hc))
        for j, s in enumerate(panel.signals):
            enc[:, :, col[f"host_{s}"]] = np.nan_to_num(z(host[:, j], np.nan_to_num(hc[:, j]), hs[:, j]))

    thr_z = np.where(np.isfinite(thr), np.clip((thr - center) / scale, -10, 10), 10.0)
    enc[:, :, col["threshold_z"]] = thr_z[:, None]
    dec[:, :, col["threshold_z"]] = thr_z[:, None]
    if rules.cycle:
        set_cycle_inputs(enc, dec, col, np.where(pad, np.nan, target_filled), lengths, center, scale,
                         CycleRule(steps_per_day(panel.step_seconds), rules.cycle_gate))

    step = panel.step_seconds
    t_origin = panel.timestamps[np.clip(origins, 0, T - 1)].astype(np.float64)
    t_origin = t_origin + (origins - np.clip(origins, 0, T - 1)) * step
    enc_times = t_origin[:, None] + (k - (lengths[:, None] - 1)) * step
    dec_times = t_origin[:, None] + np.arange(1, H + 1)[None, :] * step
    cal_cols = [col[n] for n in KNOWN_REALS[:4]]
    enc[:, :, cal_cols] = _calendar(enc_times)
    dec[:, :, cal_cols] = _calendar(dec_times)
    enc[:, :, col["rel_time"]] = (k - (lengths[:, None] - 1)) / H
    dec[:, :, col["rel_time"]] = np.arange(1, H + 1)[None, :] / H
    if rules.seasonal_days > 0 and rules.seasonal_bucket_seconds:
        source = buckets if buckets is not None else cached_buckets(panel, rules.seasonal_bucket_seconds)
        mean, peak, share = same_time_earlier(
            source, [panel.instances[i] for i in inst.tolist()], [panel.signals[j] for j in sig.tolist()],
            np.concatenate([enc_times, dec_times], axis=1).astype(np.int64), t_origin.astype(np.int64),
            rules.seasonal_days)
    elif rules.seasonal_days > 0:
        steps = np.concatenate([origins[:, None] - (lengths[:, None] - 1) + k,
                                origins[:, None] + np.arange(1, H + 1)[None, :]], axis=1)
        mean, peak, share = _same_time_earlier(panel, inst, sig, origins, steps, rules.seasonal_days)
    if rules.seasonal_days > 0:
        for name, values in (("season_mean", np.nan_to_num(z(mean, center, scale))),
                             ("season_max", np.nan_to_num(z(peak, center, scale))), ("season_days", share)):
            enc[:, :, col[name]] = values[:, :E]
            dec[:, :, col[name]] = values[:, E:]
    if rules.schedules is not None:
        keys = [panel.instances[i] for i in inst.tolist()]
        sigs = [panel.signals[j] for j in sig.tolist()]
        enc[:, :, col["scheduled"]] = rules.schedules.active(keys, sigs, enc_times)
        dec[:, :, col["scheduled"]] = rules.schedules.active(keys, sigs, dec_times)
    enc[pad] = 0.0

    dec_idx = origins[:, None] + np.arange(1, H + 1)[None, :]
    dec_ok = dec_idx < T
    target = panel.values[inst[:, None], sig[:, None], np.clip(dec_idx, 0, T - 1)].astype(np.float32)
    target[~dec_ok] = np.nan

    codes = np.array([signal_codes.get(panel.signals[j], 0) for j in sig], dtype=np.int64)
    return WindowBatch(series, origins, enc, dec, codes, lengths.astype(np.int64), center, scale,
                       last_value, thr, target, enc_max, forward_fill(raw))


#: A window's values go into the network as (value - center) / scale. ``mean``: the center is the
#: mean of the context, so a network that outputs zeros forecasts the window's mean; ``last``: the
#: last observed value, so zeros forecast persistence, and the threshold input becomes the distance
#: from now to the breach; ``recent``: the median of the last hour's observed values
#: (:data:`RECENT_SECONDS`), so zeros forecast the present level without the last value's spike.
CENTERS = ("mean", "last", "recent")

#: How far back the ``recent`` center looks. On NAB's test parts the median of the last hour was
#: nearer the value 5 minutes to 2 hours later than the last value was (docs/BENCHMARKS.md, "A recent
#: center"): a spike of a few steps moves the last value, not the median.
RECENT_SECONDS = 3600


def recent_steps(step_seconds: int) -> int:
    """The number of steps :data:`RECENT_SECONDS` spans at this step (at least 1)."""
    return max(1, round(RECENT_SECONDS / step_seconds))


def recent_level(values: np.ndarray, lengths: np.ndarray, steps: int, last_value: np.ndarray) -> np.ndarray:
    """The median of each window's last ``steps`` observed values: ``values`` [B, E] left-aligned,
    NaN where unobserved, ``lengths`` [B] its encoder lengths. ``last_value`` where none was observed."""
    B = len(lengths)
    if B == 0:
        return np.zeros(0)
    pos = np.asarray(lengths)[:, None] - steps + np.arange(steps)[None, :]
    tail = np.take_along_axis(values, np.clip(pos, 0, values.shape[1] - 1), axis=1)
    tail = np.where(pos >= 0, tail, np.nan)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a window with nothing observed in the tail
        level = np.nanmedian(tail, axis=1)
    return np.where(np.isfinite(level), level, np.asarray(last_value, dtype=np.float64))


def window_center(mean: np.ndarray, last_value: np.ndarray, how: str,
                  recent: np.ndarray | None = None) -> np.ndarray:
    """The center of each window under the rule ``how`` (one of :data:`CENTERS`); ``recent``, the
    windows' :func:`recent_level`, is needed for ``recent``."""
    if how == "last":
        return np.asarray(last_value, dtype=np.float64)
    if how == "mean":
        return np.asarray(mean, dtype=np.float64)
    if how == "recent":
        if recent is None:
            raise ValueError("the recent center needs the windows' recent level")
        return np.asarray(recent, dtype=np.float64)
    raise ValueError(f"center must be one of {', '.join(CENTERS)}, not {how!r}")


def window_scale(std: np.ndarray | float, center: np.ndarray | float) -> np.ndarray:
    """A window's scale: its standard deviation, floored at 1 % of its level so that a flat
    series does not divide by zero."""
    return np.maximum(std, np.maximum(0.01 * np.abs(center), 1e-6))


def _carry_last_seen(panel: Panel, inst: np.ndarray, sig: np.ndarray, start: np.ndarray, raw: np.ndarray,
                     empty: np.ndarray) -> None:
    """Give the ``empty`` windows (no observation in the context) the last value seen before them.

    The value goes in as one observation at the window's first step, so the window reads as a
    flat line that went stale long ago: serving rules skip it as stale (not as too short), and
    the benchmark, which must forecast every origin, starts from the last real value, as the
    protocol's baselines do after a run of imputed points.
    """
    for b in empty:
        before = panel.values[inst[b], sig[b], :max(int(start[b]), 0)]
        seen = np.flatnonzero(np.isfinite(before))
        if len(seen):
            raw[b, 0] = before[seen[-1]]


def _same_time_earlier(panel: Panel, inst: np.ndarray, sig: np.ndarray, origins: np.ndarray,
                       steps: np.ndarray, days: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and maximum (units, NaN where no day had data) of the value at ``steps - d`` days for
    d = 1..``days``, and the share of those days with data. Only values at or before the origin
    are used: a lag that would land after it counts as missing.
    """
    day = steps_per_day(panel.step_seconds)
    total = np.zeros(steps.shape)
    count = np.zeros(steps.shape)
    peak = np.full(steps.shape, -np.inf)
    for d in range(1, days + 1):
        idx = steps - d * day
        v = panel.values[inst[:, None], sig[:, None], np.clip(idx, 0, panel.n_times - 1)].astype(np.float64)
        ok = (idx >= 0) & (idx <= origins[:, None]) & np.isfinite(v)
        total += np.where(ok, v, 0.0)
        count += ok
        peak = np.where(ok, np.maximum(peak, v), peak)
    have = count > 0
    mean = np.where(have, total / np.maximum(count, 1), np.nan)
    return mean, np.where(have, peak, np.nan), count / days


def breach_within(future: np.ndarray, threshold: np.ndarray, horizon: int, run: int = 2) -> np.ndarray:
    """True where ``future[:, :horizon]`` exceeds the threshold for ``run`` consecutive steps."""
    above = np.nan_to_num(future[:, :horizon], nan=-np.inf) > threshold[:, None]
    if run <= 1:
        return above.any(axis=1)
    both = above[:, run - 1:].copy()
    for shift in range(1, run):
        both &= above[:, run - 1 - shift: above.shape[1] - shift]
    return both.any(axis=1)


def first_crossing(path: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """Index (0-based step) where each path first exceeds its threshold, -1 if never."""
    above = path > threshold[:, None]
    hit = above.any(axis=1)
    return np.where(hit, above.argmax(axis=1), -1)


@dataclass(frozen=True)
class CycleRule:
    """How a model's cycle inputs are computed: ``per_day`` steps in a day (the candidate periods divide
    it) and the ``gate`` (> 0: :data:`CYCLE_GATE`; 0, models saved before it: no gate)."""

    per_day: int
    gate: float = 0.0


def cycle_lags(context: int, per_day: int) -> np.ndarray:
    """Candidate cycle lengths in steps: the divisors of a day up to half the context (every 10, 15, 20,
    30 or 40 minutes, every 1, 2, 3, 4, 6, 8 or 12 hours at 5-minute steps: the periods of cron jobs)."""
    return np.array([d for d in range(2, context // 2 + 1) if per_day % d == 0], dtype=np.int64)


def cycle_inputs(values: np.ndarray, lengths: np.ndarray, horizon: int,
                 per_day: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A window's strongest short cycle: (profile over the context [B, E], profile ahead [B, H], strength [B]).

    Why: many server metrics repeat every few minutes or hours (cron jobs, batch work, scrapes of
    their own); in the benchmark's NAB series such cycles are where a zero-shot foundation model with a
    week of context beat this network most (MASE 0.68 against 1.15 on a 30-minute cycle, 1.68 against
    4.0 on an hourly one), because attention over 24 h does not learn "the value one period ago" from
    calendar inputs. Given the cycle, the network only has to learn when to trust it.

    ``values`` [B, E] left-aligned (NaN where unobserved or past each length). The period P is the
    candidate lag (:func:`cycle_lags`, two full cycles in the window) with the smallest mean
    ``|y[t] - y[t - P]|`` over the context, or the shortest lag within a tenth of the one-step
    difference of it, so that a multiple of the cycle, equally good but for noise, is not taken for it.
    The profile at each phase is the median of the window's values at that phase (phase 0: the
    origin's), so noise and single spikes drop out and a window without a cycle reads as about its own
    median. ``strength`` is the chosen lag's difference over the one-step difference, clipped to
    [0, 3]: below 1, the window repeats with period P better than it persists.
    """
    B, E = values.shape
    idx = np.arange(E)[None, :]

    def mad(lag: int) -> np.ndarray:
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out = np.nanmean(np.abs(values[:, lag:] - values[:, :-lag]), axis=1)
        out[(lengths < 2 * lag) | np.isnan(out)] = np.inf
        return out

    one = mad(1)
    lags = cycle_lags(E, per_day)
    period, best = np.ones(B, dtype=np.int64), one
    if len(lags) and B:
        table = np.stack([mad(int(lag)) for lag in lags], axis=1)  # [B, L]
        smallest = table.min(axis=1)
        near = smallest + 0.1 * np.maximum(one, smallest)  # 10 % of the one-step difference
        chosen = lags[(table <= near[:, None]).argmax(axis=1)]
        found = np.isfinite(smallest)
        period, best = np.where(found, chosen, 1), np.where(found, smallest, one)
    with np.errstate(invalid="ignore", divide="ignore"):
        strength = np.where((one > 0) & np.isfinite(one), best / one, 1.0)
    strength = np.clip(np.nan_to_num(strength, nan=1.0), 0.0, 3.0).astype(np.float32)

    profile = _phase_medians(values, lengths, period)  # [B, max period], column = phase
    last = np.maximum(lengths - 1, 0)[:, None]
    P = period[:, None]
    phase_enc = np.mod(idx - last, P)  # [B, E]
    phase_dec = np.mod(np.arange(1, horizon + 1)[None, :], P)  # [B, H]
    past = np.take_along_axis(profile, phase_enc, axis=1)
    past = np.where(np.isfinite(past), past, values)
    ahead = np.take_along_axis(profile, phase_dec, axis=1)
    return past, ahead, strength


def _phase_medians(values: np.ndarray, lengths: np.ndarray, period: np.ndarray) -> np.ndarray:
    """[B, max(period)]: the median of each window's values at every phase of its period (phase 0: its
    last step); NaN where a phase has no value. Medians, not means: one spike in the window would
    otherwise come back every period in the profile."""
    B, E = values.shape
    out = np.full((B, int(period.max()) if B else 1), np.nan)
    for p in np.unique(period).tolist():
        rows = np.flatnonzero(period == p)
        # Right-align (last step at the end), pad in front to whole periods: column c is phase (c + 1) % p.
        shift = (E - lengths[rows])[:, None]
        right = np.take_along_axis(values[rows], np.mod(np.arange(E)[None, :] - shift, E), axis=1)
        right[np.arange(E)[None, :] < shift] = np.nan
        n = -(-E // p) * p
        padded = np.concatenate([np.full((len(rows), n - E), np.nan), right], axis=1).reshape(len(rows), n // p, p)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            medians = np.nanmedian(padded, axis=1)  # [rows, p], column c
        out[rows[:, None], np.mod(np.arange(1, p + 1), p)[None, :]] = medians
    return out


def set_cycle_inputs(enc: np.ndarray, dec: np.ndarray, col: dict[str, int], values: np.ndarray,
                     lengths: np.ndarray, center: np.ndarray, scale: np.ndarray, rule: CycleRule) -> None:
    """Write :func:`cycle_inputs` of ``values`` into the windows' ``cycle`` and ``cycle_strength`` columns,
    scaled as the target is (padding is zeroed by the caller). A window whose strength is at least the
    rule's gate has no cycle, and its profile reads as its center (0 once scaled)."""
    past, ahead, strength = cycle_inputs(values, lengths, dec.shape[1], rule.per_day)
    if rule.gate > 0:
        weak = strength >= rule.gate
        past[weak], ahead[weak] = center[weak, None], center[weak, None]
    enc[:, :, col["cycle"]] = np.nan_to_num(np.clip((past - center[:, None]) / scale[:, None], -Z_CLIP, Z_CLIP))
    dec[:, :, col["cycle"]] = np.nan_to_num(np.clip((ahead - center[:, None]) / scale[:, None], -Z_CLIP, Z_CLIP))
    enc[:, :, col["cycle_strength"]] = strength[:, None]
    dec[:, :, col["cycle_strength"]] = strength[:, None]
