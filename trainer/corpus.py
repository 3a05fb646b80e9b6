"""The pretraining corpus: simulated fleets over many seeds, and the training parts of real datasets.

A model that has seen ramps, level shifts, spikes, recoveries and quiet hosts of many fleets, and the
training parts of public server-metric datasets (NAB and SMD, MIT), starts closer to what a new fleet
looks like than fresh weights do. The corpus is written in the benchmark protocol's format
(``shared/bench/PROTOCOL.md`` section 1: a Parquet file and its ``.series.csv`` sidecar), so
:func:`trainer.backtest.load_benchmark` reads it and every series in it is training data (``n_train = n``).

Fleets come in as training histories, the files ``tft-trainer train --parquet`` reads (``tft-exporter
history`` writes one per simulated fleet, with its ground truth beside it): the trainer never runs the
simulator, as it never reads anything but Prometheus or files in serving's formats.

Two rules keep the benchmarks honest:

- **No test part.** Of a dataset only the first ``n_train`` points of each series go in (the sidecar's
  ``n_train``, else the protocol's ``floor(0.7 n)``); :func:`check_no_test_part` verifies the written
  corpus against the datasets before the corpus is published, and the build fails otherwise.
- **No evaluation seed.** A fleet whose ground truth names a seed that ``benchmarks/early_warning.py`` or
  the demo evaluates on (:data:`EVALUATION_SEEDS`) is refused, so "seeds the model never saw" stays true.

Sources live in different years (NAB 2013-2014, SMD a synthetic 2000, simulated fleets wherever their
anchor is). Each series is moved by a whole number of weeks so that it starts within the week after the
corpus's start: time of day and day of week, which the model reads, are unchanged, and the time grid stays
weeks long instead of decades.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from forecaster.contract.model import AUTO_SEASONAL_DAYS
from forecaster.contract.panel import PanelError
from toolkit.files import staged
from trainer.backtest import load_benchmark, read_protocol, training_length

if TYPE_CHECKING:
    from forecaster.contract.model import ModelSpec
    from trainer.training import TrainResult, TrainSettings

log = logging.getLogger(__name__)

WEEK = 7 * 86400
STEP = 300
#: ``benchmarks/early_warning.py`` evaluates on seed 7 (8 and 9 for more incidents), the demo simulates seed 42.
EVALUATION_SEEDS: frozenset[int] = frozenset({7, 8, 9, 42})
_NOT_SIGNALS = ("instance", "timestamp")


class CorpusError(Exception):
    """The corpus cannot be built as asked (bad source, evaluation seed, a test part that would leak)."""


@dataclass(frozen=True)
class CorpusPlan:
    """What goes into a corpus; written beside it as ``<corpus>.json`` so it can be rebuilt."""

    fleets: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()

    def check(self) -> None:
        if not self.fleets and not self.datasets:
            raise CorpusError("nothing to put in the corpus: give --fleet and/or --dataset files")
        for kind, paths in (("fleet", self.fleets), ("dataset", self.datasets)):
            for path in paths:
                if not Path(path).is_file():
                    raise CorpusError(f"{kind} {path}: no such file")


@dataclass
class CorpusSummary:
    path: Path
    series: int = 0
    points: int = 0
    fleet_series: int = 0
    dataset_series: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def _aligned(stamps: pd.Series, start: int) -> pd.Series:
    """``stamps`` (naive UTC) moved by whole weeks so the first lands in ``[start, start + 1 week)``."""
    first = pd.Timestamp(stamps.min()).tz_localize("UTC").timestamp()
    weeks = math.ceil((start - first) / WEEK)
    return stamps + pd.Timedelta(weeks=weeks)


@dataclass
class _Fleet:
    path: Path
    frame: pd.DataFrame  # instance, timestamp (naive UTC), one column per signal
    truth: dict[str, Any] | None  # the simulator's ground truth beside the file, if there is one

    @property
    def source(self) -> str:
        if self.truth is None:
            return self.path.name
        return f"{self.path.name}: simulator seed {self.truth.get('seed')} {self.truth.get('scenario')}"


def _read_fleet(path: Path) -> _Fleet:
    """A training history and, beside it, its ``<stem>.incidents.json``; an evaluation seed is refused."""
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise CorpusError(f"cannot read {path}: {exc}") from exc
    missing = {"instance", "timestamp"} - set(frame.columns)
    if missing:
        raise CorpusError(f"{path}: missing column(s) {', '.join(sorted(missing))} (a training history has "
                          "instance, timestamp and one column per signal)")
    stamps = pd.to_datetime(frame["timestamp"], utc=True)
    frame = frame.assign(timestamp=stamps.dt.tz_localize(None), instance=frame["instance"].astype(str))
    truth_path = path.with_name(path.stem + ".incidents.json")
    truth = None
    if truth_path.is_file():
        try:
            truth = json.loads(truth_path.read_text())
        except (OSError, ValueError) as exc:
            raise CorpusError(f"cannot read {truth_path}: {exc}") from exc
        if truth.get("seed") in EVALUATION_SEEDS:
            raise CorpusError(f"{path}: simulator seed {truth['seed']} is held out for evaluation "
                              f"(seeds {', '.join(map(str, sorted(EVALUATION_SEEDS)))}: benchmarks/early_warning.py, "
                              "the demo); simulate others")
    return _Fleet(Path(path), frame, truth)


def corpus_start(fleets: Sequence[_Fleet], datasets: Sequence[pd.DataFrame]) -> int:
    """The corpus's first time: the earliest first timestamp of a fleet (of a dataset when there is none)."""
    firsts = [f.frame["timestamp"].min() for f in fleets] or [d["timestamp"].min() for d in datasets]
    return int(min(pd.Timestamp(t).tz_localize("UTC").timestamp() for t in firsts)) // STEP * STEP


