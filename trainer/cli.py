"""``tft-trainer``: train, gate and promote models (cron-ready), run the benchmark backtest, and
build the pretraining corpus and pretrain on it (``corpus``, ``pretrain``).

Exit statuses (the same for every subcommand; documented in docs/TRAINING.md):

    0  success: the candidate was promoted (train), the recalibrated model was promoted
       (recalibrate), the forecasts file was written (backtest), the corpus or the pretrained
       model was written (corpus, pretrain)
    1  unexpected failure (a bug: the traceback is logged)
    2  bad command line or configuration (an unwritable work directory and an unusable model to
       recalibrate included)
    3  kept the current model: the candidate is not better than it by the configured margin
    4  kept the current model: the candidate does not beat the seasonal-naive / linear baselines
    5  another training run holds the lock; nothing was done
    6  no usable history (Prometheus unreachable, no series, or too short), or the disk is full
  143  stopped by SIGTERM (130: by SIGINT); temporary files removed, the run recorded
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.cli import Parser, UsageError, add_config_flag, add_global_flags_to, add_log_flags, add_version_flag

if TYPE_CHECKING:  # the real imports stay inside the functions: torch takes seconds to import
    import numpy as np

    from forecaster.contract.config import Config
    from forecaster.contract.model import ModelSpec
    from forecaster.contract.panel import Panel
    from forecaster.contract.registry import Registry
    from trainer.history import History
    from trainer.launch import LaunchRank
    from trainer.training import TrainSettings

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_NOT_BETTER, EXIT_BASELINE, EXIT_LOCKED, EXIT_NO_DATA = 0, 1, 2, 3, 4, 5, 6
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + SIGINT, 128 + SIGTERM, as a shell reports them
OUTCOMES = {EXIT_OK: "promoted", EXIT_FAIL: "failed", EXIT_USAGE: "bad_config", EXIT_NOT_BETTER: "kept_current",
            EXIT_BASELINE: "worse_than_baseline", EXIT_LOCKED: "locked", EXIT_NO_DATA: "no_data",
            EXIT_INTERRUPTED: "interrupted", EXIT_TERMINATED: "terminated"}
#: errno values of a full disk or quota: the run ends with EXIT_NO_DATA and the outcome ``no_space``.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)

log = logging.getLogger("trainer")


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="tft-trainer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version_flag(p)
    add_config_flag(p)
    add_log_flags(p)
    sub = p.add_subparsers(dest="command", required=True)

    def lightning_flags(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu, ...")
        sp.add_argument("--devices", default="auto", help="Lightning devices: auto, 1, 4, ...")
        sp.add_argument("--strategy", default="auto", help="Lightning strategy: auto, ddp, ...")
        sp.add_argument("--num-nodes", type=_positive_int, default=1)
        sp.add_argument("--precision", default=None, help="Lightning precision (default: bf16-mixed on GPUs)")
        sp.add_argument("--time-budget", type=_positive_float, default=None, help="minutes for the whole command")
        sp.add_argument("--max-epochs", type=_positive_int, default=None)
        sp.add_argument("--batches-per-epoch", type=_positive_int, default=None)
        sp.add_argument("--batch-size", type=_positive_int, default=None)
        sp.add_argument("--seed", type=int, default=None)
        sp.add_argument("--level-shift-share", type=_share_or_auto, default=None,
                        help="auto, or the share of training windows given a lasting level shift (overrides "
                             "trainer.level_shift_share; docs/TRAINING.md)")
        sp.add_argument("--ramp-share", type=_share, default=None,
                        help="share of training windows given a ramp that goes on past the origin (overrides "
                             "trainer.ramp_share; docs/TRAINING.md)")
        sp.add_argument("--breach-share", type=_share, default=None,
                        help="share of each training batch drawn from windows whose horizon reaches the "
                             "threshold (overrides trainer.breach_share; docs/TRAINING.md)")
        sp.add_argument("--init-from", type=Path, default=None,
                        help="start from this model directory's weights (same signals and sizes)")
        sp.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bar with a total and ETA, on stdout (default: when stdout is a terminal)")
        sp.add_argument("--fast-path", action=argparse.BooleanOptionalAction, default=None,
                        help="train through the faster forward pass (default: on, trainer.fast_path); "
                             "--no-fast-path: the library's forward")

    t = sub.add_parser("train", help="train a candidate, backtest it, promote it if it is better")
    t.add_argument("--prometheus.url", dest="prometheus_url", default=None)
    t.add_argument("--parquet", type=Path, default=None, help="read history from this file instead")
    t.add_argument("--registry", type=Path, default=None, help="model registry directory")
    t.add_argument("--days", type=_positive_float, default=None, help="days of history to pull")
    t.add_argument("--per-server", action="store_true", help="train one model per host")
    t.add_argument("--metrics-file", type=Path, default=None)
    t.add_argument("--lock-file", type=Path, default=None)
    lightning_flags(t)
    t.add_argument("--from-scratch", action="store_true",
                   help="fresh weights, not the current model's (default: continue from the current model of "
                        "the registry when its network has the same shape)")

    r = sub.add_parser("recalibrate", help="refit a trained model's band and breach model on recent history "
                                           "(weights unchanged) and promote the result")
    r.add_argument("--model", type=Path, default=None,
                   help="model directory (default: the registry's latest global model); a host's own model "
                        "is recalibrated on that host's history and stays in its scope")
    r.add_argument("--prometheus.url", dest="prometheus_url", default=None)
    r.add_argument("--parquet", type=Path, default=None, help="read history from this file instead")
    r.add_argument("--registry", type=Path, default=None, help="model registry directory")
    r.add_argument("--days", type=_positive_float, default=None, help="days of history to pull")
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--lock-file", type=Path, default=None)

    b = sub.add_parser("backtest", help="run the benchmark protocol on a dataset and write forecasts")
    b.add_argument("--data", type=Path, required=True, help="dataset (Parquet/CSV in the protocol format)")
    b.add_argument("--out", type=Path, required=True, help="forecasts file to write (.parquet or .csv)")
    b.add_argument("--report", type=Path, default=None, help="also write the run report as JSON")
    b.add_argument("--score", type=Path, default=None, help="score.py to run (default: found beside --data)")
    b.add_argument("--hidden-size", type=int, default=None, help="overrides model.hidden_size")
    b.add_argument("--seasonal-days", type=_seasonal_days, default=None,
                   help="overrides model.seasonal_days (auto, or 0-28 days)")
    b.add_argument("--center", default=None, help="overrides model.center (auto, last, recent or mean)")
    b.add_argument("--cycle", action=argparse.BooleanOptionalAction, default=None,
                   help="the window's short-cycle inputs (overrides model.cycle, auto by default; docs/TRAINING.md)")
    b.add_argument("--online-band", action=argparse.BooleanOptionalAction, default=None,
                   help="each series' band follows its outcomes up to each origin, as the service's does "
                        "(overrides forecaster.online_band; on by default)")
    b.add_argument("--save-model", type=Path, default=None, help="also save the fitted model to this directory")
    b.add_argument("--univariate", action="store_true",
                   help="ignore the sidecar's host column: each series on its own, without its host's other "
                        "metrics as inputs (the ablation)")
    lightning_flags(b)

    c = sub.add_parser("corpus", help="build the pretraining corpus: training histories of (simulated) fleets and "
                                      "the training parts of protocol datasets (never their test parts)")
    c.add_argument("--out", type=Path, required=True, help="corpus file to write (.parquet; its sidecar and a "
                                                            "JSON manifest are written beside it)")
    c.add_argument("--fleet", type=Path, nargs="+", action="extend", default=[], metavar="FILE",
                   help="training histories (tft-exporter history, or what train --parquet reads) whose every "
                        "host signal goes in")
    c.add_argument("--dataset", type=Path, nargs="+", action="extend", default=[], metavar="FILE",
                   help="protocol datasets whose training parts go in")
    c.add_argument("--fleet-out", type=Path, default=None,
                   help="also write the fleets as one history for tft-trainer train --parquet")

    pt = sub.add_parser("pretrain", help="train one univariate model on a corpus, for backtest --init-from")
    pt.add_argument("--corpus", type=Path, required=True, help="corpus file (tft-trainer corpus)")
    pt.add_argument("--out", type=Path, required=True, help="model directory to write")
    pt.add_argument("--hidden-size", type=int, default=None, help="overrides model.hidden_size")
    pt.add_argument("--seasonal-days", type=_seasonal_days, default=None,
                    help="overrides model.seasonal_days (auto, or 0-28 days)")
    pt.add_argument("--center", default=None, help="overrides model.center (auto, last, recent or mean)")
    pt.add_argument("--cycle", action=argparse.BooleanOptionalAction, default=None,
                    help="the window's short-cycle inputs (overrides model.cycle, auto by default; docs/TRAINING.md)")
    lightning_flags(pt)
    for command in (t, r, b, c, pt):
        add_global_flags_to(command, add_config_flag, add_log_flags)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except UsageError as exc:
        print(f"tft-trainer: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from toolkit.logs import setup_logging

    setup_logging(args.log_level, args.log_format)
    from trainer.cron import Stopped, stop_on_signals

    # SIGTERM and SIGINT unwind the command (every temporary file is removed on the way) instead
    # of killing it where it stands; `train` records the stop before it exits.
    with stop_on_signals():
        try:
            if args.command == "train":
                return cmd_train(args)
            if args.command == "recalibrate":
                return cmd_recalibrate(args)
            if args.command == "corpus":
                return cmd_corpus(args)
            if args.command == "pretrain":
                return cmd_pretrain(args)
            return cmd_backtest(args)
        except Stopped as exc:
            log.error("stopped by %s", exc.name)
            return exc.exit_code
        except KeyboardInterrupt:
            log.error("interrupted")
            return EXIT_INTERRUPTED


def _positive_float(text: str) -> float:
    """argparse type for a duration or an amount: a finite number above 0, as the config requires.

    A negative ``--time-budget`` was taken as is and the run went ahead with no time at all.
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number above 0")
    return value


