"""Several clusters: ``prometheus.cluster_labels`` keeps hosts of one instance name in two clusters apart.

From the signal queries (grouped ``by (instance, cluster)``) through the panel rows (host keys), the
shard hash, the exported series and the JSON API, to the generated recording and alert rules: two hosts
``web-01`` in clusters ``a`` and ``b`` must never merge. Unit tests use an in-memory Prometheus and the
flagged fallback (no model needed to key hosts); promtool evaluates the generated rules; the integration
test runs the forecaster with the tiny model against a real Prometheus holding a backfilled fleet.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from forecaster.contract.config import ConfigError, default_signals, parse_config
from forecaster.contract.hosts import INSTANCE_ONLY, HostIdentity
from forecaster.contract.panel import panel_from_range_results
from forecaster.contract.prometheus import InstantSample, RangeSeries
from forecaster.serving.cycle import run_cycle
from forecaster.serving.exposition import forecast_families, render_forecasts
from forecaster.serving.sharding import shard_of
from forecaster.serving.snapshot import breaches, forecasts_document
from forecaster.serving.store import ModelSet
from tests.promserver import PrometheusServer, free_port

CLUSTER = HostIdentity(("cluster",))
STEP = 300
NOW = 1_700_000_000.0


# --------------------------------------------------------------------------- host keys


@pytest.mark.parametrize("labels", [
    {"instance": "web-01", "cluster": "a"},
    {"instance": "db-1:9100", "cluster": ""},
    {"instance": 'odd "name", {with} \\ braces\n', "cluster": 'a"},{b='},
])
def test_host_key_round_trips(labels: dict[str, str]) -> None:
    key = CLUSTER.key({**labels, "job": "node"})  # other labels are not part of the host
    assert key is not None
    assert CLUSTER.host_labels(key) == labels
    assert CLUSTER.instance(key) == labels["instance"]
    assert list(CLUSTER.host_labels(key)) == ["instance", "cluster"]  # instance first, then the configured order


def test_host_key_without_cluster_labels_is_the_instance() -> None:
    """One Prometheus: keys, shard assignment and documents are exactly what they were."""
    assert INSTANCE_ONLY.key({"instance": "web-01", "cluster": "a"}) == "web-01"
    assert INSTANCE_ONLY.host_labels("web-01") == {"instance": "web-01"}
    assert INSTANCE_ONLY.hash_source("web-01") == "web-01"
    assert INSTANCE_ONLY.key({"job": "node"}) is None and CLUSTER.key({"instance": ""}) is None


def test_two_clusters_give_two_keys_and_hash_as_hashmod_joins_labels() -> None:
    a = CLUSTER.key({"instance": "web-01", "cluster": "a"})
    b = CLUSTER.key({"instance": "web-01", "cluster": "b"})
    assert a != b
    # Prometheus's hashmod with source_labels [instance, cluster] hashes "web-01;a".
    assert CLUSTER.hash_source(a) == "web-01;a"  # type: ignore[arg-type]
    assert CLUSTER.key({"instance": "web-01"}) == CLUSTER.key({"instance": "web-01", "cluster": ""})
    with pytest.raises(ValueError):
        CLUSTER.host_labels("web-01")
    with pytest.raises(ValueError):
        HostIdentity(("cluster", "region")).host_labels(a)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- config


def test_cluster_labels_reach_the_default_signal_queries() -> None:
    config = parse_config({"prometheus": {"cluster_labels": ["cluster"]}})
    assert config.hosts == CLUSTER
    assert all("by (instance, cluster)" in s.query for s in config.signals)
    assert config.signals == default_signals(("cluster",))
    assert all("by (instance)" in s.query for s in parse_config({}).signals)


def test_a_signal_query_that_merges_clusters_is_refused() -> None:
    own = {"name": "load", "query": "avg by (instance) (node_load1)", "min": 0, "max": None, "threshold": 10}
    with pytest.raises(ConfigError, match=r"load: .*by \(instance, cluster\)"):
        parse_config({"prometheus": {"cluster_labels": ["cluster"]}, "signals": [own]})
    ok = {**own, "query": "avg by (cluster, instance) (node_load1)"}
    config = parse_config({"prometheus": {"cluster_labels": ["cluster"]}, "signals": [ok]})
    assert config.signals[0].query == ok["query"]


@pytest.mark.parametrize("bad", ["instance", "job", "signal", "1abc", "__name__"])
def test_cluster_labels_must_be_free_label_names(bad: str) -> None:
    with pytest.raises(ConfigError, match="cluster_labels"):
        parse_config({"prometheus": {"cluster_labels": [bad]}})


# --------------------------------------------------------------------------- panel, cycle, exports


class _TwoClusters:
    """An in-memory Prometheus: every signal query answers web-01 in cluster a (low) and in b (high)."""

    def __init__(self, level: dict[str, float]) -> None:
        self.level = level
        self.queries: list[str] = []

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[RangeSeries]:
        self.queries.append(expr)
        ts = np.arange(start, end + 1, step, dtype=np.float64)
        daily = 0.05 * np.sin(2 * np.pi * ts / 86400)
        return [RangeSeries({"instance": "web-01", "cluster": c}, ts, np.full(len(ts), v) + daily)
                for c, v in self.level.items()]

    def query(self, expr: str, time: float | None = None) -> list[InstantSample]:
        return []


def test_equal_instance_names_in_two_clusters_are_two_panel_rows() -> None:
    client = _TwoClusters({"a": 0.2, "b": 0.7})
    results = {"memory": client.query_range("q", NOW - 10 * STEP, NOW, STEP)}
    panel = panel_from_range_results(results, ["memory"], NOW - 10 * STEP, NOW, STEP, hosts=CLUSTER)
    assert [CLUSTER.host_labels(k) for k in panel.instances] == [
        {"instance": "web-01", "cluster": "a"}, {"instance": "web-01", "cluster": "b"}]
    assert not panel.dropped
    np.testing.assert_allclose(np.nanmean(panel.values[:, 0], axis=1), [0.2, 0.7], atol=0.06)
    # Without cluster labels they are one host answered twice: dropped as duplicates, never mixed.
    merged = panel_from_range_results(results, ["memory"], NOW - 10 * STEP, NOW, STEP)
    assert merged.instances == [] and merged.dropped["duplicate_instance"] == 1


def test_a_cycle_exports_two_sets_of_series_carrying_the_cluster() -> None:
    config = parse_config({"prometheus": {"cluster_labels": ["cluster"]},
                           "model": {"context_steps": 300, "min_history_steps": 12}})
    client = _TwoClusters({"a": 0.2, "b": 0.88})
    result = run_cycle(client, ModelSet(None), config, NOW)  # the fallback: keying needs no model
    assert result.ok, result.errors
    assert all("by (instance, cluster)" in q for q in client.queries)
    fs = result.forecasts
    assert fs is not None and fs.hosts == CLUSTER and len(fs) == 2 * len(config.signals)

    text = render_forecasts(fs).decode()
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    p50 = [s for s in parsed["tft_forecast_p50"].samples if s.labels["signal"] == "memory"
           and s.labels["horizon"] == "1h"]
    assert sorted((s.labels["instance"], s.labels["cluster"]) for s in p50) == [("web-01", "a"), ("web-01", "b")]
    by_cluster = {s.labels["cluster"]: s.value for s in p50}
    assert by_cluster["a"] < 0.4 < by_cluster["b"]
    for name in ("tft_forecast_p10", "tft_forecast_p90", "tft_forecast_model_info", "tft_forecast_warming_up"):
        assert {s.labels.get("cluster") for s in parsed[name].samples} == {"a", "b"}, name
    # Only b's memory (0.88 and a daily swing) reaches its 0.9 threshold: an ETA for that host alone.
    eta = [s.labels for s in parsed["tft_breach_eta_seconds"].samples if s.labels["signal"] == "memory"]
    assert eta and all(labels["cluster"] == "b" and labels["instance"] == "web-01" for labels in eta)
    # The client_python families carry the same labels.
    families = {f.name: f for f in forecast_families(fs)}
    assert sorted((s.labels["cluster"], s.labels["signal"]) for s in families["tft_forecast_warming_up"].samples) \
        == sorted((c, s.name) for c in "ab" for s in config.signals)

    # The JSON API: instance is the label, labels name the host; ?instance= selects both clusters.
    doc = forecasts_document(fs, instance="web-01", signal="memory")
    assert [(s["instance"], s["labels"]) for s in doc["data"]["series"]] == [
        ("web-01", {"instance": "web-01", "cluster": "a"}), ("web-01", {"instance": "web-01", "cluster": "b"})]
    found = breaches(fs)
    assert found and all(b["labels"]["cluster"] == "b" for b in found)  # only b's memory nears 0.9


def test_shards_split_the_clusters_of_one_instance_name() -> None:
    """Sharding hashes instance and cluster: the hosts of both clusters are owned once, maybe apart."""
    names = [f"web-{i:02d}" for i in range(12)]
    level = {"a": 0.3, "b": 0.6}
    owners: dict[tuple[str, str], int] = {}
    for index in range(2):
        config = parse_config({"prometheus": {"cluster_labels": ["cluster"]},
                               "model": {"context_steps": 300, "min_history_steps": 12},
                               "forecaster": {"shard": {"count": 2, "index": index}},
                               "signals": [{"name": "memory", "query": "max by (instance, cluster) (m)",
                                            "threshold": 0.9}]})

        class Fleet(_TwoClusters):
            def query_range(self, expr: str, start: float, end: float, step: float) -> list[RangeSeries]:
                one = super().query_range(expr, start, end, step)
                return [RangeSeries({**s.labels, "instance": n}, s.timestamps, s.values) for n in names for s in one]

        fs = run_cycle(Fleet(level), ModelSet(None), config, NOW).forecasts
        assert fs is not None
        for key in fs.instances:
            labels = CLUSTER.host_labels(str(key))
            assert (labels["instance"], labels["cluster"]) not in owners
            owners[(labels["instance"], labels["cluster"])] = index
    assert set(owners) == {(n, c) for n in names for c in level}
    assert owners == {(n, c): shard_of(f"{n};{c}", 2) for n, c in owners}
    assert any(owners[(n, "a")] != owners[(n, "b")] for n in names)


# --------------------------------------------------------------------------- generated rules


def _rules_with_clusters(dest: Path) -> list[Path]:
    """The rule files as ``tft-monitoring --prometheus.cluster-labels cluster`` writes them."""
    from monitoring.cli import main

    assert main(["--root", str(dest), "--prometheus.cluster-labels", "cluster"]) == 0
    assert main(["--root", str(dest), "--prometheus.cluster-labels", "cluster", "--check"]) == 0
    return sorted((dest / "prometheus" / "rules").glob("*.rules.yml"))


def test_the_generator_takes_the_cluster_labels(tmp_path: Path) -> None:
    from monitoring.cli import main

    files = _rules_with_clusters(tmp_path)
    signals = yaml.safe_load((tmp_path / "prometheus/rules/tft-signals.rules.yml").read_text())
    exprs = [r["expr"] for r in signals["groups"][0]["rules"] if "labels" not in r]
    assert exprs and all("by (instance, cluster)" in e for e in exprs)
    text = "\n".join(p.read_text() for p in files)
    assert "by (instance, signal)" not in text and "on (instance, signal)" not in text
    assert "on (instance, cluster, signal)" in text and "avg by (cluster, signal, horizon)" in text
    assert "var-cluster={{ $labels.cluster }}" in text
    # The shipped files (no cluster labels) are then stale for this root, and a bad label is a usage error.
    assert main(["--root", str(tmp_path), "--check"]) == 1
    assert main(["--root", str(tmp_path), "--prometheus.cluster-labels", "job"]) == 2
    # A config file's labels are used without the flag.
    cfg = tmp_path / "c.yml"
    cfg.write_text(yaml.safe_dump({"prometheus": {"cluster_labels": ["cluster"]}}))
    assert main(["--root", str(tmp_path), "--config.file", str(cfg), "--check"]) == 0


def test_generated_rules_keep_clusters_apart_in_promtool(promtool: str, tmp_path: Path) -> None:
    """promtool evaluates the cluster-aware rules: web-01 of a and of b get their own actual, error,
    band hit and alert, although their instance label is the same."""
    _rules_with_clusters(tmp_path)
    rules = tmp_path / "prometheus" / "rules"
    series = []
    # Binary-exact values: memory 0.25 and 0.75; forecasts 0.375 (a, inside its band) and 0.5 (b, outside).
    for cluster, avail, p10, p50, p90 in (("a", 75, 0.125, 0.375, 0.5), ("b", 25, 0.5, 0.5, 0.625)):
        host = f'instance="web-01", cluster="{cluster}"'
        series += [{"series": f'node_memory_MemAvailable_bytes{{{host}, job="node"}}', "values": f"{avail}x60"},
                   {"series": f'node_memory_MemTotal_bytes{{{host}, job="node"}}', "values": "100x60"}]
        for q, v in (("p10", p10), ("p50", p50), ("p90", p90)):
            series.append({"series": f'tft_forecast_{q}{{{host}, signal="memory", horizon="30m", '
                                     f'job="tft-forecaster"}}', "values": f"{v}x60"})
    # Only b's median path breaches within the hour.
    series.append({"series": 'tft_breach_eta_seconds{instance="web-01", cluster="b", signal="memory", path="p50", '
                             'job="tft-forecaster"}', "values": "600x60"})

    def sample(name: str, cluster: str, value: float, **extra: str) -> dict[str, object]:
        labels = ", ".join(f'{k}="{v}"' for k, v in
                           {"cluster": cluster, **extra, "instance": "web-01", "signal": "memory"}.items())
        return {"labels": f"{name}{{{labels}}}", "value": value}

    actual = "instance_signal:tft_actual:value"
    error = "instance_signal_horizon:tft_forecast_abs_error:p50"
    band = "instance_signal_horizon:tft_forecast_in_band:p10_p90"
    test = {
        "rule_files": [str(p) for p in sorted(rules.glob("*.rules.yml"))],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m", "input_series": series,
            "promql_expr_test": [
                {"expr": f'{actual}{{instance="web-01", signal="memory"}}', "eval_time": "40m",
                 "exp_samples": [sample(actual, "a", 0.25), sample(actual, "b", 0.75)]},
                {"expr": f'{error}{{instance="web-01"}}', "eval_time": "40m",
                 "exp_samples": [sample(error, "a", 0.125, horizon="30m"),
                                 sample(error, "b", 0.25, horizon="30m")]},
                {"expr": f'{band}{{instance="web-01"}}', "eval_time": "40m",
                 "exp_samples": [sample(band, "a", 1, horizon="30m"), sample(band, "b", 0, horizon="30m")]},
                {"expr": 'ALERTS{alertname="TFTBreachForecastWithin1h", alertstate="firing"}', "eval_time": "40m",
                 "exp_samples": [{"labels": 'ALERTS{alertname="TFTBreachForecastWithin1h", alertstate="firing", '
                                           'cluster="b", instance="web-01", severity="critical", signal="memory"}',
                                  "value": 1}]},
            ],
        }],
    }
    path = tmp_path / "clusters.test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    result = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- a real Prometheus


LIVE_STEP = 60  # the tiny model's 96 steps reach 96 min: 30m and 1h are exported
LIVE_HISTORY_S = 1800
SAMPLE_S = 15
MEMORY = {"a": 0.3, "b": 0.8}


def _openmetrics(now: float) -> str:
    """node_exporter families for web-01 in clusters a and b (different loads), up to ``now``."""
    times = np.arange(now - LIVE_HISTORY_S, now, SAMPLE_S)
    cpu = {"a": 0.25, "b": 0.6}
    lines = ["# TYPE node_cpu_seconds counter"]
    for c in MEMORY:
        for mode, share in (("idle", 1 - cpu[c] - 0.05), ("iowait", 0.05), ("user", cpu[c])):
            lines += [f'node_cpu_seconds_total{{job="node",instance="web-01",cluster="{c}",cpu="0",mode="{mode}"}} '
                      f"{share * k * SAMPLE_S:.3f} {t:.0f}" for k, t in enumerate(times)]
    wiggle = 0.01 * np.sin(np.arange(len(times)) / 5)  # a little variation, as real memory has
    for name, value in (("node_memory_MemAvailable_bytes", lambda c: 1e9 * (1 - MEMORY[c] - wiggle)),
                        ("node_memory_MemTotal_bytes", lambda c: np.full(len(times), 1e9))):
        lines.append(f"# TYPE {name} gauge")
        for c in MEMORY:
            lines += [f'{name}{{job="node",instance="web-01",cluster="{c}"}} {v:.0f} {t:.0f}'
                      for v, t in zip(value(c), times, strict=True)]
    fs = '{job="node",instance="web-01",cluster="%s",device="/dev/sda1",fstype="ext4",mountpoint="/"}'
    for name, value in (("node_filesystem_avail_bytes", lambda c: 5e10 if c == "a" else 2e10),
                        ("node_filesystem_size_bytes", lambda c: 1e11)):
        lines.append(f"# TYPE {name} gauge")
        for c in MEMORY:
            lines += [f"{name}{fs % c} {value(c):.0f} {t:.0f}" for t in times]
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@pytest.mark.integration
def test_two_clusters_forecast_apart_through_a_real_prometheus(
        prometheus_factory: Callable[..., PrometheusServer], promtool: str, tmp_path: Path,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    from tests.forecaster_harness import forecaster_config, shared_tiny_registry, start_forecaster
    from tests.test_forecaster_integration import _registry_at_step

    registry = _registry_at_step(shared_tiny_registry(tmp_path_factory), tmp_path / "models", step=LIVE_STEP)
    server = prometheus_factory(port=free_port())
    server.workdir.mkdir(parents=True)
    server.data_dir.mkdir()
    om = tmp_path / "clusters.om"
    om.write_text(_openmetrics(time.time()))
    proc = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(om), str(server.data_dir)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The signal rules as generated for the cluster label, evaluated by this Prometheus.
    server.rule_files = [str(p) for p in _rules_with_clusters(tmp_path / "generated") if "signals" in p.name]
    port = free_port()
    server.scrape_configs = [{"job_name": "tft-forecaster", "honor_labels": True,
                              "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}]
    server.start()

    config = forecaster_config(registry, server.url, prometheus__cluster_labels=["cluster"],
                               model__step_seconds=LIVE_STEP, model__min_history_steps=6)
    assert all("by (instance, cluster)" in s.query for s in config.signals)
    with start_forecaster(registry, server.url, port=port, config=config) as fc:
        cycle = fc.wait_for_cycles(1, timeout=60)
        assert cycle.ok, cycle.errors
        fs = fc.service.published.forecasts
        assert fs is not None
        assert sorted(tuple(CLUSTER.host_labels(str(k)).values()) for k in set(fs.instances)) == [
            ("web-01", "a"), ("web-01", "b")]

        # The forecasts, scraped back: one series per cluster, each near its own host's level.
        found = server.wait_for('tft_forecast_p50{job="tft-forecaster", signal="memory", horizon="30m"}',
                                min_series=2, timeout=60)
        got = {r["metric"]["cluster"]: float(r["value"][1]) for r in found}
        assert {r["metric"]["instance"] for r in found} == {"web-01"} and set(got) == set(MEMORY)
        for c, level in MEMORY.items():
            assert abs(got[c] - level) < 0.15, got
        every = server.query('count by (cluster, signal) (tft_forecast_p50{job="tft-forecaster"})')
        assert {(r["metric"]["cluster"], r["metric"]["signal"]) for r in every} == {
            (c, s.name) for c in MEMORY for s in config.signals}
        probs = server.query('tft_breach_probability{job="tft-forecaster", signal="memory", horizon="30m"}')
        assert {r["metric"]["cluster"] for r in probs} == set(MEMORY)

        # The generated signal rules record the actual per instance and cluster, apart.
        actual = server.wait_for('instance_signal:tft_actual:value{instance="web-01", signal="memory"}',
                                 min_series=2, timeout=30)
        assert {r["metric"]["cluster"] for r in actual} == set(MEMORY)
        for r in actual:
            assert abs(float(r["value"][1]) - MEMORY[r["metric"]["cluster"]]) <= 0.011, actual

        # The JSON API names both hosts with their labels.
        doc = requests.get(f"{fc.url}/api/v1/forecasts", params={"signal": "memory"}, timeout=10).json()
        assert sorted(json.dumps(s["labels"], sort_keys=True) for s in doc["data"]["series"]) == [
            json.dumps({"cluster": c, "instance": "web-01"}, sort_keys=True) for c in sorted(MEMORY)]
