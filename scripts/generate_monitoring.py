#!/usr/bin/env python3
"""Generate the Prometheus rules, the Grafana-managed alert rules and the Grafana dashboards.

Every selector, cut-off and duration the rules and dashboards use lives in :data:`SETTINGS`
(the "_config" of a monitoring mixin); the signal recording rules come from the forecaster's
signal definitions (``forecaster.contract.config.DEFAULT_SIGNALS``, or ``--config.file``), so the
"actual" that forecasts are scored against is exactly what the forecaster forecasts.

The Prometheus alerting rules and the Grafana-managed alert rules are rendered from one table
(:data:`ALERTS`), so they cannot drift apart.

Usage::

    python3 scripts/generate_monitoring.py            # rewrite the generated files
    python3 scripts/generate_monitoring.py --check    # exit 1 if a committed file is stale (CI)
    python3 scripts/generate_monitoring.py --config.file my.yml   # signals from your config

The output is committed; ``tests/test_grafana.py`` fails when it is stale.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from forecaster.contract.config import DEFAULT_SIGNALS, HORIZON_LABELS, Signal  # noqa: E402

# --------------------------------------------------------------------------------------------
# Settings: the one place for selectors, cut-offs and durations.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    datasource_uid: str = "tft-prometheus"
    # Absolute Grafana URL used in alert annotations (dashboard links in notifications).
    grafana_url: str = "http://localhost:3000"
    # Selects the forecaster's own series (its scrape job).
    forecaster_selector: str = 'job="tft-forecaster"'
    folder: str = "TFT Monitor"
    # Predicted breach. The probability alerts compare tft_breach_probability with the served
    # model's own per-horizon cut-off, chosen F1-optimally on its training run's validation
    # windows (model.json "calibration.breach.cutoffs", exported by the forecaster as
    # tft_breach_probability_cutoff{horizon}). See docs/OPERATIONS.md, "Alert cut-offs".
    critical_horizon: str = "1h"
    critical_eta_seconds: int = 3600
    critical_for: str = "5m"
    warning_horizon: str = "8h"
    warning_for: str = "15m"
    # Used only where no tft_breach_probability_cutoff series exists for a horizon: a forecaster
    # older than the cut-off series, per-host models served while no global model is loaded,
    # or a model file without a cut-off for that horizon. The same default the trainer picks
    # when a validation slice holds no breach.
    absent_cutoff: float = 0.5
    # Dashboards: the colour scale of breach probabilities (red from here); a fixed scale, not
    # the alert cut-off, which is per horizon and per model.
    risk_probability: float = 0.5
    # Forecaster health.
    down_for: str = "5m"
    stale_after_seconds: int = 900  # three default 300 s cycles
    stale_for: str = "5m"
    fallback_for: str = "15m"
    model_max_age_seconds: int = 7 * 86400
    model_age_for: str = "1h"
    # Live accuracy.
    accuracy_interval: str = "1m"
    coverage_target: float = 0.8  # nominal coverage of the p10-p90 band
    coverage_tolerance: float = 0.15
    coverage_for: str = "1h"
    naive_ratio: float = 1.0  # live error / seasonal-naive error above this fires
    naive_for: str = "1h"
    seasonal_period: str = "1d"  # the seasonal-naive forecast is the value one period earlier


SETTINGS = Settings()

DASH_FLEET = "tft-fleet"
DASH_HOST = "tft-host"
DASH_HEALTH = "tft-health"
DASH_SLUGS = {DASH_FLEET: "tft-fleet-overview", DASH_HOST: "tft-host-drill-down",
              DASH_HEALTH: "tft-model-and-forecaster-health"}

# Names of the recorded signal series. Where node-mixin has a rule for the same quantity its
# name is reused; the expression is always the forecaster's signal query.
SIGNAL_RECORDS = {
    "cpu": "instance:node_cpu_utilisation:rate5m",
    "memory": "instance:node_memory_utilisation:ratio",
    "filesystem": "instance:node_filesystem_utilisation:ratio",
    "iowait": "instance:node_cpu_iowait:rate5m",
}
ACTUAL = "instance_signal:tft_actual:value"
ABS_ERROR = "instance_signal_horizon:tft_forecast_abs_error:p50"
IN_BAND = "instance_signal_horizon:tft_forecast_in_band:p10_p90"
NAIVE_ERROR = "instance_signal_horizon:tft_seasonal_naive_abs_error:value"
FLEET_ABS_ERROR = "signal_horizon:tft_forecast_abs_error:avg{w}"
FLEET_COVERAGE = "signal_horizon:tft_forecast_coverage:avg{w}"
FLEET_NAIVE = "signal_horizon:tft_seasonal_naive_abs_error:avg{w}"
RELATIVE_ERROR = "signal_horizon:tft_forecast_relative_abs_error:avg1d"

HORIZONS = list(HORIZON_LABELS)
HORIZON_COLORS = {"30m": "purple", "1h": "blue", "2h": "green", "4h": "orange", "8h": "yellow"}


def cutoff_expr(horizon: str) -> str:
    """The breach-probability cut-off at ``horizon``: one series, labelled ``horizon`` only.

    ``max by (horizon)`` makes it one series whatever the number of forecaster replicas
    (shards serve the same model), so the join below never fails on duplicates;
    ``absent_cutoff`` stands in where no replica exports one.
    """
    return (f'max by (horizon) (tft_breach_probability_cutoff{{horizon="{horizon}"}})\n'
            f'or\nlabel_replace(vector({_num(SETTINGS.absent_cutoff)}), "horizon", "{horizon}", "", "")')


def breach_probability(horizon: str, by: str = "instance, signal, horizon") -> str:
    return f'max by ({by}) (tft_breach_probability{{horizon="{horizon}"}})'


def at_or_above_cutoff(value: str, horizon: str) -> str:
    """PromQL: ``value`` (series labelled ``horizon``) where it reaches that horizon's cut-off."""
    return f"{value} >= on (horizon) group_left () ({one_line(cutoff_expr(horizon))})"


def signal_record(sig: Signal) -> str:
    return SIGNAL_RECORDS.get(sig.name, f"instance:tft_signal_{sig.name}:value")


def dashboard_url(uid: str, params: str = "") -> str:
    return f"{SETTINGS.grafana_url}/d/{uid}/{DASH_SLUGS[uid]}" + (f"?{params}" if params else "")


def one_line(expr: str) -> str:
    return " ".join(expr.split())


# --------------------------------------------------------------------------------------------
# Recording rules
# --------------------------------------------------------------------------------------------


def signal_rules(signals: tuple[Signal, ...]) -> dict[str, Any]:
    rules: list[dict[str, Any]] = []
    for sig in signals:
        rules.append({"record": signal_record(sig), "expr": one_line(sig.query)})
    for sig in signals:
        rules.append({"record": ACTUAL, "expr": signal_record(sig), "labels": {"signal": sig.name}})
    return {"groups": [{"name": "tft-signals", "rules": rules}]}


