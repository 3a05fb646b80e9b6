"""Tiny models and synthetic panels for tests: seconds to train, real TFT code paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from forecaster.contract.model import ForecastModel, ModelSpec
from forecaster.contract.panel import Panel
from forecaster.contract.registry import Registry

TINY = {"context_steps": 48, "horizon_steps": 96, "hidden_size": 4, "attention_heads": 1,
        "hidden_continuous_size": 2, "min_history_steps": 12, "dropout": 0.0}
SIGNALS = ["cpu", "memory", "filesystem", "iowait"]
THRESHOLDS = {"cpu": 0.9, "memory": 0.9, "filesystem": 0.9, "iowait": 0.3}


def one_signal_panel(values: np.ndarray, step: int = 300) -> Panel:
    """One host per row of ``values`` [hosts, T], one signal (``cpu``), ending at a fixed time."""
    T = values.shape[1]
    ts = 1_750_000_000 - step * np.arange(T - 1, -1, -1, dtype=np.int64)
    return Panel([f"host-{i}" for i in range(len(values))], ["cpu"], ts, values[:, None, :].astype(np.float32), step)


def synthetic_panel(hosts: int = 3, days: float = 4, step: int = 300, seed: int = 0,
                    signals: list[str] | None = None, end: int = 1_750_000_000) -> Panel:
    """Daily cycles plus noise, one host with a slow memory ramp that crosses 0.9."""
    signals = signals or SIGNALS
    rng = np.random.default_rng(seed)
    T = int(days * 86400 / step)
    ts = (end // step * step) - step * np.arange(T - 1, -1, -1, dtype=np.int64)
    vals = np.zeros((hosts, len(signals), T), dtype=np.float32)
    for i in range(hosts):
        for j, _ in enumerate(signals):
            base = 0.3 + 0.1 * j + 0.15 * np.sin(2 * np.pi * ts / 86400 + i)
            vals[i, j] = np.clip(base + 0.02 * rng.standard_normal(T), 0, 1)
    if "memory" in signals:
        j = signals.index("memory")
        ramp = (np.arange(T) % 600) / 600
        vals[0, j] = np.clip(0.5 + 0.48 * ramp + 0.01 * rng.standard_normal(T), 0, 1)
    return Panel([f"host-{i}" for i in range(hosts)], list(signals), ts, vals, step)


def train_tiny(panel: Panel, work: Path, seconds: float = 60, epochs: int = 2, **spec_overrides: Any) -> ForecastModel:
    from trainer.training import TrainSettings, train_model

    spec = ModelSpec(signals=list(panel.signals), step_seconds=panel.step_seconds, **{**TINY, **spec_overrides})
    settings = TrainSettings(batch_size=8, batches_per_epoch=3, max_epochs=epochs, time_budget_seconds=seconds,
                             work_dir=work, validation_windows=64)
    thresholds = {s: THRESHOLDS.get(s, 0.9) for s in panel.signals}
    return train_model(panel, spec, settings, validation_steps=288, thresholds_by_signal=thresholds).model


def tiny_registry(root: Path, panel: Panel | None = None) -> tuple[Registry, ForecastModel, str]:
    """A registry holding one promoted tiny model."""
    panel = panel or synthetic_panel()
    model = train_tiny(panel, root / "work")
    registry = Registry(root / "registry")
    version = registry.add(model)
    registry.promote(version)
    return registry, model, version
