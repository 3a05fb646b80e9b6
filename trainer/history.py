"""Where training history comes from: Prometheus range queries or a Parquet file.

Both go through :mod:`forecaster.contract.panel`, the same pipeline the forecaster serves with.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd

from forecaster.contract.config import Config
from forecaster.contract.panel import Panel, PanelError, panel_from_frame, panel_from_range_results

log = logging.getLogger(__name__)


class HistoryError(Exception):
    """No usable history (source unreachable, empty, or too short); the message says which."""


def from_parquet(path: Path, config: Config) -> Panel:
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
    return panel


def _warn_out_of_bounds(panel: Panel) -> None:
    """Values outside a signal's bounds are masked by the pipeline; training on fewer of them must be visible."""
    if panel.out_of_bounds:
        log.warning("samples outside their signal's bounds, masked as missing: %s", dict(panel.out_of_bounds))


def from_prometheus(config: Config, days: float, end: float | None = None) -> Panel:
    """One chunked range query per signal over the whole fleet."""
    from forecaster.contract.prometheus import PrometheusClient, PrometheusError, display_url

    step = config.model.step_seconds
    end = float(end if end is not None else time.time()) // step * step
    start = end - days * 86400
    results = {}
    with PrometheusClient.from_config(config.prometheus) as client:
        for signal in config.signals:
            t0 = time.monotonic()
            try:
                results[signal.name] = client.query_range(signal.query, start, end, step)
            except PrometheusError as exc:
                raise HistoryError(f"signal {signal.name}: {exc}") from exc
            log.info("signal %s: %d series in %.1fs", signal.name, len(results[signal.name]),
                     time.monotonic() - t0)
    panel = panel_from_range_results(results, [s.name for s in config.signals], start, end, step,
                                     hosts=config.hosts, bounds=config.signal_bounds())
    if not panel.instances:
        raise HistoryError(f"Prometheus at {display_url(config.prometheus.url)} returned no series for any signal "
                           f"over the last {days:g} days")
    if panel.dropped:
        log.warning("dropped series: %s", dict(panel.dropped))
    _warn_out_of_bounds(panel)
    return panel
