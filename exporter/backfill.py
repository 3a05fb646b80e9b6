"""Write weeks of simulated history fast: OpenMetrics for promtool, Parquet for the trainer.

The history is the same simulation the live ``/probe`` serves (``HostModel.series``), sampled
every ``interval`` seconds and ending at the anchor or now, whichever is earlier: never in the
future, because one future sample makes Prometheus reject live samples as out of bounds.

Speed comes from three things: values are computed per series for the whole time grid at once
(numpy), each series' text is built with pyarrow string kernels instead of a Python loop per
sample, and the time range is split into parts (at least one per CPU core, at most about 20
million samples each, since promtool holds a whole block in memory), each converted by its own
promtool process into its own non-overlapping block while the next part is written. promtool
is also given a ``--max-block-duration`` that holds each part in one block, because it rereads
its input once per block.

Loading the blocks: stop Prometheus (or not: it also picks up new blocks at the next
compaction), copy every block directory from ``OUT/blocks/`` into ``--storage.tsdb.path``, and
run Prometheus with a retention longer than the backfilled range
(``--storage.tsdb.retention.time``; the default 15d deletes older blocks at start).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TextIO

import numpy as np

from exporter.families import FAMILIES, SIGNAL_CPU_MODES, SIGNAL_FAMILIES
from exporter.incidents import incidents_document, iso, write_incidents
from exporter.profiles import CPU_MODES, host_spec
from exporter.simulation import RATE_WINDOW, Fleet
from toolkit.files import staged
from toolkit.progress import Progress

logger = logging.getLogger(__name__)

MAX_DAYS = 365.0
#: promtool keeps a whole block in memory (about 130 bytes per sample): cap the part size.
MAX_SAMPLES_PER_PART = 20_000_000
SERIES_SETS: tuple[str, ...] = ("signals", "all")
#: Block ranges promtool can create: 2h * 3^k (Prometheus's compaction levels).
_BLOCK_RANGES_HOURS = tuple(2 * 3**k for k in range(10))


class BackfillError(Exception):
    """The backfill could not be completed; the message is one line for the user."""


@dataclass
class BackfillResult:
    start: float
    end: float
    hosts: int
    samples: int = 0
    text_files: list[Path] = field(default_factory=list)
    blocks_dir: Path | None = None
    commands: list[list[str]] = field(default_factory=list)
    incidents_path: Path | None = None
    parquet_path: Path | None = None
    promtool_seconds: float = 0.0


def block_duration_hours(start: float, end: float) -> int:
    """The smallest promtool block range that holds ``[start, end]`` in one aligned block.

    promtool aligns blocks to multiples of their range and rereads the whole input for each
    block, so one block means one pass (24 s instead of 21 min for 30 days of 20 hosts).
    """
    for hours in _BLOCK_RANGES_HOURS:
        span_ms = hours * 3600 * 1000
        if int(start * 1000) // span_ms == int(end * 1000) // span_ms:
            return hours
    return _BLOCK_RANGES_HOURS[-1]


def promtool_command(text_file: Path, blocks_dir: Path, start: float, end: float,
                     promtool: str = "promtool") -> list[str]:
    return [promtool, "tsdb", "create-blocks-from", "openmetrics",
            f"--max-block-duration={block_duration_hours(start, end)}h", str(text_file), str(blocks_dir)]


def time_grid(days: float, interval: float, anchor: float, now: float) -> np.ndarray:
    """Sample times: whole multiples of ``interval`` ending at min(anchor, now), ``days`` long."""
    end = math.floor(min(anchor, now) / interval) * interval
    count = round(days * 86400.0 / interval)
    return end - interval * np.arange(count, -1, -1, dtype=np.float64)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _label_text(labels: Sequence[tuple[str, str]]) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels))


class _Writer:
    """Writes one series at a time as OpenMetrics lines, built with pyarrow string kernels."""

    def __init__(self, fh: IO[bytes], times: np.ndarray) -> None:
        import pyarrow as pa

        self.fh = fh
        self.times = times
        self.ts_text = pa.array(times.astype(np.int64)).cast(pa.string())
        self.samples = 0
        # Every CPU of a host has the same idle and iowait counters: format them once.
        self._last: tuple[np.ndarray, object] | None = None

    def header(self, family_name: str) -> None:
        family = FAMILIES[family_name]
        self.fh.write(f"# HELP {family.base_name} {family.help}\n# TYPE {family.base_name} {family.type}\n".encode())

    def series(self, name: str, labels: str, values: np.ndarray, keep: np.ndarray | None = None) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        ts = self.ts_text
        if keep is not None:
            idx = np.nonzero(keep)[0]
            if idx.size == 0:
                return
            values, ts = values[idx], ts.take(pa.array(idx))
        if self._last is not None and self._last[0] is values:
            text = self._last[1]
        else:
            integral = bool(np.all(np.abs(values) < 2**53)) and bool(np.all(values == np.floor(values)))
            text = (pa.array(values.astype(np.int64)) if integral else pa.array(values)).cast(pa.string())
            self._last = (values, text)
        lines = pc.binary_join_element_wise(f"{name}{{{labels}}} ", text, " ", ts, "\n", "")
        buffers = lines.buffers()
        offsets = np.frombuffer(buffers[1], dtype=np.int32)[lines.offset: lines.offset + len(lines) + 1]
        self.fh.write(memoryview(buffers[2])[int(offsets[0]): int(offsets[-1])])
        self.samples += len(lines)


def write_openmetrics(fleet: Fleet, hosts: Sequence[str], times: np.ndarray, path: Path, *, job: str,
                      series: str = "signals", label: str = "",
                      on_progress: Callable[[int], None] | None = None) -> int:
    """Write the hosts' history to ``path`` (families contiguous, ends with ``# EOF``); returns samples.

    ``on_progress`` is called with the samples written so far after each host of each family; with
    it, that is the sign of life, and the per-family lines are logged at debug level only.
    """
    if series == "signals":
        families: Sequence[str] = SIGNAL_FAMILIES
        cpu_modes: tuple[str, ...] | None = SIGNAL_CPU_MODES
        root_only = True
    else:
        families, cpu_modes, root_only = tuple(FAMILIES), None, False
    level = logging.INFO if on_progress is None else logging.DEBUG
    with open(path, "wb", buffering=1 << 22) as fh:
        writer = _Writer(fh, times)
        started = last_note = time.monotonic()
        for done, family_name in enumerate(families, start=1):
            writer.header(family_name)
            sparse = family_name == "tft_sim_incident_active"
            for number, host in enumerate(hosts, start=1):
                if on_progress is None and time.monotonic() - last_note > 15.0:  # a sign of life on long runs
                    last_note = time.monotonic()
                    logger.info("%s%s: family %d/%d %s, host %d/%d", label, path.name, done, len(families),
                                family_name, number, len(hosts))
                model = fleet.model(host)
                target = (("instance", host), ("job", job), ("profile", model.profile))
                produced = model.series(times, [family_name], cpu_modes=cpu_modes, root_only=root_only)
                for labels, values in produced.get(family_name, []):
                    # Ground truth is written only while active: a handful of samples, not 30 days of 0.
                    writer.series(family_name, _label_text((*target, *labels)), values,
                                  keep=values > 0 if sparse else None)
                if on_progress is not None:
                    on_progress(writer.samples)
            logger.log(level, "%s%s: family %d/%d %s, %d samples so far (%.1fs)", label, path.name, done,
                       len(families), family_name, writer.samples, time.monotonic() - started)
        fh.write(b"# EOF\n")
    return writer.samples


def estimate_samples(fleet: Fleet, series: str, points: int) -> int:
    """Samples a backfill will write (ground-truth samples aside), to size the parts."""
    per_cpu, fixed = (len(SIGNAL_CPU_MODES), 4) if series == "signals" else (len(CPU_MODES), 28)
    return points * sum(per_cpu * host_spec(fleet.seed, name).ncpu + fixed for name in fleet.names)


class _Converter:
    """Runs promtool on finished parts, at most ``workers`` at a time, and checks the results."""

    def __init__(self, workers: int, keep_text: bool) -> None:
        self.workers = workers
        self.keep_text = keep_text
        self.running: list[tuple[subprocess.Popen[bytes], Path]] = []
        self.finished = 0
        self.on_finished: Callable[[int], None] | None = None  # called with the parts converted so far

    def submit(self, command: list[str], path: Path) -> None:
        while len(self.running) >= self.workers:
            self._wait_oldest()
        self.running.append((subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT), path))

    def finish(self) -> None:
        while self.running:
            self._wait_oldest()

    def _wait_oldest(self) -> None:
        proc, path = self.running.pop(0)
        output, _ = proc.communicate()
        text = output.decode(errors="replace")
        if proc.returncode != 0:
            for other, _ in self.running:
                other.kill()
            tail = text.strip().splitlines()[-1:] or ["(no output)"]
            raise BackfillError(f"promtool failed on {path} (exit {proc.returncode}): {tail[0]}")
        logger.debug("promtool output for %s:\n%s", path, text)
        if not self.keep_text:
            path.unlink(missing_ok=True)
        self.finished += 1
        if self.on_finished is not None:
            self.on_finished(self.finished)


def _progress_of_part(bar: Progress | None, before: int, number: int, parts: int) -> Callable[[int], None] | None:
    """The ``on_progress`` of part ``number``: its samples added to those of the parts before it."""
    if bar is None:
        return None

    def update(samples: int) -> None:
        bar.update(before + samples, f"part {number}/{parts}")

    return update


def backfill(fleet: Fleet, *, days: float, out_dir: Path, interval: float = 60.0, parquet: Path | None = None,
             blocks: bool = True, job: str = "node", series: str = "signals", jobs: int | None = None,
             keep_text: bool = False, now: float | None = None, progress: TextIO | None = None) -> BackfillResult:
    """Write ``days`` of history for the fleet into ``out_dir`` (see the module docstring).

    With ``progress`` (a terminal, usually stderr) a line there shows the samples written out of
    the estimated total, the rate and the time left, then the promtool parts converted.

    Produces ``out_dir/backfill*.om`` (removed after a successful conversion unless
    ``keep_text``), ``out_dir/blocks/`` (unless ``blocks`` is false or promtool is missing, in
    which case ``result.commands`` holds the commands to run), ``out_dir/incidents.json`` and,
    with ``parquet``, that file plus ``<stem>.incidents.json`` beside it.
    """
    if not 0 < days <= MAX_DAYS:
        raise BackfillError(f"--days must be in (0, {MAX_DAYS:g}], got {days:g}")
    if interval < 1 or interval != int(interval):
        raise BackfillError(f"--interval must be a whole number of seconds >= 1, got {interval:g}")
    if interval > RATE_WINDOW / 2:
        logger.warning("interval %gs leaves fewer than 2 samples per 5m rate window", interval)
    if series not in SERIES_SETS:
        raise BackfillError(f"--series must be one of {', '.join(SERIES_SETS)}, got {series!r}")
    now = time.time() if now is None else now
    if fleet.anchor > now:
        logger.warning("anchor %s is in the future; the backfill ends now instead", iso(fleet.anchor))
    times = time_grid(days, interval, fleet.anchor, now)
    start, end = float(times[0]), float(times[-1])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = BackfillResult(start=start, end=end, hosts=len(fleet))
    logger.info("backfill of %d hosts from %s to %s every %gs (%s series), anchor %s", len(fleet), iso(start),
                iso(end), interval, series, iso(fleet.anchor))

    promtool = shutil.which("promtool") if blocks else None
    if blocks and promtool is None:
        logger.warning("promtool is not on PATH: writing the OpenMetrics text only")
    workers = max(1, min(jobs or os.cpu_count() or 1, 8))
    parts = 1
    if promtool is not None:
        # One part per worker, and small enough parts that promtool's memory stays bounded.
        parts = max(workers, math.ceil(estimate_samples(fleet, series, len(times)) / MAX_SAMPLES_PER_PART))
        parts = min(parts, max(1, len(times) // 2))
    blocks_dir = out_dir / "blocks"
    converter = _Converter(workers, keep_text)
    bar = None
    if progress is not None:
        bar = Progress(estimate_samples(fleet, series, len(times)), progress, unit="samples", label="backfill")
    with bar or contextlib.nullcontext():
        for number, part_times in enumerate(np.array_split(times, parts), start=1):
            path = out_dir / ("backfill.om" if parts == 1 else f"backfill-{number}.om")
            part_started = time.monotonic()
            samples = write_openmetrics(fleet, fleet.names, part_times, path, job=job, series=series,
                                        label=f"part {number}/{parts} ",
                                        on_progress=_progress_of_part(bar, result.samples, number, parts))
            result.samples += samples
            result.text_files.append(path)
            logger.info("part %d/%d: %s to %s, %d samples written to %s in %.1fs", number, parts,
                        iso(part_times[0]), iso(part_times[-1]), samples, path, time.monotonic() - part_started)
            command = promtool_command(path, blocks_dir, float(part_times[0]), float(part_times[-1]),
                                       promtool or "promtool")
            result.commands.append(command)
            if promtool is not None:
                converter.submit(command, path)  # converts while the next part is written
        if bar is not None:
            bar.close(result.samples, "written")
    if promtool is not None:
        waited = time.monotonic()
        converted = Progress(parts, progress, unit="parts", label="promtool") if progress is not None else None
        with converted or contextlib.nullcontext():
            if converted is not None:
                converted.update(converter.finished)
                converter.on_finished = converted.update
            converter.finish()
            if converted is not None:
                converted.close(converter.finished, "converted")
        result.promtool_seconds = time.monotonic() - waited
        result.blocks_dir = blocks_dir
        logger.info("promtool wrote blocks to %s (%.1fs after the text was done)", blocks_dir,
                    result.promtool_seconds)

    records = fleet.incidents(start, end)
    document = incidents_document(records, seed=fleet.seed, scenario=fleet.scenario, anchor=fleet.anchor,
                                  start=start, end=end, hosts=fleet.names, jobs=fleet.job_runs(start, end))
    result.incidents_path = out_dir / "incidents.json"
    write_incidents(result.incidents_path, document)
    logger.info("%d incidents written to %s", len(records), result.incidents_path)

    if parquet is not None:
        result.parquet_path = write_history(fleet, start, end, Path(parquet), document)
        logger.info("signals every 5 minutes written to %s", parquet)
    return result


def write_history(fleet: Fleet, start: float, end: float, path: Path, document: dict | None = None) -> Path:
    """The fleet's signals every 5 minutes over ``[start + 5 min, end]`` as a training history
    (``instance, timestamp, <signal>...``, what ``tft-trainer train --parquet`` reads) and its ground truth
    beside it as ``<stem>.incidents.json`` (seed, scenario, incidents). Both are written under temporary
    names first, so an interrupted run leaves no history without its ground truth."""
    if document is None:
        document = incidents_document(fleet.incidents(start, end), seed=fleet.seed, scenario=fleet.scenario,
                                      anchor=fleet.anchor, start=start, end=end, hosts=fleet.names,
                                      jobs=fleet.job_runs(start, end))
    truth = path.with_name(path.stem + ".incidents.json")
    with staged([path, truth]) as tmp:
        fleet.signal_frame(start + RATE_WINDOW, end, step=300.0).to_parquet(tmp[path], index=False)
        write_incidents(tmp[truth], document)
    return path
