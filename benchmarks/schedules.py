"""Benchmark: schedule-aware forecasts on a simulated fleet with scheduled jobs (issue #18).

    python3 benchmarks/schedules.py                       # defaults below, about 15 minutes on one thread
    python3 benchmarks/schedules.py --budget 2 --eval-days 2

The fleet is the simulator with ``scheduled_jobs`` on (exporter.jobs: a nightly backup at 02:00 UTC
for 45 min loading filesystem and I/O wait on every host, a weekly batch on Saturdays at 22:00 for 2 h
saturating CPU on database and batch hosts). Two small TFTs are trained on the same history of
seed ``--train-seed``, one without and one with the ``scheduled`` known-future input (declared windows
from the schedules below, the config an operator would write), then both forecast a fleet of the
unseen seed ``--eval-seed`` every ``--every``, through the forecaster's own pipeline
(``build_windows`` -> ``model.predict``), and the shipped predicted-breach rules are applied to their
forecasts as ``benchmarks/early_warning.py`` applies them (its functions). Three set-ups:

* **no schedules**: the model without the input, no schedule declared (today's behaviour);
* **declared, model without input**: the schedules declared (the alerts do not page on a forecast
  breach wholly inside declared windows, ``tft_breach_scheduled``) but the model cannot see them;
* **declared, model with input**: both.

Reported: alert episodes per host-day that are false (no incident within 8 h before to its end, as
early_warning scores) and lie near a job run of the same host and signal (1 h before its start to 1 h
after its end), split into pages (the two critical 1h rules) and warnings (the 8h rule); other false
alerts per host-day; incidents warned before their breach (any shipped rule). And whether the planned
load is forecast: for forecasts made 1 h and 30 min before each job run, the mean over the run of the
p50 forecast minus the last value, against the actual rise.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.early_warning import (  # noqa: E402
    ANCHOR,
    GRID,
    LOOKAHEAD,
    STEP,
    Rule,
    episodes,
    parse_duration,
    score,
    shipped_tft_rules,
)

#: What an operator declares for the simulator's jobs (exporter/jobs.py; docs/OPERATIONS.md).
SCHEDULES = [
    {"name": "backup", "cron": "0 2 * * *", "duration": "45m", "signals": ["filesystem", "iowait"]},
    {"name": "batch", "cron": "0 22 * * sat", "duration": "2h", "hosts": "(db|batch)-.*", "signals": ["cpu"]},
]
NEAR = 3600  # a false alert within this of a job run (same host and signal) is the job's


def fleet_panel(hosts: int, seed: int, start: float, end: float, signals: list[str]) -> tuple[object, object]:
    from exporter import Fleet
    from forecaster.contract.panel import Panel

    fleet = Fleet(hosts, seed=seed, scenario="degrading", anchor=ANCHOR, jobs=True)
    t = np.arange(start, end + 1, STEP, dtype=np.float64)
    values = np.stack([np.stack(list(fleet.model(h).signals(t, signals).values())) for h in fleet.names])
    return fleet, Panel(list(fleet.names), signals, t.astype(np.int64), values.astype(np.float32), STEP)


def train(panel: object, schedules: object, with_input: bool, args: argparse.Namespace,
          thresholds: dict[str, float]) -> object:
    from forecaster.contract.model import ModelSpec
    from trainer.training import TrainSettings, train_model

    spec = ModelSpec(signals=list(panel.signals), context_steps=96, horizon_steps=96, hidden_size=16,  # type: ignore[attr-defined]
                     attention_heads=2, hidden_continuous_size=8, min_history_steps=48, dropout=0.1,
                     schedules=with_input)
    settings = TrainSettings(batch_size=64, batches_per_epoch=40, max_epochs=100, learning_rate=3e-3,
                             early_stopping_patience=6, time_budget_seconds=args.budget * 60, seed=args.seed,
                             validation_windows=1024, breach_windows=3000, accelerator="cpu", devices=1,
                             work_dir=Path(args.work) / ("with" if with_input else "without"), schedules=schedules)
    result = train_model(panel, spec, settings, validation_steps=2 * 288,  # type: ignore[arg-type]
                         thresholds_by_signal=thresholds)
    assert result is not None
    print(f"  trained {'with' if with_input else 'without'} the schedule input: {result.epochs} epochs, "
          f"{result.seconds:.0f}s ({result.stopped_because})", file=sys.stderr)
    return result.model


def forecast(model: object, panel: object, schedules: object, cycles: np.ndarray, thresholds: dict[str, float],
             ) -> dict[str, np.ndarray]:
    """Every series forecast at every cycle: probabilities, p50 ETA, the paging hint, the p50 paths."""
    from forecaster.contract.config import HORIZON_LABELS
    from forecaster.contract.features import build_windows, first_crossing

    spec = model.spec  # type: ignore[attr-defined]
    sig = list(panel.signals)  # type: ignore[attr-defined]
    names = list(panel.instances)  # type: ignore[attr-defined]
    origin_idx = np.searchsorted(panel.timestamps, cycles)  # type: ignore[attr-defined]
    series = np.array([(i, j) for i in range(len(names)) for j in range(len(sig))], dtype=np.int64)
    thr = np.array([thresholds[sig[j]] for _, j in series])
    rules = spec.window_rules(min(72, spec.context_steps), schedules=schedules)
    S, K = len(series), len(cycles)
    out = {label: np.full((S, K), np.nan) for label in HORIZON_LABELS}
    out["eta50"] = np.full((S, K), np.inf)
    out["quiet"] = np.zeros((S, K), dtype=bool)
    out["p50"] = np.full((S, K, spec.horizon_steps), np.nan)
    out["last"] = np.full((S, K), np.nan)
    all_s, all_k = np.repeat(np.arange(S), K), np.tile(np.arange(K), S)
    for lo in range(0, len(all_s), 2048):
        s_idx, k_idx = all_s[lo:lo + 2048], all_k[lo:lo + 2048]
        batch = build_windows(panel, series[s_idx], origin_idx[k_idx], rules, spec.signal_codes(), thr[s_idx])
        if len(batch) != len(s_idx):
            raise SystemExit("schedules: some windows were not usable")
        fc = model.predict(batch, [(0.0, 1.0)] * len(batch), explain=False)  # type: ignore[attr-defined]
        for label, pr in fc.breach_probability.items():
            out[label][s_idx, k_idx] = pr
        reach = min(fc.quantiles.shape[1], LOOKAHEAD // STEP)
        idx = first_crossing(fc.quantiles[:, :reach, 1], thr[s_idx])
        out["eta50"][s_idx, k_idx] = np.where(idx >= 0, (idx + 1) * STEP, np.inf)
        keys = [names[series[s, 0]] for s in s_idx]
        sigs = [sig[series[s, 1]] for s in s_idx]
        times = cycles[k_idx, None] + (np.arange(reach)[None, :] + 1.0) * STEP
        above = fc.quantiles[:, :reach, 2] > thr[s_idx, None]
        out["quiet"][s_idx, k_idx] = schedules.breach_explained(keys, sigs, times, above) == 1  # type: ignore[attr-defined]
        out["p50"][s_idx, k_idx] = fc.quantiles[:, :, 1]
        out["last"][s_idx, k_idx] = batch.last_value
    return out


def false_near_jobs(rule: Rule, incidents: list, runs: list, grid: np.ndarray) -> tuple[int, int]:
    """(false episodes near a job run of the same host and signal, other false episodes), as score() counts false."""
    by_series = defaultdict(list)
    for inc in incidents:
        by_series[(inc.instance, inc.signal)].append(inc)
    jobs = defaultdict(list)
    for r in runs:
        for s in r.signals:
            jobs[(r.instance, s)].append(r)
    near = other = 0
    for key, fire in rule.firing.items():
        for lo, hi in episodes(fire):
            t0, t1 = grid[lo], grid[hi - 1]
            if any(t1 >= inc.breach_start - LOOKAHEAD and t0 <= (inc.breach_end or inc.breach_start)
                   for inc in by_series.get(key, [])):
                continue
            if any(t1 >= r.start - NEAR and t0 <= r.end + NEAR for r in jobs.get(key, [])):
                near += 1
            else:
                other += 1
    return near, other


def rise(fc: dict[str, np.ndarray], panel: object, cycles: np.ndarray, runs: list, lead: float,
         ) -> dict[str, tuple[float, float, int]]:
    """Per signal a job loads: (mean forecast rise, mean actual rise, runs) over each run's steps, for the
    forecast made ``lead`` seconds before it starts; rises are p50 (or actual) minus the last value."""
    sig = list(panel.signals)  # type: ignore[attr-defined]
    names = list(panel.instances)  # type: ignore[attr-defined]
    ts = panel.timestamps  # type: ignore[attr-defined]
    got: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in runs:
        k = int(np.searchsorted(cycles, r.start - lead))
        if k >= len(cycles) or cycles[k] != r.start - lead:
            continue
        for s_name in r.signals:
            s = names.index(r.instance) * len(sig) + sig.index(s_name)
            steps = np.arange(int(lead // STEP), int((r.end - r.start + lead) // STEP))
            steps = steps[steps < fc["p50"].shape[2]]
            t_idx = np.searchsorted(ts, cycles[k] + (steps + 1) * STEP)
            if t_idx.max() >= len(ts):
                continue
            actual = panel.values[names.index(r.instance), sig.index(s_name), t_idx]  # type: ignore[attr-defined]
            base = fc["last"][s, k]
            got[s_name].append((float(np.mean(fc["p50"][s, k, steps]) - base), float(np.mean(actual) - base)))
    return {s: (float(np.mean([a for a, _ in v])), float(np.mean([b for _, b in v])), len(v)) for s, v in got.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", type=int, default=8)
    p.add_argument("--train-days", type=float, default=14.0)
    p.add_argument("--train-seed", type=int, default=11)
    p.add_argument("--eval-seed", type=int, default=23, help="a fleet the models never saw")
    p.add_argument("--eval-days", type=float, default=4.0)
    p.add_argument("--every", default="15m", help="forecast interval to emulate")
    p.add_argument("--budget", type=float, default=5.0, help="training minutes per model")
    p.add_argument("--seed", type=int, default=42, help="training seed")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", default="runs/bench-schedules")
    args = p.parse_args()
    began = time.monotonic()

    import torch

    torch.set_num_threads(args.threads)
    from forecaster.contract.config import DEFAULT_SIGNALS, parse_config

    config = parse_config({"schedules": SCHEDULES}, "benchmark")
    declared = config.schedule_set
    signals = [s.name for s in DEFAULT_SIGNALS]
    thresholds = {s.name: s.threshold for s in DEFAULT_SIGNALS}
    every = parse_duration(args.every)

    t_end = float(ANCHOR - 10 * 86400)  # training history ends well before the evaluation window
    _, train_panel = fleet_panel(args.hosts, args.train_seed, t_end - args.train_days * 86400, t_end, signals)
    models = {False: train(train_panel, declared, False, args, thresholds),
              True: train(train_panel, declared, True, args, thresholds)}

    e1 = float(ANCHOR)
    e0 = e1 - args.eval_days * 86400
    context = max(m.spec.context_steps for m in models.values())  # type: ignore[attr-defined]
    fleet, panel = fleet_panel(args.hosts, args.eval_seed, e0 - context * STEP - 3600, e1 + 9 * 3600, signals)
    cycles = np.arange(math.ceil(e0 / every) * every, e1 + 1, every)
    grid = np.arange(e0, e1 + 1, GRID)
    keys = [(h, s) for h in fleet.names for s in signals]  # type: ignore[attr-defined]
    incidents = [r for r in fleet.incidents(e0, e1) if r.signal in signals and r.breach_start is not None  # type: ignore[attr-defined]
                 and e0 + LOOKAHEAD <= r.breach_start <= e1]
    runs = fleet.job_runs(e0, e1)  # type: ignore[attr-defined]
    host_days = args.hosts * args.eval_days

    forecasts = {w: forecast(m, panel, declared, cycles, thresholds) for w, m in models.items()}
    setups = [("no schedules", False, False), ("declared, model without the input", False, True),
              ("declared, model with the input", True, True)]
    print(f"Schedule-aware forecasts: trained on seed {args.train_seed} ({args.hosts} hosts, {args.train_days:g} "
          f"days, {args.budget:g} min each), evaluated on seed {args.eval_seed} ({args.hosts} hosts, "
          f"{args.eval_days:g} days, forecasts every {args.every}); {len(runs)} job runs, {len(incidents)} "
          f"incidents\n")
    print("| set-up | false pages near jobs /host-day | false warnings near jobs /host-day | "
          "other false alerts /host-day | incidents warned before the breach |")
    print("|---|---|---|---|---|")
    for name, with_input, declared_on in setups:
        fc = forecasts[with_input]
        quiet = fc["quiet"] if declared_on else None
        probs = {label: fc[label] for label in fc if label not in ("eta50", "quiet", "p50", "last")}
        rules = shipped_tft_rules(probs, fc["eta50"], dict(models[with_input].breach.cutoffs),  # type: ignore[attr-defined]
                                  cycles, grid, keys, quiet)
        pages = Rule("pages", 0.0, {k: rules[0].firing[k] | rules[1].firing[k] for k in keys})
        union = Rule("any", 0.0, {k: pages.firing[k] | rules[2].firing[k] for k in keys})
        page_near, _ = false_near_jobs(pages, incidents, runs, grid)
        warn_near, _ = false_near_jobs(rules[2], incidents, runs, grid)
        _, other = false_near_jobs(union, incidents, runs, grid)
        scored = score(union, incidents, grid, args.hosts, args.eval_days)
        print(f"| {name} | {page_near / host_days:.2f} ({page_near}) | {warn_near / host_days:.2f} ({warn_near}) | "
              f"{other / host_days:.2f} ({other}) | {scored['warned']}/{scored['incidents']} |")

    print("\nDoes the p50 forecast rise with the planned job? Mean over each run of (p50 - last value) for the "
          "forecast made before it starts, against the actual (same base):\n")
    print("| lead | signal | runs | actual rise | p50 rise, without the input | p50 rise, with the input |")
    print("|---|---|---|---|---|---|")
    for lead in (3600, 1800):
        without = rise(forecasts[False], panel, cycles, runs, lead)
        with_ = rise(forecasts[True], panel, cycles, runs, lead)
        for s in sorted(without):
            print(f"| {lead // 60} min | {s} | {without[s][2]} | {without[s][1]:+.3f} | {without[s][0]:+.3f} | "
                  f"{with_[s][0]:+.3f} |")
    print(f"\n{time.monotonic() - began:.0f}s on {os.cpu_count()} cores with {args.threads} torch thread(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
