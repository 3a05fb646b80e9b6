"""Benchmark: training throughput of ``trainer/training.py`` (windows per second) by torch thread count.

    python3 benchmarks/training_throughput.py                    # default model size, 1 and 2 threads
    python3 benchmarks/training_throughput.py --threads 1 2 4 --batches 4 24

What is timed is ``trainer.training.train_model`` itself: window sampling, Lightning's loop,
forward, pinball loss, backward, Adam, on the default model (hidden 32, 8 heads, 288 + 96 steps,
batch 64) and a simulated fleet (10 hosts x 8 days, 4 signals, 5-minute steps). Each thread
count runs in a fresh subprocess, twice: with ``--batches`` B1 and B2 batches in one epoch.
Everything else (building the network, validation, calibration) is the same in both runs, so
``(B2 - B1) * batch / (t2 - t1)`` is the steady training rate without that fixed cost.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ANCHOR = 1_750_000_000.0


def child(threads: int, batches: int, batch_size: int, accelerator: str) -> dict[str, float]:
    import torch

    torch.set_num_threads(threads)
    from exporter import Fleet
    from forecaster.contract.config import DEFAULT_SIGNALS
    from forecaster.contract.model import ModelSpec
    from forecaster.contract.panel import panel_from_frame
    from trainer.training import TrainSettings, train_model

    fleet = Fleet(10, seed=3, scenario="degrading", anchor=ANCHOR)
    frame = fleet.signal_frame(ANCHOR - 8 * 86400, ANCHOR, 300.0)
    signals = [s.name for s in DEFAULT_SIGNALS]
    panel = panel_from_frame(frame, signals, 300)
    spec = ModelSpec(signals=signals)
    with tempfile.TemporaryDirectory(prefix="tput-") as work:
        settings = TrainSettings(batch_size=batch_size, batches_per_epoch=batches, max_epochs=1,
                                 time_budget_seconds=3600, validation_windows=256, breach_windows=256,
                                 accelerator=accelerator, devices=1 if accelerator != "cpu" else "auto",
                                 work_dir=Path(work))
        t0 = time.perf_counter()
        result = train_model(panel, spec, settings, validation_steps=288,
                             thresholds_by_signal={s.name: s.threshold for s in DEFAULT_SIGNALS})
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "epochs": result.epochs, "samples": result.samples_seen}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batches", type=int, nargs=2, default=[4, 20], metavar=("B1", "B2"))
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--accelerator", default="cpu", help="Lightning accelerator (default: cpu)")
    p.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.batch_size, args.accelerator)))
        return 0
    b1, b2 = sorted(args.batches)
    if b1 < 1 or b2 <= b1:
        p.error("--batches needs 1 <= B1 < B2")
    rows = []
    for threads in args.threads:
        times = {}
        for batches in (b1, b2):
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
            cmd = [sys.executable, __file__, "--child", str(threads), str(batches), "--batch-size",
                   str(args.batch_size), "--accelerator", args.accelerator]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
            times[batches] = json.loads(proc.stdout.strip().splitlines()[-1])["seconds"]
        rate = (b2 - b1) * args.batch_size / max(times[b2] - times[b1], 1e-9)
        rows.append((threads, times[b1], times[b2], rate))
    print(f"Training throughput, default model size (hidden 32, 8 heads, 288 + 96 steps), batch {args.batch_size}, "
          f"accelerator {args.accelerator}\n")
    print(f"| torch threads | run with {b1} batches (s) | run with {b2} batches (s) | windows per second | "
          "seconds per batch |")
    print("|---|---|---|---|---|")
    for threads, t1, t2, rate in rows:
        print(f"| {threads} | {t1:.1f} | {t2:.1f} | {rate:.1f} | {args.batch_size / rate:.2f} |")
    print(f"\ncpu: {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
