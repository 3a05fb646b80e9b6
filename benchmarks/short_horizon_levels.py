"""The p50's error at short horizons against simple present levels: the last value, and the mean and
median of the last k values.

Usage: python3 benchmarks/short_horizon_levels.py DATA.parquet FORECASTS.csv|.parquet

Prints, per horizon (5 min to 2 h), the median over series of each forecast's mean absolute error in
the protocol's MASE scale (``../shared/bench/PROTOCOL.md``: seasonal-naive MAE of the training part).
Why: it shows whether a dataset rewards a robust level (a median of the last hour or three is nearer
the value half an hour later than the last value is: spiky series) or persistence (smooth series),
and whether the network's median beats both. Imputed targets are not scored, as in ``score.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

HORIZONS = (1, 3, 6, 12, 24)
WIDTHS = (3, 12, 36)


def _scale(train: np.ndarray, season: int = 288) -> float:
    if len(train) >= 2 * season:
        s = float(np.nanmean(np.abs(train[season:] - train[:-season])))
        if s > 0:
            return s
    return float(np.nanmean(np.abs(np.diff(train))))


def errors(data: pd.DataFrame, sidecar: pd.DataFrame, forecasts: pd.DataFrame) -> pd.DataFrame:
    """One row per (series, origin, horizon): the scaled absolute error of the p50 and of each level."""
    n_train = dict(zip(sidecar["series_id"], sidecar["n_train"], strict=True))
    rows = []
    for sid, g in data.groupby("series_id"):
        g = g.sort_values("timestamp").reset_index(drop=True)
        y, imputed = g["value"].to_numpy(dtype=np.float64), g["imputed"].to_numpy()
        scale = _scale(y[: n_train[sid]])
        index = {t: i for i, t in enumerate(g["timestamp"])}
        for origin, f in forecasts[forecasts["series_id"] == sid].groupby("origin"):
            o = index[pd.Timestamp(origin)]
            p50 = f.set_index("h")["p50"]
            for h in HORIZONS:
                if o + h >= len(y) or imputed[o + h] or h not in p50.index:
                    continue
                target = y[o + h]
                row = {"series": sid, "h": h, "p50": abs(p50[h] - target) / scale, "last": abs(y[o] - target) / scale}
                for k in WIDTHS:
                    tail = y[max(0, o - k + 1): o + 1]
                    row[f"mean{k}"] = abs(tail.mean() - target) / scale
                    row[f"median{k}"] = abs(np.median(tail) - target) / scale
                rows.append(row)
    return pd.DataFrame(rows)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(next(line for line in __doc__.splitlines() if line.startswith("Usage:")), file=sys.stderr)
        return 2
    data_path, forecasts_path = Path(argv[0]), Path(argv[1])
    try:
        data = pd.read_parquet(data_path)
        sidecar = pd.read_csv(data_path.with_name(data_path.name.replace(".parquet", ".series.csv")))
        forecasts = (pd.read_csv(forecasts_path, parse_dates=["origin"]) if forecasts_path.suffix == ".csv"
                     else pd.read_parquet(forecasts_path))
    except (OSError, ValueError) as exc:
        print(f"short_horizon_levels: {exc}", file=sys.stderr)
        return 1
    per_series = errors(data, sidecar, forecasts).groupby(["h", "series"]).mean(numeric_only=True)
    table = per_series.groupby("h").median().round(3)
    print(f"median over series of the scaled MAE ({forecasts_path.name} on {data_path.name}); "
          "meanK / medianK: the mean / median of the last K values")
    print(table.to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
