"""Dashboard 3, model and forecaster health: live accuracy, the served model, cycles, retraining.

It is where the forecaster-health and forecast-quality alerts link to, so each of those alerts
has a panel here showing the value it fires on.
"""

from __future__ import annotations

from typing import Any

from forecaster.contract.config import DEFAULT_SIGNALS, Signal
from monitoring.dashboards.ids import (
    DASH_HEALTH,
    PANEL_HEALTH_COVERAGE,
    PANEL_HEALTH_CYCLES,
    PANEL_HEALTH_CYCLES_HISTORY,
    PANEL_HEALTH_FALLBACK,
    PANEL_HEALTH_MODEL,
    PANEL_HEALTH_MODEL_AGE,
    PANEL_HEALTH_RELATIVE,
    PANEL_HEALTH_SERIES,
    PANEL_HEALTH_UP,
    PANEL_HEALTH_UP_HISTORY,
)
from monitoring.dashboards.panels import (
    CLUSTER_SELECTOR,
    HIDE_COLS,
    Layout,
    alerts_annotation,
    by_name,
    by_regexp,
    color_cells,
    dashboard,
    organize,
    panel,
    promotions_annotation,
    signal_unit,
    stat_options,
    table_options,
    target,
    thresholds,
    ts_defaults,
    ts_options,
    var_cluster,
    var_query,
)
from monitoring.rules import FLEET_ABS_ERROR, FLEET_COVERAGE, FLEET_NAIVE, RELATIVE_ERROR
from monitoring.settings import SETTINGS


def state_defaults(one_is_good: bool) -> dict:
    """Field defaults of a 0/1 state over time (up, fallback): filled, coloured by the state."""
    zero, one = ("red", "green") if one_is_good else ("green", "red")
    return ts_defaults(unit="none", min_=0, max_=1, fill=30, steps=thresholds((None, zero), (1, one))) | {
        "decimals": 0, "color": {"mode": "thresholds"}}