def accuracy_rules() -> dict[str, Any]:
    s = SETTINGS
    per_sample: list[dict[str, Any]] = []
    for h in HORIZONS:
        def fc(q: str, h: str = h) -> str:
            return f'max by (instance, signal) (tft_forecast_{q}{{horizon="{h}"}} offset {h})'

        per_sample.append({
            "record": ABS_ERROR,
            "expr": f"abs(\n  {fc('p50')}\n  - on (instance, signal)\n  {ACTUAL}\n)\n",
            "labels": {"horizon": h},
        })
        per_sample.append({
            "record": IN_BAND,
            "expr": (f"({ACTUAL} >= bool on (instance, signal)\n  {fc('p10')})\n"
                     f"* on (instance, signal)\n"
                     f"({ACTUAL} <= bool on (instance, signal)\n  {fc('p90')})\n"),
            "labels": {"horizon": h},
        })
        per_sample.append({
            "record": NAIVE_ERROR,
            "expr": (f"abs({ACTUAL} - {ACTUAL} offset {s.seasonal_period})\n"
                     f"and on (instance, signal)\n{fc('p50')}\n"),
            "labels": {"horizon": h},
        })
    fleet: list[dict[str, Any]] = []
    for raw, name in ((ABS_ERROR, FLEET_ABS_ERROR), (IN_BAND, FLEET_COVERAGE), (NAIVE_ERROR, FLEET_NAIVE)):
        fleet.append({"record": name.format(w="1h"),
                      "expr": f"avg by (signal, horizon) (avg_over_time({raw}[1h]))"})
    for name in (FLEET_ABS_ERROR, FLEET_COVERAGE, FLEET_NAIVE):
        fleet.append({"record": name.format(w="1d"), "expr": f"avg_over_time({name.format(w='1h')}[1d])"})
    fleet.append({
        "record": RELATIVE_ERROR,
        "expr": f"{FLEET_ABS_ERROR.format(w='1d')}\n/ on (signal, horizon)\n({FLEET_NAIVE.format(w='1d')} > 0)\n",
    })
    return {"groups": [
        {"name": "tft-forecast-accuracy", "interval": s.accuracy_interval, "rules": per_sample},
        {"name": "tft-forecast-accuracy-fleet", "interval": s.accuracy_interval, "rules": fleet},
    ]}


# --------------------------------------------------------------------------------------------
# Alerts: one table, rendered for Prometheus and for Grafana.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    name: str
    group: str
    severity: str
    value: str  # PromQL for the value the condition tests (no comparison)
    op: str  # ">=", ">", "<=", "<" or "outside" (cut-off is then (low, high))
    cutoff: float | tuple[float, float] | None  # a fixed cut-off; None with cutoff_query
    for_: str
    summary: str
    description: str  # Prometheus template; "{{ $value }}" is replaced for Grafana
    value_format: str = ""  # humanize function for $value
    link: str = DASH_HOST
    link_params: str = "var-instance={{ $labels.instance }}&var-signal={{ $labels.signal }}"
    panel_id: int | None = None
    absent: str | None = None  # Prometheus: also fire when this selector has no series
    no_data: str = "OK"  # Grafana noDataState
    # A cut-off that is a series rather than a constant: PromQL returning one series labelled
    # `horizon` (cutoff_expr); `value` must carry the same `horizon` label. Prometheus joins
    # them `on (horizon)`; Grafana queries it as B and compares in a math expression C.
    cutoff_query: str | None = None


def _alerts() -> list[Alert]:
    s = SETTINGS
    fsel = s.forecaster_selector
    crit_p = breach_probability(s.critical_horizon)
    crit_eta = 'min by (instance, signal) (tft_breach_eta_seconds{path="p50"})'
    warn_p = breach_probability(s.warning_horizon)
    health = ""
    own_cutoff = ("at or above the model's own cut-off for that horizon (tft_breach_probability_cutoff, "
                  f"chosen on its training data; {_num(s.absent_cutoff)} where none is exported)")
    return [
        Alert(
            name=f"TFTBreachLikelyWithin{s.critical_horizon}", group="tft-predicted-breach", severity="critical",
            value=crit_p, op=">=", cutoff=None, cutoff_query=cutoff_expr(s.critical_horizon), for_=s.critical_for,
            summary=f"{{{{ $labels.signal }}}} on {{{{ $labels.instance }}}} is likely to breach its threshold "
                    f"within {s.critical_horizon}",
            description=f"The TFT forecast gives a {{{{ $value }}}} probability that {{{{ $labels.signal }}}} on "
                        f"{{{{ $labels.instance }}}} crosses its threshold within {s.critical_horizon}, "
                        f"{own_cutoff}.",
            value_format="humanizePercentage", panel_id=PANEL_HOST_PROBABILITY,
        ),
        Alert(
            name=f"TFTBreachForecastWithin{s.critical_horizon}", group="tft-predicted-breach", severity="critical",
            value=crit_eta, op="<=", cutoff=s.critical_eta_seconds, for_=s.critical_for,
            summary=f"The median forecast of {{{{ $labels.signal }}}} on {{{{ $labels.instance }}}} breaches "
                    f"within {s.critical_horizon}",
            description="The p50 forecast path of {{ $labels.signal }} on {{ $labels.instance }} crosses its "
                        "threshold in {{ $value }}.",
            value_format="humanizeDuration", panel_id=PANEL_HOST_ETA,
        ),
        Alert(
            name=f"TFTBreachLikelyWithin{s.warning_horizon}", group="tft-predicted-breach", severity="warning",
            value=(f"{warn_p}\n"
                   f"unless on (instance, signal) ({at_or_above_cutoff(crit_p, s.critical_horizon)})\n"
                   f"unless on (instance, signal) ({crit_eta} <= {s.critical_eta_seconds})"),
            op=">=", cutoff=None, cutoff_query=cutoff_expr(s.warning_horizon), for_=s.warning_for,
            summary=f"{{{{ $labels.signal }}}} on {{{{ $labels.instance }}}} may breach its threshold within "
                    f"{s.warning_horizon}",
            description=f"The TFT forecast gives a {{{{ $value }}}} probability that {{{{ $labels.signal }}}} on "
                        f"{{{{ $labels.instance }}}} crosses its threshold within {s.warning_horizon}, "
                        f"{own_cutoff}. Silent while a critical predicted-breach alert fires for the same series.",
            value_format="humanizePercentage", panel_id=PANEL_HOST_PROBABILITY,
        ),
        Alert(
            name="TFTForecasterDown", group="tft-forecaster-health", severity="critical",
            value=f"up{{{fsel}}}", op="<", cutoff=1, for_=s.down_for, absent=f"up{{{fsel}}}", no_data="Alerting",
            summary="The TFT forecaster is down: no predicted-breach alert can fire",
            description="Prometheus cannot scrape the forecaster (job {{ $labels.job }}{{ if $labels.instance }}, "
                        "{{ $labels.instance }}{{ end }}); forecasts and predicted-breach alerts stop until it "
                        "is back.",
            link=DASH_HEALTH, link_params=health, panel_id=PANEL_HEALTH_UP,
        ),
        Alert(
            name="TFTForecastsStale", group="tft-forecaster-health", severity="warning",
            value=f"time() - tft_forecaster_last_success_timestamp_seconds{{{fsel}}}", op=">",
            cutoff=s.stale_after_seconds, for_=s.stale_for,
            summary="TFT forecasts are stale",
            description="The forecaster {{ $labels.instance }} last completed a forecast cycle {{ $value }} ago; "
                        "the published forecasts are out of date.",
            value_format="humanizeDuration", link=DASH_HEALTH, link_params=health, panel_id=PANEL_HEALTH_CYCLES,
        ),
        Alert(
            name="TFTModelFallback", group="tft-forecaster-health", severity="warning",
            value=f"tft_model_fallback{{{fsel}}}", op=">", cutoff=0, for_=s.fallback_for,
            summary="The forecaster serves the seasonal-naive fallback, not a trained model",
            description="No trained model could be loaded by {{ $labels.instance }}; forecasts come from the "
                        "flagged seasonal-naive fallback. Check the model registry and run the trainer.",
            link=DASH_HEALTH, link_params=health, panel_id=PANEL_HEALTH_MODEL,
        ),
        Alert(
            name="TFTModelTooOld", group="tft-forecaster-health", severity="warning",
            value=f"tft_model_age_seconds{{{fsel}}}", op=">", cutoff=s.model_max_age_seconds, for_=s.model_age_for,
            summary="The forecasting model has not been retrained for a long time",
            description="The model served by {{ $labels.instance }} was trained {{ $value }} ago. Check the "
                        "retraining cron job (tft_trainer_last_run_exit_code).",
            value_format="humanizeDuration", link=DASH_HEALTH, link_params=health, panel_id=PANEL_HEALTH_MODEL,
        ),
        Alert(
            name="TFTForecastCoverageDrift", group="tft-forecast-quality", severity="warning",
            value=FLEET_COVERAGE.format(w="1d"), op="outside",
            cutoff=(round(s.coverage_target - s.coverage_tolerance, 6),
                    round(s.coverage_target + s.coverage_tolerance, 6)),
            for_=s.coverage_for,
            summary="The live p10-p90 coverage of {{ $labels.signal }} at {{ $labels.horizon }} drifted from 80%",
            description="Over the last day {{ $value }} of actual {{ $labels.signal }} values fell inside the "
                        "forecast p10-p90 band at horizon {{ $labels.horizon }} (nominal 80%). The model is "
                        "miscalibrated for today's data: retrain it.",
            value_format="humanizePercentage", link=DASH_HEALTH, link_params="var-signal={{ $labels.signal }}",
            panel_id=PANEL_HEALTH_COVERAGE,
        ),
        Alert(
            name="TFTForecastWorseThanSeasonalNaive", group="tft-forecast-quality", severity="warning",
            value=RELATIVE_ERROR, op=">", cutoff=s.naive_ratio, for_=s.naive_for,
            summary="Live forecasts of {{ $labels.signal }} at {{ $labels.horizon }} are worse than seasonal-naive",
            description="Over the last day the forecast error of {{ $labels.signal }} at horizon "
                        "{{ $labels.horizon }} was {{ $value }} times the error of repeating yesterday's value. "
                        "Retrain the model or check the input data.",
            value_format="humanize", link=DASH_HEALTH, link_params="var-signal={{ $labels.signal }}",
            panel_id=PANEL_HEALTH_RELATIVE,
        ),
    ]


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def _block(expr: str) -> str:
    return "(\n" + "".join(f"  {ln}\n" for ln in expr.splitlines()) + ")"


