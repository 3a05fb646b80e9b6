"""``model.cycle: auto``: whether a fresh network reads its window's short cycle, chosen from the
training history, once per network (as ``model.center: auto`` chooses its center).

The cycle inputs (``features.cycle_inputs``: the profile of the window's strongest period among a day's
divisors, gated off where the window does not repeat) were the lever that took NAB's median sQL below
the zero-shot foundation model's, and NAB's next-hours error down on the series that repeat every few
minutes or hours (docs/BENCHMARKS.md, "The next lever: the short cycle on top"). On fleets where few
windows repeat (SMD's machines: 6 % of windows pass the gate; a simulated fleet: 15 %) they are inputs
the network has to learn to ignore, and they cost the forecaster a profile per window. So they only
pay where the history shows that the gated profile itself forecasts better than the last value.

The comparison: for each series, at origins spread over its training part, the window of the model's
context up to the origin gives its gated cycle profile (a window without a cycle forecasts its last
value, as the network sees its center); its mean absolute error 5 minutes .. 2 hours ahead over the
last value's; median over series. The cycle only where that median is clearly below 1 (ratio below
:data:`CYCLE_WINS_BELOW`). A network that continues from another keeps that network's choice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from forecaster.contract.features import CYCLE_GATE, cycle_inputs, forward_fill, steps_per_day
from forecaster.contract.model import AUTO_CYCLE, ModelSpec
from forecaster.contract.panel import Panel
from trainer.centering import ratio_to_last

log = logging.getLogger(__name__)

#: The cycle where its gated profile forecasts the next two hours at least 10 % better than the last value,
#: median over series. On the training parts (2026-12-02, the ratio this module computes): NAB 0.84,
#: SMD 1.00, a simulated fleet (``exporter`` degrading scenario, 20 hosts) 1.00.
CYCLE_WINS_BELOW = 0.9
AHEAD_SECONDS = 7200


@dataclass(frozen=True)
class CycleChoice:
    """What ``auto`` chose and why (``ratio`` None: too little history to compare)."""

    cycle: bool
    ratio: float | None
    series: int
    reason: str


def cycle_over_last(panel: Panel, series_end: np.ndarray, context_steps: int = 288,
                    seed: int = 0) -> tuple[float | None, int]:
    """:func:`~trainer.centering.ratio_to_last` of the gated cycle profile of the ``context_steps`` up to
    each origin, 1 step .. 2 h ahead (a window below the gate forecasts its last value)."""
    per_day = steps_per_day(panel.step_seconds)
    ahead = max(1, round(AHEAD_SECONDS / panel.step_seconds))
    back = np.arange(context_steps)[None, ::-1]

    def gated_profile(y: np.ndarray, origins: np.ndarray) -> np.ndarray:
        window = y[origins[:, None] - back]  # [origins, context], the origin last
        # As the network reads it (features.build_windows): from its first value, left-aligned, gaps
        # carried forward.
        seen = np.isfinite(window)
        first = np.where(seen.any(axis=1), seen.argmax(axis=1), context_steps)
        lengths = context_steps - first
        k = np.arange(context_steps)[None, :]
        aligned = np.take_along_axis(window, np.clip(first[:, None] + k, 0, context_steps - 1), axis=1)
        packed = forward_fill(np.where(k < lengths[:, None], aligned, np.nan))
        packed[k >= lengths[:, None]] = np.nan
        _, profile, strength = cycle_inputs(packed, lengths, ahead, per_day)
        last = y[origins][:, None]
        return np.where((strength < CYCLE_GATE)[:, None] & np.isfinite(profile), profile, last)

    return ratio_to_last(panel, series_end, context_steps - 1, ahead, context_steps + ahead + 1, gated_profile, seed)


def choose_cycle(panel: Panel, series_end: np.ndarray, context_steps: int = 288) -> CycleChoice:
    """Whether a network trained from scratch on this history reads the cycle inputs (module docstring)."""
    ratio, n = cycle_over_last(panel, series_end, context_steps)
    if ratio is None:
        return CycleChoice(False, None, 0, "too little history to compare the window's cycle with the last value")
    compared = f"{1 - ratio:.0%} better" if ratio < 1 else f"{ratio - 1:.0%} worse" if ratio > 1 else "no better"
    said = f"the window's cycle forecast the next 2 h {compared} than the last value (median over {n} series"
    if ratio < CYCLE_WINS_BELOW:
        return CycleChoice(True, ratio, n, said + ")")
    return CycleChoice(False, ratio, n, said + f"; the cycle needs {1 - CYCLE_WINS_BELOW:.0%} better)")


def resolve_cycle(spec: ModelSpec, panel: Panel, series_end: np.ndarray, start: ModelSpec | None = None,
                  scope: str = "training") -> ModelSpec:
    """``spec`` with ``cycle: auto`` replaced: by the cycle inputs of ``start``, the network the run
    continues from (and its gate), else by :func:`choose_cycle` on this history. An explicit choice is
    returned as it is."""
    if spec.cycle != AUTO_CYCLE:
        return spec
    if start is not None:
        log.info("%s: %s, as the network it continues from (model.cycle: auto)", scope,
                 "the cycle inputs" if start.cycle else "no cycle inputs")
        return replace(spec, cycle=start.cycle, cycle_gate=start.cycle_gate)
    choice = choose_cycle(panel, series_end, spec.context_steps)
    log.info("%s: %s (model.cycle: auto): %s", scope, "the cycle inputs" if choice.cycle else "no cycle inputs",
             choice.reason)
    return replace(spec, cycle=choice.cycle, cycle_gate=CYCLE_GATE if choice.cycle else 0.0)