def _seasonal_days(text: str) -> int | str:
    """argparse type for ``--seasonal-days``: ``auto`` or a whole number of days (the configuration checks
    its range, as it does the file's ``model.seasonal_days``)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither auto nor a whole number of days") from None


def _positive_int(text: str) -> int:
    """argparse type for a count: a whole number, at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1")
    return value


def _share_or_auto(text: str) -> float | str:
    """argparse type for ``--level-shift-share``: ``auto`` or a share of windows."""
    return "auto" if text.strip().lower() == "auto" else _share(text)


def _share(text: str) -> float:
    """argparse type for a share of windows: a number from 0 to 0.5, as the config allows."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 0.5:
        raise argparse.ArgumentTypeError(f"{value} is outside 0 to 0.5")
    return value


def _settings(args: argparse.Namespace, config: Config, budget_default_min: float) -> TrainSettings:
    import sys as _sys

    from trainer.training import TrainSettings

    tc = config.trainer
    budget = args.time_budget if args.time_budget is not None else budget_default_min
    return TrainSettings(
        batch_size=args.batch_size or tc.batch_size,
        batches_per_epoch=args.batches_per_epoch or tc.batches_per_epoch,
        max_epochs=args.max_epochs or tc.max_epochs,
        learning_rate=tc.learning_rate,
        early_stopping_patience=tc.early_stopping_patience,
        time_budget_seconds=budget * 60,
        gradient_accumulation=tc.gradient_accumulation,
        seed=args.seed if args.seed is not None else tc.seed,
        level_shift_share=(args.level_shift_share if args.level_shift_share is not None
                           else tc.level_shift_share),
        ramp_share=args.ramp_share if args.ramp_share is not None else tc.ramp_share,
        breach_share=args.breach_share if args.breach_share is not None else tc.breach_share,
        accelerator=args.accelerator, devices=args.devices, strategy=args.strategy, num_nodes=args.num_nodes,
        precision=args.precision,
        # Lightning draws its bar on stdout: a bar redirected into a log file would be noise.
        progress=args.progress if args.progress is not None else _sys.stdout.isatty(),
        initial_weights=(args.init_from / "model.safetensors") if args.init_from else None,
        work_dir=_work_dir(config),
        fast_path=args.fast_path if args.fast_path is not None else tc.fast_path,
        schedules=config.schedule_set,
    )


def _work_dir(config: Config) -> Path:
    """Where training writes its best-epoch checkpoint and Lightning's CSV logs."""
    return config.trainer.work_dir or Path("runs") / "train"


