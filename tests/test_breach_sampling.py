"""Pre-breach windows drawn as a share of every training batch (trainer.training.WindowSampler)."""

from __future__ import annotations

import numpy as np

from forecaster.contract.model import ModelSpec
from tests.modelkit import TINY, synthetic_panel
from trainer.training import WindowSampler, make_split, pre_breach_origins, series_thresholds

THRESHOLDS = {"cpu": 0.9, "memory": 0.9, "disk": 0.9}


def _sampler(share: float) -> WindowSampler:
    panel = synthetic_panel(hosts=3, days=5, seed=2, signals=list(THRESHOLDS))
    spec = ModelSpec(signals=list(panel.signals), step_seconds=panel.step_seconds, **TINY)
    split = make_split(panel, 288)
    return WindowSampler(panel, split, spec.window_rules(), spec.signal_codes(),
                         series_thresholds(panel, split.series, THRESHOLDS), seed=1, breach_share=share)


def _pre_breach(batch) -> np.ndarray:  # type: ignore[no-untyped-def]
    return (batch.last_value < 0.9) & (np.nanmax(batch.target, axis=1) >= 0.9)  # every signal's threshold


def test_pre_breach_origins_are_exactly_those_below_the_threshold_that_reach_it_within_the_horizon() -> None:
    sampler = _sampler(0.3)
    split, panel, horizon = sampler.split, sampler.panel, sampler.rules.horizon
    expected = set()
    for s, (i, j) in enumerate(split.series):
        thr = sampler.thresholds[s]
        v = panel.values[i, j]
        for o in range(sampler.lo[s], sampler.lo[s] + sampler.count[s]):
            if v[o] < thr and np.nanmax(v[o + 1:o + 1 + horizon]) >= thr:
                expected.add((s, o))
    got = set(zip(sampler.breach_series.tolist(), sampler.breach_origins.tolist(), strict=True))
    assert got == expected and len(expected) > 0
    # No threshold, no pre-breach windows.
    none = pre_breach_origins(panel, split, np.full(len(split.series), np.nan), sampler.lo, sampler.count, horizon)
    assert len(none[0]) == 0


def test_about_the_asked_share_of_each_batch_is_pre_breach_and_none_is_forced_without_it() -> None:
    batch = _sampler(0.4).sample(500, np.random.default_rng(5))
    plain = _sampler(0.0)
    natural = _pre_breach(plain.sample(500, np.random.default_rng(5))).mean()
    share = _pre_breach(batch).mean()
    assert len(batch) == 500
    assert natural < 0.1 and 0.4 <= share <= 0.55  # the drawn share plus the natural one among the rest
    assert len(plain.breach_series) == 0  # not even computed when off
