"""Benchmark: training throughput (windows per second) of the library's forward and the fast one, side by side.

    python3 benchmarks/training_throughput.py                       # default model size, 1 and 2 threads
    python3 benchmarks/training_throughput.py --threads 1 --batches 16 --repeats 3
    python3 benchmarks/training_throughput.py --accelerator gpu --precision bf16-mixed --batch-size 64 256 1024

What is timed is ``trainer.training.train_model`` itself, with ``TrainSettings.fast_path`` off
(``library``: pytorch-forecasting's forward) and on (``fast``: forecaster/contract/fasttrain.py),
on the default model (hidden 32, 8 heads, 288 + 96 steps) and a simulated fleet (10 hosts x 8
days, 4 signals, 5-minute steps). A batch's time is the interval between the starts of two
consecutive training batches (Lightning callback): drawing and building the windows, forward,
pinball loss, backward, gradient clipping, Adam, logging. The first ``--skip`` batches of each
run are left out (allocator and kernel warm-up); the figure is the median of the rest, so one
batch slowed down by another process on a shared machine does not move it. Each thread count
runs in a fresh subprocess that alternates the two paths ``--repeats`` times (library, fast,
library, fast, ...), so both see the same machine. CPU seconds per batch (the process's, all
threads) are printed too: on a busy machine they move less than wall-clock time.

Window sampling is also timed alone (``WindowSampler.sample`` and the conversion to tensors, the
work of the training DataLoader), as it is part of every batch of either path.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ANCHOR = 1_750_000_000.0
PATHS = ("library", "fast")


def child(threads: int, args: argparse.Namespace) -> dict[str, Any]:
    """One process: sampling alone, then ``repeats`` alternating training runs per path and batch size."""
    import lightning.pytorch as pl
    import torch

    torch.set_num_threads(threads)
    from exporter import Fleet
    from forecaster.contract.config import DEFAULT_SIGNALS
    from forecaster.contract.model import ModelSpec
    from forecaster.contract.panel import panel_from_frame
    from trainer.training import TrainSettings, WindowSampler, _to_torch_batch, cut_slices, train_model

    cuda = args.accelerator not in ("cpu",) and torch.cuda.is_available()

    class BatchClock(pl.Callback):
        """Wall and CPU time at the start of every training batch (after the GPU caught up)."""

        def __init__(self) -> None:
            self.marks: list[tuple[float, float]] = []

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            if cuda:
                torch.cuda.synchronize()
            self.marks.append((time.perf_counter(), time.process_time()))

    clock = BatchClock()
    trainer_init = pl.Trainer.__init__

    def with_clock(self: Any, *a: Any, callbacks: list[Any] | None = None, **kw: Any) -> None:
        trainer_init(self, *a, callbacks=[*(callbacks or []), clock], **kw)

    pl.Trainer.__init__ = with_clock  # type: ignore[method-assign]

    fleet = Fleet(10, seed=3, scenario="degrading", anchor=ANCHOR)
    frame = fleet.signal_frame(ANCHOR - 8 * 86400, ANCHOR, 300.0)
    signals = [s.name for s in DEFAULT_SIGNALS]
    panel = panel_from_frame(frame, signals, 300)
    spec = ModelSpec(signals=signals)
    thresholds = {s.name: s.threshold for s in DEFAULT_SIGNALS}

    out: dict[str, Any] = {"sampling": {}, "runs": []}
    slices = cut_slices(panel, spec, TrainSettings(validation_windows=256), 288, thresholds)
    sampler = WindowSampler(panel, slices.split, slices.rules, spec.signal_codes(), slices.thresholds, 0)
    for batch_size in args.batch_size:
        _to_torch_batch(sampler.sample(batch_size))
        began = time.perf_counter()
        for _ in range(10):
            _to_torch_batch(sampler.sample(batch_size))
        out["sampling"][str(batch_size)] = (time.perf_counter() - began) / 10

    for batch_size in args.batch_size:
        for _ in range(args.repeats):
            for path in args.paths:
                clock.marks = []
                with tempfile.TemporaryDirectory(prefix="tput-") as work:
                    settings = TrainSettings(batch_size=batch_size, batches_per_epoch=args.batches, max_epochs=1,
                                             time_budget_seconds=3600, validation_windows=256, breach_windows=256,
                                             accelerator=args.accelerator,
                                             devices=1 if args.accelerator != "cpu" else "auto",
                                             precision=args.precision, work_dir=Path(work),
                                             fast_path=path == "fast")
                    train_model(panel, spec, settings, validation_steps=288, thresholds_by_signal=thresholds)
                marks = clock.marks[args.skip:]
                out["runs"].append({
                    "path": path, "batch_size": batch_size,
                    "wall": [b[0] - a[0] for a, b in itertools.pairwise(marks)],
                    "cpu": [b[1] - a[1] for a, b in itertools.pairwise(marks)],
                })
    return out


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batches", type=int, default=14, help="training batches per run (default 14; the last "
                                                          "one is not timed: validation follows it)")
    p.add_argument("--skip", type=int, default=2, help="first batches of a run left out (default 2)")
    p.add_argument("--repeats", type=int, default=2, help="runs per path, alternating (default 2)")
    p.add_argument("--batch-size", type=int, nargs="+", default=[64])
    p.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    p.add_argument("--accelerator", default="cpu", help="Lightning accelerator (default: cpu)")
    p.add_argument("--precision", default=None, help="Lightning precision (default: the trainer's: bf16-mixed on "
                                                       "GPUs with bf16, else 32-true)")
    p.add_argument("--json", type=Path, default=None, help="also write every batch's times here")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.batches < args.skip + 3:
        p.error("--batches must leave at least 3 batches after --skip")
    if args.child is not None:
        print(json.dumps(child(args.child, args)))
        return 0
    forwarded = ["--batches", str(args.batches), "--skip", str(args.skip), "--repeats", str(args.repeats),
                 "--batch-size", *map(str, args.batch_size), "--paths", *args.paths,
                 "--accelerator", args.accelerator, *(["--precision", args.precision] if args.precision else [])]
    results = {}
    for threads in args.threads:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
        proc = subprocess.run([sys.executable, __file__, "--child", str(threads), *forwarded],
                              capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        results[threads] = json.loads(proc.stdout.strip().splitlines()[-1])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))

    print(f"Training throughput, default model size (hidden 32, 8 heads, 288 + 96 steps), accelerator "
          f"{args.accelerator}, precision {args.precision or 'default'}; median of {args.repeats} x "
          f"{args.batches - args.skip - 1} batches per row\n")
    print("| torch threads | batch | forward | windows/s | s per batch | CPU s per batch | vs library |")
    print("|---|---|---|---|---|---|---|")
    for threads, res in results.items():
        for batch_size in args.batch_size:
            rows = {}
            for path in args.paths:
                runs = [r for r in res["runs"] if r["path"] == path and r["batch_size"] == batch_size]
                rows[path] = (_median([w for r in runs for w in r["wall"]]),
                              _median([c for r in runs for c in r["cpu"]]))
            for path, (wall, cpu) in rows.items():
                ratio = rows["library"][0] / wall if "library" in rows else float("nan")
                print(f"| {threads} | {batch_size} | {path} | {batch_size / wall:.1f} | {wall:.3f} | {cpu:.3f} | "
                      f"{ratio:.2f}x |")
    print()
    for threads, res in results.items():
        for batch_size, seconds in res["sampling"].items():
            print(f"window sampling alone, {threads} thread(s): {seconds * 1e3:.1f} ms per batch of {batch_size} "
                  f"({int(batch_size) / seconds:.0f} windows/s)")
    print(f"cpu: {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