def fleet_series(fleet: _Fleet, thresholds: dict[str, float], start: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every (host, signal) of a fleet as one series, aligned to ``start`` by whole weeks; returns
    (points, sidecar rows). Columns that are not one of ``thresholds``' signals are left out."""
    frame = fleet.frame.sort_values(["instance", "timestamp"])
    frame = frame.assign(timestamp=_aligned(frame["timestamp"], start))
    # A simulated fleet (its ground truth beside it) is ``sim/<file stem>/``, any other history ``fleet/<file stem>/``.
    prefix = f"{'sim' if fleet.truth is not None else 'fleet'}/{fleet.path.stem}/"
    signals = [c for c in frame.columns if c not in _NOT_SIGNALS and c in thresholds]
    skipped = [c for c in frame.columns if c not in _NOT_SIGNALS and c not in thresholds]
    if skipped:
        log.info("%s: columns %s are not configured signals; left out", fleet.path.name, ", ".join(skipped))
    frames, rows = [], []
    for signal in signals:
        part = pd.DataFrame({"series_id": prefix + frame["instance"] + "/" + signal, "timestamp": frame["timestamp"],
                             "value": pd.to_numeric(frame[signal], errors="coerce").astype(np.float64),
                             "imputed": False})
        frames.append(part)
        for sid, n in part.groupby("series_id", sort=False).size().items():
            rows.append({"series_id": sid, "n": int(n), "n_train": int(n), "threshold": thresholds[signal],
                         "kind": "ratio", "source": fleet.source, "host": str(sid).rsplit("/", 1)[0]})
    if not frames:
        raise CorpusError(f"{fleet.path}: no column of a configured signal ({', '.join(thresholds)})")
    return pd.concat(frames, ignore_index=True), pd.DataFrame(rows)


def _read_dataset(path: Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    try:
        return read_protocol(path)
    except PanelError as exc:
        raise CorpusError(str(exc)) from exc


def training_ends(frame: pd.DataFrame, meta: pd.DataFrame | None) -> dict[str, int]:
    """Per series of a protocol dataset: its ``n_train`` (:func:`trainer.backtest.training_length`)."""
    counts = frame.groupby("series_id", sort=True).size()
    return {str(sid): training_length(str(sid), int(n), meta) for sid, n in counts.items()}


def dataset_training_parts(path: Path, start: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The first ``n_train`` points of every series of a protocol dataset, aligned to ``start`` by whole weeks."""
    frame, meta = _read_dataset(Path(path))
    ends = training_ends(frame, meta)
    frames, rows = [], []
    for sid, d in frame.groupby("series_id", sort=True):
        n_train = ends[str(sid)]
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
        frame, meta = _read_dataset(Path(path))
        ends = training_ends(frame, meta)
        for sid, d in frame.groupby("series_id", sort=True):
            n_train = ends[str(sid)]
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


def build_corpus(plan: CorpusPlan, out: Path, thresholds: dict[str, float],
                 on_step: Callable[[str], None] | None = None, fleet_out: Path | None = None) -> CorpusSummary:
    """Write the corpus to ``out`` (Parquet), its sidecar and ``<out>.json`` (the plan and the counts);
    with ``fleet_out`` also the fleets as one training history, instances renamed ``<file stem>-<instance>``
    (what a global model of the fleets' own signals trains on: the datasets' series are not such signals).
    ``thresholds`` are the breach levels of the signals taken from the fleets.

    The files are written beside their final names and renamed only after the leak check passed,
    so a failed build leaves no corpus that looks complete.
    """
    plan.check()
    out = Path(out)
    if out.suffix != ".parquet":
        raise CorpusError(f"{out}: the corpus is a .parquet file")
    started = time.monotonic()
    say = on_step or log.info
    fleets = [_read_fleet(Path(p)) for p in plan.fleets]
    datasets = [_read_dataset(Path(p))[0] for p in plan.datasets] if not fleets else []
    start = corpus_start(fleets, datasets)
    parts, metas = [], []
    summary = CorpusSummary(out)
    for fleet in fleets:
        points, meta = fleet_series(fleet, thresholds, start)
        parts.append(points)
        metas.append(meta)
        summary.fleet_series += len(meta)
        say(f"{fleet.source}: {fleet.frame['instance'].nunique()} hosts, {len(meta)} series")
    for path in plan.datasets:
        part, meta = dataset_training_parts(Path(path), start)
        parts.append(part)
        metas.append(meta)
        summary.dataset_series[Path(path).name] = len(meta)
        say(f"{Path(path).name}: the training parts of {len(meta)} series, {len(part)} points")
    corpus = pd.concat([p for p in parts if not p.empty], ignore_index=True)
    meta = pd.concat([m for m in metas if not m.empty], ignore_index=True)
    duplicated = meta["series_id"][meta["series_id"].duplicated()]
    if len(duplicated):
        raise CorpusError(f"series {duplicated.iloc[0]!r} comes from two sources; give each file once")
    check_no_test_part(corpus, [Path(p) for p in plan.datasets], start)
    summary.series, summary.points = len(meta), len(corpus)
    summary.seconds = round(time.monotonic() - started, 1)

    sidecar_path = out.with_name(out.name.rsplit(".", 1)[0] + ".series.csv")
    manifest_path = out.with_name(out.name.rsplit(".", 1)[0] + ".json")
    finals = [out, sidecar_path, manifest_path] + ([Path(fleet_out)] if fleet_out is not None else [])
    with staged(finals) as tmp:
        if fleet_out is not None:
            _fleets_history(fleets, start).to_parquet(tmp[Path(fleet_out)], index=False)
        corpus.to_parquet(tmp[out], index=False)
        meta.to_csv(tmp[sidecar_path], index=False)
        document = {"plan": asdict(plan), "series": summary.series, "points": summary.points,
                    "fleet_series": summary.fleet_series, "dataset_series": summary.dataset_series,
                    "fleets": [f.source for f in fleets], "build_seconds": summary.seconds,
                    "rule": "datasets: the first n_train points of each series only (checked); "
                            f"fleets: no evaluation seed ({', '.join(map(str, sorted(EVALUATION_SEEDS)))})"}
        tmp[manifest_path].write_text(json.dumps(document, indent=2) + "\n")
    return summary


def _fleets_history(fleets: Sequence[_Fleet], start: int) -> pd.DataFrame:
    frames = []
    for fleet in fleets:
        frame = fleet.frame.sort_values(["instance", "timestamp"])
        frames.append(frame.assign(instance=f"{fleet.path.stem}-" + frame["instance"],
                                   timestamp=_aligned(frame["timestamp"], start).dt.tz_localize("UTC")))
    return pd.concat(frames, ignore_index=True)


def pretrain(corpus: Path, spec_for: Callable[[list[str]], ModelSpec], settings: TrainSettings,
             validation_steps: int = 576) -> TrainResult | None:
    """Train one univariate model on every series of the corpus (its last ``validation_steps`` of each
    series are the validation slice for early stopping and calibration).

    Univariate because the sources do not share metric kinds: a host of the simulator has cpu, memory,
    filesystem and iowait, an SMD machine six unnamed metrics, a NAB series none beside it. A model of one
    signal, ``value``, is the shape ``tft-trainer backtest`` fits on any protocol dataset (``--univariate``
    for a multivariate one), so it is what ``backtest --init-from`` can start from.
    """
    from trainer.centering import resolve_center
    from trainer.cycle_choice import resolve_cycle
    from trainer.training import train_model

    data = load_benchmark(Path(corpus), univariate=True)
    log.info("pretraining on %s: %d series, %d steps of %ds", corpus, len(data.series_ids), data.panel.n_times,
             data.panel.step_seconds)
    spec = resolve_center(spec_for(list(data.panel.signals)), data.panel, data.train_end, scope="pretrain")
    spec = resolve_cycle(spec, data.panel, data.train_end, scope="pretrain")
    if spec.seasonal_days == AUTO_SEASONAL_DAYS:
        # The pretrained model is where every fleet starts, a new one with a day of history as much as one
        # with months: it reads no week unless asked to (--seasonal-days 7).
        log.info("pretrain: no same-time days (model.seasonal_days: auto; --seasonal-days N for a pretrained week)")
        spec = replace(spec, seasonal_days=0, seasonal_bucket_seconds=0)
    return train_model(data.panel, spec, settings, validation_steps, series_end=data.train_end)