def prometheus_expr(a: Alert) -> str:
    value = a.value if "\n" not in a.value else _block(a.value)
    if a.cutoff_query is not None:
        assert a.op == ">=", a.name
        expr = f"{value}\n>= on (horizon) group_left ()\n{_block(a.cutoff_query)}"
    elif a.op == "outside":
        low, high = a.cutoff  # type: ignore[misc]
        expr = f"{value} < {_num(low)}\nor\n{value} > {_num(high)}"
    else:
        expr = f"{value} {a.op} {_num(a.cutoff)}"  # type: ignore[arg-type]
    if a.absent:
        expr += f"\nor\nabsent({a.absent})"
    return expr + "\n" if "\n" in expr else expr


def _annotations(a: Alert, value_ref: str) -> dict[str, str]:
    value = f"{{{{ {value_ref} | {a.value_format} }}}}" if a.value_format else f"{{{{ {value_ref} }}}}"
    return {"summary": a.summary, "description": a.description.replace("{{ $value }}", value),
            "dashboard_url": dashboard_url(a.link, a.link_params)}


def alert_rules() -> dict[str, Any]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for a in _alerts():
        groups.setdefault(a.group, []).append({
            "alert": a.name, "expr": prometheus_expr(a), "for": a.for_,
            "labels": {"severity": a.severity}, "annotations": _annotations(a, "$value"),
        })
    return {"groups": [{"name": name, "rules": rules} for name, rules in groups.items()]}


def grafana_alert_rules() -> dict[str, Any]:
    """Grafana-managed rules: query A gives the value; threshold B the editable cut-off, or, for a
    cut-off series, query B that series and math expression C the comparison."""
    ds = SETTINGS.datasource_uid

    def query(ref: str, expr: str) -> dict[str, Any]:
        return {"refId": ref, "relativeTimeRange": {"from": 600, "to": 0}, "datasourceUid": ds,
                "model": {"refId": ref, "expr": one_line(expr), "instant": True, "range": False,
                          "datasource": {"type": "prometheus", "uid": ds}, "editorMode": "code",
                          "legendFormat": "__auto", "intervalMs": 15000, "maxDataPoints": 43200}}

    def expression(ref: str, kind: str, expr: str, **extra: Any) -> dict[str, Any]:
        return {"refId": ref, "relativeTimeRange": {"from": 0, "to": 0}, "datasourceUid": "__expr__",
                "model": {"refId": ref, "type": kind, "expression": expr,
                          "datasource": {"type": "__expr__", "uid": "__expr__"}, **extra}}

    groups: dict[str, list[dict[str, Any]]] = {}
    for a in _alerts():
        if a.cutoff_query is not None:
            # B is the cut-off series (labels {horizon}, a subset of A's): a math expression
            # joins each series of A with it and is non-zero (firing) where A reaches it.
            data = [query("A", a.value), query("B", a.cutoff_query), expression("C", "math", f"$A {a.op} $B")]
        else:
            if a.op == "outside":
                evaluator = {"type": "outside_range", "params": list(a.cutoff)}  # type: ignore[arg-type]
            else:
                evaluator = {"type": "gt" if a.op.startswith(">") else "lt", "params": [a.cutoff]}
            data = [query("A", a.value), expression("B", "threshold", "A", conditions=[{"evaluator": evaluator}])]
        annotations = _annotations(a, "$values.A.Value")
        # Grafana templates see $labels and $values (not $value); links in notifications come
        # from dashboardUid/panelId as well.
        groups.setdefault(a.group, []).append({
            "uid": "tft-" + "".join("-" + c.lower() if c.isupper() else c for c in a.name[3:]).strip("-")[:36],
            "title": a.name,
            "condition": data[-1]["refId"],
            "data": data,
            "dashboardUid": a.link,
            "panelId": a.panel_id,
            "noDataState": a.no_data,
            "execErrState": "Error",
            "for": a.for_,
            "annotations": annotations,
            "labels": {"severity": a.severity},
            "isPaused": False,
        })
    return {"apiVersion": 1, "groups": [
        {"orgId": 1, "name": name, "folder": SETTINGS.folder, "interval": "1m", "rules": rules}
        for name, rules in groups.items()]}


# --------------------------------------------------------------------------------------------
# Dashboards
# --------------------------------------------------------------------------------------------

DS = {"type": "prometheus", "uid": SETTINGS.datasource_uid}

# Panel ids that alert rules link to (kept stable on purpose).
PANEL_HOST_FORECAST = 2
PANEL_HOST_ETA = 3
PANEL_HOST_PROBABILITY = 4
PANEL_HEALTH_UP = 2
PANEL_HEALTH_CYCLES = 3
PANEL_HEALTH_MODEL = 11
PANEL_HEALTH_COVERAGE = 21
PANEL_HEALTH_RELATIVE = 23


def target(expr: str, legend: str = "__auto", ref: str = "A", instant: bool = False,
           table: bool = False, hide: bool = False) -> dict[str, Any]:
    t: dict[str, Any] = {"datasource": DS, "refId": ref, "expr": one_line(expr), "legendFormat": legend,
                         "editorMode": "code", "range": not instant, "instant": instant,
                         "format": "table" if table else "time_series"}
    if hide:
        t["hide"] = True
    return t


