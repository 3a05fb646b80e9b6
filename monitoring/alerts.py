"""The alert table, rendered both as Prometheus alerting rules and as Grafana-managed alert rules.

Sites run one or the other (or both); rendering both from one :class:`Alert` list means they
cannot drift apart in condition, ``for`` duration, severity, wording or dashboard link.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from monitoring.dashboards.ids import (
    DASH_HEALTH,
    DASH_HOST,
    PANEL_HEALTH_COVERAGE,
    PANEL_HEALTH_CYCLES_HISTORY,
    PANEL_HEALTH_FALLBACK,
    PANEL_HEALTH_MODEL_AGE,
    PANEL_HEALTH_RELATIVE,
    PANEL_HEALTH_SERIES,
    PANEL_HEALTH_UP_HISTORY,
    PANEL_HOST_DRIVERS,
    PANEL_HOST_ETA_HISTORY,
    PANEL_HOST_PROBABILITY_HISTORY,
    dashboard_url,
    panel_url,
)
from monitoring.promql import at_or_above_cutoff, block, breach_probability, by_host, cutoff_expr, num, one_line
from monitoring.rules import FLEET_COVERAGE, RELATIVE_ERROR
from monitoring.settings import SETTINGS


@dataclass(frozen=True)
class Alert:
    """One alert, neutral to the rule engine: the condition is kept as value, operator and cut-off
    (not one PromQL string) because Grafana needs them apart, as a query and a threshold."""

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


def alerts() -> list[Alert]:
    """The table, built on call so that every text and cut-off reads the current ``SETTINGS``."""
    s = SETTINGS
    fsel = s.forecaster_selector
    series = by_host("signal")  # a forecast series: its host (instance and cluster labels) and signal
    # A forecast breach that lies wholly inside windows the operator declared (a backup, a batch job:
    # config schedules:) is planned load, not an incident: no predicted-breach alert pages on it. Nothing
    # changes where no schedule is declared (no tft_breach_scheduled series) or where it does not explain
    # the breach (0). docs/OPERATIONS.md, "Declaring schedules".
    planned = f"\nunless on ({series}) (max by ({series}) (tft_breach_scheduled{{{fsel}}}) == 1)"
    crit_p = breach_probability(s.critical_horizon)
    crit_eta = f'min by ({series}) (tft_breach_eta_seconds{{path="p50"}})'
    warn_p = breach_probability(s.warning_horizon)
    # The host drill-down's cluster variable follows the alert's cluster, where that label is configured.
    host_params = "var-instance={{ $labels.instance }}&var-signal={{ $labels.signal }}" + (
        "&var-cluster={{ $labels.cluster }}" if "cluster" in s.cluster_labels else "")
    health = ""
    own_cutoff = ("at or above the model's own cut-off for that horizon (tft_breach_probability_cutoff, "
                  f"chosen on its training data; {num(s.absent_cutoff)} where none is exported)")
    # Forecast series (instance, signal) served, whatever the number of horizons, now and a window ago;
    # "or 0 *" keeps a drop to no series at all from being no data.
    def served(offset: str = "") -> str:
        return f"count by (job) (count by (job, {series}) (tft_forecast_p50{{{fsel}}}{offset}))"

    before = served(f" offset {s.series_drop_window}")
    series_ratio = f"(\n  {served()}\n  or\n  0 * {before}\n)\n/\n{before}"
    return [
        Alert(
            name=f"TFTBreachLikelyWithin{s.critical_horizon}", group="tft-predicted-breach", severity="critical",
            value=crit_p + planned, op=">=", cutoff=None, cutoff_query=cutoff_expr(s.critical_horizon),
            for_=s.critical_for,
            summary=f"{{{{ $labels.signal }}}} on {{{{ $labels.instance }}}} is likely to breach its threshold "
                    f"within {s.critical_horizon}",
            description=f"The TFT forecast gives a {{{{ $value }}}} probability that {{{{ $labels.signal }}}} on "
                        f"{{{{ $labels.instance }}}} crosses its threshold within {s.critical_horizon}, "
                        f"{own_cutoff}.",
            value_format="humanizePercentage", panel_id=PANEL_HOST_PROBABILITY_HISTORY, link_params=host_params,
        ),
        Alert(
            name=f"TFTBreachForecastWithin{s.critical_horizon}", group="tft-predicted-breach", severity="critical",
            value=crit_eta + planned, op="<=", cutoff=s.critical_eta_seconds, for_=s.critical_for,
            summary=f"The median forecast of {{{{ $labels.signal }}}} on {{{{ $labels.instance }}}} breaches "
                    f"within {s.critical_horizon}",
            description="The p50 forecast path of {{ $labels.signal }} on {{ $labels.instance }} crosses its "
                        "threshold in {{ $value }}.",
            value_format="humanizeDuration", panel_id=PANEL_HOST_ETA_HISTORY, link_params=host_params,
        ),
        Alert(
            name=f"TFTBreachLikelyWithin{s.warning_horizon}", group="tft-predicted-breach", severity="warning",
            value=(f"{warn_p}\n"
                   f"unless on ({series}) ({at_or_above_cutoff(crit_p, s.critical_horizon)})\n"
                   f"unless on ({series}) ({crit_eta} <= {s.critical_eta_seconds})"
                   f"{planned}"),
            op=">=", cutoff=None, cutoff_query=cutoff_expr(s.warning_horizon), for_=s.warning_for,
            summary=f"{{{{ $labels.signal }}}} on {{{{ $labels.instance }}}} may breach its threshold within "
                    f"{s.warning_horizon}",
            description=f"The TFT forecast gives a {{{{ $value }}}} probability that {{{{ $labels.signal }}}} on "
                        f"{{{{ $labels.instance }}}} crosses its threshold within {s.warning_horizon}, "
                        f"{own_cutoff}. Silent while a critical predicted-breach alert fires for the same series.",
            value_format="humanizePercentage", panel_id=PANEL_HOST_PROBABILITY_HISTORY, link_params=host_params,
        ),
        Alert(
            name="TFTForecasterDown", group="tft-forecaster-health", severity="critical",
            value=f"up{{{fsel}}}", op="<", cutoff=1, for_=s.down_for, absent=f"up{{{fsel}}}", no_data="Alerting",
            summary="The TFT forecaster is down: no predicted-breach alert can fire",
            description="Prometheus cannot scrape the forecaster (job {{ $labels.job }}{{ if $labels.instance }}, "
                        "{{ $labels.instance }}{{ end }}); forecasts and predicted-breach alerts stop until it "
                        "is back.",
            link=DASH_HEALTH, link_params=health, panel_id=PANEL_HEALTH_UP_HISTORY,
        ),
        Alert(
            name="TFTForecastsStale", group="tft-forecaster-health", severity="warning",
            value=f"time() - tft_forecaster_last_success_timestamp_seconds{{{fsel}}}", op=">",
            cutoff=s.stale_after_seconds, for_=s.stale_for,
            summary="TFT forecasts are stale",
            description="The forecaster {{ $labels.instance }} last completed a forecast cycle {{ $value }} ago; "
                        "the published forecasts are out of date.",
            value_format="humanizeDuration", link=DASH_HEALTH, link_params=health,
            panel_id=PANEL_HEALTH_CYCLES_HISTORY,
        ),
        Alert(
            name="TFTForecastSeriesDropped", group="tft-forecaster-health", severity="warning",
            value=series_ratio, op="<", cutoff=s.series_drop_ratio, for_=s.series_drop_for,
            summary="The forecaster serves far fewer forecast series than an hour ago",
            description=f"Job {{{{ $labels.job }}}} serves {{{{ $value }}}} of the forecast series it served "
                        f"{s.series_drop_window} ago. A cycle that still forecasts some series of each signal "
                        "succeeds however many it skips (no data, stale, NaN, duplicated: see "
                        "tft_forecaster_series_skipped), so the staleness alert stays silent; check the inputs "
                        "in Prometheus.",
            value_format="humanizePercentage", link=DASH_HEALTH, link_params=health, panel_id=PANEL_HEALTH_SERIES,
        ),
        Alert(
            name="TFTModelFallback", group="tft-forecaster-health", severity="warning",
            value=f"tft_model_fallback{{{fsel}}}", op=">", cutoff=0, for_=s.fallback_for,
            summary="The forecaster serves the seasonal-naive fallback, not a trained model",
            description="No trained model could be loaded by {{ $labels.instance }}; forecasts come from the "
                        "flagged seasonal-naive fallback. Check the model registry and run the trainer.",
            link=DASH_HEALTH, link_params=health, panel_id=PANEL_HEALTH_FALLBACK,
        ),
        Alert(
            name="TFTModelTooOld", group="tft-forecaster-health", severity="warning",
            value=f"tft_model_age_seconds{{{fsel}}}", op=">", cutoff=s.model_max_age_seconds, for_=s.model_age_for,
            summary="The forecasting model has not been retrained for a long time",
            description="The model served by {{ $labels.instance }} was trained {{ $value }} ago. Check the "
                        "retraining cron job (tft_trainer_last_run_exit_code).",
            value_format="humanizeDuration", link=DASH_HEALTH, link_params=health, panel_id=PANEL_HEALTH_MODEL_AGE,
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


def prometheus_expr(a: Alert) -> str:
    """Multi-line values are parenthesised before the comparison, so ``unless``/``or`` inside them
    bind as written and not to the cut-off."""
    value = a.value if "\n" not in a.value else block(a.value)
    if a.cutoff_query is not None:
        assert a.op == ">=", a.name
        expr = f"{value}\n>= on (horizon) group_left ()\n{block(a.cutoff_query)}"
    elif a.op == "outside":
        low, high = a.cutoff  # type: ignore[misc]
        expr = f"{value} < {num(low)}\nor\n{value} > {num(high)}"
    else:
        expr = f"{value} {a.op} {num(a.cutoff)}"  # type: ignore[arg-type]
    if a.absent:
        expr += f"\nor\nabsent({a.absent})"
    return expr + "\n" if "\n" in expr else expr


def runbook_url(name: str) -> str:
    """The alert's section of docs/runbooks.md: its heading is the alert name, so the anchor is the name, lower case."""
    return f"{SETTINGS.runbook_base_url}#{name.lower()}"


