"""Benchmark: early warning on simulated fleets, the shipped alert rules against node-mixin's ``predict_linear``.

    python3 benchmarks/early_warning.py                               # shipped model, 20 hosts, 7 days
    python3 benchmarks/early_warning.py --model.dir DIR --hosts 40 --days 14 --every 5m --threads 2

No Prometheus is involved: the fleet is the simulator's pure functions (``exporter.Fleet``) and
the ground truth its incident records. What is evaluated:

* **The shipped TFT alert rules**, with the horizons, ETA cut-off and ``for`` durations of their
  one config place (``SETTINGS`` in ``monitoring/settings.py``, rendered into
  ``prometheus/rules/tft-alerts.rules.yml``) and the model's own probability cut-offs, as the
  rules read them from ``tft_breach_probability_cutoff``: ``TFTBreachLikelyWithin1h`` (P(breach
  within 1h) >= the model's 1h cut-off for 5m), ``TFTBreachForecastWithin1h`` (p50 path crosses
  within 1h, for 5m), ``TFTBreachLikelyWithin8h`` (P(8h) >= the model's 8h cut-off unless a
  critical one holds, for 15m), and any of the three. The forecasts come from the forecaster's
  own pipeline (``panel`` -> ``features.build_windows`` -> ``model.predict``, the model loaded
  through ``ModelStore`` as the service loads it), made every ``--every`` (the forecaster's
  interval) from the signals on the 5-minute grid the forecaster queries; between cycles a
  forecast series keeps its value, as in Prometheus.
* **The demo's warning**: any P(h) at or above the model's own cut-off, or a p50/p90 path that
  crosses within 8 h (no ``for``).
* **node-mixin style**: ``predict_linear(signal[1h], 4h) > threshold`` on the signal sampled every
  60 s, ``for`` 15m and, as node-mixin's filesystem alerts use, ``for`` 1h.
* **Static threshold** ``signal > threshold for 5m``: the reactive alert, for reference (it can
  only fire after the breach has begun).

Scoring, per (instance, signal) series: an *alert* is one firing episode. An incident is warned
when a rule fires on its series in the 8 h before its breach starts; its lead time is breach
start minus the first such firing. Recall counts incidents warned before the breach (and at
least 30 min before). Precision is the share of episodes that overlap an incident's window
(8 h before its breach to its end); the others are false alarms, also given per host-day.
Incidents of the ``network`` signal are left out: the default signals do not include it. The
*ceiling* line counts the incidents whose signal began to move (the ground truth's ``ramp_start``)
at least 30 min before the breach: no rule, however good its forecasts, warns the others 30 min
ahead, so no ">= 30 min" recall can exceed it.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STEP = 300  # the forecaster's query step
GRID = 60  # rule evaluation grid (Prometheus evaluates every 15 s; 60 s is close enough for minute-scale leads)
LOOKAHEAD = 8 * 3600
MIN_LEAD = 1800
ANCHOR = 1_750_000_000 // 300 * 300


@dataclass
class Rule:
    name: str
    for_seconds: float
    firing: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # bool on the 60 s grid


def parse_duration(text: str) -> float:
    from exporter.config import parse_duration as parse

    return parse(text)


def load_model(source: Path, signals: list[str]) -> object:
    from forecaster.serving.store import ModelStore

    store = ModelStore(source, step_seconds=STEP, signals=signals)
    store.refresh()
    models = store.current()
    if models.in_fallback:
        raise SystemExit(f"early_warning: no model to evaluate: {models.fallback_reason} (give --model.dir)")
    return models.global_model


def hold(cond: np.ndarray, for_seconds: float, step: float) -> np.ndarray:
    """Prometheus's ``for``: true where ``cond`` has held for at least ``for_seconds`` (per row, on a grid)."""
    need = math.ceil(for_seconds / step)
    run = np.zeros(cond.shape, dtype=np.int64)
    count = np.zeros(cond.shape[:-1], dtype=np.int64)
    for k in range(cond.shape[-1]):
        count = np.where(cond[..., k], count + 1, 0)
        run[..., k] = count
    return run > need if need > 0 else cond.copy()


