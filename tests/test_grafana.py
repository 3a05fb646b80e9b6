"""Static checks of grafana/: provisioning structure, uids, datasource binding, generated files
up to date, and every metric a panel or rule names is one the project exports or records."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitoring import cli as generator
from monitoring.files import PANEL_PLUGINS, outputs, panel_types
from monitoring.promql import cutoff_expr
from monitoring.settings import SETTINGS
from tests.monitoring_exprs import (
    DASHBOARDS,
    PROVISIONING,
    ROOT,
    all_dashboard_exprs,
    annotation_exprs,
    grafana_rule_exprs,
    grafana_rules,
    grafana_variables,
    iter_panels,
    load_dashboards,
    metric_names,
    prometheus_rule_exprs,
    prometheus_rules,
    recorded_names,
)

# What the forecaster exports (including the trainer's metrics it re-exports). The live test
# (tests/test_promql_live.py) proves that each of these the panels use really returns data.
FORECASTER_METRICS = {
    "tft_forecast_p10", "tft_forecast_p50", "tft_forecast_p90", "tft_breach_eta_seconds",
    "tft_breach_probability", "tft_breach_probability_cutoff", "tft_model_info", "tft_model_age_seconds",
    "tft_model_fallback", "tft_forecast_model_info", "tft_forecast_warming_up", "tft_signal_threshold",
    "tft_forecaster_stage_duration_seconds", "tft_forecaster_cycles_total",
    "tft_forecaster_last_success_timestamp_seconds", "tft_forecaster_forecast_age_seconds",
    "tft_forecaster_series", "tft_forecaster_series_skipped", "tft_forecaster_failures_total",
    "tft_forecaster_prometheus_requests_total", "tft_forecaster_input_staleness_seconds",
    "tft_forecaster_build_info", "tft_forecast_driver_weight", "tft_forecast_driver_trend_seconds",
    "tft_forecast_attention_peak_lag_seconds",
    "tft_trainer_last_run_timestamp_seconds", "tft_trainer_last_run_duration_seconds",
    "tft_trainer_last_run_exit_code", "tft_trainer_last_success_timestamp_seconds", "tft_trainer_runs_total",
    "tft_trainer_last_run_info", "tft_trainer_backtest_score",
}
FORECASTER_HISTOGRAMS = {"tft_forecaster_cycle_duration_seconds", "tft_forecaster_prometheus_request_duration_seconds"}
PROMETHEUS_METRICS = {"up", "ALERTS"}
GOLDEN_FORECASTER = ROOT / "tests" / "golden" / "forecaster_metrics.prom"
PANEL_TYPES = {"timeseries", "stat", "table", "bargauge", "status-history", "piechart", "text", "row"}
GRAFANA_BUILTIN_VARS = {"__rate_interval", "__interval", "__range", "__all"}
DS_VAR = {"type": "prometheus", "uid": "${datasource}"}
IMPORT_DIR = ROOT / "grafana" / "import"
RUNBOOKS = ROOT / "docs" / "runbooks.md"


def node_exporter_metrics() -> set[str]:
    try:
        from exporter.families import FAMILIES
    except ImportError:  # the simulator is optional for this check
        FAMILIES = {}
    return set(FAMILIES) | {
        "node_cpu_seconds_total", "node_memory_MemAvailable_bytes", "node_memory_MemTotal_bytes",
        "node_filesystem_avail_bytes", "node_filesystem_size_bytes",
    }


def sample_names(text: str) -> set[str]:
    from prometheus_client.parser import text_string_to_metric_families

    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def exported_metrics(tmp_path: Path) -> set[str]:
    """What the forecaster's /metrics really holds: its golden page plus the trainer's file."""
    from trainer.cron import write_run_metrics

    path = tmp_path / "trainer_metrics.prom"
    write_run_metrics(path, exit_code=0, outcome="promoted", duration_s=1.0,
                      scores={"candidate": {"sql": 1.0}}, version="v")
    return sample_names(GOLDEN_FORECASTER.read_text()) | sample_names(path.read_text())


#: Exported only with ``schedules:`` declared, so absent from the golden page (a fixed snapshot without
#: schedules); tests/test_schedules.py checks that the forecaster exports them when there are.
SCHEDULE_METRICS = {"tft_schedule_active", "tft_schedule_planned", "tft_breach_scheduled"}


def allowed_metrics() -> set[str]:
    hist = {f"{h}{s}" for h in FORECASTER_HISTOGRAMS for s in ("_bucket", "_sum", "_count")}
    return (FORECASTER_METRICS | SCHEDULE_METRICS | hist | PROMETHEUS_METRICS | node_exporter_metrics()
            | recorded_names())


def test_the_exported_names_are_what_the_forecaster_exports(tmp_path: Path) -> None:
    """The allow-list below is the forecaster's golden /metrics page, not a wish list."""
    if not GOLDEN_FORECASTER.exists():
        pytest.skip("no golden forecaster page yet")
    hist = {f"{h}{s}" for h in FORECASTER_HISTOGRAMS for s in ("_bucket", "_sum", "_count")}
    assert (FORECASTER_METRICS | hist) - exported_metrics(tmp_path) == set()


