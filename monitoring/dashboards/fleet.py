"""Dashboard 1, the fleet overview: which hosts are predicted to breach a threshold, and when.

Its "hosts at risk" counts use the probability alerts' own condition (the model's per-horizon
cut-off), so the number on screen is the number of hosts an alert is, or soon will be, firing for.
"""

from __future__ import annotations

from typing import Any

from monitoring.dashboards.ids import DASH_FLEET, DASH_HOST, DASH_SLUGS
from monitoring.dashboards.panels import (
    ETA_STEPS,
    HIDE_COLS,
    HOST_LINK_VARS,
    HOST_SELECTOR,
    RISK_STEPS,
    Layout,
    alerts_annotation,
    by_name,
    by_regexp,
    color_cells,
    dashboard,
    host_link,
    incidents_annotation,
    organize,
    panel,
    promotions_annotation,
    stat_options,
    table_options,
    target,
    thresholds,
    ts_defaults,
    ts_options,
    var_cluster,
    var_custom,
    var_job,
)
from monitoring.promql import at_or_above_cutoff, breach_probability, by_host, num
from monitoring.rules import HORIZONS
from monitoring.settings import SETTINGS


def hosts_at_risk(horizon: str) -> str:
    """Hosts with a signal whose breach probability reaches the model's cut-off (the alert condition), in the
    selected job and cluster."""
    value = breach_probability(horizon, by_host("horizon"), HOST_SELECTOR)
    return f"count({at_or_above_cutoff(value, horizon, HOST_SELECTOR)}) or vector(0)"


