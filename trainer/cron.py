"""What makes a training run safe under cron: a lock, and a metrics file Prometheus can see.

The metrics file is in Prometheus text format (node_exporter's textfile-collector layout) and
is also re-exported by the forecaster, so a retraining that failed, was skipped or kept the
old model shows up in Prometheus and can page.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from prometheus_client import CollectorRegistry, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

STATE_FILE = "trainer_state.json"


class LockHeld(Exception):
    """Another training run holds the lock."""


@contextmanager
def run_lock(path: Path) -> Iterator[None]:
    """An exclusive, non-blocking ``flock``; released by the kernel even if the process dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fh: IO[str] = open(path, "a+")  # noqa: SIM115 - held for the whole run
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise LockHeld(f"another training run holds {path} (pid {holder})") from exc
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield
    finally:
        fh.close()


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        # A full disk must not leave a stray temporary file behind at every cron run.
        Path(tmp).unlink(missing_ok=True)
        raise


class _Families:
    """A collector of families fixed at construction: the file records one finished run, not live values."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


def write_run_metrics(metrics_path: Path, *, exit_code: int, outcome: str, duration_s: float,
                      scores: dict[str, dict[str, float]] | None = None, version: str | None = None) -> None:
    """Record one run; the last-success timestamp survives failed runs (kept in a state file).

    client_python renders the file, so label values (a version, a model name) are escaped the way
    Prometheus parses them, and ``write_to_textfile`` replaces the file in one rename (a reader sees
    the previous run or this one). Values keep the precision the file always had: timestamps and
    durations to the millisecond, scores to 6 significant digits.
    """
    state_path = metrics_path.with_name(STATE_FILE)
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError):
        state = {}
    now = time.time()
    if exit_code == 0:
        state["last_success"] = now
    state["runs"] = {**state.get("runs", {}), outcome: state.get("runs", {}).get(outcome, 0) + 1}
    _atomic_write(state_path, json.dumps(state))

    families: list[Metric] = []

    def gauge(name: str, help_text: str, value: float) -> None:
        family = GaugeMetricFamily(name, help_text)
        family.add_metric([], value)
        families.append(family)

    gauge("tft_trainer_last_run_timestamp_seconds", "When the last training run ended.", round(now, 3))
    gauge("tft_trainer_last_run_duration_seconds", "How long the last training run took.", round(duration_s, 3))
    gauge("tft_trainer_last_run_exit_code", "Exit status of the last run (0 = promoted; see docs).", exit_code)
    gauge("tft_trainer_last_success_timestamp_seconds", "When a run last ended with status 0.",
          round(state.get("last_success", 0), 3))
    runs = CounterMetricFamily("tft_trainer_runs", "Training runs by outcome (kept across runs).",
                               labels=["outcome"])
    for name, count in sorted(state["runs"].items()):
        runs.add_metric([name], count)
    families.append(runs)
    info = GaugeMetricFamily("tft_trainer_last_run_info", "The last run's outcome and the version it produced.",
                             labels=["outcome", "version"])
    info.add_metric([outcome, version or ""], 1)
    families.append(info)
    if scores:
        backtest = GaugeMetricFamily("tft_trainer_backtest_score", "Holdout backtest scores of the last run.",
                                     labels=["model", "metric"])
        for model, values in sorted(scores.items()):
            for metric, value in sorted(values.items()):
                if metric != "series":
                    backtest.add_metric([model, metric], float(f"{value:.6g}"))
        families.append(backtest)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(metrics_path), registry)  # temporary file + rename; removes it on failure
    # As before: readable by a forecaster running as another user, whatever the trainer's umask.
    os.chmod(metrics_path, 0o644)