def provisioning(kind: str) -> list[tuple[Path, dict[str, Any]]]:
    return [(p, yaml.safe_load(p.read_text())) for p in sorted((PROVISIONING / kind).glob("*.y*ml"))]


def datasource_uid() -> str:
    [(_, doc)] = provisioning("datasources")
    [ds] = doc["datasources"]
    return ds["uid"]


# ---- generated files -------------------------------------------------------------------------


def test_generated_files_are_up_to_date() -> None:
    stale = [str(rel) for rel, content in outputs().items()
             if not (ROOT / rel).exists() or (ROOT / rel).read_text() != content]
    assert not stale, f"run tft-monitoring: stale {stale}"


def test_generator_check_mode_reports_stale_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert generator.main(["--check", "--root", str(tmp_path)]) == 1
    assert "grafana/dashboards/tft-fleet.json" in capsys.readouterr().err
    assert generator.main(["--root", str(tmp_path)]) == 0
    assert generator.main(["--check", "--root", str(tmp_path)]) == 0


# ---- provisioning structure -----------------------------------------------------------------


def test_every_provisioning_file_has_api_version_1() -> None:
    files = sorted(PROVISIONING.rglob("*.y*ml")) + sorted((ROOT / "grafana" / "optional").glob("*.y*ml"))
    assert len(files) >= 5
    for path in files:
        assert yaml.safe_load(path.read_text())["apiVersion"] == 1, path


def test_one_folder_per_resource_type() -> None:
    assert sorted(p.name for p in PROVISIONING.iterdir() if p.is_dir()) == ["alerting", "dashboards", "datasources"]


def test_datasource() -> None:
    [(_, doc)] = provisioning("datasources")
    [ds] = doc["datasources"]
    assert ds["type"] == "prometheus" and ds["uid"] == "tft-prometheus" and ds["access"] == "proxy"
    assert ds["uid"] == SETTINGS.datasource_uid
    # Not the default: the file must not take that role from a Grafana's own Prometheus.
    assert ds["url"].startswith("http") and ds.get("isDefault", False) is False


def test_dashboard_provider_points_at_the_mounted_dashboards() -> None:
    [(_, doc)] = provisioning("dashboards")
    [provider] = doc["providers"]
    assert provider["type"] == "file"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts


def test_contact_point_is_configured_from_the_environment() -> None:
    [(_, doc)] = [(p, d) for p, d in provisioning("alerting") if "contactPoints" in d]
    [cp] = doc["contactPoints"]
    [receiver] = cp["receivers"]
    assert receiver["type"] == "webhook"
    assert receiver["settings"]["url"] == "${TFT_ALERT_WEBHOOK_URL}"
    env = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["grafana"]["environment"]
    for value in receiver["settings"].values():
        for var in re.findall(r"\$\{(\w+)\}", str(value)):
            assert var in env, f"{var} is not passed to the grafana service"


def test_notification_policy_is_opt_in_and_routes_to_the_contact_point() -> None:
    assert not [p for p, d in provisioning("alerting") if "policies" in d], "a policy file replaces the whole tree"
    doc = yaml.safe_load((ROOT / "grafana" / "optional" / "notification-policies.yml").read_text())
    [root] = doc["policies"]
    receivers = {root["receiver"]}
    stack = list(root.get("routes", []))
    while stack:
        route = stack.pop()
        receivers.add(route["receiver"])
        stack += route.get("routes", [])
    [(_, cps)] = [(p, d) for p, d in provisioning("alerting") if "contactPoints" in d]
    known = {cp["name"] for cp in cps["contactPoints"]} | {"grafana-default-email"}
    assert receivers <= known
    rules_doc = yaml.safe_load((PROVISIONING / "alerting" / "tft-alert-rules.yml").read_text())
    folder = {g["folder"] for g in rules_doc["groups"]}
    assert any(["grafana_folder", "=", f] in r.get("object_matchers", []) for r in root["routes"] for f in folder)


