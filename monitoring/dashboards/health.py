"""Dashboard 3, model and forecaster health: live accuracy, the served model, cycles, retraining.

It is where the forecaster-health and forecast-quality alerts link to, so each of those alerts
has a panel here showing the value it fires on.
"""

from __future__ import annotations

from typing import Any

from monitoring.dashboards.ids import (
    DASH_HEALTH,
    PANEL_HEALTH_COVERAGE,
    PANEL_HEALTH_CYCLES,
    PANEL_HEALTH_MODEL,
    PANEL_HEALTH_RELATIVE,
    PANEL_HEALTH_UP,
)
from monitoring.dashboards.panels import (
    HIDE_COLS,
    Layout,
    by_name,
    by_regexp,
    color_cells,
    dashboard,
    organize,
    panel,
    stat_options,
    table_options,
    target,
    thresholds,
    ts_defaults,
    ts_options,
    var_query,
)
from monitoring.rules import FLEET_ABS_ERROR, FLEET_COVERAGE, FLEET_NAIVE, RELATIVE_ERROR
from monitoring.settings import SETTINGS


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