def health_dashboard(signals: tuple[Signal, ...] = DEFAULT_SIGNALS) -> dict[str, Any]:
    # The forecaster's own series: selected as the alert rules select them (forecaster_selector), in the
    # chosen cluster. Series recorded by the rules, and the trainer's, by cluster only.
    f = f"{SETTINGS.forecaster_selector}, {CLUSTER_SELECTOR}"
    c = CLUSTER_SELECTOR
    lay = Layout()
    lay.add(panel(1, "text", "About", [], "What live accuracy needs before it has values.",
                  options={"mode": "markdown", "content": (
                      "Live accuracy compares each horizon's forecast (`offset h`) with what happened, so it needs "
                      f"at least `h` of history, and the seasonal-naive comparison one {SETTINGS.seasonal_period} "
                      "of recorded actuals. Recording rules: `prometheus/rules/tft-accuracy.rules.yml`.")}), 24, 2)
    lay.add(panel(PANEL_HEALTH_UP, "stat", "Forecaster up", [target(f"up{{{f}}}", legend="{{instance}}")],
                  "Whether Prometheus scrapes each forecaster target (its `up` series); over time below, "
                  "*Forecaster up over time*.", unit="none",
                  options=stat_options(color="background"),
                  defaults={"mappings": [{"type": "value", "options": {"0": {"text": "DOWN", "index": 0},
                                                                       "1": {"text": "UP", "index": 1}}}],
                            "thresholds": thresholds((None, "red"), (1, "green"))}), 4, 4)
    lay.add(panel(PANEL_HEALTH_CYCLES, "stat", "Since last successful cycle",
                  [target(f"time() - max(tft_forecaster_last_success_timestamp_seconds{{{f}}})")],
                  f"Time since a forecast cycle last succeeded; red from {SETTINGS.stale_after_seconds} s, where "
                  "TFTForecastsStale starts its pending period.", unit="s",
                  options=stat_options(color="background"),
                  defaults={"thresholds": thresholds((None, "green"), (SETTINGS.stale_after_seconds, "red"))}), 5, 4)
    lay.add(panel(4, "stat", "Input staleness", [target(f"max(tft_forecaster_input_staleness_seconds{{{f}}})")],
                  "Age of the newest input sample at the last cycle.", unit="s", options=stat_options()), 5, 4)
    lay.add(panel(5, "stat", "Series", [target(f"sum by (state) (tft_forecaster_series{{{f}}})",
                                               legend="{{state}}")],
                  "Series forecast and warming up at the last cycle.", unit="short", options=stat_options()), 5, 4)
    lay.add(panel(6, "table", "Build", [target(f"tft_forecaster_build_info{{{f}}}", instant=True, table=True)],
                  "Version of each forecaster process (tft_forecaster_build_info).",
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
    lay.add(panel(12, "stat", "Model age", [target(f"max(tft_model_age_seconds{{{f}}})")],
                  "Time since the served global model was trained; red from the age at which TFTModelTooOld "
                  "starts its pending period.", unit="s",
                  options=stat_options(color="background"),
                  defaults={"thresholds": thresholds((None, "green"), (SETTINGS.model_max_age_seconds, "red"))}), 4, 5)
    lay.add(panel(13, "piechart", "Series by model", [target(f"count by (model) (tft_forecast_model_info{{{f}}})",
                                                               legend="{{model}}", instant=True)],
                  "Series forecast by a per-host model, the global model, or the fallback.",
                  options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                           "pieType": "donut", "legend": {"displayMode": "table", "placement": "right",
                                                          "showLegend": True, "values": ["value"]},
                           "tooltip": {"mode": "single", "sort": "none"}}), 8, 5)
    # What TFTModelTooOld and TFTModelFallback test, over time (the alerts link here).
    lay.add(panel(PANEL_HEALTH_MODEL_AGE, "timeseries", "Model age over time",
                  [target(f"tft_model_age_seconds{{{f}}}", legend="{{instance}}")],
                  "Time since the served global model was trained, per forecaster; TFTModelTooOld fires above the "
                  f"dashed line ({SETTINGS.model_max_age_seconds} s) after {SETTINGS.model_age_for}. A drop is a "
                  "promoted retraining (annotation *Model promotions*).",
                  defaults=ts_defaults(unit="s", min_=0, threshold_style="dashed", steps=thresholds(
                      (None, "transparent"), (SETTINGS.model_max_age_seconds, "red"))),
                  options=ts_options()), 12, 7)
    lay.add(panel(PANEL_HEALTH_FALLBACK, "timeseries", "Fallback served over time",
                  [target(f"tft_model_fallback{{{f}}}", legend="{{instance}}")],
                  "1 while a forecaster serves the flagged seasonal-naive fallback instead of a trained model "
                  f"(TFTModelFallback fires after {SETTINGS.fallback_for}).",
                  defaults=state_defaults(one_is_good=False),
                  options=ts_options()), 12, 7)

    lay.row(20, "Live forecast accuracy")
    lay.add(panel(PANEL_HEALTH_COVERAGE, "timeseries", "p10-p90 coverage per horizon (last day)",
                  [target(f'avg by (horizon) ({FLEET_COVERAGE.format(w="1d")}{{{c}, signal=~"$signal"}})',
                          legend="{{horizon}}")],
                  "Share of actual values inside the forecast band, fleet-wide; nominal 80 %.",
                  unit="percentunit",
                  defaults=ts_defaults(min_=0, max_=1, threshold_style="dashed", steps=thresholds(
                      (None, "red"), (SETTINGS.coverage_target - SETTINGS.coverage_tolerance, "green"),
                      (SETTINGS.coverage_target + SETTINGS.coverage_tolerance, "red"))),
                  options=ts_options()), 12, 8)
    lay.add(panel(22, "timeseries", "Mean absolute error of p50 per horizon (last day)",
                  [target(f'avg by (horizon) ({FLEET_ABS_ERROR.format(w="1d")}{{{c}, signal=~"$signal"}})',
                          legend="{{horizon}}"),
                   target(f'avg({FLEET_NAIVE.format(w="1d")}{{{c}, signal=~"$signal"}})', legend="seasonal naive")],
                  "Absolute error of the median forecast against what happened, in signal units.",
                  defaults=ts_defaults(unit=signal_unit(signals), min_=0), options=ts_options(),
                  overrides=[by_name("seasonal naive", ("custom.lineStyle", {"fill": "dash", "dash": [10, 10]}),
                                     ("color", {"mode": "fixed", "fixedColor": "red"}))]), 12, 8)
    lay.add(panel(PANEL_HEALTH_RELATIVE, "timeseries", "Error relative to seasonal naive (last day)",
                  [target(f'{RELATIVE_ERROR}{{{c}, signal=~"$signal"}}', legend="{{signal}} {{horizon}}")],
                  "Model error divided by the error of repeating yesterday's value: below 1 the model beats it; "
                  "above the dashed line TFTForecastWorseThanSeasonalNaive fires.",
                  defaults=ts_defaults(unit="short", min_=0, threshold_style="dashed",
                                       steps=thresholds((None, "green"), (SETTINGS.naive_ratio, "red"))),
                  options=ts_options("table")), 12, 8)
    lay.add(panel(24, "table", "Coverage by signal and horizon (last day)",
                  [target(f'{FLEET_COVERAGE.format(w="1d")}{{{c}, signal=~"$signal"}}', instant=True, table=True)],
                  "Last-day p10-p90 coverage per signal and horizon; TFTForecastCoverageDrift fires outside "
                  f"{SETTINGS.coverage_target:.0%} ± {SETTINGS.coverage_tolerance * 100:.0f} points.",
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
    # TFTForecastSeriesDropped compares the (instance, signal) pairs served now with the count a window ago.
    def served(offset: str = "") -> str:
        return f"sum(count by (job, instance, signal) (tft_forecast_p50{{{f}}}{offset}))"

    lay.add(panel(PANEL_HEALTH_SERIES, "timeseries", "Series forecast and skipped",
                  [target(f"sum by (state) (tft_forecaster_series{{{f}}})", legend="{{state}}"),
                   target(f"sum by (reason) (tft_forecaster_series_skipped{{{f}}})", legend="skipped: {{reason}}"),
                   target(served(), legend="served (host, signal)"),
                   target(served(f" offset {SETTINGS.series_drop_window}"),
                          legend=f"served {SETTINGS.series_drop_window} earlier")],
                  "Series forecast, warming up and skipped (by reason) at each cycle, and the host/signal pairs "
                  f"with a published forecast now and {SETTINGS.series_drop_window} earlier: "
                  f"TFTForecastSeriesDropped fires when the first falls below {SETTINGS.series_drop_ratio:.0%} of the "
                  "second.",
                  defaults=ts_defaults(unit="short", min_=0) | {"decimals": 0}, options=ts_options(),
                  overrides=[by_name(f"served {SETTINGS.series_drop_window} earlier",
                                     ("custom.lineStyle", {"fill": "dash", "dash": [10, 10]}))]), 12, 8)
    lay.add(panel(33, "timeseries", "Cycles and failures per hour",
                  [target(f"sum by (outcome) (increase(tft_forecaster_cycles_total{{{f}}}[1h]))",
                          legend="cycles: {{outcome}}"),
                   # A stage that never failed has no counter yet: show it at 0.
                   target(f"sum by (stage) (increase(tft_forecaster_failures_total{{{f}}}[1h]))"
                          f" or sum by (stage) (0 * tft_forecaster_stage_duration_seconds{{{f}}})",
                          legend="failures: {{stage}}")],
                  "Forecast cycles per hour by outcome, and failures per hour by the stage that failed.",
                  defaults=ts_defaults(unit="short", min_=0), options=ts_options(),
                  overrides=[by_regexp("failures.*", ("color", {"mode": "fixed", "fixedColor": "red"}))]), 12, 8)
    lay.add(panel(34, "timeseries", "Prometheus queries",
                  [target(f"sum by (endpoint, outcome) (rate(tft_forecaster_prometheus_requests_total{{{f}}}"
                          "[$__rate_interval]))", legend="{{endpoint}} {{outcome}}"),
                   target("histogram_quantile(0.9, sum by (le) (rate("
                          f"tft_forecaster_prometheus_request_duration_seconds_bucket{{{f}}}[$__rate_interval])))",
                          legend="p90 latency")],
                  "Requests per second by outcome; p90 latency on the right axis.",
                  defaults=ts_defaults(unit="reqps", min_=0), options=ts_options(),
                  overrides=[by_name("p90 latency", ("unit", "s"), ("custom.axisPlacement", "right"))]), 12, 8)
    # What TFTForecasterDown and TFTForecastsStale test, over time (the alerts link here).
    lay.add(panel(PANEL_HEALTH_UP_HISTORY, "timeseries", "Forecaster up over time",
                  [target(f"up{{{f}}}", legend="{{instance}}")],
                  "1 while Prometheus scrapes the forecaster target; TFTForecasterDown fires after "
                  f"{SETTINGS.down_for} at 0, or with no forecaster target at all (then no line here).",
                  defaults=state_defaults(one_is_good=True),
                  options=ts_options()), 12, 8)
    lay.add(panel(PANEL_HEALTH_CYCLES_HISTORY, "timeseries", "Time since last successful cycle",
                  [target(f"time() - tft_forecaster_last_success_timestamp_seconds{{{f}}}", legend="{{instance}}")],
                  "Per forecaster; TFTForecastsStale fires above the dashed line "
                  f"({SETTINGS.stale_after_seconds} s) after {SETTINGS.stale_for}.",
                  defaults=ts_defaults(unit="s", min_=0, threshold_style="dashed", steps=thresholds(
                      (None, "transparent"), (SETTINGS.stale_after_seconds, "red"))),
                  options=ts_options()), 12, 8)

    lay.row(40, "Retraining")
    lay.add(panel(41, "stat", "Last training run", [target(f"max(tft_trainer_last_run_exit_code{{{c}}})")],
                  "Exit status of the last `tft-trainer train` run (cron).", unit="none",
                  options=stat_options(color="background"),
                  defaults={"mappings": [{"type": "value", "options": {
                      "0": {"text": "promoted", "color": "green", "index": 0},
                      "1": {"text": "failed", "color": "red", "index": 1},
                      "2": {"text": "bad config", "color": "red", "index": 2},
                      "3": {"text": "kept (not better)", "color": "blue", "index": 3},
                      "4": {"text": "kept (worse than baselines)", "color": "orange", "index": 4},
                      "5": {"text": "locked", "color": "yellow", "index": 5},
                      "6": {"text": "no data or disk full", "color": "red", "index": 6},
                      "130": {"text": "interrupted", "color": "orange", "index": 7},
                      "143": {"text": "terminated", "color": "orange", "index": 8}}}],
                      "thresholds": thresholds((None, "text"))}), 6, 5)
    lay.add(panel(42, "stat", "Since last promotion",
                  [target(f"time() - max(tft_trainer_last_success_timestamp_seconds{{{c}}} > 0)")],
                  "Time since a training run last promoted a model (exit status 0).", unit="s",
                  options=stat_options()), 6, 5)
    lay.add(panel(43, "stat", "Last run took", [target(f"max(tft_trainer_last_run_duration_seconds{{{c}}})")],
                  "Wall-clock time of the last training run.", unit="s", options=stat_options()), 6, 5)
    lay.add(panel(44, "bargauge", "Runs by outcome", [target(f"sum by (outcome) (tft_trainer_runs_total{{{c}}})",
                                                             legend="{{outcome}}", instant=True)],
                  "Training runs since the registry was created, by outcome.", unit="short",
                  options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                           "orientation": "horizontal", "displayMode": "basic", "showUnfilled": True,
                           "valueMode": "color", "namePlacement": "auto", "sizing": "auto", "minVizHeight": 10,
                           "minVizWidth": 0, "maxVizHeight": 300},
                  defaults={"decimals": 0, "thresholds": thresholds((None, "blue"))}), 6, 5)
    lay.add(panel(45, "table", "Holdout scores of the last run",
                  [target(f"tft_trainer_backtest_score{{{c}}}", instant=True, table=True)],
                  "Scores of the candidate, the current model and the baselines on the holdout slice "
                  "(sql: scaled quantile loss, lower is better; coverage: p10-p90).",
                  transformations=[{"id": "groupingToMatrix", "options": {"columnField": "metric",
                                                                          "rowField": "model",
                                                                          "valueField": "Value"}},
                                   organize({"model\\metric": "model"})],
                  defaults={"decimals": 3}, options=table_options()), 12, 6)
    lay.add(panel(46, "table", "Last run", [target(f"tft_trainer_last_run_info{{{c}}}", instant=True, table=True),
                                            target(f"tft_trainer_last_run_timestamp_seconds{{{c}}} * 1000",
                                                   instant=True, table=True)],
                  "Outcome and version of the last training run, and when it ended.",
                  transformations=[{"id": "merge", "options": {}},
                                   organize({"Value #B": "ended"}, [*HIDE_COLS, "Value #A", "instance"])],
                  overrides=[by_name("ended", ("unit", "dateTimeAsIso"))], options=table_options()), 12, 6)
    variables = [var_cluster("tft_forecast_p50"),
                 var_query("signal", "Signal", f"label_values(tft_forecast_p50{{{c}}}, signal)", multi=True,
                           include_all=True)]
    variables[-1]["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    return dashboard(DASH_HEALTH, "TFT / Model and forecaster health",
                     "Live forecast accuracy, the served model, the forecaster's cycles and retraining outcomes.",
                     lay.panels, variables, time_from="now-2d",
                     # The forecaster-health and forecast-quality alerts; the predicted breaches are the hosts'.
                     annotations=[alerts_annotation('alertname!~"TFTBreach.*"'), promotions_annotation(f)])