#: The alert group whose alerts say what drove the forecast (a ``drivers`` annotation).
BREACH_GROUP = "tft-predicted-breach"
#: How the drivers that are not a signal read in an alert; the forecaster's JSON API uses the same words
#: (forecaster.contract.features.DRIVER_WORDS; tests/test_forecast_drivers.py keeps the two equal).
DRIVER_WORDS: dict[str, str] = {"own": "own history", "calendar": "time of day and week",
                                "seasonal": "same time on earlier days", "schedule": "declared schedules",
                                "other": "other inputs"}
#: Drivers named in the annotation: the heaviest three, and of those only the ones weighing at least this.
DRIVERS_NAMED = 3
DRIVER_MIN_WEIGHT = 0.1


def drivers_annotation() -> str:
    """Prometheus template: the forecast's top drivers in words, queried when the alert fires.

    "Drivers: own history (52%, climbing for 6 h), iowait (31%); the attention looked hardest 6h 0m 0s before
    the latest input." After a driver's weight, "climbing for N h" / "falling for N h" when its
    tft_forecast_driver_trend_seconds is non-zero (a second query per driver). The query selects the alert's
    own series by every label that names it (instance, the cluster labels, signal), so it reads one forecast;
    ``max by (driver)`` makes forecaster replicas count once.
    The weights are series (tft_forecast_driver_weight{driver}), not a label holding the sentence, so
    nothing here grows the number of series.
    """
    names = by_host("signal").split(", ")
    matchers = ",".join(f"{n}=%q" for n in names)
    args = " ".join(f"$labels.{n}" for n in names)
    words = "".join(f'{{{{ {"if" if k == 0 else "else if"} eq .Labels.driver "{d}" }}}}{w}'
                    for k, (d, w) in enumerate(DRIVER_WORDS.items())) + "{{ else }}{{ .Labels.driver }}{{ end }}"
    weights = (f"sort_desc(topk({DRIVERS_NAMED}, max by (driver) (tft_forecast_driver_weight{{{matchers}}})) "
               f">= {num(DRIVER_MIN_WEIGHT)})")
    lag = f"max(tft_forecast_attention_peak_lag_seconds{{{matchers}}})"
    # The driver's trend (forecaster: tft_forecast_driver_trend_seconds, signed; 0 or absent says nothing), in hours.
    trend = f"max(tft_forecast_driver_trend_seconds{{{matchers},driver=%q}}) / 3600"
    trend_args = f"{args} $d.Labels.driver"
    moving = "".join(f'{{{{ with printf "{query}" {trend_args} | query }}}}, {word} for '
                     "{{ . | first | value }} h{{ end }}"
                     for query, word in ((f"{trend} > 0", "climbing"), (f"-{trend} > 0", "falling")))
    return (f'{{{{ with printf "{weights}" {args} | query }}}}Drivers: '
            f"{{{{ range $i, $d := . }}}}{{{{ if $i }}}}, {{{{ end }}}}{words} "
            f"({{{{ $d.Value | humanizePercentage }}}}{moving}){{{{ end }}}}"
            f'{{{{ with printf "{lag}" {args} | query }}}}; the attention looked hardest '
            "{{ . | first | value | humanizeDuration }} before the latest input{{ end }}."
            "{{ else }}No drivers: this series is not forecast by the TFT (fallback).{{ end }}")


