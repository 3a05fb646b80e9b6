"""Benchmark: is the p50 five minutes ahead at least as accurate as the last value? (issue #15)

    python3 benchmarks/next_step_vs_naive.py ../shared/bench/data/nab_infra_5min.parquet nab_tft.csv [more.csv ...]

Reads a benchmark dataset (``series_id, timestamp, value``, PROTOCOL.md) and forecast files in the
protocol's layout (``series_id, origin, h, p10, p50, p90``, origin a timestamp, what ``tft-trainer
backtest --out`` writes),
and prints for each file, over the series, the median and mean of

    MAE(p50 at h=1) / MAE(y[o] at h=1)

over every origin of the series: below 1, the median path one step ahead beats persistence, which
the protocol's table (MASE from h=1 to 96 against a seasonal-naive scale) does not show. An origin
whose target is missing is left out of both MAEs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def ratios(data: pd.DataFrame, forecasts: pd.DataFrame) -> pd.Series:
    """Per series: MAE of the p50 one step ahead over MAE of the last value (the naive forecast)."""
    out = {}
    one = forecasts[forecasts["h"] == 1]
    for sid, rows in one.groupby("series_id"):
        part = data[data["series_id"] == sid].sort_values("timestamp")
        y = part["value"].to_numpy(dtype=np.float64)
        times = pd.to_datetime(part["timestamp"]).to_numpy()
        origins = pd.to_datetime(rows["origin"]).to_numpy()
        o = np.searchsorted(times, origins)
        ok = (o + 1 < len(y)) & (times[np.minimum(o, len(y) - 1)] == origins)
        o, p50 = o[ok], rows["p50"].to_numpy(dtype=np.float64)[ok]
        target, last = y[o + 1], y[o]
        keep = np.isfinite(target) & np.isfinite(last) & np.isfinite(p50)
        naive = np.abs(target - last)[keep].mean()
        if keep.any() and naive > 0:
            out[sid] = np.abs(target - p50)[keep].mean() / naive
    return pd.Series(out, dtype=np.float64)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", type=Path)
    p.add_argument("forecasts", type=Path, nargs="+")
    args = p.parse_args()
    try:
        data = pd.read_parquet(args.dataset, columns=["series_id", "timestamp", "value"])
    except (OSError, ValueError, KeyError) as exc:
        print(f"next_step_vs_naive: {args.dataset}: {exc}", file=sys.stderr)
        return 2
    print("| forecasts | series | h=1 MAE / naive MAE, median | mean | series better than naive |")
    print("|---|---:|---:|---:|---:|")
    for path in args.forecasts:
        try:
            fc = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            print(f"next_step_vs_naive: {path}: {exc}", file=sys.stderr)
            return 2
        r = ratios(data, fc)
        print(f"| {path.name} | {len(r)} | {r.median():.3f} | {r.mean():.3f} | {(r < 1).sum()}/{len(r)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
