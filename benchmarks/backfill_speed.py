"""Benchmark: ``tft-exporter backfill`` speed (OpenMetrics text plus promtool blocks) by fleet size.

    python3 benchmarks/backfill_speed.py                    # 30 days x 20 hosts
    python3 benchmarks/backfill_speed.py --hosts 20 200     # also 200 hosts (about 5 minutes on 2 cores)

Each size runs the real command, ``python3 -m exporter backfill --days D --hosts H --out DIR``, in a
fresh process: wall time includes process start-up, the text, promtool's block creation and the
incidents JSON. CPU is the user time of the command and its promtool children; peak RSS is the
largest of those processes (``ru_maxrss`` of the children).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", type=int, nargs="+", default=[20])
    p.add_argument("--days", type=float, default=30.0)
    args = p.parse_args()
    if shutil.which("promtool") is None:
        print("backfill_speed: promtool is not installed (apt-get install prometheus)", file=sys.stderr)
        return 1
    rows = []
    for hosts in args.hosts:
        out = Path(tempfile.mkdtemp(prefix=f"bf{hosts}-"))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "exporter", "backfill", "--days", f"{args.days:g}", "--hosts",
                               str(hosts), "--out", str(out)], cwd=ROOT, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        shutil.rmtree(out, ignore_errors=True)
        if proc.returncode != 0:
            print(proc.stderr[-2000:], file=sys.stderr)
            return 1
        match = re.search(r"(\d+) samples of", proc.stdout)
        samples = int(match.group(1)) if match else 0
        rows.append((hosts, samples, wall, after.ru_utime - before.ru_utime, after.ru_maxrss / 1024 / 1024))
    print(f"Backfill speed, {args.days:g} days, --series signals, 60 s interval\n")
    print("| fleet | command | samples | wall | CPU (user) | peak RSS of one process |")
    print("|---|---|---|---|---|---|")
    for hosts, samples, wall, user, rss in rows:
        print(f"| {args.days:g} days x {hosts} hosts | `tft-exporter backfill --days {args.days:g} --hosts {hosts} "
              f"--out DIR` | {samples / 1e6:.1f} M | {wall:.1f} s | {user:.1f} s | {rss:.1f} GB |")
    version = subprocess.run(["promtool", "--version"], capture_output=True, text=True, check=False).stdout
    print(f"\ncpu: {os.cpu_count()} cores; {(version.splitlines() or [''])[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
