"""Prometheus recording rules: the signals as the forecaster sees them, and live forecast accuracy.

The signal rules take their expressions from the forecaster's own signal definitions, so the
"actual" a forecast is scored against is exactly the series the forecaster forecast. The names
of the recorded series are defined here once because the alerts and the dashboards query them.
"""

from __future__ import annotations

from typing import Any

from forecaster.contract.config import HORIZON_LABELS, Signal
from monitoring.promql import by_fleet, by_host, one_line
from monitoring.settings import SETTINGS

# Names of the recorded signal series, in the project's own namespace (a ``tft_`` metric part): the
# expression is the forecaster's signal query, which is not node-mixin's formula (its CPU rule counts
# iowait and steal as idle, and it aggregates by job too), so node-mixin's names must not be reused:
# a site that also loads node-mixin would get two rules writing one series.
SIGNAL_RECORDS = {
    "cpu": "instance:tft_cpu_utilisation:rate5m",
    "memory": "instance:tft_memory_utilisation:ratio",
    "filesystem": "instance:tft_filesystem_utilisation:ratio",
    "iowait": "instance:tft_cpu_iowait:rate5m",
}
#: Recording rules of ours that may bear a name without ``tft``: node-mixin's name -> node-mixin's exact
#: expression. Empty: none is recorded today. tests/test_rules.py holds every record name to this.
NODE_MIXIN_RECORDS: dict[str, str] = {}
ACTUAL = "instance_signal:tft_actual:value"
ABS_ERROR = "instance_signal_horizon:tft_forecast_abs_error:p50"
IN_BAND = "instance_signal_horizon:tft_forecast_in_band:p10_p90"
NAIVE_ERROR = "instance_signal_horizon:tft_seasonal_naive_abs_error:value"
FLEET_ABS_ERROR = "signal_horizon:tft_forecast_abs_error:avg{w}"
FLEET_COVERAGE = "signal_horizon:tft_forecast_coverage:avg{w}"
FLEET_NAIVE = "signal_horizon:tft_seasonal_naive_abs_error:avg{w}"
RELATIVE_ERROR = "signal_horizon:tft_forecast_relative_abs_error:avg1d"

# The forecaster's horizons, in its order: one accuracy rule, panel target or legend entry each.
HORIZONS = list(HORIZON_LABELS)


def signal_record(sig: Signal) -> str:
    """A descriptive name for the built-in signals, ``instance:tft_signal_<name>:value`` for others."""
    return SIGNAL_RECORDS.get(sig.name, f"instance:tft_signal_{sig.name}:value")


def signal_rules(signals: tuple[Signal, ...]) -> dict[str, Any]:
    """One record per signal, then all of them again under one name with a ``signal`` label,
    so that the accuracy rules need one expression per horizon rather than one per signal."""
    rules: list[dict[str, Any]] = []
    for sig in signals:
        rules.append({"record": signal_record(sig), "expr": one_line(sig.query)})
    for sig in signals:
        rules.append({"record": ACTUAL, "expr": signal_record(sig), "labels": {"signal": sig.name}})
    return {"groups": [{"name": "tft-signals", "rules": rules}]}


def accuracy_rules() -> dict[str, Any]:
    """Per-series error, band hit and seasonal-naive error, then cheap fleet averages.

    The 1d figures average the 1h ones instead of re-reading a day of raw samples per evaluation.
    """
    s = SETTINGS
    series = by_host("signal")  # with cluster labels, web-01 of cluster a is never matched with web-01 of b
    per_sample: list[dict[str, Any]] = []
    for h in HORIZONS:
        def fc(q: str, h: str = h) -> str:
            return f'max by ({series}) (tft_forecast_{q}{{horizon="{h}"}} offset {h})'

        per_sample.append({
            "record": ABS_ERROR,
            "expr": f"abs(\n  {fc('p50')}\n  - on ({series})\n  {ACTUAL}\n)\n",
            "labels": {"horizon": h},
        })
        per_sample.append({
            "record": IN_BAND,
            "expr": (f"({ACTUAL} >= bool on ({series})\n  {fc('p10')})\n"
                     f"* on ({series})\n"
                     f"({ACTUAL} <= bool on ({series})\n  {fc('p90')})\n"),
            "labels": {"horizon": h},
        })
        per_sample.append({
            "record": NAIVE_ERROR,
            "expr": (f"abs({ACTUAL} - {ACTUAL} offset {s.seasonal_period})\n"
                     f"and on ({series})\n{fc('p50')}\n"),
            "labels": {"horizon": h},
        })
    fleet: list[dict[str, Any]] = []
    group = by_fleet("signal", "horizon")  # per cluster where cluster labels are set
    for raw, name in ((ABS_ERROR, FLEET_ABS_ERROR), (IN_BAND, FLEET_COVERAGE), (NAIVE_ERROR, FLEET_NAIVE)):
        fleet.append({"record": name.format(w="1h"),
                      "expr": f"avg by ({group}) (avg_over_time({raw}[1h]))"})
    for name in (FLEET_ABS_ERROR, FLEET_COVERAGE, FLEET_NAIVE):
        fleet.append({"record": name.format(w="1d"), "expr": f"avg_over_time({name.format(w='1h')}[1d])"})
    fleet.append({
        "record": RELATIVE_ERROR,
        "expr": f"{FLEET_ABS_ERROR.format(w='1d')}\n/ on ({group})\n({FLEET_NAIVE.format(w='1d')} > 0)\n",
    })
    return {"groups": [
        {"name": "tft-forecast-accuracy", "interval": s.accuracy_interval, "rules": per_sample},
        {"name": "tft-forecast-accuracy-fleet", "interval": s.accuracy_interval, "rules": fleet},
    ]}