def refs(targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Assign refIds A, B, ... (then AA, AB, ...)."""
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    for i, t in enumerate(targets):
        t["refId"] = letters[i] if i < 26 else letters[i // 26 - 1] + letters[i % 26]
    return targets


@dataclass
class Layout:
    """Places panels left to right in rows of 24 columns."""

    y: int = 0
    x: int = 0
    row_h: int = 0
    panels: list[dict[str, Any]] = field(default_factory=list)

    def add(self, panel: dict[str, Any], w: int, h: int) -> dict[str, Any]:
        if self.x + w > 24:
            self.newline()
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_h = max(self.row_h, h)
        self.panels.append(panel)
        return panel

    def newline(self) -> None:
        if self.x:
            self.y += self.row_h
        self.x, self.row_h = 0, 0

    def row(self, pid: int, title: str) -> None:
        self.newline()
        self.panels.append({"id": pid, "type": "row", "title": title, "collapsed": False, "panels": [],
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}})
        self.y += 1


def panel(pid: int, kind: str, title: str, targets: list[dict[str, Any]], description: str = "",
          unit: str | None = None, defaults: dict[str, Any] | None = None,
          overrides: list[dict[str, Any]] | None = None, options: dict[str, Any] | None = None,
          transformations: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = dict(defaults or {})
    if unit:
        d["unit"] = unit
    p: dict[str, Any] = {"id": pid, "type": kind, "title": title, "description": description, "datasource": DS,
                         "targets": refs(targets), "fieldConfig": {"defaults": d, "overrides": overrides or []},
                         "options": options or {}}
    if transformations:
        p["transformations"] = transformations
    p.update(extra)
    return p


def thresholds(*steps: tuple[float | None, str]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in steps]}


RISK_STEPS = thresholds((None, "green"), (0.2, "yellow"), (0.35, "orange"), (SETTINGS.risk_probability, "red"))
ETA_STEPS = thresholds((None, "red"), (SETTINGS.critical_eta_seconds, "orange"), (4 * 3600, "yellow"),
                       (8 * 3600, "green"))


def ts_options(legend: str = "list", sort: str = "none") -> dict[str, Any]:
    return {"legend": {"displayMode": legend, "placement": "bottom", "showLegend": True, "calcs": []},
            "tooltip": {"mode": "multi", "sort": sort}}


def ts_defaults(unit: str | None = None, min_: float | None = None, max_: float | None = None,
                fill: int = 0, steps: dict[str, Any] | None = None, threshold_style: str = "off",
                draw: str = "line") -> dict[str, Any]:
    d: dict[str, Any] = {
        "custom": {"drawStyle": draw, "lineWidth": 1, "fillOpacity": fill, "showPoints": "never",
                   "spanNulls": False, "axisSoftMin": min_, "thresholdsStyle": {"mode": threshold_style}},
        "color": {"mode": "palette-classic"},
    }
    if unit:
        d["unit"] = unit
    if min_ is not None:
        d["min"] = min_
    if max_ is not None:
        d["max"] = max_
    if steps:
        d["thresholds"] = steps
    return d


def stat_options(graph: str = "none", color: str = "value") -> dict[str, Any]:
    return {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "colorMode": color,
            "graphMode": graph, "textMode": "auto", "orientation": "auto", "justifyMode": "auto",
            "wideLayout": True, "showPercentChange": False}


def table_options(sort_by: str | None = None, desc: bool = False) -> dict[str, Any]:
    o: dict[str, Any] = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"]}}
    if sort_by:
        o["sortBy"] = [{"displayName": sort_by, "desc": desc}]
    return o


def by_name(name: str, *props: tuple[str, Any]) -> dict[str, Any]:
    return {"matcher": {"id": "byName", "options": name}, "properties": [{"id": k, "value": v} for k, v in props]}


def by_regexp(pattern: str, *props: tuple[str, Any]) -> dict[str, Any]:
    return {"matcher": {"id": "byRegexp", "options": pattern},
            "properties": [{"id": k, "value": v} for k, v in props]}


def color_cells(mode: str = "gradient") -> tuple[str, Any]:
    return ("custom.cellOptions", {"type": "color-background", "mode": mode})


def host_link(title: str = "Open the host drill-down") -> tuple[str, Any]:
    return ("links", [{"title": title, "url": f"/d/{DASH_HOST}/{DASH_SLUGS[DASH_HOST]}?"
                       "var-instance=${__data.fields.instance}&var-signal=${__data.fields.signal}"}])


def organize(rename: dict[str, str], hide: list[str] | None = None) -> dict[str, Any]:
    return {"id": "organize", "options": {"renameByName": rename,
                                          "excludeByName": {k: True for k in (hide or [])}}}


HIDE_COLS = ["Time", "__name__", "job"]


def var_query(name: str, label: str, query: str, multi: bool = False, include_all: bool = False,
              hide: int = 0) -> dict[str, Any]:
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "query": {"query": query, "refId": f"{name}-variable"}, "definition": query,
            "refresh": 2, "sort": 1, "multi": multi, "includeAll": include_all, "hide": hide,
            "current": {}, "options": [], "regex": ""}


def var_custom(name: str, label: str, values: list[str], default: str) -> dict[str, Any]:
    return {"name": name, "label": label, "type": "custom", "query": ",".join(values),
            "multi": False, "includeAll": False, "hide": 0,
            "current": {"selected": True, "text": default, "value": default},
            "options": [{"selected": v == default, "text": v, "value": v} for v in values]}


def dashboard(uid: str, title: str, description: str, panels: list[dict[str, Any]],
              variables: list[dict[str, Any]], time_from: str = "now-6h", time_to: str = "now",
              refresh: str = "1m") -> dict[str, Any]:
    others = [{"title": t, "url": f"/d/{u}/{DASH_SLUGS[u]}", "type": "link", "icon": "dashboard",
               "includeVars": False, "keepTime": False, "targetBlank": False, "asDropdown": False,
               "tags": [], "tooltip": ""}
              for u, t in ((DASH_FLEET, "Fleet overview"), (DASH_HOST, "Host drill-down"),
                           (DASH_HEALTH, "Model and forecaster health")) if u != uid]
    return {
        "uid": uid, "title": title, "description": description, "tags": ["tft-monitor", "forecast"],
        "editable": True, "graphTooltip": 1, "timezone": "browser", "schemaVersion": 39, "version": 1,
        "time": {"from": time_from, "to": time_to}, "refresh": refresh, "fiscalYearStartMonth": 0,
        "liveNow": False, "weekStart": "", "links": others, "timepicker": {},
        "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                  "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                                  "name": "Annotations & Alerts", "type": "dashboard"}]},
        "templating": {"list": variables}, "panels": panels,
    }


# ---- 1. Fleet overview ----------------------------------------------------------------------


def hosts_at_risk(horizon: str) -> str:
    """Hosts with a signal whose breach probability reaches the model's cut-off (the alert condition)."""
    return f"count({at_or_above_cutoff(breach_probability(horizon, 'instance, horizon'), horizon)}) or vector(0)"


def fleet_dashboard() -> dict[str, Any]:
    own_cutoff = "the model's own cut-off for that horizon (the probability alerts' condition)"
    lay = Layout()
    lay.add(panel(1, "stat", "Hosts forecast", [target("count(count by (instance) (tft_forecast_p50))")],
                  "Hosts with at least one published forecast.", options=stat_options(),
                  defaults={"color": {"mode": "fixed", "fixedColor": "blue"}}), 4, 4)
    lay.add(panel(2, "stat", "Series warming up",
                  [target("sum(tft_forecast_warming_up) or vector(0)")],
                  "Host/signal series forecast with less than a full context window of history.",
                  options=stat_options(), defaults={"color": {"mode": "fixed", "fixedColor": "text"}}), 4, 4)
    lay.add(panel(3, "stat", f"Hosts at risk within {SETTINGS.warning_horizon}",
                  [target(hosts_at_risk(SETTINGS.warning_horizon))],
                  f"Hosts whose breach probability for any signal reaches {own_cutoff}.",
                  options=stat_options(color="background"),
                  defaults={"thresholds": thresholds((None, "green"), (1, "red"))}), 4, 4)
    lay.add(panel(4, "stat", "Predicted breaches within 1h (p50 path)",
                  [target(f'count(min by (instance, signal) (tft_breach_eta_seconds{{path="p50"}})'
                          f" <= {SETTINGS.critical_eta_seconds}) or vector(0)")],
                  "Host/signal series whose median forecast crosses the threshold within the hour.",
                  options=stat_options(color="background"),
                  defaults={"thresholds": thresholds((None, "green"), (1, "red"))}), 4, 4)
    lay.add(panel(5, "stat", "Model", [target("max(tft_model_fallback)")],
                  "Trained TFT model, or the flagged seasonal-naive fallback.",
                  options=stat_options(color="background"),
                  defaults={"mappings": [{"type": "value", "options": {
                      "0": {"text": "TFT model", "color": "green", "index": 0},
                      "1": {"text": "FALLBACK", "color": "red", "index": 1}}}],
                      "thresholds": thresholds((None, "green"), (1, "red"))}), 4, 4)
    lay.add(panel(6, "stat", "Forecast age", [target("max(tft_forecaster_forecast_age_seconds)")],
                  "Seconds since the published forecasts were computed.", unit="s", options=stat_options(),
                  defaults={"thresholds": thresholds((None, "green"), (SETTINGS.stale_after_seconds, "red"))}), 4, 4)

    lay.row(10, "Hosts at risk")
    lay.add(panel(11, "bargauge", "Hosts at risk per horizon",
                  [target(hosts_at_risk(h), legend=h) for h in HORIZONS],
                  f"Number of hosts with a breach probability at or above {own_cutoff} for any signal, per horizon.",
                  options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                           "orientation": "vertical", "displayMode": "gradient", "showUnfilled": True,
                           "valueMode": "color", "namePlacement": "auto", "sizing": "auto", "minVizHeight": 16,
                           "minVizWidth": 8, "maxVizHeight": 300},
                  defaults={"min": 0, "decimals": 0, "thresholds": thresholds((None, "green"), (1, "orange"),
                                                                                (5, "red"))}), 8, 8)
    lay.add(panel(12, "timeseries", "Hosts at risk over time",
                  [target(hosts_at_risk(h), legend=h) for h in HORIZONS],
                  "The same counts over time.", options=ts_options(),
                  defaults=ts_defaults(min_=0) | {"decimals": 0}), 10, 8)
    lay.add(panel(13, "bargauge", "Alert cut-off per horizon",
                  [target(f'max by (horizon) (tft_breach_probability_cutoff{{horizon="{h}"}})', legend=h)
                   for h in HORIZONS],
                  "The served model's breach-probability cut-off per horizon, chosen on its training data "
                  "(F1-optimal on the validation windows); a host is at risk, and the probability alerts fire, "
                  "at or above it. No data: no model is loaded (fallback), and the alert rules use "
                  f"{_num(SETTINGS.absent_cutoff)}.",
                  unit="percentunit",
                  options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                           "orientation": "horizontal", "displayMode": "basic", "showUnfilled": True,
                           "valueMode": "color", "namePlacement": "auto", "sizing": "auto", "minVizHeight": 10,
                           "minVizWidth": 0, "maxVizHeight": 300},
                  defaults={"min": 0, "max": 1, "decimals": 1,
                            "color": {"mode": "fixed", "fixedColor": "blue"},
                            "thresholds": thresholds((None, "blue"))}), 6, 8)

    lay.row(20, "Rankings")
    eta_p50 = 'min by (instance, signal) (tft_breach_eta_seconds{path="p50"})'
    top = f"bottomk(20, {eta_p50})"
    lay.add(panel(21, "table", "Soonest predicted breach",
                  [target(top, instant=True, table=True),
                   target('min by (instance, signal) (tft_breach_eta_seconds{path="p90"})'
                          f" and on (instance, signal) {top}",
                          instant=True, table=True),
                   target(f'max by (instance, signal) (tft_breach_probability{{horizon="{SETTINGS.warning_horizon}"}})'
                          f" and on (instance, signal) {top}", instant=True, table=True)],
                  "Host/signal series ranked by when the median (p50) forecast path crosses the threshold; the "
                  "p90 path is the pessimistic case. Click a row to open the host drill-down.",
                  transformations=[{"id": "merge", "options": {}},
                                   organize({"Value #A": "ETA (p50 path)", "Value #B": "ETA (p90 path)",
                                             "Value #C": f"P(breach within {SETTINGS.warning_horizon})"},
                                            HIDE_COLS)],
                  options=table_options("ETA (p50 path)"),
                  overrides=[by_regexp("ETA.*", ("unit", "s"), color_cells("basic"), ("thresholds", ETA_STEPS)),
                             by_name(f"P(breach within {SETTINGS.warning_horizon})", ("unit", "percentunit"),
                                     color_cells(), ("thresholds", RISK_STEPS), ("min", 0), ("max", 1)),
                             by_name("instance", host_link())]), 12, 10)
    lay.add(panel(22, "table", "Highest breach probability ($horizon)",
                  [target('topk(20, max by (instance, signal) (tft_breach_probability{horizon="$horizon"}))',
                          instant=True, table=True)],
                  "Host/signal series ranked by the probability of crossing the threshold within the selected "
                  "horizon (calibrated on validation data).",
                  transformations=[organize({"Value": "P(breach)"}, HIDE_COLS)],
                  options=table_options("P(breach)", desc=True),
                  overrides=[by_name("P(breach)", ("unit", "percentunit"), color_cells(),
                                     ("thresholds", RISK_STEPS), ("min", 0), ("max", 1)),
                             by_name("instance", host_link())]), 12, 10)

    lay.row(30, "Risk heat map")
    lay.add(panel(31, "table", "Risk per host and signal ($horizon)",
                  [target('max by (instance, signal) (tft_breach_probability{horizon="$horizon"})',
                          instant=True, table=True)],
                  "Breach probability within the selected horizon: one row per host, one column per signal.",
                  transformations=[{"id": "groupingToMatrix", "options": {"columnField": "signal",
                                                                          "rowField": "instance",
                                                                          "valueField": "Value"}},
                                   organize({"instance\\signal": "instance"})],
                  defaults={"unit": "percentunit", "min": 0, "max": 1, "thresholds": RISK_STEPS, "decimals": 0,
                            "custom": {"align": "center", "cellOptions": {"type": "color-background",
                                                                          "mode": "gradient"}}},
                  options=table_options(),
                  overrides=[by_name("instance", ("custom.cellOptions", {"type": "auto"}), ("custom.align", "left"),
                                     ("links", [{"title": "Open the host drill-down",
                                                 "url": f"/d/{DASH_HOST}/{DASH_SLUGS[DASH_HOST]}?"
                                                        "var-instance=${__data.fields.instance}"}]))]), 10, 12)
    lay.add(panel(32, "status-history", "Risk over time ($horizon)",
                  [target('max by (instance, signal) (tft_breach_probability{horizon="$horizon"})',
                          legend="{{instance}} {{signal}}")],
                  "Breach probability per host and signal over time.",
                  defaults={"unit": "percentunit", "min": 0, "max": 1, "thresholds": RISK_STEPS,
                            "color": {"mode": "thresholds"}, "custom": {"lineWidth": 0, "fillOpacity": 80}},
                  options={"showValue": "never", "rowHeight": 0.9, "colWidth": 0.9,
                           "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False},
                           "tooltip": {"mode": "single", "sort": "none"}}), 14, 12)
    variables = [var_custom("horizon", "Horizon", HORIZONS, SETTINGS.warning_horizon)]
    return dashboard(DASH_FLEET, "TFT / Fleet overview",
                     "Which hosts are predicted to breach a threshold, and when.", lay.panels, variables)


