"""Benchmark: the demo end to end, ``tft-demo --for DURATION``: start-up time and the incidents' lead times.

    python3 benchmarks/demo_startup.py                       # 10 hosts x 30 days, forecasting for 10 minutes
    python3 benchmarks/demo_startup.py --for 2m --hosts 20 --model.dir DIR

Runs the real command in a fresh process on free ports with its own work dir, then prints its
start-up phases (from its JSON summary) and its own summary: each scripted incident, the first
warning and its lead time, and the verdict. The table's last column is the demo's exit status
(0: every incident the run could judge was predicted at least 30 min ahead).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", type=int, default=10)
    p.add_argument("--days", type=float, default=30.0)
    p.add_argument("--for", dest="duration", default="10m")
    p.add_argument("--model.dir", dest="model_dir", default=None)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="demo-bench-"))
    summary = work / "summary.json"
    cmd = [sys.executable, "-m", "demo", "--hosts", str(args.hosts), "--days", f"{args.days:g}", "--for",
           args.duration, "--work-dir", str(work / "demo"), "--output", str(summary), "--prometheus.port", "0",
           "--exporter.port", "0", "--forecaster.port", "0", "--no-view"]
    if args.model_dir:
        cmd += ["--model.dir", args.model_dir]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        if not summary.exists():
            print(proc.stdout[-3000:] + proc.stderr[-3000:], file=sys.stderr)
            return 1
        doc = json.loads(summary.read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    s = doc["startup_seconds"]
    model = doc.get("model") or {}
    name = "fallback" if model.get("source") == "fallback" else f"{model.get('scope')} {model.get('version')}"
    print(f"Demo start-up and lead times: `tft-demo --hosts {args.hosts} --days {args.days:g} --for {args.duration}`, "
          f"model {name}\n")
    print("| hosts x days | samples | backfill | Prometheus ready | forecaster's first cycle | start-up total | "
          "cycles | exit status |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {args.hosts} x {args.days:g} | {s['samples'] / 1e6:.1f} M | {s['backfill']:.1f} s | "
          f"{s['prometheus']:.1f} s | {s['forecaster']:.1f} s | {s['total']:.1f} s | {len(doc['cycles'])} | "
          f"{proc.returncode} |")
    text = proc.stdout
    print("\n" + text[text.index("Summary"):] if "Summary" in text else text[-2000:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
