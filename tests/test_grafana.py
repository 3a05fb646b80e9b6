"""Static checks of grafana/: provisioning structure, uids, datasource binding, generated files
up to date, and every metric a panel or rule names is one the project exports or records."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitoring import cli as generator
from monitoring.files import outputs
from monitoring.promql import cutoff_expr
from tests.monitoring_exprs import (
    DASHBOARDS,
    PROVISIONING,
    ROOT,
    all_dashboard_exprs,
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
    "tft_forecaster_build_info",
    "tft_trainer_last_run_timestamp_seconds", "tft_trainer_last_run_duration_seconds",
    "tft_trainer_last_run_exit_code", "tft_trainer_last_success_timestamp_seconds", "tft_trainer_runs_total",
    "tft_trainer_last_run_info", "tft_trainer_backtest_score",
}
FORECASTER_HISTOGRAMS = {"tft_forecaster_cycle_duration_seconds", "tft_forecaster_prometheus_request_duration_seconds"}
PROMETHEUS_METRICS = {"up"}
GOLDEN_FORECASTER = ROOT / "tests" / "golden" / "forecaster_metrics.prom"
PANEL_TYPES = {"timeseries", "stat", "table", "bargauge", "status-history", "piechart", "text", "row"}
GRAFANA_BUILTIN_VARS = {"__rate_interval", "__interval", "__range", "__all"}


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


def allowed_metrics() -> set[str]:
    hist = {f"{h}{s}" for h in FORECASTER_HISTOGRAMS for s in ("_bucket", "_sum", "_count")}
    return FORECASTER_METRICS | hist | PROMETHEUS_METRICS | node_exporter_metrics() | recorded_names()


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
    assert ds["url"].startswith("http") and ds["isDefault"] is True


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
    for p in iter_panels(dash["panels"]):
        assert p["type"] in PANEL_TYPES, p["type"]
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        if p["type"] in ("row", "text"):
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": uid}, p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert p["targets"] and len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == uid
            assert t["expr"].strip()
            for var in grafana_variables(t["expr"]) | grafana_variables(p["title"]):
                assert var in variables or var in GRAFANA_BUILTIN_VARS, f"{p['title']}: unknown ${var}"
        if "repeat" in p:
            assert variables[p["repeat"]]["multi"], "a repeated panel needs a multi-value variable"
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"]["uid"] == uid


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
        assert {"summary", "description", "dashboard_url"} <= set(r["annotations"])
        assert "$value " not in r["annotations"]["description"], "Grafana templates use $values"
        assert r["noDataState"] in ("OK", "NoData", "Alerting") and r["execErrState"] in ("Error", "Alerting", "OK")
        panel_ids = {p["id"] for p in iter_panels(dashes[r["dashboardUid"]]["panels"])}
        assert r["panelId"] in panel_ids


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
            assert re.search(r"/d/([\w-]+)/", url).group(1) in uids, rule["alert"]


# ---- metric names ----------------------------------------------------------------------------


def test_every_metric_named_is_exported_or_recorded() -> None:
    allowed = allowed_metrics()
    exprs = all_dashboard_exprs() + grafana_rule_exprs() + prometheus_rule_exprs()
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