# ---- dashboards ------------------------------------------------------------------------------


def test_three_dashboards_with_unique_uids_and_titles() -> None:
    dashes = load_dashboards()
    assert sorted(dashes) == ["tft-fleet.json", "tft-health.json", "tft-host.json"]
    uids = [d["uid"] for d in dashes.values()]
    assert len(set(uids)) == len(uids) and all(len(u) <= 40 for u in uids)
    assert len({d["title"] for d in dashes.values()}) == 3
    for name, d in dashes.items():
        assert name == f"{d['uid']}.json"
        assert d.get("id") is None, "provisioned dashboards carry no id"


@pytest.mark.parametrize("name", ["tft-fleet.json", "tft-health.json", "tft-host.json"])
def test_dashboard_structure(name: str) -> None:
    dash = load_dashboards()[name]
    uid = datasource_uid()
    for key in ("uid", "title", "panels", "templating", "time", "schemaVersion"):
        assert key in dash
    ids = [p["id"] for p in iter_panels(dash["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique within a dashboard"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    # The datasource is a variable, first, defaulting to the provisioned uid: a Grafana without it picks its own.
    first = dash["templating"]["list"][0]
    assert first["name"] == "datasource" and first["type"] == "datasource" and first["query"] == "prometheus"
    assert first["current"]["value"] == uid and not first["multi"] and not first["includeAll"]
    for p in iter_panels(dash["panels"]):
        assert p["type"] in PANEL_TYPES, p["type"]
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        if p["type"] in ("row", "text"):
            continue
        assert p["datasource"] == DS_VAR, p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert p["targets"] and len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DS_VAR
            assert t["expr"].strip()
            for var in grafana_variables(t["expr"]) | grafana_variables(p["title"]):
                assert var in variables or var in GRAFANA_BUILTIN_VARS, f"{p['title']}: unknown ${var}"
        if "repeat" in p:
            assert variables[p["repeat"]]["multi"], "a repeated panel needs a multi-value variable"
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"] == DS_VAR
    for a in dash["annotations"]["list"]:
        if "expr" in a:
            assert a["datasource"] == DS_VAR, a["name"]
            for var in grafana_variables(a["expr"]):
                assert var in variables, f"annotation {a['name']}: unknown ${var}"
    # Nothing names a datasource uid directly, except the variable's default.
    assert uid not in json.dumps(dict(dash, templating={"list": dash["templating"]["list"][1:]}))


@pytest.mark.parametrize("name", ["tft-fleet.json", "tft-health.json", "tft-host.json"])
def test_every_panel_is_described_and_has_a_unit(name: str) -> None:
    dash = load_dashboards()[name]
    for p in iter_panels(dash["panels"]):
        if p["type"] == "row":  # a row is a section heading: Grafana shows no description for it
            continue
        assert p.get("description", "").strip(), f"{name}: panel {p['id']} {p['title']!r} has no description"
        if p["type"] in ("timeseries", "stat"):
            assert p["fieldConfig"]["defaults"].get("unit"), f"{name}: panel {p['id']} {p['title']!r} has no unit"


@pytest.mark.parametrize("name", ["tft-fleet.json", "tft-host.json"])
def test_job_and_cluster_variables_select_the_hosts(name: str) -> None:
    dash = load_dashboards()[name]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    cluster, job = variables["cluster"], variables["job"]
    # cluster is optional: All is ".*", which matches series without the label too.
    assert cluster["type"] == job["type"] == "query"
    assert cluster["includeAll"] and cluster["allValue"] == ".*" and cluster["current"]["value"] == "$__all"
    assert cluster["query"]["query"].startswith("label_values(") and job["query"]["query"].startswith("label_values(")
    assert 'cluster=~"$cluster"' in job["query"]["query"]
    host_series = re.compile(r"\b(tft_forecast_\w+|tft_breach_\w+|instance_signal\w*:[\w:]+)\{([^}]*)\}")
    selectors = 0
    for e in all_dashboard_exprs():
        if not e.where.startswith(name) or "variable cluster" in e.where:
            continue
        for metric, matchers in host_series.findall(e.expr):
            selectors += 1
            assert 'cluster=~"$cluster"' in matchers, (e.where, metric)
            if metric.startswith("tft_"):  # the forecaster's series; the recorded ones carry no job
                assert 'job=~"$job"' in matchers or "variable job" in e.where, (e.where, metric)
    assert selectors > 10


def test_time_series_dashboards_mark_alerts_promotions_and_incidents() -> None:
    for name, dash in load_dashboards().items():
        assert any(p["type"] == "timeseries" for p in iter_panels(dash["panels"])), name
        exprs = {a["name"]: a["expr"] for a in dash["annotations"]["list"] if "expr" in a}
        firing = exprs["Firing TFT alerts"]
        assert 'alertstate="firing"' in firing and 'alertname=~"TFT.*"' in firing and firing.startswith("ALERTS{")
        # A new model version is a new tft_model_info series (its value is always 1: changes() sees nothing).
        assert "tft_model_info" in exprs["Model promotions"] and " unless " in exprs["Model promotions"]
        if name != "tft-health.json":  # the simulator's ground truth, about hosts
            assert "tft_sim_incident_active" in exprs["Simulated incidents"]
    host = {a["name"]: a["expr"] for a in load_dashboards()["tft-host.json"]["annotations"]["list"] if "expr" in a}
    assert 'instance="$instance"' in host["Firing TFT alerts"] and 'instance="$instance"' in host["Simulated incidents"]


# ---- the importable copies ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tft-fleet.json", "tft-health.json", "tft-host.json"])
def test_import_copies_declare_their_datasource_and_plugins(name: str) -> None:
    dash = load_dashboards()[name]
    imported = json.loads((IMPORT_DIR / name).read_text())
    [ds_input] = imported["__inputs"]
    assert ds_input["name"] == "DS_PROMETHEUS" and ds_input["type"] == "datasource"
    assert ds_input["pluginId"] == "prometheus"
    requires = {(r["type"], r["id"]) for r in imported["__requires"]}
    used = panel_types(dash["panels"]) - {"row"}
    assert used and used <= set(PANEL_PLUGINS)
    assert {i for kind, i in requires if kind == "panel"} == used
    assert {("grafana", "grafana"), ("datasource", "prometheus")} <= requires
    assert imported.get("id") is None
    [variable] = [v for v in imported["templating"]["list"] if v["type"] == "datasource"]
    assert variable["current"]["value"] == "${DS_PROMETHEUS}"
    text = json.dumps(imported)
    assert datasource_uid() not in text, "the import copy names no datasource of ours"
    # Otherwise the same dashboard.
    body = {k: v for k, v in imported.items() if not k.startswith("__") and k != "id"}
    body["templating"] = {"list": [v for v in body["templating"]["list"] if v["type"] != "datasource"]}
    same = dict(dash, templating={"list": [v for v in dash["templating"]["list"] if v["type"] != "datasource"]})
    assert body == same


def test_dashboard_links_point_at_existing_dashboards() -> None:
    dashes = load_dashboards()
    uids = {d["uid"] for d in dashes.values()}
    text = "\n".join(p.read_text() for p in DASHBOARDS.glob("*.json"))
    linked = set(re.findall(r'"/d/([\w-]+)/', text))
    assert linked and linked <= uids


def test_host_dashboard_reaches_8h_into_the_future_with_offsets() -> None:
    dash = load_dashboards()["tft-host.json"]
    assert dash["time"]["to"] == "now+8h"
    exprs = [t["expr"] for p in iter_panels(dash["panels"]) for t in p.get("targets", [])]
    for h in ("30m", "1h", "2h", "4h", "8h"):
        for q in ("p10", "p50", "p90"):
            assert any(f"tft_forecast_{q}" in e and f'horizon="{h}"' in e and f"offset {h}" in e for e in exprs)
    assert any("tft_signal_threshold" in e for e in exprs)
    assert any("tft_breach_eta_seconds" in e for e in exprs)
    assert {v["name"] for v in dash["templating"]["list"]} >= {"instance", "signal"}


# ---- alert rules -----------------------------------------------------------------------------


def test_grafana_alert_rules_structure() -> None:
    uid = datasource_uid()
    assert uid == SETTINGS.datasource_uid
    dashes = {d["uid"]: d for d in load_dashboards().values()}
    rules = grafana_rules()
    uids = [r["uid"] for r in rules]
    assert len(uids) == len(set(uids)) and all(len(u) <= 40 for u in uids)
    doc = yaml.safe_load((PROVISIONING / "alerting" / "tft-alert-rules.yml").read_text())
    for group in doc["groups"]:
        assert group["name"] and group["folder"] and group["interval"] and group["orgId"] == 1
    for r in rules:
        refs = {d["refId"] for d in r["data"]}
        assert r["condition"] in refs
        for d in r["data"]:
            assert d["datasourceUid"] in (uid, "__expr__")
            assert d["model"]["refId"] == d["refId"]
            if d["datasourceUid"] == "__expr__":
                assert d["model"]["type"] in ("threshold", "math")
                if d["model"]["type"] == "threshold":
                    assert d["model"]["expression"] in refs
                else:
                    assert set(re.findall(r"\$(\w+)", d["model"]["expression"])) <= refs - {d["refId"]}
        assert r["labels"]["severity"] in ("critical", "warning")
        assert {"summary", "description", "dashboard_url", "panel_url", "runbook_url"} <= set(r["annotations"])
        assert "$value " not in r["annotations"]["description"], "Grafana templates use $values"
        assert r["noDataState"] in ("OK", "NoData", "Alerting") and r["execErrState"] in ("Error", "Alerting", "OK")
        panels = {p["id"]: p for p in iter_panels(dashes[r["dashboardUid"]]["panels"])}
        assert r["panelId"] in panels


def _norm(expr: str) -> str:
    return " ".join(expr.replace("(", " ( ").replace(")", " ) ").split())


def test_grafana_and_prometheus_alerts_are_the_same_rules() -> None:
    prom = {r["alert"]: r for r in prometheus_rules() if "alert" in r}
    graf = {r["title"]: r for r in grafana_rules()}
    assert set(prom) == set(graf)
    for name, g in graf.items():
        p = prom[name]
        queries = {d["refId"]: d for d in g["data"] if d["datasourceUid"] != "__expr__"}
        for query in queries.values():
            assert _norm(query["model"]["expr"]) in _norm(p["expr"]), name
        assert g["for"] == p["for"] and g["labels"] == p["labels"]
        assert g["annotations"]["summary"] == p["annotations"]["summary"]
        [condition] = [d for d in g["data"] if d["datasourceUid"] == "__expr__"]
        assert g["condition"] == condition["refId"]
        if condition["model"]["type"] == "math":
            # A cut-off that is a series: B, compared with A as Prometheus does, joined on horizon.
            assert set(queries) == {"A", "B"} and condition["model"]["expression"] == "$A >= $B", name
            a, b = (_norm(queries[r]["model"]["expr"]) for r in "AB")
            assert _norm(p["expr"]).endswith(f"{a} ) >= on ( horizon ) group_left ( ) ( {b} )") or \
                _norm(p["expr"]) == f"{a} >= on ( horizon ) group_left ( ) ( {b} )", name
            continue
        for cutoff in condition["model"]["conditions"][0]["evaluator"]["params"]:
            assert re.search(rf"[<>]=? {re.escape(format(cutoff, 'g'))}\b", p["expr"]), (name, cutoff)


def test_breach_probability_alerts_use_the_model_cutoff() -> None:
    """Every probability alert compares with tft_breach_probability_cutoff of its own horizon; the
    fixed stand-in is there only for when that series is absent."""
    probability_alerts = [r for r in prometheus_rules() if "tft_breach_probability{" in r.get("expr", "")
                          and "alert" in r]
    assert {r["alert"] for r in probability_alerts} == {"TFTBreachLikelyWithin1h", "TFTBreachLikelyWithin8h"}
    for rule in probability_alerts:
        horizon = rule["alert"].removeprefix("TFTBreachLikelyWithin")
        expr = _norm(rule["expr"])
        cutoff = _norm(cutoff_expr(horizon))
        assert expr.endswith(f">= on ( horizon ) group_left ( ) ( {cutoff} )"), rule["alert"]
        assert f'tft_breach_probability_cutoff{{horizon="{horizon}"}}' in cutoff
        # The constant appears only as the stand-in of an absent cut-off series.
        assert re.findall(r"(?<![\w.])0\.5(?![\w.])", rule["expr"]) == \
            re.findall(r"vector\( ?(0\.5) ?\)", rule["expr"])


def test_alerts_link_to_a_dashboard() -> None:
    uids = {d["uid"] for d in load_dashboards().values()}
    for rule in prometheus_rules():
        if "alert" in rule:
            url = rule["annotations"]["dashboard_url"]
            assert url.startswith(SETTINGS.grafana_url + "/d/"), rule["alert"]
            assert re.search(r"/d/([\w-]+)/", url).group(1) in uids, rule["alert"]


def test_alerts_link_to_a_time_series_of_the_alerted_quantity() -> None:
    """Grafana draws a managed alert's state changes on the panel it is linked to, which a stat or a table
    cannot show; the Prometheus rules' panel_url opens the same panel."""
    dashes = {d["uid"]: d for d in load_dashboards().values()}
    prom = {r["alert"]: r for r in prometheus_rules() if "alert" in r}
    for r in grafana_rules():
        panel = {p["id"]: p for p in iter_panels(dashes[r["dashboardUid"]]["panels"])}[r["panelId"]]
        assert panel["type"] == "timeseries", (r["title"], panel["title"])
        [value] = [d["model"]["expr"] for d in r["data"] if d["refId"] == "A"]
        shown = {n for t in panel["targets"] for n in metric_names(t["expr"])}
        assert metric_names(value) & shown, (r["title"], panel["title"])
        url = f"/d/{r['dashboardUid']}/"
        for links in (r["annotations"], prom[r["title"]]["annotations"]):
            assert url in links["dashboard_url"] and url in links["panel_url"]
            assert re.search(rf"[?&]viewPanel={r['panelId']}$", links["panel_url"]), r["title"]


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file (lower case, punctuation dropped, spaces to -)."""
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, flags=re.M):
        anchors.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return anchors


def test_every_alert_has_a_runbook_section() -> None:
    anchors = github_anchors(RUNBOOKS.read_text())
    rules = [(r["alert"], r["annotations"]) for r in prometheus_rules() if "alert" in r]
    rules += [(r["title"], r["annotations"]) for r in grafana_rules()]
    assert len(rules) >= 20
    for name, links in rules:
        url = links["runbook_url"]
        base, _, anchor = url.partition("#")
        assert base == SETTINGS.runbook_base_url, name
        assert anchor == name.lower() and anchor in anchors, f"{name}: no heading for #{anchor} in docs/runbooks.md"


def test_deployment_settings_come_from_the_command_line(tmp_path: Path) -> None:
    args = ["--root", str(tmp_path), "--grafana.url", "https://grafana.example.com/", "--grafana.datasource-uid",
            "their-prom", "--runbook.base-url", "https://git.example.com/tft/docs/runbooks.md"]
    assert generator.main(args) == 0
    rules = yaml.safe_load((tmp_path / "grafana/provisioning/alerting/tft-alert-rules.yml").read_text())
    rule = rules["groups"][0]["rules"][0]
    assert {d["datasourceUid"] for d in rule["data"]} == {"their-prom", "__expr__"}
    assert rule["annotations"]["dashboard_url"].startswith("https://grafana.example.com/d/")
    assert rule["annotations"]["runbook_url"].startswith("https://git.example.com/tft/docs/runbooks.md#tft")
    prom = (tmp_path / "prometheus/rules/tft-alerts.rules.yml").read_text()
    assert "http://localhost:3000" not in prom and "https://grafana.example.com/d/" in prom
    fleet = json.loads((tmp_path / "grafana/dashboards/tft-fleet.json").read_text())
    assert fleet["templating"]["list"][0]["current"]["value"] == "their-prom"
    # Only for that run; the same flags make --check pass, the defaults do not.
    assert SETTINGS.grafana_url == "http://localhost:3000" and SETTINGS.datasource_uid == "tft-prometheus"
    assert generator.main(["--check", *args]) == 0
    assert generator.main(["--check", "--root", str(tmp_path)]) == 1


# ---- metric names ----------------------------------------------------------------------------


def test_every_metric_named_is_exported_or_recorded() -> None:
    allowed = allowed_metrics()
    exprs = all_dashboard_exprs() + annotation_exprs() + grafana_rule_exprs() + prometheus_rule_exprs()
    assert len(exprs) > 100
    unknown = {(e.where, n) for e in exprs for n in metric_names(e.expr) if n not in allowed}
    assert not unknown, sorted(unknown)


def test_recorded_series_are_used() -> None:
    """Every aggregate the rules record is shown on a dashboard or used by an alert."""
    used = {n for e in all_dashboard_exprs() + prometheus_rule_exprs() for n in metric_names(e.expr)}
    assert recorded_names() - used == set()


def test_metric_name_extraction() -> None:
    expr = ('histogram_quantile(0.9, sum by (le) (rate(a_bucket{job="x"}[$__rate_interval]))) '
            '/ on (instance) group_left (signal) b offset 1h unless label_replace(c, "d", "e", "f", "g") > 1e3')
    assert metric_names(expr) == {"a_bucket", "b", "c"}
