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

METRICS_FILE = "trainer_metrics.prom"
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
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def write_run_metrics(metrics_path: Path, *, exit_code: int, outcome: str, duration_s: float,
                      scores: dict[str, dict[str, float]] | None = None, version: str | None = None) -> None:
    """Record one run; the last-success timestamp survives failed runs (kept in a state file)."""
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

    lines = [
        "# HELP tft_trainer_last_run_timestamp_seconds When the last training run ended.",
        "# TYPE tft_trainer_last_run_timestamp_seconds gauge",
        f"tft_trainer_last_run_timestamp_seconds {now:.3f}",
        "# HELP tft_trainer_last_run_duration_seconds How long the last training run took.",
        "# TYPE tft_trainer_last_run_duration_seconds gauge",
        f"tft_trainer_last_run_duration_seconds {duration_s:.3f}",
        "# HELP tft_trainer_last_run_exit_code Exit status of the last run (0 = promoted; see docs).",
        "# TYPE tft_trainer_last_run_exit_code gauge",
        f"tft_trainer_last_run_exit_code {exit_code}",
        "# HELP tft_trainer_last_success_timestamp_seconds When a run last ended with status 0.",
        "# TYPE tft_trainer_last_success_timestamp_seconds gauge",
        f"tft_trainer_last_success_timestamp_seconds {state.get('last_success', 0):.3f}",
        "# HELP tft_trainer_runs_total Training runs by outcome (kept across runs).",
        "# TYPE tft_trainer_runs_total counter",
    ]
    for name, count in sorted(state["runs"].items()):
        lines.append(f'tft_trainer_runs_total{{outcome="{name}"}} {count}')
    lines += [
        "# HELP tft_trainer_last_run_info The last run's outcome and the version it produced.",
        "# TYPE tft_trainer_last_run_info gauge",
        f'tft_trainer_last_run_info{{outcome="{outcome}",version="{version or ""}"}} 1',
    ]
    if scores:
        lines += ["# HELP tft_trainer_backtest_score Holdout backtest scores of the last run.",
                  "# TYPE tft_trainer_backtest_score gauge"]
        for model, values in sorted(scores.items()):
            for metric, value in sorted(values.items()):
                if metric == "series":
                    continue
                lines.append(f'tft_trainer_backtest_score{{model="{model}",metric="{metric}"}} {value:.6g}')
    _atomic_write(metrics_path, "\n".join(lines) + "\n")
