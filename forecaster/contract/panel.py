"""The one input pipeline: Prometheus range results or Parquet tables become a regular-grid panel.

A :class:`Panel` holds ``values[instance, signal, time]`` on a regular step grid, NaN where
nothing was observed. Training (from Parquet or Prometheus history) and serving (from the last
context window of range queries) both go through these functions, so the two can never
disagree about alignment, gap handling or feature order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from forecaster.contract.hosts import INSTANCE_ONLY, HostIdentity


class PanelError(ValueError):
    """Input data that cannot become a panel (wrong columns, no rows, irregular step)."""


#: Signal bounds by name: ``(min, max)``, either ``None`` for an open side (``Signal.min``/``max``).
Bounds = Mapping[str, tuple[float | None, float | None]]
#: How far outside a bound a value is still taken for rounding and clipped to it, as a share of
#: the signal's range (of ``max(1, |bound|)`` for a one-sided signal): ``rate()`` extrapolation
#: and float noise put an idle CPU at -0.001 or a full disk at 1.0000001, which are real values.
BOUND_TOLERANCE = 0.01
#: A Parquet column named ``schedule:<name>`` holds the series of the query schedule ``<name>`` (the next
#: planned start, unix seconds) per row's host and time: never a signal (trainer/history.py reads it).
SCHEDULE_COLUMN_PREFIX = "schedule:"


@dataclass
class Panel:
    """Regular-grid values per (host, signal); ``timestamps`` are unix seconds, ascending.

    ``instances`` are host keys (:class:`forecaster.contract.hosts.HostIdentity`): the ``instance``
    label alone unless identity labels such as ``cluster`` are configured.
    """

    instances: list[str]
    signals: list[str]
    timestamps: np.ndarray  # int64 seconds, regular step
    values: np.ndarray  # float32 [n_instances, n_signals, n_times], NaN = missing
    step_seconds: int
    thresholds: np.ndarray | None = None  # float32 [n_instances, n_signals]: per-series override
    dropped: Counter[str] = field(default_factory=Counter)
    out_of_bounds: Counter[str] = field(default_factory=Counter)  # samples masked, by signal

    def __post_init__(self) -> None:
        expected = (len(self.instances), len(self.signals), len(self.timestamps))
        if self.values.shape != expected:
            raise PanelError(f"values shape {self.values.shape} does not match {expected}")

    @property
    def n_times(self) -> int:
        return len(self.timestamps)

    def select_instances(self, keep: Sequence[str]) -> Panel:
        idx = [self.instances.index(i) for i in keep]
        thr = self.thresholds[idx] if self.thresholds is not None else None
        return Panel(list(keep), list(self.signals), self.timestamps, self.values[idx], self.step_seconds,
                     thr, Counter(self.dropped), Counter(self.out_of_bounds))


def bound_tolerance(lo: float | None, hi: float | None) -> float:
    """How far outside a bound a value is still clipped to it rather than masked (:data:`BOUND_TOLERANCE`)."""
    span = (hi - lo) if lo is not None and hi is not None else max(1.0, abs(lo if lo is not None else hi))
    return BOUND_TOLERANCE * span


def mask_out_of_bounds(values: np.ndarray, signals: Sequence[str], bounds: Bounds) -> Counter[str]:
    """Mask (NaN) the values of ``values[instance, signal, time]`` outside their signal's bounds, in place.

    A CPU utilisation of 7 or a negative disk usage is a broken exporter or query, not a load:
    fed to the model it would be standardised into the window and forecast as a real excursion.
    Values within :data:`BOUND_TOLERANCE` of a bound are clipped to it instead. Returns the
    masked samples by signal (only signals with some), for the caller to count.
    """
    masked: Counter[str] = Counter()
    for j, name in enumerate(signals):
        lo, hi = bounds.get(name, (None, None))
        if lo is None and hi is None:
            continue
        tol = bound_tolerance(lo, hi)
        col = values[:, j]
        with np.errstate(invalid="ignore"):
            bad = np.zeros(col.shape, dtype=bool)
            if lo is not None:
                bad |= col < lo - tol
            if hi is not None:
                bad |= col > hi + tol
        n = int(bad.sum())
        if n:
            col[bad] = np.nan
            masked[name] = n
        np.clip(col, lo, hi, out=col)  # NaN stays NaN
    return masked


def grid(start: float, end: float, step: int) -> np.ndarray:
    """Step-aligned timestamps covering [start, end] (both rounded down to the step)."""
    first = int(start) // step * step
    last = int(end) // step * step
    return np.arange(first, last + 1, step, dtype=np.int64)


def _place(values: np.ndarray, timestamps: np.ndarray, times: np.ndarray, step: int) -> tuple[np.ndarray, int]:
    """Put samples onto the grid by nearest slot; returns (row, samples that fell outside)."""
    row = np.full(len(timestamps), np.nan, dtype=np.float32)
    if len(times) == 0:
        return row, 0
    slots = np.rint((np.asarray(times, dtype=np.float64) - timestamps[0]) / step).astype(np.int64)
    inside = (slots >= 0) & (slots < len(timestamps))
    vals = np.asarray(values, dtype=np.float64)[inside]
    vals[~np.isfinite(vals)] = np.nan
    row[slots[inside]] = vals
    return row, int((~inside).sum())


def panel_from_range_results(
    results: Mapping[str, Iterable[object]],
    signals: Sequence[str],
    start: float,
    end: float,
    step: int,
    hosts: HostIdentity = INSTANCE_ONLY,
    bounds: Bounds | None = None,
) -> Panel:
    """Build a panel from one range query per signal.

    ``results[signal]`` is an iterable of objects with ``labels``, ``timestamps`` and ``values``
    (the Prometheus client's ``RangeSeries``); ``hosts`` turns their labels into the row key (the
    instance, with the cluster labels if any). Series without the instance label are counted
    and dropped, and so are duplicates of a host within one signal (a query that did not
    aggregate ``by (instance, <cluster labels>)``): keeping one at random would silently mix hosts. With
    ``bounds``, values outside them are masked and counted (:func:`mask_out_of_bounds`).
    """
    timestamps = grid(start, end, step)
    rows: dict[tuple[str, str], np.ndarray] = {}
    dropped: Counter[str] = Counter()
    for signal in signals:
        seen: set[str] = set()
        for series in results.get(signal, ()):
            labels = getattr(series, "labels")  # noqa: B009 - duck-typed RangeSeries
            instance = hosts.key(labels)
            if instance is None:
                dropped["no_instance_label"] += 1
                continue
            if instance in seen:
                dropped["duplicate_instance"] += 1
                rows.pop((instance, signal), None)
                continue
            seen.add(instance)
            row, _outside = _place(getattr(series, "values"), timestamps,  # noqa: B009
                                   getattr(series, "timestamps"), step)  # noqa: B009
            rows[(instance, signal)] = row
    instances = sorted({inst for inst, _ in rows})
    values = np.full((len(instances), len(signals), len(timestamps)), np.nan, dtype=np.float32)
    index = {inst: i for i, inst in enumerate(instances)}
    sig_index = {s: j for j, s in enumerate(signals)}
    for (inst, sig), row in rows.items():
        values[index[inst], sig_index[sig]] = row
    masked = mask_out_of_bounds(values, signals, bounds) if bounds else Counter()
    return Panel(instances, list(signals), timestamps, values, step, dropped=dropped, out_of_bounds=masked)


def panel_from_frame(
    frame: pd.DataFrame,
    signals: Sequence[str] | None = None,
    step: int | None = None,
    instance_col: str = "instance",
    time_col: str = "timestamp",
    bounds: Bounds | None = None,
    hosts: HostIdentity = INSTANCE_ONLY,
) -> Panel:
    """Build a panel from a wide table: ``instance, timestamp, <one column per signal>``.

    This is the simulator's Parquet layout. Columns named as ``hosts``' identity labels (``cluster``)
    are part of the host key, as the labels are for :func:`panel_from_range_results`; a table without
    them holds hosts with those labels empty. ``schedule:<name>`` columns are never signals. The step is
    inferred (the most common spacing) when not given; rows off the grid are snapped to the nearest slot.
    ``bounds`` as for :func:`panel_from_range_results`.
    """
    missing = [c for c in (instance_col, time_col) if c not in frame.columns]
    if missing:
        raise PanelError(f"table lacks column(s) {', '.join(missing)}")
    if signals is None:
        signals = [c for c in frame.columns if c not in (instance_col, time_col, *hosts.labels)
                   and not str(c).startswith(SCHEDULE_COLUMN_PREFIX) and pd.api.types.is_numeric_dtype(frame[c])]
    absent = [s for s in signals if s not in frame.columns]
    if absent:
        raise PanelError(f"table lacks signal column(s) {', '.join(absent)}")
    if frame.empty:
        raise PanelError("table has no rows")
    seconds = _to_unix_seconds(frame[time_col])
    if step is None:
        step = infer_step(seconds)
    timestamps = grid(float(seconds.min()), float(seconds.max()), step)
    keys = frame_keys(frame, instance_col, hosts)
    instances = sorted(keys.unique())
    values = np.full((len(instances), len(signals), len(timestamps)), np.nan, dtype=np.float32)
    inst_codes = pd.Categorical(keys, categories=instances).codes
    slots = np.rint((seconds - timestamps[0]) / step).astype(np.int64)
    for j, sig in enumerate(signals):
        vals = np.array(pd.to_numeric(frame[sig], errors="coerce"), dtype=np.float64)
        vals[~np.isfinite(vals)] = np.nan
        values[inst_codes, j, slots] = vals
    masked = mask_out_of_bounds(values, signals, bounds) if bounds else Counter()
    return Panel(instances, list(signals), timestamps, values, step, out_of_bounds=masked)


def frame_keys(frame: pd.DataFrame, instance_col: str = "instance", hosts: HostIdentity = INSTANCE_ONLY) -> pd.Series:
    """The host key of every row: one :meth:`HostIdentity.key` per distinct label combination, not per row."""
    instance = frame[instance_col].astype(str)
    if not hosts.labels:
        return instance
    cols = {"instance": instance}
    for name in hosts.labels:
        cols[name] = frame[name].astype(str) if name in frame.columns else pd.Series("", index=frame.index)
    table = pd.DataFrame(cols)
    combos = table.drop_duplicates().reset_index(drop=True)
    combos["__key"] = [hosts.key(dict(zip(cols, row, strict=True))) or "" for row in combos.itertuples(index=False)]
    # A left merge keeps the rows' order.
    return table.merge(combos, on=list(cols), how="left")["__key"].set_axis(frame.index)


def _to_unix_seconds(column: pd.Series) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(column):
        return column.to_numpy(dtype=np.float64)
    ts = pd.to_datetime(column, utc=True)
    return (ts - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype=np.float64)


def infer_step(seconds: np.ndarray) -> int:
    diffs = np.diff(np.unique(seconds))
    if len(diffs) == 0:
        raise PanelError("cannot infer the step from fewer than two timestamps")
    values, counts = np.unique(np.rint(diffs).astype(np.int64), return_counts=True)
    step = int(values[np.argmax(counts)])
    if step <= 0:
        raise PanelError("timestamps are not increasing")
    return step