def fleet_dashboard() -> dict[str, Any]:
    own_cutoff = "the model's own cut-off for that horizon (the probability alerts' condition)"
    sel = HOST_SELECTOR
    # A host is its instance and cluster labels (SETTINGS.cluster_labels): web-01 of two clusters counts twice.
    host, series = by_host(), by_host("signal")
    lay = Layout()
    lay.add(panel(1, "stat", "Hosts forecast", [target(f"count(count by ({host}) (tft_forecast_p50{{{sel}}}))")],
                  "Hosts with at least one published forecast.", unit="short", options=stat_options(),
                  defaults={"color": {"mode": "fixed", "fixedColor": "blue"}}), 4, 4)
    lay.add(panel(2, "stat", "Series warming up",
                  [target(f"sum(tft_forecast_warming_up{{{sel}}}) or vector(0)")],
                  "Host/signal series forecast with less than a full context window of history.", unit="short",
                  options=stat_options(), defaults={"color": {"mode": "fixed", "fixedColor": "text"}}), 4, 4)
    lay.add(panel(3, "stat", f"Hosts at risk within {SETTINGS.warning_horizon}",
                  [target(hosts_at_risk(SETTINGS.warning_horizon))],
                  f"Hosts whose breach probability for any signal reaches {own_cutoff}.", unit="short",
                  options=stat_options(color="background"),
                  defaults={"thresholds": thresholds((None, "green"), (1, "red"))}), 4, 4)
    lay.add(panel(4, "stat", "Predicted breaches within 1h (p50 path)",
                  [target(f'count(min by ({series}) (tft_breach_eta_seconds{{{sel}, path="p50"}})'
                          f" <= {SETTINGS.critical_eta_seconds}) or vector(0)")],
                  "Host/signal series whose median forecast crosses the threshold within the hour.", unit="short",
                  options=stat_options(color="background"),
                  defaults={"thresholds": thresholds((None, "green"), (1, "red"))}), 4, 4)
    lay.add(panel(5, "stat", "Model", [target(f"max(tft_model_fallback{{{sel}}})")],
                  "Trained TFT model, or the flagged seasonal-naive fallback.", unit="none",
                  options=stat_options(color="background"),
                  defaults={"mappings": [{"type": "value", "options": {
                      "0": {"text": "TFT model", "color": "green", "index": 0},
                      "1": {"text": "FALLBACK", "color": "red", "index": 1}}}],
                      "thresholds": thresholds((None, "green"), (1, "red"))}), 4, 4)
    lay.add(panel(6, "stat", "Forecast age", [target(f"max(tft_forecaster_forecast_age_seconds{{{sel}}})")],
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
                  unit="short",
                  defaults={"min": 0, "decimals": 0, "thresholds": thresholds((None, "green"), (1, "orange"),
                                                                                (5, "red"))}), 8, 8)
    lay.add(panel(12, "timeseries", "Hosts at risk over time",
                  [target(hosts_at_risk(h), legend=h) for h in HORIZONS],
                  "The same counts over time, with the project's firing alerts, model promotions and (simulator) "
                  "incidents as annotations.", options=ts_options(),
                  defaults=ts_defaults(unit="short", min_=0) | {"decimals": 0}), 10, 8)
    lay.add(panel(13, "bargauge", "Alert cut-off per horizon",
                  [target(f'max by (horizon) (tft_breach_probability_cutoff{{{sel}, horizon="{h}"}})', legend=h)
                   for h in HORIZONS],
                  "The served model's breach-probability cut-off per horizon, chosen on its training data "
                  "(F1-optimal on the validation windows); a host is at risk, and the probability alerts fire, "
                  "at or above it. No data: no model is loaded (fallback), and the alert rules use "
                  f"{num(SETTINGS.absent_cutoff)}.",
                  unit="percentunit",
                  options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                           "orientation": "horizontal", "displayMode": "basic", "showUnfilled": True,
                           "valueMode": "color", "namePlacement": "auto", "sizing": "auto", "minVizHeight": 10,
                           "minVizWidth": 0, "maxVizHeight": 300},
                  defaults={"min": 0, "max": 1, "decimals": 1,
                            "color": {"mode": "fixed", "fixedColor": "blue"},
                            "thresholds": thresholds((None, "blue"))}), 6, 8)

    lay.row(20, "Rankings")
    eta_p50 = f'min by ({series}) (tft_breach_eta_seconds{{{sel}, path="p50"}})'
    top = f"bottomk(20, {eta_p50})"
    lay.add(panel(21, "table", "Soonest predicted breach",
                  [target(top, instant=True, table=True),
                   target(f'min by ({series}) (tft_breach_eta_seconds{{{sel}, path="p90"}})'
                          f" and on ({series}) {top}",
                          instant=True, table=True),
                   target(f"{breach_probability(SETTINGS.warning_horizon, series, sel)}"
                          f" and on ({series}) {top}", instant=True, table=True)],
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
                  [target(f"topk(20, {breach_probability('$horizon', series, sel)})",
                          instant=True, table=True)],
                  "Host/signal series ranked by the probability of crossing the threshold within the selected "
                  "horizon (calibrated on validation data).",
                  transformations=[organize({"Value": "P(breach)"}, HIDE_COLS)],
                  options=table_options("P(breach)", desc=True),
                  overrides=[by_name("P(breach)", ("unit", "percentunit"), color_cells(),
                                     ("thresholds", RISK_STEPS), ("min", 0), ("max", 1)),
                             by_name("instance", host_link())]), 12, 10)

    lay.row(30, "Risk heat map")
    host_url = f"/d/{DASH_HOST}/{DASH_SLUGS[DASH_HOST]}?var-instance=${{__data.fields.instance}}&{HOST_LINK_VARS}"
    lay.add(panel(31, "table", "Risk per host and signal ($horizon)",
                  [target(breach_probability("$horizon", "instance, signal", sel), instant=True, table=True)],
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
                                     ("links", [{"title": "Open the host drill-down", "url": host_url}]))]), 10, 12)
    lay.add(panel(32, "status-history", "Risk over time ($horizon)",
                  [target(breach_probability("$horizon", "instance, signal", sel), legend="{{instance}} {{signal}}")],
                  "Breach probability per host and signal over time.",
                  defaults={"unit": "percentunit", "min": 0, "max": 1, "thresholds": RISK_STEPS,
                            "color": {"mode": "thresholds"}, "custom": {"lineWidth": 0, "fillOpacity": 80}},
                  options={"showValue": "never", "rowHeight": 0.9, "colWidth": 0.9,
                           "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False},
                           "tooltip": {"mode": "single", "sort": "none"}}), 14, 12)
    variables = [var_cluster("tft_forecast_p50"), var_job("tft_forecast_p50"),
                 var_custom("horizon", "Horizon", HORIZONS, SETTINGS.warning_horizon)]
    return dashboard(DASH_FLEET, "TFT / Fleet overview",
                     "Which hosts are predicted to breach a threshold, and when.", lay.panels, variables,
                     annotations=[alerts_annotation(), promotions_annotation(), incidents_annotation()])
