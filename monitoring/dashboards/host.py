"""Dashboard 2, the host drill-down: one host's actual series against its forecasts, 8 h ahead.

The time range ends in the future and each horizon's forecast is drawn ``offset h``, so one
graph shows both what is coming and how well past forecasts matched what happened.
"""

from __future__ import annotations

from typing import Any

from forecaster.contract.config import DEFAULT_SIGNALS, Signal
from monitoring.dashboards.ids import (
    DASH_HOST,
    PANEL_HOST_DRIVERS,
    PANEL_HOST_ETA,
    PANEL_HOST_ETA_HISTORY,
    PANEL_HOST_FORECAST,
    PANEL_HOST_PROBABILITY,
    PANEL_HOST_PROBABILITY_HISTORY,
)
from monitoring.dashboards.panels import (
    CLUSTER_SELECTOR,
    ETA_STEPS,
    HIDE_COLS,
    HOST_SELECTOR,
    RISK_STEPS,
    Layout,
    alerts_annotation,
    by_name,
    by_regexp,
    dashboard,
    incidents_annotation,
    organize,
    panel,
    promotions_annotation,
    schedules_annotation,
    signal_unit,
    stat_options,
    table_options,
    target,
    thresholds,
    ts_defaults,
    ts_options,
    var_cluster,
    var_job,
    var_query,
)
from monitoring.promql import cutoff_expr
from monitoring.rules import ACTUAL, HORIZONS, IN_BAND
from monitoring.settings import SETTINGS

# One colour per horizon, the same in every panel, so a band is recognisable across graphs.
HORIZON_COLORS = {"30m": "purple", "1h": "blue", "2h": "green", "4h": "orange", "8h": "yellow"}


def forecast_targets(instance: str, signal_matcher: str, horizons: list[str]) -> list[dict[str, Any]]:
    """The actual (recorded by the rules: no job label), the threshold and each horizon's band."""
    series = f'instance="{instance}", signal{signal_matcher}'
    ts = [target(f"max({ACTUAL}{{{CLUSTER_SELECTOR}, {series}}})", legend="actual"),
          target(f"max(last_over_time(tft_signal_threshold{{{HOST_SELECTOR}, signal{signal_matcher}}}[9h]))",
                 legend="threshold")]
    for h in horizons:
        for q in ("p10", "p50", "p90"):
            ts.append(target(f'max(tft_forecast_{q}{{{HOST_SELECTOR}, {series}, horizon="{h}"}} offset {h})',
                             legend=f"{q} {h}"))
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


