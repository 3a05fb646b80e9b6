"""``snapshot.breaches`` (``/api/v1/breaches``): which series are listed, why, and in what order."""

from __future__ import annotations

import numpy as np

from forecaster.contract.config import HORIZON_LABELS
from forecaster.serving.snapshot import BREACH_REASONS, ForecastSet, breaches

NOW = 1_750_000_000.0
NAN = float("nan")
CUTOFFS = {"30m": 0.6, "1h": 0.5, "2h": 0.4, "4h": 0.3, "8h": 0.2}


def forecast_set(rows: list[tuple[str, tuple[float, float], list[float]]],
                 cutoffs: dict[str, float] | None = None, kind: str = "global") -> ForecastSet:
    """rows: (instance, (eta p50, eta p90), probabilities by horizon), signal "cpu" each."""
    n = len(rows)
    obj = lambda v: np.array(v, dtype=object)  # noqa: E731
    return ForecastSet(
        step_seconds=300, instances=obj([r[0] for r in rows]), signals=obj(["cpu"] * n),
        kinds=obj([kind] * n), versions=obj(["v1"] * n), warming_up=np.zeros(n, dtype=bool),
        made_at=np.full(n, NOW), origin=np.full(n, NOW - 300), threshold=np.full(n, 0.9),
        quantiles=np.zeros((n, 96, 3), dtype=np.float32), eta=np.array([r[1] for r in rows], dtype=np.float64),
        probability=np.array([r[2] for r in rows], dtype=np.float64),
        cutoffs=CUTOFFS if cutoffs is None else cutoffs)


LOW = [0.0, 0.0, 0.0, 0.0, 0.0]


def test_paths_and_probabilities_with_their_reasons_soonest_first() -> None:
    fs = forecast_set([
        ("quiet", (NAN, NAN), [0.1, 0.1, 0.1, 0.1, 0.1]),  # everywhere below the cut-off: not listed
        ("late-prob", (NAN, NAN), [0.0, 0.0, 0.0, 0.0, 0.25]),  # 8h at 0.25 >= 0.2
        ("prob-2h-low", (NAN, NAN), [0.0, 0.0, 0.4, 0.5, 0.6]),  # 2h exactly at its cut-off 0.4
        ("prob-2h-high", (NAN, NAN), [0.0, 0.0, 0.45, 0.5, 0.6]),
        ("p90-only", (NAN, 600.0), LOW),
        ("p50", (3600.0, 1200.0), [0.7, 0.8, 0.9, 0.9, 0.9]),
        ("p50-later", (7200.0, 7200.0), LOW),
    ])
    found = breaches(fs)
    assert [b["instance"] for b in found] == ["p90-only", "p50", "p50-later", "prob-2h-high", "prob-2h-low",
                                              "late-prob"]
    by = {b["instance"]: b for b in found}
    assert by["p90-only"]["reason"] == "p90_path" and by["p90-only"]["reasons"] == ["p90_path"]
    assert by["p90-only"]["eta_seconds"] == 600 and by["p90-only"]["eta_seconds_p50"] is None
    assert by["p90-only"]["horizon"] is None and by["p90-only"]["probability"] is None
    # A series with every reason: the strongest is the reason, all are listed; the probability
    # fields name the shortest horizon at or above its cut-off.
    assert by["p50"]["reason"] == "p50_path" and by["p50"]["reasons"] == list(BREACH_REASONS)
    assert (by["p50"]["horizon"], by["p50"]["probability"], by["p50"]["cutoff"]) == ("30m", 0.7, 0.6)
    assert by["p50"]["eta_seconds"] == 1200 and by["p50"]["breach_at"] is not None
    only = by["prob-2h-low"]
    assert only["reason"] == "probability" and only["reasons"] == ["probability"]
    assert (only["horizon"], only["probability"], only["cutoff"]) == ("2h", 0.4, 0.4)
    assert only["eta_seconds"] is None and only["breach_at"] is None
    assert only["probability_8h"] == 0.6
    assert by["late-prob"]["horizon"] == "8h"
    assert {b["reason"] for b in found} <= set(BREACH_REASONS)


def test_no_cutoffs_no_probability_warning() -> None:
    """The fallback (and a set served without a global model) has no cut-offs: paths only."""
    fs = forecast_set([("prob", (NAN, NAN), [0.9] * len(HORIZON_LABELS)), ("path", (NAN, 900.0), LOW)], cutoffs={})
    assert [(b["instance"], b["reason"]) for b in breaches(fs)] == [("path", "p90_path")]
    # A horizon the model has no cut-off for is never a reason; nor is a missing probability.
    fs = forecast_set([("a", (NAN, NAN), [0.9, 0.9, 0.9, 0.9, NAN]), ("b", (NAN, NAN), [NAN] * 5)],
                      cutoffs={"8h": 0.1})
    assert breaches(fs) == []
