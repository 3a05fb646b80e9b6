"""What makes a training run safe under cron: a lock, a metrics file Prometheus can see, and a clean stop.

The metrics file is in Prometheus text format (node_exporter's textfile-collector layout) and
is also re-exported by the forecaster, so a retraining that failed, was skipped or kept the
old model shows up in Prometheus and can page. It describes the last run that *ended*, whatever
ended it: a run that found the lock held ends at once and is recorded as such (the run holding
the lock replaces that record with its own when it ends), a run stopped by SIGTERM or SIGINT is
recorded before it exits (:func:`stop_on_signals`). Writers take a short lock of their own
(:data:`RECORD_LOCK_FILE`), so two runs ending together cannot lose each other's counts.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import IO

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest

from forecaster.contract.artifacts import make_readable_dirs

STATE_FILE = "trainer_state.json"
#: Beside the metrics file: held while a run updates the state file and the metrics file (milliseconds).
RECORD_LOCK_FILE = ".trainer_record.lock"

log = logging.getLogger(__name__)


class LockHeld(Exception):
    """Another training run holds the lock."""


@contextmanager
def run_lock(path: Path) -> Iterator[None]:
    """An exclusive, non-blocking ``flock``; released by the kernel even if the process dies.

    The lock usually lives in the registry root, so the first run may create that root: 0755 like
    the rest of the registry, or a forecaster of another user could not enter it.
    """
    make_readable_dirs(path.parent)
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


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until all of ``data`` is written (a write may take only part of it)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _atomic_write(path: Path, data: str | bytes) -> None:
    """Replace ``path`` in one rename: a reader sees the old file or the new one, never a part.

    The data is flushed to disk before the rename (a full disk often reports only then, and a
    crash must not leave an empty file under the real name), the mode is 0644 before the file
    gets its name (readable by a forecaster running as another user, whatever the umask), and on
    any failure, a full disk or a signal, the temporary file is removed: cron would otherwise
    leave one behind at every run.
    """
    make_readable_dirs(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        try:
            _write_all(fd, data.encode() if isinstance(data, str) else data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def _record_lock(directory: Path) -> Iterator[None]:
    """A blocking ``flock`` on :data:`RECORD_LOCK_FILE` in ``directory`` while a record is written.

    The run lock cannot serve: a run that finds it held records exactly that, while the holder
    may be recording its own end. Both read, update and rewrite the state file; this lock makes
    the two updates one after the other. A file of its own rather than the directory, because
    NFS emulates ``flock`` with POSIX locks, which need a file open for writing.
    """
    make_readable_dirs(directory)
    fd = os.open(directory / RECORD_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class _Families:
    """A collector of families fixed at construction: the file records one finished run, not live values."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


def write_run_metrics(metrics_path: Path, *, exit_code: int, outcome: str, duration_s: float,
                      scores: dict[str, dict[str, float]] | None = None, version: str | None = None) -> None:
    """Record one run; the last-success timestamp and the counts survive later runs (kept in a state file).

    client_python renders the file, so label values (a version, a model name) are escaped the way
    Prometheus parses them, and the file is replaced in one rename (a reader sees the previous run
    or this one). Values keep the precision the file always had: timestamps and durations to the
    millisecond, scores to 6 significant digits. Raises OSError (a full disk: ``ENOSPC``) with no
    temporary file left behind; the record lock (:func:`_record_lock`) is held throughout.
    """
    with _record_lock(metrics_path.parent):
        _write_record(metrics_path, exit_code=exit_code, outcome=outcome, duration_s=duration_s, scores=scores,
                      version=version)


def _write_record(metrics_path: Path, *, exit_code: int, outcome: str, duration_s: float,
                  scores: dict[str, dict[str, float]] | None, version: str | None) -> None:
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
    # Not client_python's write_to_textfile: releases older than late 2024 (client_python#1044, and
    # pyproject allows them) leave its temporary file behind when the write fails, none removes it
    # on a signal, and the mode would be set only after the rename.
    _atomic_write(metrics_path, generate_latest(registry))


class Stopped(BaseException):
    """SIGTERM or SIGINT arrived: unwinds the run, so every ``finally`` removes its temporary files.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` on the way swallows
    it and Lightning's ``fit`` tears down and re-raises it. The process exits with
    :attr:`exit_code`, 128 + the signal number, as a shell reports a process killed by it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class SignalGuard:
    """What :func:`stop_on_signals` installs: raise :class:`Stopped` once, then only note signals.

    After :meth:`hold` (the run is over and its record is being written) a signal is only noted,
    so the record is written whole; a second signal while the first one unwinds is only noted
    too, so the clean-up it started is not cut short.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._raising = True

    def hold(self) -> None:
        """From now on signals are noted, not raised."""
        self._raising = False

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        if self._raising:
            self._raising = False
            raise Stopped(signum)
        log.warning("received %s; finishing what is under way first", signal.Signals(signum).name)


_active: SignalGuard | None = None


@contextmanager
def stop_on_signals(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[SignalGuard]:
    """Turn ``signals`` into :class:`Stopped` in the main thread while the body runs; restore the handlers after.

    Python's default for SIGTERM kills the process on the spot: no ``finally`` runs, the
    checkpoint stays in the work directory and no record is written. Re-entrant: an inner use
    gets the guard already installed, so a :meth:`SignalGuard.hold` holds for the whole command.
    Outside the main thread (where Python cannot install handlers) the guard is inert.
    """
    global _active
    if _active is not None:
        yield _active
        return
    guard = SignalGuard()
    if threading.current_thread() is not threading.main_thread():
        yield guard
        return
    previous = {signum: signal.signal(signum, guard._handle) for signum in signals}
    _active = guard
    try:
        yield guard
    finally:
        _active = None
        for signum, handler in previous.items():
            signal.signal(signum, handler)
