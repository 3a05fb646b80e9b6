"""promtool checks of prometheus/: the config, the rule files, and the rule unit tests.

Also checks that the unit tests cover every alert (firing and not firing) and every recording
rule, and that the signal rules record exactly the forecaster's signal queries.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from forecaster.contract.config import DEFAULT_SIGNALS, HORIZON_LABELS
from tests.monitoring_exprs import ROOT, metric_names, prometheus_rules, rule_files

PROM = ROOT / "prometheus"
UNIT_TESTS = sorted((PROM / "tests").glob("*.test.yml"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_check_config(promtool: str) -> None:
    result = run(promtool, "check", "config", str(PROM / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    # check config also checks every rule file it loads: all of ours must be among them.
    for path in rule_files():
        assert f"Checking {PROM / 'rules' / path.name}" in result.stdout or path.name in result.stdout


def test_promtool_check_rules(promtool: str) -> None:
    files = [str(p) for p in rule_files()]
    assert len(files) == 3
    result = run(promtool, "check", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules(promtool: str) -> None:
    assert UNIT_TESTS, "no promtool unit tests found"
    result = run(promtool, "test", "rules", *map(str, UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(UNIT_TESTS)


def _unit_test_docs() -> list[dict]:
    return [yaml.safe_load(p.read_text()) for p in UNIT_TESTS]


def test_unit_tests_cover_every_alert_firing_and_not_firing() -> None:
    alerts = {r["alert"] for r in prometheus_rules() if "alert" in r}
    firing: set[str] = set()
    silent: set[str] = set()
    for doc in _unit_test_docs():
        for case in doc["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    assert alerts - firing == set(), "alerts never tested firing"
    assert alerts - silent == set(), "alerts never tested not firing"
    assert (firing | silent) - alerts == set(), "tests name alerts that do not exist"


def test_unit_tests_cover_every_recording_rule() -> None:
    records = {r["record"] for r in prometheus_rules() if "record" in r}
    tested: set[str] = set()
    for doc in _unit_test_docs():
        for case in doc["tests"]:
            for check in case.get("promql_expr_test", []):
                if check.get("exp_samples"):
                    tested |= metric_names(check["expr"])
    assert records - tested == set(), "recording rules without a unit test that expects samples"


def test_every_rule_file_is_loaded_by_the_config_and_tested() -> None:
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    patterns = config["rule_files"]
    for path in rule_files():
        assert any(path.match(p) for p in patterns), f"{path.name} is not loaded by prometheus.yml"
    tested = {Path(f).name for doc in _unit_test_docs() for f in doc["rule_files"]}
    assert {p.name for p in rule_files()} == tested


def _norm(expr: str) -> str:
    return " ".join(expr.split())


def test_signal_rules_record_the_forecaster_signal_queries() -> None:
    by_name = {r["record"]: r for r in prometheus_rules() if "record" in r and "labels" not in r}
    actual = [r for r in prometheus_rules() if r.get("record") == "instance_signal:tft_actual:value"]
    assert sorted(r["labels"]["signal"] for r in actual) == sorted(s.name for s in DEFAULT_SIGNALS)
    for rule in actual:
        sig = next(s for s in DEFAULT_SIGNALS if s.name == rule["labels"]["signal"])
        assert _norm(by_name[rule["expr"]]["expr"]) == _norm(sig.query), sig.name


def test_no_recording_rule_reuses_a_node_mixin_name_with_another_formula() -> None:
    """Our records live in the project's namespace (a ``tft`` metric part): a site that also loads node-mixin
    must not get two rules writing one series. The only exception allowed is node-mixin's exact formula."""
    from monitoring.rules import NODE_MIXIN_RECORDS

    for rule in prometheus_rules():
        if "record" not in rule:
            continue
        name = rule["record"]
        if name in NODE_MIXIN_RECORDS:
            assert _norm(rule["expr"]) == _norm(NODE_MIXIN_RECORDS[name]), name
        else:
            assert "tft" in name.split(":")[1], f"{name}: not in the tft namespace"


def test_accuracy_rules_exist_for_every_horizon() -> None:
    for name in ("instance_signal_horizon:tft_forecast_abs_error:p50",
                 "instance_signal_horizon:tft_forecast_in_band:p10_p90",
                 "instance_signal_horizon:tft_seasonal_naive_abs_error:value"):
        rules = [r for r in prometheus_rules() if r.get("record") == name]
        assert sorted(r["labels"]["horizon"] for r in rules) == sorted(HORIZON_LABELS), name
        for r in rules:
            assert f"offset {r['labels']['horizon']}" in r["expr"], r


def test_rule_names_follow_level_metric_operations() -> None:
    for rule in prometheus_rules():
        if "record" in rule:
            assert len(rule["record"].split(":")) == 3, rule["record"]
        else:
            assert rule["alert"][0].isupper() and "_" not in rule["alert"], rule["alert"]
            assert rule["labels"]["severity"] in ("critical", "warning")
            links = {"dashboard_url", "panel_url", "runbook_url"}
            assert {"summary", "description", *links} <= set(rule["annotations"]), rule["alert"]


def test_file_sd_example_is_valid() -> None:
    example = PROM / "targets" / "production.yml.example"
    groups = yaml.safe_load(example.read_text())
    assert isinstance(groups, list) and groups
    for group in groups:
        assert set(group) <= {"targets", "labels"}
        assert all(isinstance(t, str) and ":" in t for t in group["targets"])
    # The example is not picked up as is (targets/*.yml), so the stack scrapes no fake hosts.
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    node = next(j for j in config["scrape_configs"] if j["job_name"] == "node")
    globs = node["file_sd_configs"][0]["files"]
    assert not any(example.relative_to(PROM).match(g) for g in globs)
    assert any(Path("targets/production.yml").match(g) for g in globs)


def test_example_targets_file_passes_promtool_with_the_config(promtool: str, tmp_path: Path) -> None:
    """Copying the example into place (as the docs say) gives a config promtool accepts."""
    copy = tmp_path / "prometheus"
    shutil.copytree(PROM, copy, ignore=shutil.ignore_patterns("tests"))
    shutil.copy(copy / "targets" / "production.yml.example", copy / "targets" / "production.yml")
    result = run(promtool, "check", "config", str(copy / "prometheus.yml"))
    # promtool parses every file_sd file the globs match: a malformed example fails here.
    assert result.returncode == 0, result.stdout + result.stderr