# ---- 2. Host drill-down ---------------------------------------------------------------------


def forecast_targets(instance: str, signal_matcher: str, horizons: list[str]) -> list[dict[str, Any]]:
    sel = f'instance="{instance}", signal{signal_matcher}'
    ts = [target(f"max({ACTUAL}{{{sel}}})", legend="actual"),
          target(f"max(last_over_time(tft_signal_threshold{{signal{signal_matcher}}}[9h]))", legend="threshold")]
    for h in horizons:
        for q in ("p10", "p50", "p90"):
            ts.append(target(f'max(tft_forecast_{q}{{{sel}, horizon="{h}"}} offset {h})', legend=f"{q} {h}"))
    return ts


def forecast_overrides(horizons: list[str]) -> list[dict[str, Any]]:
    o = [by_name("actual", ("color", {"mode": "fixed", "fixedColor": "text"}), ("custom.lineWidth", 2)),
         by_name("threshold", ("color", {"mode": "fixed", "fixedColor": "red"}),
                 ("custom.lineStyle", {"fill": "dash", "dash": [10, 10]}), ("custom.lineWidth", 2))]
    for h in horizons:
        color = {"mode": "fixed", "fixedColor": HORIZON_COLORS.get(h, "blue")}
        o.append(by_name(f"p50 {h}", ("color", color), ("custom.lineWidth", 2)))
        o.append(by_name(f"p90 {h}", ("color", color), ("custom.fillBelowTo", f"p10 {h}"),
                         ("custom.fillOpacity", 12), ("custom.lineWidth", 0),
                         ("custom.hideFrom", {"legend": True, "tooltip": False, "viz": False})))
        o.append(by_name(f"p10 {h}", ("color", color), ("custom.lineWidth", 0),
                         ("custom.hideFrom", {"legend": True, "tooltip": False, "viz": False})))
    return o


