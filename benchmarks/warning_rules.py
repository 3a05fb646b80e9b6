"""Benchmark: the model's own warning rule replayed on a saved backtest model (issue #15).

    tft-trainer backtest --data DATA --out fc.csv --save-model /tmp/m
    python3 benchmarks/warning_rules.py DATA fc.csv /tmp/m [--hold 1 4] [--cutoffs 0.2 0.25 0.3]

The backtest's ``warn_2h``/``warn_8h`` columns are the breach probability at each hourly origin against
the model's cut-off. The shipped alert ``TFTBreachLikelyWithin8h`` fires only once the probability has
held for its ``for`` (15m): with the service's 5-minute cycle, four forecasts in a row (the origin's and
the three before it, all at or before the origin, so still a decision the protocol allows). This script
forecasts those earlier steps with the saved network and scores, with ``score.py``:

* ``--hold N``: a warning at an origin only where the last N forecasts were all at or above the cut-off
  (1: the backtest's rule; 4: the shipped 8 h alert's ``for: 15m``);
* ``--cutoffs``: the 8 h rule at other cut-offs (how far the cut-off chosen on the training parts is
  from the best one on the test parts: a diagnostic, never a way to choose one).

It first checks that hold 1 at the model's cut-off reproduces the forecasts file's ``warn_8h``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LABELS = ("2h", "8h")


def probabilities(data_path: Path, model_dir: Path, steps_back: int) -> tuple[dict[int, dict[str, np.ndarray]],
                                                                                dict[str, float]]:
    """Breach probabilities per protocol origin (in the forecasts file's order) and per forecast k steps before it."""
    from forecaster.contract.artifacts import load_model_dir
    from forecaster.contract.features import build_windows
    from trainer.backtest import load_benchmark, protocol_origins, protocol_rules

    data = load_benchmark(data_path)
    model = load_model_dir(model_dir)
    protocol = protocol_origins(data)
    series, at, thresholds = protocol.cells, protocol.at, protocol.thresholds
    rules = protocol_rules(model.spec)
    out: dict[int, dict[str, np.ndarray]] = {}
    for k in range(steps_back + 1):
        parts = {label: [] for label in LABELS}
        for start in range(0, len(at), 2048):
            part = slice(start, start + 2048)
            batch = build_windows(data.panel, series[part], at[part] - k, rules, model.spec.signal_codes(),
                                  thresholds[part])
            if len(batch) != len(at[part]):
                raise SystemExit(f"warning_rules: {len(at[part]) - len(batch)} window(s) {k} step(s) before "
                                 "their origin could not be cut")
            forecast = model.predict(batch, explain=False)
            for label in LABELS:
                parts[label].append(forecast.breach_probability[label])
        out[k] = {label: np.concatenate(p) for label, p in parts.items()}
    return out, {label: model.breach.cutoffs.get(label, 0.5) for label in LABELS}


def scored(scorer: Path, data_path: Path, forecasts: pd.DataFrame, rows: np.ndarray,
           warn: dict[str, np.ndarray]) -> dict:
    """score.py's headline figures for ``forecasts`` with the warning columns replaced."""
    out = forecasts.copy()
    for label, w in warn.items():
        out[f"warn_{label}"] = np.repeat(w, rows)
    with tempfile.TemporaryDirectory() as tmp:
        path, js = Path(tmp) / "fc.parquet", Path(tmp) / "score.json"
        out.to_parquet(path, index=False)
        subprocess.run([sys.executable, str(scorer), str(data_path), str(path), "--json", str(js)],
                       check=True, capture_output=True)
        return json.loads(js.read_text())


def row(name: str, result: dict) -> str:
    w8, w2 = result["warning"]["8h_own"], result["warning"]["2h_own"]
    cells = [name, f"{w8['recall']:.3f}", f"{w8['precision'] or 0:.3f}", f"**{w8['F1']:.3f}**", f"{w2['F1']:.3f}"]
    labelled = (result.get("labelled_incidents") or {}).get("rules", {}).get("8h_own")
    cells.append(f"{labelled['recall']:.3f} ({labelled['host_precision']:.3f})" if labelled else "-")
    return "| " + " | ".join(cells) + " |"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", type=Path)
    p.add_argument("forecasts", type=Path, help="what `tft-trainer backtest --out` wrote with this model")
    p.add_argument("model", type=Path, help="what `tft-trainer backtest --save-model` wrote")
    p.add_argument("--hold", type=int, nargs="+", default=[1, 4], help="forecasts in a row (default: 1 4)")
    p.add_argument("--cutoffs", type=float, nargs="*", default=[], help="8 h cut-offs to score (hold 1)")
    args = p.parse_args()
    from trainer.backtest import find_scorer

    scorer = find_scorer(args.dataset)
    if scorer is None or not args.forecasts.is_file() or not (args.model / "model.json").is_file():
        print("warning_rules: needs score.py beside the dataset, the forecasts file and a saved model",
              file=sys.stderr)
        return 2
    if min(args.hold) < 1:
        print("warning_rules: --hold counts forecasts, at least 1", file=sys.stderr)
        return 2
    probs, cutoffs = probabilities(args.dataset, args.model, max(args.hold) - 1)
    forecasts = pd.read_parquet(args.forecasts) if args.forecasts.suffix == ".parquet" else pd.read_csv(args.forecasts)
    rows = forecasts.groupby(["series_id", "origin"], sort=False).size().to_numpy()
    saved = forecasts.drop_duplicates(["series_id", "origin"])["warn_8h"].to_numpy(dtype=bool)
    if len(saved) != len(probs[0]["8h"]):
        print(f"warning_rules: {args.forecasts} has {len(saved)} origins, the dataset {len(probs[0]['8h'])}: "
              "not this dataset's backtest", file=sys.stderr)
        return 2
    same = float(np.mean(saved == (probs[0]["8h"] >= cutoffs["8h"])))
    print(f"cut-offs {cutoffs}; the file's warn_8h reproduced at {same:.1%} of the origins")
    print("| rule | 8 h recall | precision | F1 | 2 h F1 | labelled recall 8 h (host precision) |")
    print("|---|---:|---:|---:|---:|---:|")
    for hold in args.hold:
        warn = {label: np.all([probs[k][label] >= cutoffs[label] for k in range(hold)], axis=0) for label in LABELS}
        print(row(f"model cut-off, {hold} forecast(s) in a row", scored(scorer, args.dataset, forecasts, rows, warn)),
              flush=True)
    for cut in args.cutoffs:
        warn = {"2h": probs[0]["2h"] >= cutoffs["2h"], "8h": probs[0]["8h"] >= cut}
        print(row(f"8 h cut-off {cut:g}", scored(scorer, args.dataset, forecasts, rows, warn)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
