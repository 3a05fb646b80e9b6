"""Write a synthetic dataset in the benchmark protocol's format, to time `tft-trainer backtest`.

The issue's promise is about size: any dataset up to 50 series x 30 days at 5-minute steps must
finish within 30 minutes on 2 cores with the defaults. NAB is 20 series of mostly 14 days, so
this makes the largest case: daily and weekly cycles with noise, and every fifth series of each
kind (short spikes, a level shift, byte-sized values, a slow ramp), 1 % of points imputed.
Accuracy on it means little (the spikes are random); the timing and memory are the point.

    python3 benchmarks/protocol_dataset.py --series 50 --days 30 --out /tmp/big/data/big.parquet
    ln -s "$PWD/../shared/bench/score.py" /tmp/big/score.py   # optional: the scored table
    /usr/bin/time -v tft-trainer backtest --data /tmp/big/data/big.parquet --out /tmp/big/fc.parquet
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

STEPS_PER_DAY = 288


def make(series: int, days: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    n = days * STEPS_PER_DAY
    t = np.arange(n)
    frames, meta = [], []
    for s in range(series):
        kind = s % 5
        v = (rng.uniform(10, 60) + rng.uniform(2, 20) * np.sin(2 * np.pi * (t / STEPS_PER_DAY + rng.random()))
             + rng.uniform(0, 5) * np.sin(2 * np.pi * t / (7 * STEPS_PER_DAY)) + rng.normal(0, rng.uniform(0.5, 4), n))
        if kind == 1:  # short spikes at random times
            for k in rng.choice(n, 40, replace=False):
                v[k:k + rng.integers(2, 12)] += rng.uniform(20, 50)
        elif kind == 2:  # a level shift
            v[rng.integers(n // 3, n):] += rng.uniform(-20, 30)
        elif kind == 3:  # byte counts
            v = np.abs(v) * 1e8
        elif kind == 4:  # a slow ramp
            v += np.linspace(0, rng.uniform(10, 40), n)
        if kind != 3:
            v = np.clip(v, 0, None)
        sid = f"synthetic_{s:02d}"
        frames.append(pd.DataFrame({"series_id": sid, "timestamp": pd.date_range("2024-03-01", periods=n, freq="5min"),
                                    "value": v, "imputed": rng.random(n) < 0.01}))
        n_train = int(0.7 * n)
        percent = kind in (0, 4)
        meta.append({"series_id": sid, "n": n, "n_train": n_train,
                     "threshold": 90.0 if percent else float(np.percentile(v[:n_train], 99)),
                     "threshold_rule": "percent: 90" if percent else "p99 of the training part"})
    return pd.concat(frames, ignore_index=True), pd.DataFrame(meta)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=50)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, required=True, help="dataset .parquet (sidecar .series.csv beside it)")
    args = parser.parse_args()
    if args.series < 1 or args.days < 3 or args.out.suffix != ".parquet":
        parser.error("need --series >= 1, --days >= 3 and an --out ending in .parquet")
    data, meta = make(args.series, args.days, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    data.to_parquet(args.out, index=False)
    meta.to_csv(args.out.with_name(args.out.stem + ".series.csv"), index=False)
    print(f"wrote {len(data):,} rows ({args.series} series x {args.days} days) to {args.out}")


if __name__ == "__main__":
    main()