def host_dashboard() -> dict[str, Any]:
    lay = Layout()
    lay.add(panel(1, "text", "Reading this dashboard", [],
                  options={"mode": "markdown", "content": (
                      "The time range ends **8 h in the future**. The white line is what happened; each "
                      "colour is one horizon: its **p50** line is the median forecast and the shaded band "
                      "the **p10-p90** range (80 % of outcomes should fall inside). A forecast made now for "
                      "`now + h` is stored now and drawn with `offset h`, so each horizon's line reaches "
                      "`h` into the future and its past part shows forecast against actual. The dashed red "
                      "line is the signal's threshold.")}), 24, 3)
    lay.add(panel(PANEL_HOST_FORECAST, "timeseries", "$signal on $instance: actual and forecast, all horizons",
                  forecast_targets("$instance", '="$signal"', HORIZONS),
                  "Actual series, p50 forecast and p10-p90 band per horizon, threshold.",
                  defaults=ts_defaults(min_=0), overrides=forecast_overrides(HORIZONS), options=ts_options()), 16, 12)
    eta = 'min(tft_breach_eta_seconds{instance="$instance", signal="$signal", path="%s"})'
    lay.add(panel(PANEL_HOST_ETA, "stat", "Breach ETA",
                  [target(eta % "p50", legend="p50 path"), target(eta % "p90", legend="p90 path")],
                  "Time until the forecast path first crosses the threshold (p90 path: the pessimistic case).",
                  unit="s", options=stat_options(color="background") | {"orientation": "horizontal"},
                  defaults={"thresholds": ETA_STEPS}), 8, 5)
    lay.add(panel(PANEL_HOST_PROBABILITY, "bargauge", "Breach probability by horizon",
                  [target(f'max(tft_breach_probability{{instance="$instance", signal="$signal", horizon="{h}"}})',
                          legend=h) for h in HORIZONS],
                  "Calibrated probability that the signal crosses its threshold within each horizon. The "
                  "colours are a fixed scale; the alerts fire at the model's own cut-off per horizon "
                  "(Fleet overview, *Alert cut-off per horizon*).",
                  unit="percentunit", defaults={"min": 0, "max": 1, "thresholds": RISK_STEPS},
                  options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                           "orientation": "horizontal", "displayMode": "gradient", "showUnfilled": True,
                           "valueMode": "color", "namePlacement": "auto", "sizing": "auto", "minVizHeight": 10,
                           "minVizWidth": 0, "maxVizHeight": 300}), 8, 7)

    lay.row(10, "Forecast per horizon: $signal on $instance")
    for i, h in enumerate(HORIZONS):
        lay.add(panel(11 + i, "timeseries", f"Horizon {h}", forecast_targets("$instance", '="$signal"', [h]),
                      f"Forecast made {h} earlier for each point in time, against the actual.",
                      defaults=ts_defaults(min_=0), overrides=forecast_overrides([h]),
                      options=ts_options()), 8 if i < 3 else 12, 8)

    lay.row(20, "This series")
    sel = 'instance="$instance", signal="$signal"'
    lay.add(panel(21, "table", "Model serving this series",
                  [target(f"tft_forecast_model_info{{{sel}}}", instant=True, table=True),
                   target(f"max by (instance, signal) (tft_forecast_warming_up{{{sel}}})", instant=True, table=True)],
                  "Which model (per-host, global or fallback) and version forecast this series; warming up = "
                  "less history than a full context window.",
                  transformations=[{"id": "merge", "options": {}},
                                   organize({"Value #B": "warming up"}, [*HIDE_COLS, "Value #A"])],
                  options=table_options()), 12, 6)
    lay.add(panel(22, "bargauge", "Live accuracy of this series (last day)",
                  [target(f"avg by (horizon) (avg_over_time({IN_BAND}{{{sel}}}[1d]))", legend="{{horizon}}",
                          instant=True)],
                  "Share of actual values inside the p10-p90 band, per horizon (nominal 80 %).",
                  unit="percentunit", defaults={"min": 0, "max": 1, "thresholds": thresholds(
                      (None, "red"), (SETTINGS.coverage_target - SETTINGS.coverage_tolerance, "green"),
                      (SETTINGS.coverage_target + SETTINGS.coverage_tolerance, "red"))},
                  options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                           "orientation": "horizontal", "displayMode": "basic", "showUnfilled": True,
                           "valueMode": "color", "namePlacement": "auto", "sizing": "auto", "minVizHeight": 10,
                           "minVizWidth": 0, "maxVizHeight": 300}), 12, 6)

    lay.row(30, "All signals of $instance")
    lay.add(panel(31, "timeseries", "$signals", forecast_targets("$instance", '=~"$signals"', HORIZONS),
                  "The same view for every forecast signal of the host.", defaults=ts_defaults(min_=0),
                  overrides=forecast_overrides(HORIZONS), options=ts_options(),
                  repeat="signals", repeatDirection="h", maxPerRow=2), 12, 9)
    variables = [
        var_query("instance", "Host", "label_values(tft_forecast_p50, instance)"),
        var_query("signal", "Signal", 'label_values(tft_forecast_p50{instance="$instance"}, signal)'),
        var_query("signals", "All signals", 'label_values(tft_forecast_p50{instance="$instance"}, signal)',
                  multi=True, include_all=True, hide=2),
    ]
    variables[2]["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    return dashboard(DASH_HOST, "TFT / Host drill-down",
                     "One host: actual, forecast band per horizon reaching 8 h into the future, breach ETA.",
                     lay.panels, variables, time_from="now-16h", time_to="now+8h")


# ---- 3. Model and forecaster health ---------------------------------------------------------