def _annotations(a: Alert, value_ref: str) -> dict[str, str]:
    """The same wording and links for both engines; only how a template names the value differs.

    ``panel_url`` opens the time series panel of the alerted quantity alone (``viewPanel``), as
    Grafana's PanelURL does for its own rules; ``runbook_url`` says what to check and do.
    """
    value = f"{{{{ {value_ref} | {a.value_format} }}}}" if a.value_format else f"{{{{ {value_ref} }}}}"
    out = {"summary": a.summary, "description": a.description.replace("{{ $value }}", value),
           "dashboard_url": dashboard_url(a.link, a.link_params)}
    if a.panel_id is not None:
        out["panel_url"] = panel_url(a.link, a.panel_id, a.link_params)
    out["runbook_url"] = runbook_url(a.name)
    return out


def alert_rules() -> dict[str, Any]:
    """Groups in table order (dicts keep insertion order), so the rule file is stable across runs."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for a in alerts():
        groups.setdefault(a.group, []).append({
            "alert": a.name, "expr": prometheus_expr(a), "for": a.for_,
            "labels": {"severity": a.severity},
            "annotations": _annotations(a, "$value") | (
                {"drivers": drivers_annotation()} if a.group == BREACH_GROUP else {}),
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
    for a in alerts():
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
        if a.group == BREACH_GROUP:
            # Grafana's templates cannot query, so its alerts link to the drivers over time instead of naming them.
            annotations["drivers"] = ("What drove this forecast (own history, the host's other signals, calendar), "
                                      f"over time: {panel_url(a.link, PANEL_HOST_DRIVERS, a.link_params)}")
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