def host_dashboard(signals: tuple[Signal, ...] = DEFAULT_SIGNALS) -> dict[str, Any]:
    unit = signal_unit(signals)
    sel = f'{HOST_SELECTOR}, instance="$instance", signal="$signal"'
    lay = Layout()
    lay.add(panel(1, "text", "Reading this dashboard", [],
                  "How the forecast bands are drawn: the future part of the time range, offsets, colours.",
                  options={"mode": "markdown", "content": (
                      "The time range ends **8 h in the future**. The white line is what happened; each "
                      "colour is one horizon: its **p50** line is the median forecast and the shaded band "
                      "the **p10-p90** range (80 % of outcomes should fall inside). A forecast made now for "
                      "`now + h` is stored now and drawn with `offset h`, so each horizon's line reaches "
                      "`h` into the future and its past part shows forecast against actual. The dashed red "
                      "line is the signal's threshold.")}), 24, 3)
    lay.add(panel(PANEL_HOST_FORECAST, "timeseries", "$signal on $instance: actual and forecast, all horizons",
                  forecast_targets("$instance", '="$signal"', HORIZONS),
                  "Actual series, p50 forecast and p10-p90 band per horizon, threshold. Annotations: the "
                  "project's firing alerts for this host, model promotions, simulated incidents, the windows "
                  "of declared schedules (past and planned).",
                  defaults=ts_defaults(unit=unit, min_=0), overrides=forecast_overrides(HORIZONS),
                  options=ts_options()), 16, 12)
    eta = f'min(tft_breach_eta_seconds{{{sel}, path="%s"}})'
    lay.add(panel(PANEL_HOST_ETA, "stat", "Breach ETA",
                  [target(eta % "p50", legend="p50 path"), target(eta % "p90", legend="p90 path")],
                  "Time until the forecast path first crosses the threshold (p90 path: the pessimistic case).",
                  unit="s", options=stat_options(color="background") | {"orientation": "horizontal"},
                  defaults={"thresholds": ETA_STEPS}), 8, 5)
    lay.add(panel(PANEL_HOST_PROBABILITY, "bargauge", "Breach probability by horizon",
                  [target(f'max(tft_breach_probability{{{sel}, horizon="{h}"}})', legend=h) for h in HORIZONS],
                  "Calibrated probability that the signal crosses its threshold within each horizon. The "
                  "colours are a fixed scale; the alerts fire at the model's own cut-off per horizon "
                  "(Fleet overview, *Alert cut-off per horizon*).",
                  unit="percentunit", defaults={"min": 0, "max": 1, "thresholds": RISK_STEPS},
                  options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                           "orientation": "horizontal", "displayMode": "gradient", "showUnfilled": True,
                           "valueMode": "color", "namePlacement": "auto", "sizing": "auto", "minVizHeight": 10,
                           "minVizWidth": 0, "maxVizHeight": 300}), 8, 7)

    # What the predicted-breach alerts test, over time: the alerts link here (a stat or bar gauge cannot
    # show their state changes).
    lay.row(40, "Breach risk over time: $signal on $instance")
    alerted = [SETTINGS.critical_horizon, SETTINGS.warning_horizon]
    lay.add(panel(PANEL_HOST_PROBABILITY_HISTORY, "timeseries", "Breach probability over time",
                  [target(f'max(tft_breach_probability{{{sel}, horizon="{h}"}})', legend=h) for h in HORIZONS]
                  + [target(cutoff_expr(h, HOST_SELECTOR), legend=f"cut-off {h}") for h in alerted],
                  f"Probability that the signal crosses its threshold within each horizon. The dashed lines are "
                  f"the model's cut-offs for {' and '.join(alerted)}, at or above which the probability alerts "
                  "(TFTBreachLikelyWithin...) fire after their pending period.",
                  defaults=ts_defaults(unit="percentunit", min_=0, max_=1),
                  overrides=[by_name(h, ("color", {"mode": "fixed", "fixedColor": HORIZON_COLORS.get(h, "blue")}))
                             for h in HORIZONS]
                  + [by_name(f"cut-off {h}", ("color", {"mode": "fixed", "fixedColor": HORIZON_COLORS.get(h, "red")}),
                             ("custom.lineStyle", {"fill": "dash", "dash": [10, 10]})) for h in alerted],
                  options=ts_options()), 12, 8)
    lay.add(panel(PANEL_HOST_ETA_HISTORY, "timeseries", "Breach ETA over time",
                  [target(eta % "p50", legend="p50 path"), target(eta % "p90", legend="p90 path")],
                  "Time until the forecast path first crosses the threshold; no line while it does not cross "
                  f"within the forecast. TFTBreachForecastWithin{SETTINGS.critical_horizon} fires while the p50 path "
                  f"stays below the dashed line ({SETTINGS.critical_eta_seconds} s).",
                  defaults=ts_defaults(unit="s", min_=0, threshold_style="dashed",
                                       steps=thresholds((None, "red"), (SETTINGS.critical_eta_seconds, "transparent"))),
                  overrides=[by_regexp("p90.*", ("custom.lineStyle", {"fill": "dash", "dash": [10, 10]}))],
                  options=ts_options()), 12, 8)

    lay.add(panel(PANEL_HOST_DRIVERS, "timeseries", "What drives the forecast",
                  [target(f"max by (driver) (tft_forecast_driver_weight{{{sel}}})", legend="{{driver}}"),
                   target(f"max(tft_forecast_attention_peak_lag_seconds{{{sel}}})", legend="attention peak lag",
                          ref="B")],
                  "Weight of each input group in the forecast (the TFT's variable selection; they sum to 100 %): "
                  "own = the signal's own history, a signal name = that signal of the same host, calendar = time "
                  "of day and week. A host signal climbing before a breach of this one is the early warning to "
                  "look at. Dashed, right axis: how long before the latest input the attention looked hardest. "
                  "No lines for the fallback. docs/OPERATIONS.md, \"Reading the drivers\".",
                  defaults=ts_defaults(unit="percentunit", min_=0, max_=1, fill=30) | {"custom": {
                      **ts_defaults(fill=30)["custom"], "stacking": {"mode": "normal", "group": "A"}}},
                  overrides=[by_name("attention peak lag", ("unit", "s"), ("custom.axisPlacement", "right"),
                                     ("custom.stacking", {"mode": "none", "group": "B"}), ("custom.fillOpacity", 0),
                                     ("custom.lineStyle", {"fill": "dash", "dash": [10, 10]}))],
                  options=ts_options()), 24, 8)

    lay.row(10, "Forecast per horizon: $signal on $instance")
    for i, h in enumerate(HORIZONS):
        lay.add(panel(11 + i, "timeseries", f"Horizon {h}", forecast_targets("$instance", '="$signal"', [h]),
                      f"Forecast made {h} earlier for each point in time, against the actual.",
                      defaults=ts_defaults(unit=unit, min_=0), overrides=forecast_overrides([h]),
                      options=ts_options()), 8 if i < 3 else 12, 8)

    lay.row(20, "This series")
    accuracy_sel = f'{CLUSTER_SELECTOR}, instance="$instance", signal="$signal"'
    lay.add(panel(21, "table", "Model serving this series",
                  [target(f"tft_forecast_model_info{{{sel}}}", instant=True, table=True),
                   target(f"max by (instance, signal) (tft_forecast_warming_up{{{sel}}})", instant=True, table=True)],
                  "Which model (per-host, global or fallback) and version forecast this series; warming up = "
                  "less history than a full context window.",
                  transformations=[{"id": "merge", "options": {}},
                                   organize({"Value #B": "warming up"}, [*HIDE_COLS, "Value #A"])],
                  options=table_options()), 12, 6)
    lay.add(panel(22, "bargauge", "Live accuracy of this series (last day)",
                  [target(f"avg by (horizon) (avg_over_time({IN_BAND}{{{accuracy_sel}}}[1d]))", legend="{{horizon}}",
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
                  "The same view for every forecast signal of the host.", defaults=ts_defaults(unit=unit, min_=0),
                  overrides=forecast_overrides(HORIZONS), options=ts_options(),
                  repeat="signals", repeatDirection="h", maxPerRow=2), 12, 9)
    host_signals = f'label_values(tft_forecast_p50{{{HOST_SELECTOR}, instance="$instance"}}, signal)'
    variables = [
        var_cluster("tft_forecast_p50"),
        var_job("tft_forecast_p50"),
        var_query("instance", "Host", f"label_values(tft_forecast_p50{{{HOST_SELECTOR}}}, instance)"),
        var_query("signal", "Signal", host_signals),
        var_query("signals", "All signals", host_signals, multi=True, include_all=True, hide=2),
    ]
    variables[-1]["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    return dashboard(DASH_HOST, "TFT / Host drill-down",
                     "One host: actual, forecast band per horizon reaching 8 h into the future, breach ETA.",
                     lay.panels, variables, time_from="now-16h", time_to="now+8h",
                     annotations=[alerts_annotation('instance="$instance"'), promotions_annotation(),
                                  incidents_annotation('instance="$instance"'),
                                  schedules_annotation('instance="$instance", signal="$signal"')])