def health_dashboard() -> dict[str, Any]:
    f = SETTINGS.forecaster_selector
    lay = Layout()
    lay.add(panel(1, "text", "About", [], options={"mode": "markdown", "content": (
        "Live accuracy compares each horizon's forecast (`offset h`) with what happened, so it needs at "
        f"least `h` of history, and the seasonal-naive comparison one {SETTINGS.seasonal_period} of recorded "
        "actuals. Recording rules: `prometheus/rules/tft-accuracy.rules.yml`.")}), 24, 2)
    lay.add(panel(PANEL_HEALTH_UP, "stat", "Forecaster up", [target(f"up{{{f}}}", legend="{{instance}}")],
                  options=stat_options(color="background"),
                  defaults={"mappings": [{"type": "value", "options": {"0": {"text": "DOWN", "index": 0},
                                                                       "1": {"text": "UP", "index": 1}}}],
                            "thresholds": thresholds((None, "red"), (1, "green"))}), 4, 4)
    lay.add(panel(PANEL_HEALTH_CYCLES, "stat", "Since last successful cycle",
                  [target(f"time() - max(tft_forecaster_last_success_timestamp_seconds{{{f}}})")], unit="s",
                  options=stat_options(color="background"),
                  defaults={"thresholds": thresholds((None, "green"), (SETTINGS.stale_after_seconds, "red"))}), 5, 4)
    lay.add(panel(4, "stat", "Input staleness", [target(f"max(tft_forecaster_input_staleness_seconds{{{f}}})")],
                  "Age of the newest input sample at the last cycle.", unit="s", options=stat_options()), 5, 4)
    lay.add(panel(5, "stat", "Series", [target(f"sum by (state) (tft_forecaster_series{{{f}}})",
                                               legend="{{state}}")],
                  "Series forecast and warming up at the last cycle.", options=stat_options()), 5, 4)
    lay.add(panel(6, "table", "Build", [target(f"tft_forecaster_build_info{{{f}}}", instant=True, table=True)],
                  transformations=[organize({}, [*HIDE_COLS, "Value"])], options=table_options()), 5, 4)

    lay.row(10, "Model")
    lay.add(panel(PANEL_HEALTH_MODEL, "table", "Model served",
                  [target(f"tft_model_info{{{f}}}", instant=True, table=True),
                   target(f"tft_model_age_seconds{{{f}}}", instant=True, table=True),
                   target(f"tft_model_fallback{{{f}}}", instant=True, table=True)],
                  "Version, training time and scope of the loaded model; source=fallback means no trained model "
                  "could be loaded.",
                  transformations=[{"id": "merge", "options": {}},
                                   organize({"Value #B": "age", "Value #C": "fallback"}, [*HIDE_COLS, "Value #A"])],
                  options=table_options(),
                  overrides=[by_name("age", ("unit", "s")),
                             by_name("fallback", color_cells("basic"), ("thresholds", thresholds(
                                 (None, "green"), (1, "red"))))]), 12, 5)
    lay.add(panel(12, "stat", "Model age", [target(f"max(tft_model_age_seconds{{{f}}})")], unit="s",
                  options=stat_options(color="background"),
                  defaults={"thresholds": thresholds((None, "green"), (SETTINGS.model_max_age_seconds, "red"))}), 4, 5)
    lay.add(panel(13, "piechart", "Series by model", [target("count by (model) (tft_forecast_model_info)",
                                                               legend="{{model}}", instant=True)],
                  "Series forecast by a per-host model, the global model, or the fallback.",
                  options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                           "pieType": "donut", "legend": {"displayMode": "table", "placement": "right",
                                                          "showLegend": True, "values": ["value"]},
                           "tooltip": {"mode": "single", "sort": "none"}}), 8, 5)

    lay.row(20, "Live forecast accuracy")
    lay.add(panel(PANEL_HEALTH_COVERAGE, "timeseries", "p10-p90 coverage per horizon (last day)",
                  [target(f'avg by (horizon) ({FLEET_COVERAGE.format(w="1d")}{{signal=~"$signal"}})',
                          legend="{{horizon}}")],
                  "Share of actual values inside the forecast band, fleet-wide; nominal 80 %.",
                  unit="percentunit",
                  defaults=ts_defaults(min_=0, max_=1, threshold_style="dashed", steps=thresholds(
                      (None, "red"), (SETTINGS.coverage_target - SETTINGS.coverage_tolerance, "green"),
                      (SETTINGS.coverage_target + SETTINGS.coverage_tolerance, "red"))),
                  options=ts_options()), 12, 8)
    lay.add(panel(22, "timeseries", "Mean absolute error of p50 per horizon (last day)",
                  [target(f'avg by (horizon) ({FLEET_ABS_ERROR.format(w="1d")}{{signal=~"$signal"}})',
                          legend="{{horizon}}"),
                   target(f'avg({FLEET_NAIVE.format(w="1d")}{{signal=~"$signal"}})', legend="seasonal naive")],
                  "Absolute error of the median forecast against what happened, in signal units.",
                  defaults=ts_defaults(min_=0), options=ts_options(),
                  overrides=[by_name("seasonal naive", ("custom.lineStyle", {"fill": "dash", "dash": [10, 10]}),
                                     ("color", {"mode": "fixed", "fixedColor": "red"}))]), 12, 8)
    lay.add(panel(PANEL_HEALTH_RELATIVE, "timeseries", "Error relative to seasonal naive (last day)",
                  [target(f'{RELATIVE_ERROR}{{signal=~"$signal"}}', legend="{{signal}} {{horizon}}")],
                  "Below 1: the model beats repeating yesterday's value.",
                  defaults=ts_defaults(min_=0, threshold_style="dashed",
                                       steps=thresholds((None, "green"), (SETTINGS.naive_ratio, "red"))),
                  options=ts_options("table")), 12, 8)
    lay.add(panel(24, "table", "Coverage by signal and horizon (last day)",
                  [target(f'{FLEET_COVERAGE.format(w="1d")}{{signal=~"$signal"}}', instant=True, table=True)],
                  transformations=[{"id": "groupingToMatrix", "options": {"columnField": "horizon",
                                                                          "rowField": "signal",
                                                                          "valueField": "Value"}},
                                   organize({"signal\\horizon": "signal"})],
                  defaults={"unit": "percentunit", "min": 0, "max": 1, "decimals": 0, "thresholds": thresholds(
                      (None, "red"), (SETTINGS.coverage_target - SETTINGS.coverage_tolerance, "green"),
                      (SETTINGS.coverage_target + SETTINGS.coverage_tolerance, "red")),
                      "custom": {"align": "center", "cellOptions": {"type": "color-background", "mode": "basic"}}},
                  options=table_options(),
                  overrides=[by_name("signal", ("custom.cellOptions", {"type": "auto"}))]), 12, 8)

    lay.row(30, "Forecaster")
    lay.add(panel(31, "timeseries", "Cycle duration",
                  [target(f"histogram_quantile({q}, sum by (le) (rate(tft_forecaster_cycle_duration_seconds_bucket"
                          f"{{{f}}}[$__rate_interval])))", legend=f"p{int(q * 100)}") for q in (0.5, 0.9)]
                  + [target(f"tft_forecaster_stage_duration_seconds{{{f}}}", legend="stage {{stage}}")],
                  "Whole-cycle quantiles and the last cycle's time per stage.", unit="s",
                  defaults=ts_defaults(min_=0), options=ts_options()), 12, 8)
    lay.add(panel(32, "timeseries", "Series forecast and skipped",
                  [target(f"sum by (state) (tft_forecaster_series{{{f}}})", legend="{{state}}"),
                   target(f"sum by (reason) (tft_forecaster_series_skipped{{{f}}})", legend="skipped: {{reason}}")],
                  defaults=ts_defaults(min_=0) | {"decimals": 0}, options=ts_options()), 12, 8)
    lay.add(panel(33, "timeseries", "Cycles and failures per hour",
                  [target(f"sum by (outcome) (increase(tft_forecaster_cycles_total{{{f}}}[1h]))",
                          legend="cycles: {{outcome}}"),
                   # A stage that never failed has no counter yet: show it at 0.
                   target(f"sum by (stage) (increase(tft_forecaster_failures_total{{{f}}}[1h]))"
                          f" or sum by (stage) (0 * tft_forecaster_stage_duration_seconds{{{f}}})",
                          legend="failures: {{stage}}")],
                  defaults=ts_defaults(min_=0), options=ts_options(),
                  overrides=[by_regexp("failures.*", ("color", {"mode": "fixed", "fixedColor": "red"}))]), 12, 8)
    lay.add(panel(34, "timeseries", "Prometheus queries",
                  [target(f"sum by (endpoint, outcome) (rate(tft_forecaster_prometheus_requests_total{{{f}}}"
                          "[$__rate_interval]))", legend="{{endpoint}} {{outcome}}"),
                   target("histogram_quantile(0.9, sum by (le) (rate("
                          f"tft_forecaster_prometheus_request_duration_seconds_bucket{{{f}}}[$__rate_interval])))",
                          legend="p90 latency")],
                  "Requests per second by outcome; p90 latency on the right axis.", defaults=ts_defaults(min_=0),
                  options=ts_options(),
                  overrides=[by_name("p90 latency", ("unit", "s"), ("custom.axisPlacement", "right"))]), 12, 8)

    lay.row(40, "Retraining")
    lay.add(panel(41, "stat", "Last training run", [target("max(tft_trainer_last_run_exit_code)")],
                  "Exit status of the last `tft-trainer train` run (cron).", options=stat_options(color="background"),
                  defaults={"mappings": [{"type": "value", "options": {
                      "0": {"text": "promoted", "color": "green", "index": 0},
                      "1": {"text": "failed", "color": "red", "index": 1},
                      "2": {"text": "bad config", "color": "red", "index": 2},
                      "3": {"text": "kept (not better)", "color": "blue", "index": 3},
                      "4": {"text": "kept (worse than baselines)", "color": "orange", "index": 4},
                      "5": {"text": "locked", "color": "yellow", "index": 5},
                      "6": {"text": "no data", "color": "red", "index": 6}}}],
                      "thresholds": thresholds((None, "text"))}), 6, 5)
    lay.add(panel(42, "stat", "Since last promotion",
                  [target("time() - max(tft_trainer_last_success_timestamp_seconds > 0)")], unit="s",
                  options=stat_options()), 6, 5)
    lay.add(panel(43, "stat", "Last run took", [target("max(tft_trainer_last_run_duration_seconds)")], unit="s",
                  options=stat_options()), 6, 5)
    lay.add(panel(44, "bargauge", "Runs by outcome", [target("sum by (outcome) (tft_trainer_runs_total)",
                                                             legend="{{outcome}}", instant=True)],
                  options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                           "orientation": "horizontal", "displayMode": "basic", "showUnfilled": True,
                           "valueMode": "color", "namePlacement": "auto", "sizing": "auto", "minVizHeight": 10,
                           "minVizWidth": 0, "maxVizHeight": 300},
                  defaults={"decimals": 0, "thresholds": thresholds((None, "blue"))}), 6, 5)
    lay.add(panel(45, "table", "Holdout scores of the last run",
                  [target("tft_trainer_backtest_score", instant=True, table=True)],
                  "Scores of the candidate, the current model and the baselines on the holdout slice "
                  "(sql: scaled quantile loss, lower is better; coverage: p10-p90).",
                  transformations=[{"id": "groupingToMatrix", "options": {"columnField": "metric",
                                                                          "rowField": "model",
                                                                          "valueField": "Value"}},
                                   organize({"model\\metric": "model"})],
                  defaults={"decimals": 3}, options=table_options()), 12, 6)
    lay.add(panel(46, "table", "Last run", [target("tft_trainer_last_run_info", instant=True, table=True),
                                            target("tft_trainer_last_run_timestamp_seconds * 1000", instant=True,
                                                   table=True)],
                  transformations=[{"id": "merge", "options": {}},
                                   organize({"Value #B": "ended"}, [*HIDE_COLS, "Value #A", "instance"])],
                  overrides=[by_name("ended", ("unit", "dateTimeAsIso"))], options=table_options()), 12, 6)
    variables = [var_query("signal", "Signal", "label_values(tft_forecast_p50, signal)", multi=True,
                           include_all=True)]
    variables[0]["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    return dashboard(DASH_HEALTH, "TFT / Model and forecaster health",
                     "Live forecast accuracy, the served model, the forecaster's cycles and retraining outcomes.",
                     lay.panels, variables, time_from="now-2d")


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(data: Any, header: str) -> str:
    body = yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=100_000, allow_unicode=True)
    return "".join(f"# {line}".rstrip() + "\n" for line in header.strip().splitlines()) + body


