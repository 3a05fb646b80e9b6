"""Panel, target, variable and layout builders shared by the three dashboards.

Grafana's JSON model repeats the same dozen keys on every panel; building them here keeps the
dashboards to what differs (query, title, unit, colours). Every panel, variable and annotation
queries the dashboard's ``datasource`` variable, whose default is the provisioned datasource
(``SETTINGS.datasource_uid``): a Grafana without that uid falls back to its own Prometheus, and a
user can pick another one, so the dashboards fit a Grafana that already runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from forecaster.contract.config import Signal
from monitoring.dashboards.ids import DASH_FLEET, DASH_HEALTH, DASH_HOST, DASH_SLUGS
from monitoring.promql import one_line
from monitoring.settings import SETTINGS

DS = {"type": "prometheus", "uid": "${datasource}"}

# Label matchers of the job and cluster variables. Where a panel selects hosts, its selector takes
# HOST_SELECTOR (the forecaster's series carry the job that scraped them) or, on series recorded by
# the rules (aggregated by instance, so without job), CLUSTER_SELECTOR. `cluster` is a regex matcher
# whose All value is ".*", which also matches series without a cluster label (a single Prometheus).
CLUSTER_SELECTOR = 'cluster=~"$cluster"'
HOST_SELECTOR = f'job=~"$job", {CLUSTER_SELECTOR}'


def target(expr: str, legend: str = "__auto", ref: str = "A", instant: bool = False,
           table: bool = False, hide: bool = False) -> dict[str, Any]:
    """PromQL collapsed to one line, so the JSON holds one plain string per query whatever the source layout."""
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
    """Every panel names the provisioned datasource by uid, so a fresh Grafana needs no datasource picking."""
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


#: Links to the host drill-down keep the datasource, job and cluster chosen here (``var-datasource=...&...``).
HOST_LINK_VARS = "${datasource:queryparam}&${job:queryparam}&${cluster:queryparam}"


def host_link(title: str = "Open the host drill-down") -> tuple[str, Any]:
    return ("links", [{"title": title, "url": f"/d/{DASH_HOST}/{DASH_SLUGS[DASH_HOST]}?"
                       "var-instance=${__data.fields.instance}&var-signal=${__data.fields.signal}&"
                       + HOST_LINK_VARS}])


def organize(rename: dict[str, str], hide: list[str] | None = None) -> dict[str, Any]:
    return {"id": "organize", "options": {"renameByName": rename,
                                          "excludeByName": {k: True for k in (hide or [])}}}


HIDE_COLS = ["Time", "__name__", "job"]


def var_query(name: str, label: str, query: str, multi: bool = False, include_all: bool = False,
              hide: int = 0, all_value: str | None = None, description: str = "") -> dict[str, Any]:
    v: dict[str, Any] = {"name": name, "label": label, "type": "query", "datasource": DS,
                         "query": {"query": query, "refId": f"{name}-variable"}, "definition": query,
                         "refresh": 2, "sort": 1, "multi": multi, "includeAll": include_all, "hide": hide,
                         "current": {}, "options": [], "regex": ""}
    if all_value is not None:
        v["allValue"] = all_value
    if description:
        v["description"] = description
    return v


def var_datasource() -> dict[str, Any]:
    """The Prometheus to query; its default is ``SETTINGS.datasource_uid`` (read on call, as the CLI may change it).

    Where no datasource has that uid, Grafana selects its default Prometheus instead.
    """
    uid = SETTINGS.datasource_uid
    return {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
            "description": "The Prometheus holding the forecaster's series and the tft-monitor recording rules.",
            "current": {"selected": True, "text": uid, "value": uid}, "hide": 0, "includeAll": False,
            "multi": False, "options": [], "refresh": 1, "regex": "", "skipUrlSync": False}


def var_cluster(metric: str) -> dict[str, Any]:
    """Optional: All (``.*``, matching series without the label too) unless the series carry a ``cluster`` label."""
    v = var_query("cluster", "Cluster", f"label_values({metric}, cluster)", include_all=True, all_value=".*",
                  description="The cluster label of the series (Thanos, Mimir, a Prometheus per cluster); "
                              "All also matches series without one.")
    v["current"] = {"selected": True, "text": "All", "value": "$__all"}
    return v


def var_job(metric: str) -> dict[str, Any]:
    return var_query("job", "Job", f"label_values({metric}{{{CLUSTER_SELECTOR}}}, job)",
                     description="The scrape job of the forecaster whose forecasts are shown.")


def prometheus_annotation(name: str, expr: str, color: str, title: str, text: str, tags: str = "",
                          enable: bool = True) -> dict[str, Any]:
    """A PromQL annotation: an event while ``expr`` returns a series (value above 0), one per label set."""
    return {"name": name, "datasource": DS, "enable": enable, "hide": False, "iconColor": color,
            "expr": one_line(expr), "step": "1m", "titleFormat": title, "textFormat": text, "tagKeys": tags,
            "useValueForTime": False}


def alerts_annotation(matchers: str = "") -> dict[str, Any]:
    """The project's alerts while firing (Prometheus's ALERTS series: needs the alerting rules of prometheus/rules/)."""
    extra = f", {matchers}" if matchers else ""
    return prometheus_annotation(
        "Firing TFT alerts", f'ALERTS{{alertstate="firing", alertname=~"TFT.*", {CLUSTER_SELECTOR}{extra}}}',
        "red", "{{alertname}}", "{{severity}}: {{instance}} {{signal}} {{horizon}}", "alertname,severity")


def promotions_annotation(sel: str = HOST_SELECTOR, window: str = "10m") -> dict[str, Any]:
    """A newly served model version: in tft_model_info now, not ``window`` earlier (``changes()`` cannot see it:
    the series is 1 throughout, a new version is a new series). ``sel`` selects the forecaster."""
    def served(offset: str = "") -> str:
        return f'count by (version, scope) (tft_model_info{{{sel}, source="model"}}{offset})'

    return prometheus_annotation("Model promotions", f"{served()} unless {served(f' offset {window}')}",
                                 "blue", "Model {{version}} served", "scope {{scope}} (a promoted retraining)",
                                 "scope")


def incidents_annotation(matchers: str = "") -> dict[str, Any]:
    """The fleet simulator's ground truth (``tft_sim_incident_active``); nothing where no simulator is scraped."""
    extra = f", {matchers}" if matchers else ""
    return prometheus_annotation(
        "Simulated incidents", f"max by (instance, kind) (tft_sim_incident_active{{{CLUSTER_SELECTOR}{extra}}}) > 0",
        "orange", "Incident: {{kind}}", "simulated incident on {{instance}}", "kind")