def step_function(values: np.ndarray, cycle_times: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Values made at ``cycle_times`` [..., K] held until the next cycle, sampled on ``grid``."""
    idx = np.searchsorted(cycle_times, grid, side="right") - 1
    out = values[..., np.clip(idx, 0, None)]
    out[..., idx < 0] = False if values.dtype == bool else np.nan
    return out


def predict_linear(values: np.ndarray, window: int, ahead: float, step: float) -> np.ndarray:
    """``predict_linear(x[window*step], ahead)`` at every point: least squares over the window, at t + ahead."""
    n = values.shape[-1]
    out = np.full(values.shape, np.nan)
    t = np.arange(n, dtype=np.float64) * step
    for k in range(window, n):
        tt = t[k - window: k + 1]
        yy = values[..., k - window: k + 1]
        tm = tt.mean()
        slope = ((tt - tm) * (yy - yy.mean(axis=-1, keepdims=True))).sum(axis=-1) / ((tt - tm) ** 2).sum()
        out[..., k] = yy.mean(axis=-1) + slope * (t[k] - tm) + slope * ahead
    return out


def episodes(firing: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) index pairs of maximal runs of True (end exclusive)."""
    padded = np.concatenate([[False], firing, [False]]).astype(np.int8)
    edges = np.diff(padded)
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


def first_warning(fire: np.ndarray, grid: np.ndarray, inc: object) -> float | None:
    """When ``fire`` (on ``grid``) first held in the 8 h before the incident's breach; None if it never did."""
    window = (grid >= inc.breach_start - LOOKAHEAD) & (grid < inc.breach_start) & fire  # type: ignore[attr-defined]
    return float(grid[np.argmax(window)]) if window.any() else None


def score(rule: Rule, incidents: list, grid: np.ndarray, hosts: int, days: float) -> dict[str, object]:
    by_series = defaultdict(list)
    for inc in incidents:
        by_series[(inc.instance, inc.signal)].append(inc)
    leads = []
    warned_30 = 0
    per_kind: dict[str, list[float | None]] = defaultdict(list)
    for inc in incidents:
        fire = rule.firing.get((inc.instance, inc.signal))
        first = first_warning(fire, grid, inc) if fire is not None else None
        lead = None if first is None else float(inc.breach_start - first)
        per_kind[inc.kind].append(lead)
        if lead is not None:
            leads.append(lead)
            warned_30 += lead >= MIN_LEAD
    true = false = 0
    for key, fire in rule.firing.items():
        for lo, hi in episodes(fire):
            t0, t1 = grid[lo], grid[hi - 1]
            hit = any(t1 >= inc.breach_start - LOOKAHEAD and t0 <= (inc.breach_end or inc.breach_start)
                      for inc in by_series.get(key, []))
            true += hit
            false += not hit
    n = len(incidents)
    return {"rule": rule.name, "for": rule.for_seconds, "alerts": true + false,
            "precision": true / (true + false) if true + false else float("nan"),
            "warned": len(leads), "incidents": n, "recall": len(leads) / n if n else float("nan"),
            "recall30": warned_30 / n if n else float("nan"),
            "median_lead": statistics.median(leads) if leads else float("nan"),
            "false_per_host_day": false / (hosts * days), "per_kind": per_kind}


def shipped_tft_rules(probs: dict[str, np.ndarray], eta50: np.ndarray, cutoffs: dict[str, float],
                      cycles: np.ndarray, grid: np.ndarray, keys: list[tuple[str, str]],
                      quiet: np.ndarray | None = None) -> list[Rule]:
    """The three predicted-breach rules as shipped (``SETTINGS``), on forecasts [S, K] made at ``cycles``,
    held between cycles and evaluated on ``grid``; ``keys[s]`` is series s's (instance, signal).

    ``quiet`` [S, K] marks forecasts whose breach the declared schedules explain
    (``tft_breach_scheduled`` 1): the shipped rules do not page on them (``unless on (...)``).
    """
    from monitoring.settings import SETTINGS

    st = SETTINGS
    # The rules compare with the model's cut-off (tft_breach_probability_cutoff); the stand-in
    # only where the model has none for that horizon.
    crit_cut = cutoffs.get(st.critical_horizon, st.absent_cutoff)
    warn_cut = cutoffs.get(st.warning_horizon, st.absent_cutoff)
    crit_p = probs[st.critical_horizon] >= crit_cut
    crit_eta = eta50 <= st.critical_eta_seconds
    warn_8h = (probs[st.warning_horizon] >= warn_cut) & ~crit_p & ~crit_eta
    if quiet is not None:
        crit_p, crit_eta, warn_8h = crit_p & ~quiet, crit_eta & ~quiet, warn_8h & ~quiet

    def tft_rule(name: str, cond: np.ndarray, for_text: str) -> Rule:
        rule = Rule(name, parse_duration(for_text))
        firing = hold(step_function(cond, cycles, grid), rule.for_seconds, GRID)
        rule.firing = {key: firing[n] for n, key in enumerate(keys)}
        return rule

    return [
        tft_rule(f"TFTBreachLikelyWithin1h: P({st.critical_horizon}) >= {crit_cut:g} (model cut-off)", crit_p,
                 st.critical_for),
        tft_rule(f"TFTBreachForecastWithin1h: p50 ETA <= {st.critical_eta_seconds}s", crit_eta, st.critical_for),
        tft_rule(f"TFTBreachLikelyWithin8h: P({st.warning_horizon}) >= {warn_cut:g} (model cut-off)", warn_8h,
                 st.warning_for),
    ]


RAMP_KINDS = ("memory_leak", "disk_fill", "cpu_saturation")


def ramp_table(p50_rule: Rule, incidents: list, eta50: np.ndarray, p50_1h: np.ndarray, cycles: np.ndarray,
               grid: np.ndarray, keys: list[tuple[str, str]], series: np.ndarray, t60: np.ndarray,
               values: np.ndarray) -> None:
    """Does the median path follow a ramp? For the leaks, disk fills and CPU saturations: how many the
    p50-path rule warned at least 30 min ahead; how far its ETA was from the true time to breach at
    its first firing (error over the true time; the issue's goal: within 25 % for most); and how much
    of the rise over the next hour the p50 carried, from the forecasts 2 h, 1 h and 30 min before the
    breach (1: all of it, as a line that keeps the ramp's rate would; 0 or less: a flat or falling path)."""
    row = {key: n for n, key in enumerate(keys)}
    ramps = [inc for inc in incidents if inc.kind in RAMP_KINDS]
    if not ramps:
        return
    warned30, eta_errors = 0, []
    carried: dict[int, list[float]] = {120: [], 60: [], 30: []}
    for inc in ramps:
        s = row[(inc.instance, inc.signal)]
        first = first_warning(p50_rule.firing[(inc.instance, inc.signal)], grid, inc)
        if first is not None:
            warned30 += inc.breach_start - first >= MIN_LEAD
            k = int(np.searchsorted(cycles, first, side="right") - 1)  # the forecast the firing rests on
            true_eta = inc.breach_start - cycles[k]
            eta_errors.append(abs(eta50[s, k] - true_eta) / true_eta)
        i, j = series[s]
        for before, got in carried.items():
            k = int(np.searchsorted(cycles, inc.breach_start - before * 60, side="right") - 1)
            if k < 0:  # no forecast that early
                continue
            now, later = (int(np.searchsorted(t60, cycles[k] + d)) for d in (0, 3600))
            if later >= len(t60):  # the forecast's hour runs past the data
                continue
            rise = values[i, j, later] - values[i, j, now]
            if abs(rise) > 1e-9:
                got.append(float((p50_1h[s, k] - values[i, j, now]) / rise))
    within = sum(e <= 0.25 for e in eta_errors)
    print(f"\nThe median path on the {len(ramps)} ramps (memory leaks, disk fills, CPU saturations):\n")
    print("| p50-path rule warned >= 30 min ahead | ETA error at its first firing: median | within 25 % | "
          "share of the next hour's rise in the p50, 2 h / 1 h / 30 min before the breach (median) |")
    print("|---|---|---|---|")
    med = " / ".join(f"{statistics.median(v):.2f}" if v else "-" for v in carried.values())
    print(f"| {warned30}/{len(ramps)} | {_pct(statistics.median(eta_errors)) if eta_errors else '-'} | "
          f"{within}/{len(eta_errors)} | {med} |")


def next_step_line(p50_5m: np.ndarray, series: np.ndarray, cycles: np.ndarray, t60: np.ndarray,
                   values: np.ndarray) -> None:
    """The p50 five minutes ahead against the last value (the naive forecast), per series: the issue's
    "at least as accurate as the last value" on a simulated fleet, as benchmarks/next_step_vs_naive.py
    measures it on the protocol's datasets (median over series of the p50's mean absolute error over
    the last value's)."""
    now = np.searchsorted(t60, cycles)
    ahead = np.searchsorted(t60, cycles + STEP)
    keep = ahead < len(t60)
    ratios = []
    for s, (i, j) in enumerate(series):
        last, truth = values[i, j, now[keep]], values[i, j, ahead[keep]]
        naive = np.abs(truth - last).mean()
        if naive > 0:
            ratios.append(float(np.abs(truth - p50_5m[s, keep]).mean() / naive))
    if ratios:
        better = sum(r < 1 for r in ratios)
        print(f"\nThe p50 five minutes ahead against the last value: median error ratio over series "
              f"{statistics.median(ratios):.3f} ({better} of {len(ratios)} series better than the last value)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model.dir", dest="model_dir", type=Path, default=None,
                   help="model registry or model directory (default: the shipped models/)")
    p.add_argument("--hosts", type=int, default=20)
    p.add_argument("--days", type=float, default=7.0, help="days of alert evaluation (default: 7)")
    p.add_argument("--seed", type=int, default=7, help="simulation seed (default 7: not the training seed 42)")
    p.add_argument("--scenario", default="degrading")
    p.add_argument("--every", default="15m", help="forecast interval to emulate (default 15m; the service runs 5m)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    args = p.parse_args()
    began = time.monotonic()

    import torch

    torch.set_num_threads(args.threads)
    from exporter import Fleet
    from forecaster.contract.config import DEFAULT_SIGNALS, HORIZON_LABELS
    from forecaster.contract.features import build_windows, first_crossing
    from forecaster.contract.panel import Panel
    from forecaster.serving.store import default_registry_dir

    every = parse_duration(args.every)
    if every % STEP:
        p.error(f"--every must be a multiple of {STEP}s")
    signals = [s.name for s in DEFAULT_SIGNALS]
    loaded = load_model(args.model_dir or default_registry_dir(), signals)
    model = loaded.model  # type: ignore[attr-defined]
    spec = model.spec
    thresholds = {s.name: s.threshold for s in DEFAULT_SIGNALS}
    cutoffs = dict(model.breach.cutoffs)

    fleet = Fleet(args.hosts, seed=args.seed, scenario=args.scenario, anchor=ANCHOR)
    e1 = float(ANCHOR + 2 * 3600)  # includes the scenario's scripted incidents around the anchor
    e0 = e1 - args.days * 86400
    first = e0 - spec.lookback_steps * STEP - 3600  # model context and predict_linear's hour before e0
    t60 = np.arange(first, e1 + 1, GRID)
    sig = list(spec.signals)
    values = np.stack([np.stack(list(fleet.model(h).signals(t60, sig).values())) for h in fleet.names])
    grid_mask = t60 >= e0
    grid = t60[grid_mask]
    at5 = (t60 % STEP) == 0
    panel = Panel(list(fleet.names), sig, t60[at5].astype(np.int64), values[:, :, at5].astype(np.float32), STEP)

    # Forecasts at every cycle, as the forecaster makes them.
    cycles = np.arange(math.ceil(e0 / every) * every, e1 + 1, every)
    origin_idx = np.searchsorted(panel.timestamps, cycles)
    series = np.array([(i, j) for i in range(len(fleet.names)) for j in range(len(sig))], dtype=np.int64)
    thr = np.array([thresholds[sig[j]] for _, j in series])
    rules_w = spec.window_rules(min(72, spec.context_steps))
    S, K = len(series), len(cycles)
    probs = {label: np.full((S, K), np.nan) for label in HORIZON_LABELS}
    eta50 = np.full((S, K), np.inf)
    eta90 = np.full((S, K), np.inf)
    p50_1h = np.full((S, K), np.nan)  # the median one hour ahead, for the ramps' table
    p50_5m = np.full((S, K), np.nan)  # ... and five minutes ahead, against the last value
    all_s = np.repeat(np.arange(S), K)
    all_k = np.tile(np.arange(K), S)
    block = 2048
    for lo in range(0, len(all_s), block):
        s_idx, k_idx = all_s[lo:lo + block], all_k[lo:lo + block]
        batch = build_windows(panel, series[s_idx], origin_idx[k_idx], rules_w, spec.signal_codes(), thr[s_idx])
        if len(batch) != len(s_idx):
            raise SystemExit("early_warning: some windows were not usable (gaps in the simulated data?)")
        fc = model.predict(batch, [(0.0, 1.0)] * len(batch))
        for label, pr in fc.breach_probability.items():
            probs[label][s_idx, k_idx] = pr
        p50_1h[s_idx, k_idx] = fc.quantiles[:, 3600 // STEP - 1, 1]
        p50_5m[s_idx, k_idx] = fc.quantiles[:, 0, 1]
        reach = min(fc.quantiles.shape[1], LOOKAHEAD // STEP)
        for arr, qi in ((eta50, 1), (eta90, 2)):
            idx = first_crossing(fc.quantiles[:, :reach, qi], thr[s_idx])
            arr[s_idx, k_idx] = np.where(idx >= 0, (idx + 1) * STEP, np.inf)
        done = min(lo + block, len(all_s))
        print(f"  forecasts: {done}/{len(all_s)} windows ({time.monotonic() - began:.0f}s)", file=sys.stderr)

    keys = [(fleet.names[i], sig[j]) for i, j in series]
    rules = shipped_tft_rules(probs, eta50, cutoffs, cycles, grid, keys)
    union = Rule("any shipped TFT rule", 0.0, {k: rules[0].firing[k] | rules[1].firing[k] | rules[2].firing[k]
                                               for k in rules[0].firing})

    def tft_rule(name: str, cond: np.ndarray, for_text: str | None) -> Rule:
        rule = Rule(name, parse_duration(for_text) if for_text else 0.0)
        on_grid = step_function(cond, cycles, grid)
        firing = hold(on_grid, rule.for_seconds, GRID) if for_text else on_grid
        rule.firing = {key: firing[n] for n, key in enumerate(keys)}
        return rule

    demo_cond = (eta50 < np.inf) | (eta90 < np.inf)
    for label, cut in cutoffs.items():
        if label in probs:
            demo_cond |= probs[label] >= cut
    rules += [union, tft_rule("demo warning: P(h) >= model cut-off or p50/p90 path within 8h", demo_cond, None)]

    thr_by = np.array([thresholds[s] for s in sig])[None, :, None]
    linear = predict_linear(values, 3600 // GRID, 4 * 3600, GRID)[:, :, grid_mask] > thr_by
    static = values[:, :, grid_mask] > thr_by
    for name, cond, for_text in (("predict_linear(signal[1h], 4h) > threshold", linear, "15m"),
                                 ("predict_linear(signal[1h], 4h) > threshold", linear, "1h"),
                                 ("static: signal > threshold", static, "5m")):
        firing = hold(cond, parse_duration(for_text), GRID)
        rules.append(Rule(name, parse_duration(for_text), {(h, s): firing[i, j] for i, h in enumerate(fleet.names)
                                                          for j, s in enumerate(sig)}))

    incidents = [r for r in fleet.incidents(e0, e1) if r.signal in sig and r.breach_start is not None
                 and e0 + LOOKAHEAD <= r.breach_start <= e1]
    results = [score(r, incidents, grid, args.hosts, args.days) for r in rules]

    kinds = defaultdict(int)
    for inc in incidents:
        kinds[inc.kind] += 1
    print(f"Early warning on a simulated fleet: {args.hosts} hosts, {args.days:g} days, scenario {args.scenario}, "
          f"seed {args.seed}; model {loaded.version} ({spec.hidden_size} hidden, "  # type: ignore[attr-defined]
          f"{spec.context_steps}+{spec.horizon_steps} steps); forecasts every {args.every}")
    print(f"{len(incidents)} incidents with a breach at least 8h into the window: "
          + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    # A rule can only warn 30 min ahead of a breach that had begun to show by then: the incidents that
    # start at a random time and breach within 30 min set the ceiling of every rule's ">= 30 min" recall.
    sudden = Counter(inc.kind for inc in incidents if inc.breach_start - inc.ramp_start < MIN_LEAD)
    movable = len(incidents) - sum(sudden.values())
    print(f"ceiling: {movable} of them ({_pct(movable / len(incidents) if incidents else float('nan'))}) began to move "
          "at least 30 min before their breach, the most any rule can warn >= 30 min ahead"
          + (f" (breached within 30 min of their start: {', '.join(f'{k} {v}' for k, v in sorted(sudden.items()))})"
             if sudden else ""))
    print(f"model cut-offs: {', '.join(f'{k} {v:.2f}' for k, v in cutoffs.items())}\n")
    print("| rule | for | alerts | precision | warned before the breach | recall | recall, >= 30 min ahead | "
          "median lead | false alarms per host-day |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['rule']} | {_dur(r['for'])} | {r['alerts']} | {_pct(r['precision'])} | "
              f"{r['warned']}/{r['incidents']} | {_pct(r['recall'])} | {_pct(r['recall30'])} | "
              f"{_dur(r['median_lead'])} | {r['false_per_host_day']:.2f} |")
    print("\nRecall and median lead by incident kind:\n")
    shown = [results[3], results[4], results[5]]
    print("| kind | incidents | " + " | ".join(f"{r['rule']}{' for ' + _dur(r['for']) if r['for'] else ''}"
                                              for r in shown) + " |")
    print("|---|---|" + "---|" * len(shown))
    for kind in sorted(kinds):
        cells = []
        for r in shown:
            leads = r["per_kind"].get(kind, [])  # type: ignore[union-attr]
            got = [x for x in leads if x is not None]
            cells.append(f"{len(got)}/{len(leads)}, {_dur(statistics.median(got)) if got else '-'}")
        print(f"| {kind} | {kinds[kind]} | " + " | ".join(cells) + " |")
    ramp_table(rules[1], incidents, eta50, p50_1h, cycles, grid, keys, series, t60, values)
    next_step_line(p50_5m, series, cycles, t60, values)
    print(f"\n{len(cycles)} cycles x {S} series = {S * K} forecasts; {time.monotonic() - began:.0f}s on "
          f"{os.cpu_count()} cores with {args.threads} torch thread(s)")
    return 0


def _pct(x: object) -> str:
    return "-" if not isinstance(x, float) or math.isnan(x) else f"{100 * x:.0f}%"


def _dur(seconds: object) -> str:
    if not isinstance(seconds, int | float) or math.isnan(seconds) or seconds == 0:
        return "-"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes}m"
    return f"{minutes // 60}h" + (f"{minutes % 60:02d}m" if minutes % 60 else "")


if __name__ == "__main__":
    sys.exit(main())