GENERATED = "Generated by scripts/generate_monitoring.py: edit the generator (or its SETTINGS), then re-run it."


def outputs(signals: tuple[Signal, ...] = DEFAULT_SIGNALS) -> dict[Path, str]:
    """Every generated file, path relative to the repository root -> content."""
    s = SETTINGS
    files = {
        Path("prometheus/rules/tft-signals.rules.yml"): to_yaml(signal_rules(signals), f"""
Forecast signals, recorded per instance: exactly the forecaster's signal queries, so the
"actual" that forecasts are scored against is what the forecaster forecasts. node-mixin's rule
names are reused where the quantity matches (its CPU rule also excludes iowait/steal; this one
counts all non-idle time, like the forecaster). {ACTUAL}{{signal}} unites them.
{GENERATED}"""),
        Path("prometheus/rules/tft-accuracy.rules.yml"): to_yaml(accuracy_rules(), f"""
Live forecast accuracy per signal and horizon. A forecast for now+h is stored at scrape time
under horizon="h", so `tft_forecast_p50{{horizon="h"}} offset h` is the forecast made h ago
for now, compared with what happened ({ACTUAL}).
  {ABS_ERROR}: |p50 - actual|
  {IN_BAND}: 1 when the actual fell inside p10-p90
  {NAIVE_ERROR}: error of the seasonal-naive forecast (value {s.seasonal_period} earlier),
    at the same instants, for the same series
Fleet averages per (signal, horizon) over 1h; the 1d figures average the 1h ones (cheap).
Evaluated every {s.accuracy_interval}: forecasts change once per forecaster cycle (5 min).
{GENERATED}"""),
        Path("prometheus/rules/tft-alerts.rules.yml"): to_yaml(alert_rules(), f"""
Alerts on forecasts (predicted breach) and on the forecaster itself. The same rules are
provisioned as Grafana-managed alerts (grafana/provisioning/alerting/tft-alert-rules.yml).
Cut-offs (documented in docs/OPERATIONS.md):
  critical: P(breach within {s.critical_horizon}) >= the model's cut-off for {s.critical_horizon}, or the p50 path \
breaches within {s.critical_eta_seconds} s
  warning:  P(breach within {s.warning_horizon}) >= the model's cut-off for {s.warning_horizon}
  The model's cut-offs are tft_breach_probability_cutoff{{horizon}} (chosen on its training data);
  {_num(s.absent_cutoff)} stands in only where that series is absent.
  coverage drift: |coverage - {s.coverage_target}| > {s.coverage_tolerance}; naive ratio > {s.naive_ratio}
{GENERATED}"""),
        Path("grafana/provisioning/alerting/tft-alert-rules.yml"): to_yaml(grafana_alert_rules(), f"""
Grafana-managed alert rules: the same conditions as prometheus/rules/tft-alerts.rules.yml.
Query A gives the value. Breach-probability rules: query B is the model's cut-off series and
math expression C ($A >= $B, the condition) fires where A reaches it. Other rules: threshold
B holds the cut-off (Grafana's thresholds are strict: ">=" in Prometheus is "above" here).
File-provisioned rules are read-only in Grafana's UI: see docs/OPERATIONS.md, "Editing an
alert rule in Grafana".
{GENERATED}"""),
    }
    for dash in (fleet_dashboard(), host_dashboard(), health_dashboard()):
        files[Path(f"grafana/dashboards/{dash['uid']}.json")] = json.dumps(dash, indent=2) + "\n"
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated file is missing or stale")
    parser.add_argument("--config.file", dest="config_file", type=Path,
                        help="take the signals from this tft-monitor config (default: the built-in signals)")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root to write into")
    args = parser.parse_args(argv)
    signals = DEFAULT_SIGNALS
    if args.config_file is not None:
        from forecaster.contract.config import ConfigError, load_config

        try:
            signals = load_config(args.config_file).signals
        except ConfigError as exc:
            print(f"generate_monitoring: {exc}", file=sys.stderr)
            return 2
    stale = []
    for rel, content in outputs(signals).items():
        path = args.root / rel
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == content:
            continue
        if args.check:
            stale.append(str(rel))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        print(f"wrote {rel}")
    if stale:
        print("stale generated files (run python3 scripts/generate_monitoring.py):\n  " + "\n  ".join(stale),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