def schedules_annotation(matchers: str = "") -> dict[str, Any]:
    """Declared schedules' windows (config ``schedules:``) of the host and signal, past and planned: a window
    stored as planned 8 h ahead, read ``offset 8h``, lands at its own time, up to the dashboard's ``now+8h``
    (the forecast lines' trick); nothing where no schedule is declared."""
    extra = f", {matchers}" if matchers else ""
    return prometheus_annotation(
        "Planned windows",
        f'max by (instance, signal) (tft_schedule_planned{{{HOST_SELECTOR}, horizon="8h"{extra}}} offset 8h) > 0',
        "blue", "Planned window", "declared schedule on {{instance}} ({{signal}})", "signal")


#: Grafana's unit for a signal's ``unit`` (forecaster config); any other unit is drawn as a plain number.
SIGNAL_UNITS = {"ratio": "percentunit", "percent": "percent", "seconds": "s", "bytes": "bytes"}


def signal_unit(signals: tuple[Signal, ...]) -> str:
    """The unit of panels that show signal values: ratios (every default signal) as percentages."""
    units = {s.unit for s in signals}
    return SIGNAL_UNITS.get(units.pop(), "short") if len(units) == 1 else "short"


def var_custom(name: str, label: str, values: list[str], default: str) -> dict[str, Any]:
    return {"name": name, "label": label, "type": "custom", "query": ",".join(values),
            "multi": False, "includeAll": False, "hide": 0,
            "current": {"selected": True, "text": default, "value": default},
            "options": [{"selected": v == default, "text": v, "value": v} for v in values]}


def dashboard(uid: str, title: str, description: str, panels: list[dict[str, Any]],
              variables: list[dict[str, Any]], time_from: str = "now-6h", time_to: str = "now",
              refresh: str = "1m", annotations: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Each dashboard links to the other two; the links carry no variables, as each dashboard has its own.

    ``variables`` come after the datasource variable; ``annotations`` after Grafana's built-in one, which
    draws the Grafana-managed alerts on the panels they link to.
    """
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
                                  "name": "Annotations & Alerts", "type": "dashboard"}, *(annotations or [])]},
        "templating": {"list": [var_datasource(), *variables]}, "panels": panels,
    }
