"""How fast a trained model's forecast follows a lasting level shift (a deploy that moves a metric).

One synthetic host with a daily cycle and noise around ``--low`` steps to ``--high`` for good;
the model forecasts from origins 1, 2, 4, 6 and 10 hours after the step. A model that treats
every excursion as a spike keeps its p50 near the old level for hours; docs/TRAINING.md has the
numbers for networks trained with and without ``trainer.level_shift_share``.

    tft-trainer backtest --data ../shared/bench/data/nab_infra_5min.parquet --out /tmp/fc.parquet \\
        --save-model /tmp/nab_model [--level-shift-share 0.07]
    python3 benchmarks/level_shift_response.py /tmp/nab_model [more model directories ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

STEPS_PER_DAY = 288
HOURS_AFTER = (1, 2, 4, 6, 10)


def stepped_panel(signals: list[str], low: float, high: float, days: int, seed: int):  # type: ignore[no-untyped-def]
    """``days`` of history at 5-minute steps whose level moves from ``low`` to ``high`` after
    ``days - 1``; every signal of the host carries the same series."""
    from forecaster.contract.panel import Panel

    rng = np.random.default_rng(seed)
    n = days * STEPS_PER_DAY
    t = np.arange(n)
    amplitude = 0.1 * abs(high - low)
    y = low + amplitude * np.sin(2 * np.pi * t / STEPS_PER_DAY) + rng.normal(0, 0.03 * abs(high - low), n)
    step_at = (days - 1) * STEPS_PER_DAY
    y[step_at:] += high - low
    timestamps = 1_750_000_000 - 1_750_000_000 % 300 + 300 * t
    values = np.repeat(y[None, None, :], len(signals), axis=1).astype(np.float32)
    return Panel(["stepped-host"], list(signals), timestamps.astype(np.int64), values, 300), step_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path,
                        help="model directories (model.json + weights) or registries (their latest global model)")
    parser.add_argument("--low", type=float, default=20.0)
    parser.add_argument("--high", type=float, default=80.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from forecaster.contract.artifacts import ModelLoadError, load_model_dir
    from forecaster.contract.features import build_windows
    from forecaster.contract.registry import Registry

    torch.set_num_threads(1)
    print(f"step {args.low:g} -> {args.high:g}; p50 (p90) one step and a horizon ahead, from origins after it")
    for given in args.models:
        path = given if (given / "model.json").exists() else Registry(given).latest_path() or given
        try:
            model = load_model_dir(path)
        except ModelLoadError as exc:
            parser.error(str(exc))
        spec = model.spec
        panel, step_at = stepped_panel(spec.signals, args.low, args.high, days=max(2, spec.seasonal_days + 2),
                                       seed=args.seed)
        origins = np.array([step_at - 1 + 12 * h for h in HOURS_AFTER])
        series = np.zeros((len(origins), 2), dtype=np.int64)
        batch = build_windows(panel, series, origins, spec.window_rules(), spec.signal_codes())
        q = model.predict(batch).quantiles
        cells = [f"+{h} h: {q[k, 0, 1]:.3g} ({q[k, 0, 2]:.3g}) / {q[k, -1, 1]:.3g} ({q[k, -1, 2]:.3g})"
                 for k, h in enumerate(HOURS_AFTER)]
        print(f"{path}: " + "   ".join(cells))


if __name__ == "__main__":
    main()
