"""Where training history comes from: Prometheus range queries or a Parquet file.

Both go through :mod:`forecaster.contract.panel`, the same pipeline the forecaster serves with. Query
schedules (config ``schedules:`` with ``query:``) are resolved over the same range from the same source,
so the ``scheduled`` input of training marks the runs that really happened: from Prometheus, the
schedule's query; from Parquet, a ``schedule:<name>`` column holding that query's values per row
(docs/OPERATIONS.md, "Declaring schedules").
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from forecaster.contract.config import Config
from forecaster.contract.panel import (
    SCHEDULE_COLUMN_PREFIX,
    Panel,
    PanelError,
    frame_keys,
    panel_from_frame,
    panel_from_range_results,
)
from forecaster.contract.schedules import ScheduleSet, planned_by_host, query_planned

log = logging.getLogger(__name__)


class HistoryError(Exception):
    """No usable history (source unreachable, empty, or too short); the message says which."""


@dataclass(frozen=True)
class History:
    """The panel to train on and the declared schedules over it, query schedules resolved."""

    panel: Panel
    schedules: ScheduleSet


def read_history(config: Config) -> History:
    """The configured history: ``trainer.parquet`` if set, else ``trainer.history_days`` from Prometheus."""
    if config.trainer.parquet is not None:
        return parquet_history(config.trainer.parquet, config)
    return prometheus_history(config, config.trainer.history_days)


def from_parquet(path: Path, config: Config) -> Panel:
    return parquet_history(path, config).panel


def parquet_history(path: Path, config: Config) -> History:
    signals = [s.name for s in config.signals]
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise HistoryError(f"cannot read {path}: {exc}") from exc
    try:
        panel = panel_from_frame(frame, signals, step=config.model.step_seconds, bounds=config.signal_bounds(),
                                 hosts=config.hosts)
    except PanelError as exc:
        raise HistoryError(f"{path}: {exc}") from exc
    log.info("read %s: %d instances x %d signals x %d steps", path, len(panel.instances),
             len(panel.signals), panel.n_times)
    _warn_out_of_bounds(panel)
    return History(panel, _frame_schedules(frame, path, config))


def _frame_schedules(frame: pd.DataFrame, path: Path, config: Config) -> ScheduleSet:
    """The query schedules resolved from their ``schedule:<name>`` columns (the series' value per row's host
    and time, as the query would answer it). A missing column is one warning: that schedule marks no window
    in this training, the others (and every cron) do."""
    plan = config.schedule_set
    if not plan.queried:
        return plan
    keys: pd.Series | None = None
    planned: dict[str, dict[str, np.ndarray]] = {}
    for sched in plan.queried:
        column = SCHEDULE_COLUMN_PREFIX + sched.name
        if column not in frame.columns:
            log.warning("%s has no column %r: schedule %s marks no window in this training (docs/OPERATIONS.md, "
                        "\"Declaring schedules\")", path, column, sched.name)
            continue
        keys = frame_keys(frame, hosts=config.hosts) if keys is None else keys
        values = pd.to_numeric(frame[column], errors="coerce").astype(np.float64)
        planned[sched.name] = planned_by_host((str(key) or None, group.to_numpy())
                                              for key, group in values.groupby(keys.to_numpy(), sort=False))
        _log_planned(sched.name, planned[sched.name])
    return plan.resolved(planned)


def _log_planned(name: str, planned: dict[str, np.ndarray]) -> None:
    runs = sum(len(v) for v in planned.values())
    if not runs:
        log.warning("schedule %s: its series holds no planned start: it marks no window in this training", name)
    else:
        log.info("schedule %s: %d runs on %d hosts", name, runs, len(planned))


def _warn_out_of_bounds(panel: Panel) -> None:
    """Values outside a signal's bounds are masked by the pipeline; training on fewer of them must be visible."""
    if panel.out_of_bounds:
        log.warning("samples outside their signal's bounds, masked as missing: %s", dict(panel.out_of_bounds))


def from_prometheus(config: Config, days: float, end: float | None = None) -> Panel:
    return prometheus_history(config, days, end).panel


def prometheus_history(config: Config, days: float, end: float | None = None) -> History:
    """One chunked range query per signal over the whole fleet, then one per query schedule over the same range.

    A schedule query that fails stops the run as a signal's does: training on a schedule input that misses
    every run would teach the model to ignore it (serving, in contrast, goes on, and counts the error).
    """
    from forecaster.contract.prometheus import PrometheusClient, PrometheusError, display_url

    step = config.model.step_seconds
    end = float(end if end is not None else time.time()) // step * step
    start = end - days * 86400
    results = {}
    plan = config.schedule_set
    planned: dict[str, dict[str, np.ndarray]] = {}
    with PrometheusClient.from_config(config.prometheus) as client:
        for signal in config.signals:
            t0 = time.monotonic()
            try:
                results[signal.name] = client.query_range(signal.query, start, end, step)
            except PrometheusError as exc:
                raise HistoryError(f"signal {signal.name}: {exc}") from exc
            log.info("signal %s: %d series in %.1fs", signal.name, len(results[signal.name]),
                     time.monotonic() - t0)
        for sched in plan.queried:
            try:
                planned[sched.name] = query_planned(client, sched, config.hosts, start, end, step)
            except PrometheusError as exc:
                raise HistoryError(f"schedule {sched.name}: {exc}") from exc
            _log_planned(sched.name, planned[sched.name])
    panel = panel_from_range_results(results, [s.name for s in config.signals], start, end, step,
                                     hosts=config.hosts, bounds=config.signal_bounds())
    if not panel.instances:
        raise HistoryError(f"Prometheus at {display_url(config.prometheus.url)} returned no series for any signal "
                           f"over the last {days:g} days")
    if panel.dropped:
        log.warning("dropped series: %s", dict(panel.dropped))
    _warn_out_of_bounds(panel)
    return History(panel, plan.resolved(planned))
