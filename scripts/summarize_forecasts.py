"""Print a forecaster ``--output`` file as a breach table, next to the simulator's ground truth.

    python scripts/summarize_forecasts.py FORECASTS.json [INCIDENTS.json] [--model.dir DIR]

A series counts as warned when its p50 or p90 path crosses the threshold within 8 h, or when
its 8 h breach probability reaches the model's own cut-off (stored in model.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path


def _cutoff(model_dir: Path | None) -> float:
    if model_dir is None:
        return 0.5
    from forecaster.contract.registry import Registry

    path = Registry(model_dir).latest_path() if (model_dir / "global").is_dir() else model_dir
    try:
        meta = json.loads((Path(path) / "model.json").read_text())
        return float(meta["calibration"]["breach"]["cutoffs"].get("8h", 0.5))
    except (OSError, ValueError, KeyError, TypeError):
        return 0.5


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("forecasts", type=Path)
    ap.add_argument("incidents", type=Path, nargs="?")
    ap.add_argument("--model.dir", dest="model_dir", type=Path)
    args = ap.parse_args()
    series = json.loads(args.forecasts.read_text())["data"]["series"]
    cutoff = _cutoff(args.model_dir)
    warned = {}
    for s in series:
        etas = [v for v in s["breach_eta_seconds"].values() if v is not None]
        prob = (s["breach_probability"] or {}).get("8h")
        if etas or (prob is not None and prob >= cutoff):
            warned[(s["instance"], s["signal"])] = (min(etas) if etas else None, prob, s["made_at"], s["model"])
    models = sorted({s["model"] for s in series})
    print(f"{len(series)} series forecast (model: {', '.join(models)}); 8 h probability cut-off {cutoff:.2f}")
    print(f"{'instance':<12} {'signal':<11} {'ETA':>8} {'P(8h)':>6}")
    for (inst, sig), (eta, prob, _, _) in sorted(warned.items(), key=lambda kv: (kv[1][0] is None, kv[1][0] or 0)):
        eta_s = f"{eta / 60:.0f} min" if eta is not None else "-"
        prob_s = f"{prob:.2f}" if prob is not None else "-"
        print(f"{inst:<12} {sig:<11} {eta_s:>8} {prob_s:>6}")
    if not warned:
        print("(no breach predicted within 8 h)")
    if args.incidents is None:
        return 0
    incidents = json.loads(args.incidents.read_text())["incidents"]
    now = datetime.now(UTC).timestamp()
    upcoming = [i for i in incidents if _ts(i["breach_start"]) > now - 600]
    print(f"\nground truth: {len(upcoming)} incident(s) breaching from now on")
    print(f"{'instance':<12} {'signal':<11} {'breach at':<21} {'in':>8}  predicted")
    caught = 0
    for inc in sorted(upcoming, key=lambda i: i["breach_start"]):
        key = (inc["instance"], inc["signal"])
        hit = warned.get(key)
        caught += hit is not None
        mark = "yes" if hit else "NO"
        if hit and hit[0] is not None:
            mark += f" (ETA {hit[0] / 60:.0f} min)"
        delta = (_ts(inc["breach_start"]) - now) / 60
        print(f"{inc['instance']:<12} {inc['signal']:<11} {inc['breach_start']:<21} {delta:6.0f} min  {mark}")
    if upcoming:
        print(f"predicted {caught} of {len(upcoming)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