def _refused_work_dir(config: Config) -> bool:
    """Print why the work directory cannot be written, if it cannot (exit 2, before the lock is taken).

    A non-root container in a root-owned working directory once failed after loading the history,
    with a traceback (``PermissionError: 'runs'``) and exit status 1.
    """
    work = _work_dir(config)
    try:
        work.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".write-test-", dir=work)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        if exc.errno in DISK_FULL:  # a full disk is the run's to record (exit 6), not a configuration problem
            return False
        where = work if work.is_absolute() else f"{work} (under {os.getcwd()})"
        print(f"tft-trainer: work directory {where} is not writable ({exc.strerror or exc}); set trainer.work_dir "
              "to a writable directory or run from one", file=sys.stderr)
        return True
    return False


def _spec(config: Config, signals: list[str]) -> ModelSpec:
    from forecaster.contract.features import CYCLE_GATE
    from forecaster.contract.model import AUTO_SEASONAL_DAYS, ModelSpec

    m = config.model
    return ModelSpec(signals=signals, context_steps=m.context_steps, horizon_steps=m.horizon_steps,
                     step_seconds=m.step_seconds, hidden_size=m.hidden_size,
                     attention_heads=m.attention_heads, hidden_continuous_size=m.hidden_continuous_size,
                     dropout=m.dropout, min_history_steps=m.min_history_steps,
                     seasonal_days=AUTO_SEASONAL_DAYS if m.seasonal_days == "auto" else m.seasonal_days,
                     schedules=bool(config.schedules), center=m.center,
                     seasonal_bucket_seconds=m.seasonal_bucket_seconds if m.seasonal_days else 0, cycle=m.cycle,
                     cycle_gate=CYCLE_GATE if m.cycle is True else 0.0)  # auto: set with the choice


