"""Benchmark: does the forecast's driver weight of another signal rise before an incident it drives?

    python3 benchmarks/driver_weights.py                          # shipped model, 40 hosts, 7 days, critical
    python3 benchmarks/driver_weights.py --hosts 10 --days 3      # quick

The fleet is the simulator's pure functions (``exporter.Fleet``, no Prometheus) and the ground truth its
incident records. Two incident kinds move a second signal of the host with the breached one: an
``iowait_storm`` breaches iowait and drives cpu to a busy level with it; a ``cpu_saturation`` breaches cpu
and holds iowait at a fixed level. For each such incident the breached signal is forecast (the
forecaster's pipeline: ``build_windows`` then ``ForecastModel.predict``) every 15 minutes in the hour
before its breach starts, and the driver weight of the other signal is read
(``tft_forecast_driver_weight{driver=<other>}``); *quiet* is the same host and signal every 2 hours at
least 12 hours away from any of the host's incidents. The table gives the mean weights (and of ``own``)
before the incidents against quiet times. The model is the registry's ``latest`` (``--model.dir``,
default the shipped ``models/``).

With ``--led`` the fleet also has the simulator's *led* incidents (``led_incidents``,
exporter.incidents.LED_KINDS): an ``io_led_cpu`` has I/O wait climb 60-90 minutes before CPU saturates,
so iowait leads the cpu breach, which the two kinds above cannot show. A small TFT is trained for it
(``trainer.training.train_model``) on ``--train-days`` x ``--train-hosts`` of seed ``--train-seed``
with led incidents, unless ``--model.dir`` is given, and evaluated on the unseen ``--seed``; for
``io_led_cpu`` the cpu forecast is made every 15 minutes in the 2 hours before the breach:

    python3 benchmarks/driver_weights.py --led --hosts 40 --days 7     # about 1.5 minutes on one thread (7 epochs)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STEP = 300
ANCHOR = 1_750_000_000 // STEP * STEP
#: incident kind -> (breached signal, the other signal it moves)
PAIRS = {"iowait_storm": ("iowait", "cpu"), "cpu_saturation": ("cpu", "iowait")}
LED_PAIRS = {"io_led_cpu": ("cpu", "iowait")}  # with --led
BEFORE = (60 * 60, 15 * 60)  # origins from 60 to 15 minutes before the breach, every 15 minutes
#: Led incidents lead by 60-90 minutes: their origins span the 2 hours before the breach.
LED_BEFORE = (120 * 60, 15 * 60)


def train_led_model(args: argparse.Namespace, signals: list[str], thresholds: dict[str, float]) -> Any:
    """A small TFT trained on a fleet with led incidents (history of the unseen-by-evaluation train seed)."""
    from exporter import Fleet
    from forecaster.contract.model import ModelSpec
    from forecaster.contract.panel import Panel
    from trainer.training import TrainSettings, train_model

    fleet = Fleet(args.train_hosts, seed=args.train_seed, scenario=args.scenario, anchor=ANCHOR, led=True)
    t = np.arange(ANCHOR - args.train_days * 86400, ANCHOR + 1, STEP, dtype=np.float64)
    values = np.stack([np.stack(list(fleet.model(h).signals(t, signals).values())) for h in fleet.names])
    panel = Panel(list(fleet.names), signals, t.astype(np.int64), values.astype(np.float32), STEP)
    n_led = sum(r.kind in LED_PAIRS for r in fleet.incidents(float(t[0]), float(t[-1])))
    spec = ModelSpec(signals=signals, context_steps=96, horizon_steps=96, hidden_size=args.hidden,
                     attention_heads=2, hidden_continuous_size=8, min_history_steps=48, dropout=0.1)
    settings = TrainSettings(batch_size=64, batches_per_epoch=50, max_epochs=args.epochs, learning_rate=3e-3,
                             early_stopping_patience=args.epochs, time_budget_seconds=args.budget * 60,
                             seed=args.train_seed, validation_windows=1024, breach_windows=3000,
                             accelerator="cpu", devices=1, work_dir=Path(args.work))
    result = train_model(panel, spec, settings, validation_steps=2 * 288, thresholds_by_signal=thresholds)
    assert result is not None
    print(f"  trained on {args.train_hosts} hosts x {args.train_days:g} days (seed {args.train_seed}, "
          f"{n_led} led incidents): {result.epochs} epochs, {result.seconds:.0f}s ({result.stopped_because})",
          file=sys.stderr)
    return result.model
QUIET_EVERY = 2 * 3600
QUIET_AWAY = 12 * 3600


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", type=int, default=40)
    p.add_argument("--days", type=float, default=7)
    p.add_argument("--scenario", default="critical")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model.dir", dest="model_dir", type=Path, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--led", action="store_true",
                   help="add the led incidents (io_led_cpu) and train a small model on them (see above)")
    p.add_argument("--train-hosts", type=int, default=20)
    p.add_argument("--train-days", type=float, default=30)
    p.add_argument("--train-seed", type=int, default=7)
    p.add_argument("--epochs", type=int, default=7)
    p.add_argument("--hidden", type=int, default=16)
    p.add_argument("--budget", type=float, default=10, help="training time budget, minutes")
    p.add_argument("--work", default="/tmp/driver-weights-led")
    args = p.parse_args()
    began = time.monotonic()

    import torch

    torch.set_num_threads(args.threads)
    from exporter import Fleet
    from forecaster.contract.config import DEFAULT_SIGNALS
    from forecaster.contract.features import build_windows
    from forecaster.contract.panel import Panel
    from forecaster.serving.store import ModelStore, default_registry_dir

    signals = [s.name for s in DEFAULT_SIGNALS]
    thresholds = {s.name: s.threshold for s in DEFAULT_SIGNALS}
    pairs = {**PAIRS, **LED_PAIRS} if args.led else PAIRS
    if args.led and args.model_dir is None:
        model = train_led_model(args, signals, thresholds)
        version = f"trained here (hidden {args.hidden}, {args.epochs} epochs max)"
    else:
        store = ModelStore(args.model_dir or default_registry_dir(), step_seconds=STEP, signals=signals)
        store.refresh()
        loaded = store.current().global_model
        if loaded is None:
            raise SystemExit("driver_weights: no model to evaluate (give --model.dir)")
        model = loaded.model
        version = f"{loaded.version} ({'shipped' if args.model_dir is None else args.model_dir})"
    spec = model.spec
    sig = list(spec.signals)
    fleet = Fleet(args.hosts, seed=args.seed, scenario=args.scenario, anchor=ANCHOR, led=args.led)
    e1 = float(ANCHOR + 2 * 3600)
    e0 = e1 - args.days * 86400
    first = e0 - spec.lookback_steps * STEP
    t = np.arange(first // STEP * STEP, e1 + 1, STEP)
    values = np.stack([np.stack(list(fleet.model(h).signals(t, sig).values())) for h in fleet.names])
    panel = Panel(list(fleet.names), sig, t.astype(np.int64), values.astype(np.float32), STEP)
    host = {name: i for i, name in enumerate(fleet.names)}
    records = fleet.incidents(e0, e1)

    rows: dict[str, dict[str, list[float]]] = {}
    for kind, (breached, other) in pairs.items():
        before: list[tuple[int, int]] = []
        window = LED_BEFORE if kind in LED_PAIRS else BEFORE
        for r in records:
            if r.kind != kind or r.breach_start is None:
                continue
            for lead in range(window[0], window[1] - 1, -15 * 60):
                at = int((r.breach_start - lead) // STEP * STEP)
                if at - spec.context_steps * STEP >= first:
                    before.append((host[r.instance], int(np.searchsorted(t, at))))
        quiet: list[tuple[int, int]] = []
        busy: dict[int, list[tuple[float, float]]] = {}
        for r in records:
            busy.setdefault(host[r.instance], []).append((r.ramp_start - QUIET_AWAY, r.end + QUIET_AWAY))
        hosts_with = sorted({h for h, _ in before})
        for h in hosts_with:
            for at in np.arange(e0, e1, QUIET_EVERY):
                if all(not lo <= at <= hi for lo, hi in busy.get(h, [])):
                    quiet.append((h, int(np.searchsorted(t, at))))
        rows[kind] = {}
        for label, points in (("before", before), ("quiet", quiet)):
            if not points:
                rows[kind][label] = []
                rows[kind][label + "_own"] = []
                continue
            series = np.array([(h, sig.index(breached)) for h, _ in points], dtype=np.int64)
            origins = np.array([k for _, k in points], dtype=np.int64)
            batch = build_windows(panel, series, origins, spec.window_rules(), spec.signal_codes(),
                                  np.full(len(points), thresholds[breached]))
            fc = model.predict(batch, [(0.0, 1.0)] * len(batch))
            assert fc.drivers is not None
            rows[kind][label] = fc.drivers[:, fc.driver_names.index(other)].tolist()
            rows[kind][label + "_own"] = fc.drivers[:, fc.driver_names.index("own")].tolist()
        n_inc = len({(r.instance, r.breach_start) for r in records if r.kind == kind and r.breach_start is not None})
        rows[kind]["incidents"] = [float(n_inc)]

    print(f"\nmodel: {version}; "
          f"{args.hosts} hosts x {args.days:g} days, scenario {args.scenario}, seed {args.seed}"
          f"{', led incidents' if args.led else ''}; "
          f"{time.monotonic() - began:.0f} s on {args.threads} thread(s)\n")
    print("| incident | forecast of | other signal | incidents | origins before / quiet | other's weight before "
          "| quiet | ratio | own before | own quiet |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for kind, (breached, other) in pairs.items():
        r = rows[kind]
        b, q = np.array(r["before"]), np.array(r["quiet"])
        mb = float(b.mean()) if len(b) else float("nan")
        mq = float(q.mean()) if len(q) else float("nan")
        ob = float(np.mean(r["before_own"])) if r["before_own"] else float("nan")
        oq = float(np.mean(r["quiet_own"])) if r["quiet_own"] else float("nan")
        print(f"| {kind} | {breached} | {other} | {int(r['incidents'][0])} | {len(b)} / {len(q)} | {mb:.3f} | "
              f"{mq:.3f} | {mb / mq if mq else float('nan'):.2f} | {ob:.3f} | {oq:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
