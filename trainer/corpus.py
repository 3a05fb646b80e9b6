"""The pretraining corpus: simulated fleets over many seeds, and the training parts of real datasets.

A model that has seen ramps, level shifts, spikes, recoveries and quiet hosts of many fleets, and the
training parts of public server-metric datasets (NAB and SMD, MIT), starts closer to what a new fleet
looks like than fresh weights do. The corpus is written in the benchmark protocol's format
(``shared/bench/PROTOCOL.md`` section 1: a Parquet file and its ``.series.csv`` sidecar), so
:func:`trainer.backtest.load_benchmark` reads it and every series in it is training data (``n_train = n``).

Two rules keep the benchmarks honest:

- **No test part.** Of a dataset only the first ``n_train`` points of each series go in (the sidecar's
  ``n_train``, else the protocol's ``floor(0.7 n)``); :func:`check_no_test_part` verifies the written
  corpus against the datasets before the corpus is published, and the build fails otherwise.
- **No evaluation seed.** The simulator seeds that ``benchmarks/early_warning.py`` and the demo evaluate
  on (:data:`EVALUATION_SEEDS`) are refused, so "seeds the model never saw" stays true.

Sources live in different years (NAB 2013-2014, SMD a synthetic 2000, the simulator today). Each series
is moved by a whole number of weeks so that it starts within the week after the corpus's start: time of
day and day of week, which the model reads, are unchanged, and the time grid stays weeks long instead of
decades.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from forecaster.contract.model import ModelSpec
    from trainer.training import TrainResult, TrainSettings

log = logging.getLogger(__name__)

WEEK = 7 * 86400
STEP = 300
#: ``benchmarks/early_warning.py`` evaluates on seed 7, the demo simulates seed 42 by default.
EVALUATION_SEEDS: frozenset[int] = frozenset({7, 42})
#: A Monday at midnight UTC, not the anchor any benchmark or the demo simulates around.
DEFAULT_ANCHOR = 1_736_121_600  # 2025-01-06T00:00:00Z
DEFAULT_SEEDS: tuple[int, ...] = (101, 102, 103, 104, 105)


class CorpusError(Exception):
    """The corpus cannot be built as asked (bad source, evaluation seed, a test part that would leak)."""


@dataclass(frozen=True)
class CorpusPlan:
    """What goes into a corpus; written beside it as ``<corpus>.json`` so it can be rebuilt."""

    seeds: tuple[int, ...] = DEFAULT_SEEDS
    scenarios: tuple[str, ...] = ("healthy", "degrading", "critical")
    hosts: int = 20
    days: float = 30.0
    anchor: int = DEFAULT_ANCHOR
    datasets: tuple[str, ...] = ()

    def check(self) -> None:
        from exporter.incidents import SCENARIOS

        held_out = sorted(EVALUATION_SEEDS.intersection(self.seeds))
        if held_out:
            raise CorpusError(f"seed(s) {', '.join(map(str, held_out))} are held out for evaluation "
                              "(benchmarks/early_warning.py, the demo); choose others")
        unknown = [s for s in self.scenarios if s not in SCENARIOS]
        if unknown:
            raise CorpusError(f"unknown scenario(s) {', '.join(unknown)} (choose from {', '.join(SCENARIOS)})")
        if self.hosts < 1 or not 0 < self.days <= 365:
            raise CorpusError(f"hosts must be at least 1 and days in (0, 365], got {self.hosts} and {self.days:g}")
        if not self.seeds and not self.datasets:
            raise CorpusError("nothing to put in the corpus: no simulator seeds and no datasets")
        for path in self.datasets:
            if not Path(path).is_file():
                raise CorpusError(f"dataset {path}: no such file")

    @property
    def start(self) -> int:
        """The corpus's first time: the simulated fleets' first 5-minute step after their warm-up."""
        return int(self.anchor - self.days * 86400) // STEP * STEP + STEP


@dataclass
class CorpusSummary:
    path: Path
    series: int = 0
    points: int = 0
    simulated_series: int = 0
    dataset_series: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def _aligned(stamps: pd.Series, start: int) -> pd.Series:
    """``stamps`` (naive UTC) moved by whole weeks so the first lands in ``[start, start + 1 week)``."""
    first = pd.Timestamp(stamps.iloc[0]).tz_localize("UTC").timestamp()
    weeks = math.ceil((start - first) / WEEK)
    return stamps + pd.Timedelta(weeks=weeks)


def simulated_series(plan: CorpusPlan, on_fleet: Callable[[str], None] | None = None,
                     fleet_frames: list[pd.DataFrame] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every host signal of every (seed, scenario) fleet as one series; returns (points, sidecar rows).

    Every other fleet also runs the scheduled jobs and the led incidents (off by default in the simulator),
    so the corpus holds every incident kind and both kinds of fleet. ``fleet_frames``, if given, receives
    each fleet in the history format ``tft-trainer train --parquet`` reads (instances renamed per fleet).
    """
    from exporter.incidents import THRESHOLDS
    from exporter.simulation import DEFAULT_SIGNAL_NAMES, Fleet

    frames, rows = [], []
    fleets = [(seed, scenario) for seed in plan.seeds for scenario in plan.scenarios]
    for k, (seed, scenario) in enumerate(fleets, start=1):
        started = time.monotonic()
        extras = k % 2 == 0
        fleet = Fleet(plan.hosts, seed=seed, scenario=scenario, anchor=plan.anchor, jobs=extras, led=extras)
        wide = fleet.signal_frame(plan.anchor - plan.days * 86400 + STEP, plan.anchor, step=STEP)
        if fleet_frames is not None:
            fleet_frames.append(wide.assign(instance=f"{scenario}-s{seed}-" + wide["instance"]))
        wide["timestamp"] = wide["timestamp"].dt.tz_localize(None)
        source = f"simulator seed {seed} {scenario}" + (" + scheduled jobs + led incidents" if extras else "")
        for signal in DEFAULT_SIGNAL_NAMES:
            host = "sim/" + scenario + f"-s{seed}/" + wide["instance"]
            part = pd.DataFrame({"series_id": host + "/" + signal, "timestamp": wide["timestamp"],
                                 "value": wide[signal].astype(np.float64), "imputed": False})
            frames.append(part)
            for sid, n in part.groupby("series_id", sort=False).size().items():
                rows.append({"series_id": sid, "n": int(n), "n_train": int(n), "threshold": THRESHOLDS[signal],
                             "kind": "ratio", "source": source, "host": sid.rsplit("/", 1)[0]})
        if on_fleet is not None:
            on_fleet(f"fleet {k}/{len(fleets)}: {source}, {plan.hosts} hosts x {plan.days:g} days in "
                     f"{time.monotonic() - started:.1f}s")
    if not frames:
        return pd.DataFrame(columns=["series_id", "timestamp", "value", "imputed"]), pd.DataFrame()
    return pd.concat(frames, ignore_index=True), pd.DataFrame(rows)