def _model_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The model flags of `backtest` and `pretrain` as config overrides (None: the config's value)."""
    return {"model.hidden_size": args.hidden_size, "model.seasonal_days": args.seasonal_days,
            "model.center": args.center, "model.cycle": args.cycle}


def _history_config(args: argparse.Namespace) -> Config | None:
    """The configuration with the history flags (`train`, `recalibrate`) applied, or None."""
    return _load_config(args, {"prometheus.url": args.prometheus_url,
                               "trainer.registry_dir": str(args.registry) if args.registry else None,
                               "trainer.parquet": str(args.parquet) if args.parquet else None,
                               "trainer.history_days": args.days})


def _lock_path(args: argparse.Namespace, config: Config, registry: Registry) -> Path:
    return Path(args.lock_file or config.trainer.lock_file or registry.root / ".train.lock")


def _load_config(args: argparse.Namespace, overrides: dict[str, Any]) -> Config | None:
    from forecaster.contract.config import ConfigError, load_config

    try:
        return load_config(args.config_file, overrides)
    except ConfigError as exc:
        print(f"tft-trainer: {exc}", file=sys.stderr)
        return None


def cmd_train(args: argparse.Namespace) -> int:
    from forecaster.contract.registry import TRAINER_METRICS_FILE, Registry
    from trainer.cron import LockHeld, Stopped, run_lock, stop_on_signals

    config = _history_config(args)
    if config is None:
        return EXIT_USAGE
    if _missing_init(args):
        return EXIT_USAGE
    if _refused_launch(args) or _refused_work_dir(config):
        return EXIT_USAGE
    from trainer.launch import launch_rank

    registry = Registry(config.trainer.registry_dir)
    rank = launch_rank(args.num_nodes)
    if not rank.is_zero:
        return _train_helper_rank(args, config, registry, rank)
    metrics = args.metrics_file or config.trainer.metrics_file or registry.root / TRAINER_METRICS_FILE
    started = time.monotonic()
    lock = _lock_path(args, config, registry)
    outcome = None
    # Every way this run ends is recorded (docs/TRAINING.md, "The run record").
    with stop_on_signals() as guard:
        try:
            try:
                with run_lock(lock):
                    log.info("holding the lock %s", lock)
                    code, scores, version = _train_locked(args, config, registry, started)
            except LockHeld as exc:
                # Recorded too, so an overlapping schedule shows; the holder's record replaces it when it ends.
                log.error("%s", exc)
                code, scores, version = EXIT_LOCKED, None, None
            except Exception as exc:
                if isinstance(exc, OSError) and exc.errno in DISK_FULL:  # saving the model, most likely
                    log.error("training failed: %s", exc)
                    code, scores, version, outcome = EXIT_NO_DATA, None, None, "no_space"
                else:
                    log.exception("training failed")
                    code, scores, version = EXIT_FAIL, None, None
            finally:
                guard.hold()  # a signal from here on is only noted: the record is written whole
        except Stopped as exc:
            log.error("stopped by %s after %.0fs; temporary files removed", exc.name, time.monotonic() - started)
            code, scores, version = exc.exit_code, None, None
        return _record(Path(metrics), code, outcome or OUTCOMES.get(code, "failed"), started, scores, version)


def _record(metrics: Path, code: int, outcome: str, started: float, scores: dict | None, version: str | None) -> int:
    """Write the run record; the exit status: ``code``, or why the record could not be written.

    A full disk ends the run with the status of "nothing usable to work with" (6) and a readable
    line, not a traceback and status 1; the record's own temporary files are removed either way.
    """
    from trainer.cron import write_run_metrics

    try:
        write_run_metrics(metrics, exit_code=code, outcome=outcome, duration_s=time.monotonic() - started,
                          scores=scores, version=version)
    except OSError as exc:
        status = EXIT_NO_DATA if exc.errno in DISK_FULL else EXIT_FAIL
        log.error("the run ended with %d (%s) but its record %s could not be written: %s; exit %d", code, outcome,
                  metrics, exc.strerror or exc, status)
        return status
    log.info("exit %d (%s); metrics in %s", code, outcome, metrics)
    return code


def _refused_launch(args: argparse.Namespace) -> bool:
    """Print why the Lightning flags cannot train this network (strategy, precision), if they cannot."""
    from trainer.launch import launch_problem

    problem = launch_problem(args.strategy, args.accelerator, args.precision)
    if problem is not None:
        print(f"tft-trainer: {problem}", file=sys.stderr)
    return problem is not None


def _train_helper_rank(args: argparse.Namespace, config: Config, registry: Registry, rank: LaunchRank) -> int:
    """A rank other than 0 of a distributed run: the same history and every fit, nothing else.

    The lock, the registry and the metrics file are rank 0's: a second lock attempt would fail
    (exit 5, and Lightning's launcher then kills the whole run), and a second writer would race
    rank 0. The exit status is 0 once the fits are done; anything else makes Lightning's launcher
    stop every rank, which is right for a failure, since rank 0 would otherwise wait for it forever.
    """
    log.info("%s of a distributed run: training only; rank 0 holds the lock, gates, promotes and writes the "
             "metrics file", rank)
    try:
        code, _, _ = _train_locked(args, config, registry, time.monotonic())
    except Exception:
        log.exception("training failed on %s", rank)
        return EXIT_FAIL
    return code


def _train_locked(args: argparse.Namespace, config: Config, registry: Registry,
                  started: float) -> tuple[int, dict | None, str | None]:
    import numpy as np
    import torch

    from forecaster.contract.artifacts import ModelLoadError, load_model_dir
    from forecaster.contract.registry import GLOBAL_SCOPE, host_scope
    from trainer import gate
    from trainer.training import train_model

    torch.set_num_threads(config.trainer.torch_threads)
    history = _read_history(config)
    if history is None:
        return EXIT_NO_DATA, None, None
    panel = history.panel

    signals = [s.name for s in config.signals]
    thresholds = {s.name: s.threshold for s in config.signals}
    spec = _spec(config, signals)
    holdout = _holdout_steps(panel, spec, config)
    if holdout is None:
        return EXIT_NO_DATA, None, None
    spec = _resolved_auto(args, registry, spec, panel, np.full(len(panel.instances), panel.n_times - holdout))
    # The declared windows with the query schedules' runs over this history (trainer/history.py).
    settings = dataclasses.replace(_settings(args, config, config.trainer.time_budget_minutes),
                                   schedules=history.schedules)
    rules = spec.window_rules(schedules=history.schedules)

    jobs = [(GLOBAL_SCOPE, panel)]
    if args.per_server:
        jobs = [(host_scope(inst), panel.select_instances([inst])) for inst in panel.instances]
    # Exit status per gate verdict (docs/TRAINING.md); a candidate that cannot be scored has not
    # shown that it beats the baselines.
    gate_exit = {gate.Verdict.PROMOTE: EXIT_OK, gate.Verdict.NOT_BETTER: EXIT_NOT_BETTER,
                 gate.Verdict.WORSE_THAN_BASELINE: EXIT_BASELINE, gate.Verdict.UNSCORED: EXIT_BASELINE}
    codes: list[int] = []
    all_scores: dict[str, dict[str, float]] = {}
    version = None
    helped = False
    for scope, part in jobs:
        end = np.full(len(part.instances), part.n_times - holdout)
        start_from = _starting_weights(args, registry, scope, spec)
        try:
            result = train_model(part, spec, dataclasses.replace(settings, initial_weights=start_from), holdout,
                                 thresholds, series_end=end)
        except ValueError as exc:
            log.error("%s: %s", scope, exc)
            codes.append(EXIT_NO_DATA)
            continue
        if result is None:  # a helper rank of a distributed run: rank 0 gates, saves and promotes
            helped = True
            continue
        candidate = result.model
        candidate.metadata.update({
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "training": {"instances": part.instances, "steps": part.n_times,
                         "window_start": int(part.timestamps[0]), "window_end": int(part.timestamps[-1]),
                         "holdout_steps": holdout, "epochs": result.epochs, "samples": result.samples_seen,
                         "level_shift_share": result.level_shift_share, "ramp_share": settings.ramp_share,
                         "breach_share": settings.breach_share,
                         "initial_weights": str(start_from.parent) if start_from else None,
                         "seconds": round(result.seconds, 1), "stopped_because": result.stopped_because,
                         "data_fingerprint": _fingerprint(part)},
            "signals": [s.model_dump(mode="json") for s in config.signals],
            "validation": result.validation,
        })
        models = {"candidate": candidate}
        try:
            current_path = registry.latest_path(scope)
            if current_path is not None:
                current = load_model_dir(current_path)
                same = (current.spec.signals, current.spec.horizon_steps, current.spec.context_steps)
                if same == (spec.signals, spec.horizon_steps, spec.context_steps):
                    models["current"] = current
                else:
                    log.warning("%s: current model %s has other signals, horizon or context; not compared", scope,
                                current_path)
        except ModelLoadError as exc:
            log.warning("%s: current model unusable (%s); judging the candidate against baselines only",
                        scope, exc)
        batch, owner = gate.holdout_windows(part, holdout, rules, spec.signal_codes(), thresholds)
        scores = gate.evaluate(part, batch, owner, models, spec.horizon_steps, rules)
        decision = gate.decide(scores, config.trainer.promotion_margin)
        candidate.metadata["holdout_scores"] = {k: v.as_dict() for k, v in scores.items()}
        version = registry.add(candidate, scope)
        for name, s in scores.items():
            log.info("%s holdout %-15s sQL %.4f  MASE %.4f  coverage %.3f", scope, name, s.sql, s.mase, s.coverage)
        if decision.promote:
            registry.promote(version, scope)
            log.info("%s: promoted %s: %s", scope, version, decision.reason)
        else:
            log.warning("%s: kept the current model: %s", scope, decision.reason)
        codes.append(gate_exit[decision.verdict])
        registry.prune(scope)
        if scope == GLOBAL_SCOPE:
            all_scores = {k: v.as_dict() for k, v in scores.items()}
    if helped:
        return EXIT_OK, None, None
    code = EXIT_OK if codes and all(c == EXIT_OK for c in codes) else max(codes or [EXIT_NO_DATA])
    if args.per_server and any(c == EXIT_OK for c in codes):
        code = EXIT_OK if all(c in (EXIT_OK, EXIT_NOT_BETTER, EXIT_BASELINE) for c in codes) else code
    return code, all_scores or None, version


# The fields of a spec that decide the network's parameter shapes and what they mean: weights carry
# over only between networks that agree on all of them.
_SHAPE_FIELDS = ("signals", "context_steps", "horizon_steps", "step_seconds", "hidden_size", "attention_heads",
                 "hidden_continuous_size", "seasonal_days", "seasonal_bucket_seconds", "schedules", "center", "cycle",
                 "quantiles")


def _starting_weights(args: argparse.Namespace, registry: Registry, scope: str, spec: ModelSpec) -> Path | None:
    """The weights a training run starts from: ``--init-from``, else the scope's current model
    (a host scope without one: the global model; a fresh install: the shipped model), when its
    network has the same shape; None (fresh weights) with ``--from-scratch`` or when none fits.

    Continuing keeps what earlier runs learned from longer and broader histories than the one
    window this run reads; the promotion gate still judges the result against the current model.
    """
    if args.init_from is not None:
        return args.init_from / "model.safetensors"
    current = _current_model(args, registry, scope, spec)
    if current is None:
        return None
    path, found = current
    differ = _shape_differences(found, spec)
    if differ:
        log.info("%s: training from scratch: the current model %s differs in %s", scope, path.name, ", ".join(differ))
        return None
    log.info("%s: continuing from the current model %s (--from-scratch: fresh weights)", scope, path.name)
    return path / "model.safetensors"


def _current_model(args: argparse.Namespace, registry: Registry, scope: str,
                   spec: ModelSpec) -> tuple[Path, ModelSpec] | None:
    """The model directory a run without ``--from-scratch`` would continue from and its spec: the
    scope's current model, else the global one (None: none readable, or ``--from-scratch``)."""
    from forecaster.contract.artifacts import ModelLoadError
    from forecaster.contract.registry import GLOBAL_SCOPE

    if getattr(args, "from_scratch", True):
        return None
    for candidate_scope in dict.fromkeys((scope, GLOBAL_SCOPE)):
        try:
            path = registry.latest_path(candidate_scope)
            if path is None:
                continue
            return path, _saved_spec(path)
        except (ModelLoadError, KeyError, TypeError, ValueError) as exc:
            log.warning("%s: not starting from the current model of %s (%s)", scope, candidate_scope, exc)
    return None


def _saved_spec(model_dir: Path) -> ModelSpec:
    """The spec in a model directory's ``model.json`` (raises ModelLoadError, KeyError, TypeError or
    ValueError for an unreadable one)."""
    from forecaster.contract.artifacts import read_metadata
    from forecaster.contract.model import ModelSpec

    return ModelSpec.from_json(read_metadata(model_dir)["spec"])


def _shape_differences(start: ModelSpec, spec: ModelSpec) -> list[str]:
    """The shape fields in which ``start`` differs from ``spec``; ``center: auto`` takes any center,
    ``seasonal_days: auto`` any same-time days (and their buckets) and ``cycle: auto`` either."""
    from forecaster.contract.model import AUTO_CYCLE, AUTO_SEASONAL_DAYS
    from trainer.centering import AUTO

    chosen = {"center"} if spec.center == AUTO else set()
    if spec.seasonal_days == AUTO_SEASONAL_DAYS:
        chosen |= {"seasonal_days", "seasonal_bucket_seconds"}
    if spec.cycle == AUTO_CYCLE:
        chosen.add("cycle")  # the gate is not a shape field: it comes with the choice
    return [f for f in _SHAPE_FIELDS if getattr(start, f) != getattr(spec, f) and f not in chosen]


def _resolved_auto(args: argparse.Namespace, registry: Registry, spec: ModelSpec, panel: Panel,
                   series_end: np.ndarray) -> ModelSpec:
    """``spec`` with ``center``, ``seasonal_days`` and ``cycle: auto`` resolved (trainer/centering.py,
    trainer/week_choice.py, trainer/cycle_choice.py): as the network this run continues from, if it
    continues from one, else as the history's training part favours."""
    from forecaster.contract.artifacts import ModelLoadError
    from forecaster.contract.model import AUTO_CYCLE, AUTO_SEASONAL_DAYS
    from forecaster.contract.registry import GLOBAL_SCOPE
    from trainer.centering import AUTO

    if spec.center != AUTO and spec.seasonal_days != AUTO_SEASONAL_DAYS and spec.cycle != AUTO_CYCLE:
        return spec
    start = None
    if args.init_from is not None:
        try:
            start = _saved_spec(args.init_from)
        except (ModelLoadError, KeyError, TypeError, ValueError):
            start = None  # train_model reports the unreadable weights
    else:
        current = _current_model(args, registry, GLOBAL_SCOPE, spec)
        if current is not None and not _shape_differences(current[1], spec):
            start = current[1]
    return _auto_choices(spec, panel, series_end, start)


def _auto_choices(spec: ModelSpec, panel: Panel, series_end: np.ndarray, start: ModelSpec | None = None,
                  scope: str = "training") -> ModelSpec:
    """``spec`` with its ``auto`` shape choices made: the center, the same-time days and the cycle inputs
    (``start``: the network the run continues from, whose choices it keeps)."""
    from trainer.centering import resolve_center
    from trainer.cycle_choice import resolve_cycle
    from trainer.week_choice import resolve_week

    spec = resolve_week(resolve_center(spec, panel, series_end, start, scope), panel, series_end, start, scope)
    return resolve_cycle(spec, panel, series_end, start, scope)


def _read_history(config: Config) -> History | None:
    """The configured history (Parquet or Prometheus) and its schedules, or None after logging why not."""
    from trainer.history import HistoryError, read_history

    try:
        return read_history(config)
    except HistoryError as exc:
        log.error("%s", exc)
        return None


def _holdout_steps(panel: Panel, spec: ModelSpec, config: Config) -> int | None:
    """Steps of the validation slice and of the holdout slice (each), or None if too short."""
    step_days = 86400 // spec.step_seconds
    holdout = int(config.trainer.validation_days * step_days)
    usable = panel.n_times - spec.context_steps - spec.horizon_steps
    if 4 * holdout > usable:
        # Short history (a new fleet): shrink the validation and holdout slices so that half of
        # the history still trains, rather than refusing to train at all.
        holdout = max(usable // 4, 0)
        log.warning("only %.1f days of history: validation and holdout slices shortened to %.1f days each",
                    panel.n_times / step_days, holdout / step_days)
    if holdout < 2 * spec.horizon_steps:
        need = (spec.context_steps + 9 * spec.horizon_steps) / step_days
        log.error("history has %.1f days; training needs at least %.1f days (context, horizon, validation "
                  "and holdout slices)", panel.n_times / step_days, need)
        return None
    return holdout


def cmd_recalibrate(args: argparse.Namespace) -> int:
    """Refit band and breach model of an existing model; the network's weights are not touched."""
    import numpy as np
    import torch

    from forecaster.contract.artifacts import ModelLoadError, load_model_dir
    from forecaster.contract.registry import GLOBAL_SCOPE, Registry
    from trainer.cron import LockHeld, run_lock
    from trainer.training import TrainSettings, recalibrate

    config = _history_config(args)
    if config is None:
        return EXIT_USAGE
    registry = Registry(config.trainer.registry_dir)
    try:
        path = args.model or registry.latest_path(GLOBAL_SCOPE)
    except ModelLoadError as exc:  # a `latest` that names no version, or a missing one
        print(f"tft-trainer: {exc}; give --model", file=sys.stderr)
        return EXIT_USAGE
    if path is None:
        print(f"tft-trainer: no model in {registry.root} and no --model given", file=sys.stderr)
        return EXIT_USAGE
    try:
        model = load_model_dir(Path(path), refit_breach=True)
    except ModelLoadError as exc:
        print(f"tft-trainer: {exc}", file=sys.stderr)
        return EXIT_USAGE
    signals = [s.name for s in config.signals]
    if model.spec.signals != signals:
        print(f"tft-trainer: {path} was trained on signals {model.spec.signals}, the configuration has "
              f"{signals}", file=sys.stderr)
        return EXIT_USAGE
    torch.set_num_threads(config.trainer.torch_threads)
    try:
        with run_lock(_lock_path(args, config, registry)):
            history = _read_history(config)
            if history is None:
                return EXIT_NO_DATA
            panel = history.panel
            scope = str(model.metadata.get("scope", GLOBAL_SCOPE))
            if scope != GLOBAL_SCOPE:
                # A host's own model is recalibrated on that host's history only, as it was trained.
                hosts = list(model.metadata.get("training", {}).get("instances", []))
                if not hosts or not set(hosts) <= set(panel.instances):
                    log.error("%s is the model of %s, which the history does not hold", path, hosts or scope)
                    return EXIT_NO_DATA
                panel = panel.select_instances(hosts)
            holdout = _holdout_steps(panel, model.spec, config)
            if holdout is None:
                return EXIT_NO_DATA
            settings = TrainSettings(seed=args.seed if args.seed is not None else config.trainer.seed,
                                     schedules=history.schedules)
            end = np.full(len(panel.instances), panel.n_times - holdout)
            report = recalibrate(model, panel, holdout, settings,
                                 {s.name: s.threshold for s in config.signals}, series_end=end)
            model.metadata.update({"recalibrated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                   "recalibrated_from": str(path), "validation": report})
            version = registry.add(model, scope)
            registry.promote(version, scope)
    except LockHeld as exc:
        log.error("%s", exc)
        return EXIT_LOCKED
    cuts = ", ".join(f"{k} {v:.3f}" for k, v in model.breach.cutoffs.items())
    log.info("recalibrated %s as %s (band coverage %.3f; warning cut-offs %s); promoted", path, version,
             model.band.coverage_after or float("nan"), cuts)
    return EXIT_OK


def _fingerprint(panel: Panel) -> str:
    import hashlib

    import numpy as np

    digest = hashlib.sha256()
    digest.update(",".join(panel.instances).encode())
    digest.update(",".join(panel.signals).encode())
    digest.update(panel.timestamps.tobytes())
    digest.update(np.nan_to_num(panel.values, nan=-1e30).tobytes())
    return digest.hexdigest()[:16]


def cmd_backtest(args: argparse.Namespace) -> int:
    """The protocol on one dataset; with ``--init-from`` twice, from fresh and from pretrained weights
    (same data, settings and seed), so what the pretrained weights change is measured, not assumed."""
    from forecaster.contract.panel import PanelError
    from trainer.backtest import find_scorer, load_benchmark, origins_for

    config = _load_config(args, _model_overrides(args))
    if config is None:
        return EXIT_USAGE
    if not args.data.is_file():
        print(f"tft-trainer: --data {args.data}: no such file", file=sys.stderr)
        return EXIT_USAGE
    if args.score is not None and not args.score.is_file():
        print(f"tft-trainer: --score {args.score}: no such file", file=sys.stderr)
        return EXIT_USAGE
    if args.out.suffix not in (".parquet", ".csv"):
        print("tft-trainer: --out must end in .parquet or .csv", file=sys.stderr)
        return EXIT_USAGE
    if _refused_launch(args) or _refused_work_dir(config):
        return EXIT_USAGE
    import torch

    torch.set_num_threads(config.trainer.torch_threads)
    try:
        data = load_benchmark(args.data, univariate=args.univariate)
    except PanelError as exc:
        print(f"tft-trainer: {exc}", file=sys.stderr)
        return EXIT_USAGE
    spec = _spec(config, list(data.panel.signals))
    if _missing_init(args) or (args.init_from is not None and _refused_init(args.init_from, spec, data.multivariate)):
        return EXIT_USAGE
    scratch_spec = _auto_choices(spec, data.panel, data.train_end, scope="backtest")
    runs = 2 if args.init_from is not None else 1
    # The budget covers the whole command: keep a margin for loading, inference and writing.
    budget = (args.time_budget if args.time_budget is not None else 25.0) / runs
    settings = _settings(args, config, budget)
    n_origins = sum(len(origins_for(int(n), int(t))) for n, t in zip(data.lengths, data.n_train, strict=True))
    settings.time_budget_seconds = max(60.0, budget * 60 - 60 - 0.02 * n_origins)
    settings.batches_per_epoch = args.batches_per_epoch or 50
    settings.max_epochs = args.max_epochs or 200
    settings.early_stopping_patience = max(settings.early_stopping_patience, 6)
    online = config.forecaster.online_band if args.online_band is None else args.online_band
    log.info("backtest on %s: %d series, %d origins; parameters fitted once on the training parts%s, "
             "initial weights: %s; inputs: %s", args.data, len(data.series_ids), n_origins,
             ", each series' band factors on its outcomes up to each origin" if online else "",
             f"none, then {args.init_from} (two runs)" if args.init_from else "none (trained from scratch)",
             f"each series with its host's other metrics ({len(data.panel.instances)} hosts x "
             f"{len(data.panel.signals)} metric kinds)" if data.multivariate else "each series on its own")
    scorer = args.score or find_scorer(args.data)
    if args.init_from is None:
        return _backtest_run(args, data, scratch_spec, settings, args.out, args.report, args.save_model, scorer,
                             online=online)
    scratch_out = args.out.with_name(f"{args.out.stem}.scratch{args.out.suffix}")
    scratch_report = args.report.with_name(f"{args.report.stem}.scratch{args.report.suffix}") if args.report \
        else None
    settings.initial_weights = None
    code = _backtest_run(args, data, scratch_spec, settings, scratch_out, scratch_report, None, scorer, "tft-scratch",
                         online=online)
    if code != EXIT_OK:
        return code
    settings.initial_weights = args.init_from / "model.safetensors"
    start = _saved_spec(args.init_from)  # readable: _refused_init checked it
    return _backtest_run(args, data, _auto_choices(spec, data.panel, data.train_end, start, "backtest"), settings,
                         args.out, args.report, args.save_model, scorer, "tft-pretrained",
                         online=online)


def _missing_init(args: argparse.Namespace) -> bool:
    """Print why ``--init-from`` names no model, if it does not (before the lock or any loading)."""
    if args.init_from is not None and not (args.init_from / "model.safetensors").is_file():
        print(f"tft-trainer: --init-from {args.init_from}: no model.safetensors there", file=sys.stderr)
        return True
    return False


def _refused_init(model_dir: Path, spec: ModelSpec, multivariate: bool) -> bool:
    """Print why ``--init-from`` cannot start this backtest's network, if it cannot (before any training)."""
    from forecaster.contract.artifacts import ModelLoadError

    try:
        start = _saved_spec(model_dir)
    except (ModelLoadError, KeyError, TypeError, ValueError) as exc:
        print(f"tft-trainer: --init-from {model_dir}: unreadable model ({exc})", file=sys.stderr)
        return True
    differ = _shape_differences(start, spec)
    if differ:
        hint = (" (a multivariate dataset: --univariate fits the one-signal shape `tft-trainer pretrain` writes)"
                if multivariate and len(start.signals) == 1 else "")
        print(f"tft-trainer: --init-from {model_dir}: its network differs from this backtest's in "
              f"{', '.join(differ)}{hint}", file=sys.stderr)
        return True
    return False


def _backtest_run(args: argparse.Namespace, data: Any, spec: ModelSpec, settings: TrainSettings, out: Path,
                  report_path: Path | None, save_model: Path | None, scorer: Path | None, name: str = "tft",
                  online: bool = True) -> int:
    import json

    from trainer.backtest import run_backtest, score, write_forecasts

    try:
        done = run_backtest(data, spec, settings, online_band=online)
    except ValueError as exc:
        print(f"tft-trainer: {exc}", file=sys.stderr)
        return EXIT_NO_DATA
    if done is None:  # a rank other than 0 of a distributed run: rank 0 forecasts and writes
        return EXIT_OK
    forecasts, report = done
    write_forecasts(forecasts, out)
    if save_model is not None:
        from forecaster.contract.artifacts import save_model_dir

        save_model_dir(report.pop("model"), save_model)
        log.info("saved the fitted model to %s", save_model)
    report.pop("model", None)
    log.info("wrote %d forecast rows to %s in %.0fs", len(forecasts), out, report["total_seconds"])
    if report_path is not None:
        report_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    if scorer is not None:
        return EXIT_FAIL if score(scorer, args.data, out, name) != 0 else EXIT_OK
    log.info("score.py not found beside %s; score with: python score.py %s %s", args.data, args.data, out)
    return EXIT_OK


def cmd_corpus(args: argparse.Namespace) -> int:
    from trainer.corpus import CorpusError, CorpusPlan, build_corpus

    config = _load_config(args, {})
    if config is None:
        return EXIT_USAGE
    plan = CorpusPlan(fleets=tuple(str(p) for p in args.fleet), datasets=tuple(str(p) for p in args.dataset))
    try:
        summary = build_corpus(plan, args.out, {s.name: s.threshold for s in config.signals},
                               fleet_out=args.fleet_out)
    except CorpusError as exc:
        print(f"tft-trainer: {exc}", file=sys.stderr)
        return EXIT_USAGE
    datasets = ", ".join(f"{n} from {name}" for name, n in summary.dataset_series.items()) or "no dataset"
    print(f"corpus {summary.path}: {summary.series} series, {summary.points} points ({summary.fleet_series} "
          f"from {len(plan.fleets)} fleet(s); {datasets}) in {summary.seconds:.0f}s")
    return EXIT_OK


def cmd_pretrain(args: argparse.Namespace) -> int:
    from forecaster.contract.panel import PanelError

    config = _load_config(args, _model_overrides(args))
    if config is None:
        return EXIT_USAGE
    if not args.corpus.is_file():
        print(f"tft-trainer: --corpus {args.corpus}: no such file (build one with tft-trainer corpus)",
              file=sys.stderr)
        return EXIT_USAGE
    if _missing_init(args):
        return EXIT_USAGE
    if _refused_launch(args) or _refused_work_dir(config):
        return EXIT_USAGE
    import torch

    from forecaster.contract.artifacts import save_model_dir
    from trainer.corpus import pretrain

    torch.set_num_threads(config.trainer.torch_threads)
    settings = _settings(args, config, 60.0)
    try:
        result = pretrain(args.corpus, lambda signals: _spec(config, signals), settings)
    except (PanelError, ValueError) as exc:
        print(f"tft-trainer: {exc}", file=sys.stderr)
        return EXIT_NO_DATA
    if result is None:  # a rank other than 0 of a distributed run
        return EXIT_OK
    save_model_dir(result.model, args.out)
    print(f"pretrained model {args.out}: {result.epochs} epochs, {result.samples_seen} windows in "
          f"{result.seconds:.0f}s, best validation loss {result.best_val_loss:.4f} ({result.stopped_because})")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