def _read_dataset(path: Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    try:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise CorpusError(f"cannot read {path}: {exc}") from exc
    missing = {"series_id", "timestamp", "value"} - set(frame.columns)
    if missing:
        raise CorpusError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    if "imputed" not in frame.columns:
        frame["imputed"] = False
    sidecar = path.with_name(path.name.rsplit(".", 1)[0] + ".series.csv")
    meta = pd.read_csv(sidecar).set_index("series_id") if sidecar.is_file() else None
    return frame, meta


def training_ends(path: Path) -> dict[str, tuple[int, pd.Timestamp | None]]:
    """Per series of a protocol dataset: its ``n_train`` and the timestamp of its first test point
    (None when the series has no test part): the protocol's rule, the sidecar's figure where it has one."""
    frame, meta = _read_dataset(Path(path))
    ends = {}
    for sid, d in frame.groupby("series_id", sort=True):
        stamps = d["timestamp"].sort_values().reset_index(drop=True)
        n_train = (int(meta.loc[sid, "n_train"]) if meta is not None and sid in meta.index
                   else math.floor(0.7 * len(stamps)))
        ends[str(sid)] = (n_train, stamps.iloc[n_train] if n_train < len(stamps) else None)
    return ends


def dataset_training_parts(path: Path, start: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The first ``n_train`` points of every series of a protocol dataset, aligned to ``start`` by whole weeks."""
    frame, meta = _read_dataset(Path(path))
    ends = training_ends(Path(path))
    frames, rows = [], []
    for sid, d in frame.groupby("series_id", sort=True):
        n_train = ends[str(sid)][0]
        part = d.sort_values("timestamp").iloc[:n_train].reset_index(drop=True)
        if part.empty:
            continue
        part = part[["series_id", "timestamp", "value", "imputed"]].copy()
        part["timestamp"] = _aligned(part["timestamp"], start)
        values = part["value"].to_numpy(np.float64)
        known = meta is not None and sid in meta.index
        threshold = float(meta.loc[sid, "threshold"]) if known else float(np.nanpercentile(values, 99))
        host = meta.loc[sid, "host"] if known and "host" in meta.columns else None
        frames.append(part)
        rows.append({"series_id": str(sid), "n": len(part), "n_train": len(part), "threshold": threshold,
                     "kind": str(meta.loc[sid, "kind"]) if known and "kind" in meta.columns else "unknown",
                     "source": f"{Path(path).name} training part ({n_train} points)",
                     "host": str(host) if host is not None and pd.notna(host) else ""})
    return pd.concat(frames, ignore_index=True), pd.DataFrame(rows)


def check_no_test_part(corpus: pd.DataFrame, datasets: Sequence[Path], start: int) -> None:
    """Raise :class:`CorpusError` if any point of a dataset's test part is in ``corpus``.

    Checked by values at times, independently of how the parts were cut: every corpus point of a dataset
    series must be one of that series' first ``n_train`` points (same value, same time once aligned), and
    there must be no more of them than ``n_train``.
    """
    for path in datasets:
        frame, _ = _read_dataset(Path(path))
        ends = training_ends(Path(path))
        for sid, d in frame.groupby("series_id", sort=True):
            n_train, _first_test = ends[str(sid)]
            mine = corpus[corpus["series_id"] == sid]
            if mine.empty:
                continue
            ordered = d.sort_values("timestamp").reset_index(drop=True)
            if len(mine) > n_train:
                raise CorpusError(f"{sid}: {len(mine)} points in the corpus, more than its {n_train} training points")
            shift = _aligned(ordered["timestamp"].iloc[:1], start).iloc[0] - ordered["timestamp"].iloc[0]
            train = ordered.iloc[:n_train]
            allowed = pd.Series(train["value"].to_numpy(), index=train["timestamp"] + shift)
            at = mine["timestamp"].to_numpy()
            if not pd.Index(at).isin(allowed.index).all():
                raise CorpusError(f"{sid}: the corpus holds points at times outside its training part")
            expected, got = allowed.loc[at].to_numpy(np.float64), mine["value"].to_numpy(np.float64)
            if not np.array_equal(expected, got, equal_nan=True):
                raise CorpusError(f"{sid}: the corpus holds values that are not its training part's")


def build_corpus(plan: CorpusPlan, out: Path, on_step: Callable[[str], None] | None = None,
                 fleet_out: Path | None = None) -> CorpusSummary:
    """Write the corpus to ``out`` (Parquet), its sidecar and ``<out>.json`` (the plan and the counts);
    with ``fleet_out`` also the simulated fleets as one training history (what the shipped model trains on:
    its signals are the simulator's, which the datasets' series are not).

    The files are written beside their final names and renamed only after the leak check passed,
    so a failed build leaves no corpus that looks complete.
    """
    plan.check()
    out = Path(out)
    if out.suffix != ".parquet":
        raise CorpusError(f"{out}: the corpus is a .parquet file")
    started = time.monotonic()
    say = on_step or log.info
    fleets: list[pd.DataFrame] | None = [] if fleet_out is not None else None
    points, sidecar = simulated_series(plan, on_fleet=say, fleet_frames=fleets)
    summary = CorpusSummary(out, simulated_series=len(sidecar))
    parts, metas = [points], [sidecar]
    for path in plan.datasets:
        part, meta = dataset_training_parts(Path(path), plan.start)
        parts.append(part)
        metas.append(meta)
        summary.dataset_series[Path(path).name] = len(meta)
        say(f"{Path(path).name}: the training parts of {len(meta)} series, {len(part)} points")
    corpus = pd.concat([p for p in parts if not p.empty], ignore_index=True)
    meta = pd.concat([m for m in metas if not m.empty], ignore_index=True)
    duplicated = meta["series_id"][meta["series_id"].duplicated()]
    if len(duplicated):
        raise CorpusError(f"series {duplicated.iloc[0]!r} comes from two sources; give each dataset once")
    check_no_test_part(corpus, [Path(p) for p in plan.datasets], plan.start)
    summary.series, summary.points = len(meta), len(corpus)
    summary.seconds = round(time.monotonic() - started, 1)

    out.parent.mkdir(parents=True, exist_ok=True)
    sidecar_path = out.with_name(out.name.rsplit(".", 1)[0] + ".series.csv")
    manifest_path = out.with_name(out.name.rsplit(".", 1)[0] + ".json")
    finals = (out, sidecar_path, manifest_path) + ((Path(fleet_out),) if fleet_out is not None else ())
    staged = {path: path.with_name(f".{path.name}.tmp") for path in finals}
    try:
        if fleet_out is not None:
            Path(fleet_out).parent.mkdir(parents=True, exist_ok=True)
            pd.concat(fleets or [], ignore_index=True).to_parquet(staged[Path(fleet_out)], index=False)
        corpus.to_parquet(staged[out], index=False)
        meta.to_csv(staged[sidecar_path], index=False)
        document = {"plan": asdict(plan), "series": summary.series, "points": summary.points,
                    "simulated_series": summary.simulated_series, "dataset_series": summary.dataset_series,
                    "build_seconds": summary.seconds,
                    "rule": "datasets: the first n_train points of each series only (checked); "
                            f"simulator: no evaluation seed ({', '.join(map(str, sorted(EVALUATION_SEEDS)))})"}
        staged[manifest_path].write_text(json.dumps(document, indent=2) + "\n")
        for final, tmp in staged.items():
            os.replace(tmp, final)
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
    return summary


def pretrain(corpus: Path, spec_for: Callable[[list[str]], ModelSpec], settings: TrainSettings,
             validation_steps: int = 576) -> TrainResult | None:
    """Train one univariate model on every series of the corpus (its last ``validation_steps`` of each
    series are the validation slice for early stopping and calibration).

    Univariate because the sources do not share metric kinds: a host of the simulator has cpu, memory,
    filesystem and iowait, an SMD machine six unnamed metrics, a NAB series none beside it. A model of one
    signal, ``value``, is the shape ``tft-trainer backtest`` fits on any protocol dataset (``--univariate``
    for a multivariate one), so it is what ``backtest --init-from`` can start from.
    """
    from trainer.backtest import load_benchmark
    from trainer.training import train_model

    data = load_benchmark(Path(corpus), univariate=True)
    log.info("pretraining on %s: %d series, %d steps of %ds", corpus, len(data.series_ids), data.panel.n_times,
             data.panel.step_seconds)
    return train_model(data.panel, spec_for(list(data.panel.signals)), settings, validation_steps,
                       series_end=data.train_end)
