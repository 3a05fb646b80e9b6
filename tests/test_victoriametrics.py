"""VictoriaMetrics (single node, Debian's 1.79) in place of Prometheus: what docs/OPERATIONS.md lists as tested.

One backfill of a small simulated fleet (exporter.backfill, 12 h every 60 s) is loaded twice: as
promtool's TSDB blocks into a real Prometheus, and as the very same OpenMetrics text into
VictoriaMetrics through ``/api/v1/import/prometheus`` (it takes timestamps in seconds as they
are). Then, against VictoriaMetrics:

* the forecaster's client: build info (VictoriaMetrics answers ``/api/v1/status/buildinfo`` with
  empty data), instant and chunked range queries, a bad expression as a 4xx that is not retried;
* the trainer's history pull and one forecaster cycle give the same panel and the same forecasts
  as from Prometheus (every window of the pull lies inside the history, so ``rate()``'s edge
  handling, which differs, never comes into play);
* every rule expression of prometheus/rules/ answers as Prometheus does on that history;
* VictoriaMetrics scrapes a running forecaster (``-promscrape.config``, ``honor_labels``) and the
  ``tft_forecast_*`` series come back; then every rule, dashboard and Grafana alert expression
  runs on live series; prometheus/prometheus.yml loads as ``-promscrape.config``;
* vmalert (in the same Debian package) loads every rule file, and replays the signal recording
  rules over the history with the same values the forecaster reads.

The comparisons end at least a minute before the last sample: VictoriaMetrics hides samples
younger than ``-search.latencyOffset`` (30 s) from range queries and carries the last older value
forward. docs/OPERATIONS.md (Compatibility) lists what it does differently.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml

from forecaster.contract.config import DEFAULT_SIGNALS, Config
from forecaster.contract.prometheus import PrometheusClient, PrometheusQueryError
from forecaster.contract.seasonal import bucket_queries
from tests.forecaster_harness import forecaster_config, shared_tiny_registry, start_forecaster
from tests.monitoring_exprs import (
    ROOT,
    all_dashboard_exprs,
    grafana_rule_exprs,
    metric_names,
    prometheus_rule_exprs,
    rule_files,
    substitute,
)
from tests.promserver import PrometheusServer, free_port
from tests.vmserver import VictoriaMetricsServer

pytestmark = pytest.mark.integration

HOSTS = 3
SIGNALS = [s.name for s in DEFAULT_SIGNALS]
INTERVAL = 60
BACKFILL_DAYS = 0.5
PULL_DAYS = 0.25  # well inside the backfill: every 5m rate() window of the pull is full
STEP = 300  # the tiny model's step
WAIT_S = 60.0
SIGNAL_RULES = ROOT / "prometheus" / "rules" / "tft-signals.rules.yml"


@dataclass(frozen=True)
class History:
    names: list[str]
    end: float  # the last sample
    text_files: list[Path]
    blocks_dir: Path


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory, promtool: str) -> History:
    from exporter.backfill import backfill
    from exporter.simulation import Fleet

    now = time.time()
    fleet = Fleet(HOSTS, seed=11, scenario="degrading", anchor=math.floor(now / INTERVAL) * INTERVAL)
    result = backfill(fleet, days=BACKFILL_DAYS, out_dir=tmp_path_factory.mktemp("vm-backfill"),
                      interval=float(INTERVAL), job="node", jobs=1, keep_text=True, now=now)
    assert result.blocks_dir is not None, "promtool did not convert the history"
    return History(list(fleet.names), result.end, list(result.text_files), result.blocks_dir)


def _victoriametrics(factory: Callable[..., VictoriaMetricsServer], history: History,
                     **kwargs: object) -> VictoriaMetricsServer:
    vm = factory(**kwargs).start()
    vm.import_text(*history.text_files)
    return vm


def _prometheus(factory: Callable[..., PrometheusServer], history: History) -> PrometheusServer:
    server = factory()
    server.data_dir.mkdir(parents=True)
    for block in history.blocks_dir.iterdir():
        shutil.copytree(block, server.data_dir / block.name)
    return server.start()


def _config(url: str, tmp_path_factory: pytest.TempPathFactory) -> Config:
    return forecaster_config(shared_tiny_registry(tmp_path_factory), url)


def _pull_end(history: History) -> float:
    """A grid point at least a minute before the last sample (and so before VictoriaMetrics' latency offset)."""
    return math.floor((history.end - 60) / STEP) * STEP


def _instant(client: PrometheusClient, expr: str, at: float) -> dict[tuple, float]:
    return {tuple(sorted(s.labels.items())): s.value for s in client.query(expr, at)}


def test_the_client_against_victoriametrics(victoriametrics_factory: Callable[..., VictoriaMetricsServer],
                                            history: History) -> None:
    vm = _victoriametrics(victoriametrics_factory, history)
    section = forecaster_config(None, vm.url).prometheus
    calls: list[tuple[str, str]] = []

    class Observer:
        def on_request(self, endpoint: str, seconds: float, outcome: str) -> None:
            calls.append((endpoint, outcome))

    with PrometheusClient(section.model_copy(update={"retries": 2}), observer=Observer()) as client:
        # Build info: answered, with empty data (Debian's build carries no version).
        assert client.check() == {}
        assert client.ready()
        assert calls == [("buildinfo", "success"), ("buildinfo", "success")]
        assert [s.value for s in client.query("vector(1)")] == [1.0]

        # A bad expression: VictoriaMetrics answers 422 (Prometheus 400); a 4xx either way, not retried.
        calls.clear()
        with pytest.raises(PrometheusQueryError) as err:
            client.query("sum(")
        assert err.value.status_code in (400, 422) and "sum(" in str(err.value)
        assert calls == [("query", "query_error")]

        # Chunked range queries give exactly the unchunked answer.
        end = _pull_end(history)
        memory = DEFAULT_SIGNALS[1].query
        whole = client.query_range(memory, end - 6 * 3600, end, INTERVAL)
    with PrometheusClient(section.model_copy(update={"max_points_per_query": 50})) as chunked:
        parts = chunked.query_range(memory, end - 6 * 3600, end, INTERVAL)
    assert [s.labels for s in whole] == [s.labels for s in parts] == [{"instance": h} for h in sorted(history.names)]
    for a, b in zip(whole, parts, strict=True):
        assert len(a) == 6 * 3600 // INTERVAL + 1
        np.testing.assert_array_equal(a.timestamps, b.timestamps)
        np.testing.assert_array_equal(a.values, b.values)


def test_history_forecasts_and_rules_match_prometheus(
        victoriametrics_factory: Callable[..., VictoriaMetricsServer],
        prometheus_factory: Callable[..., PrometheusServer], history: History,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    from forecaster.serving.service import Service
    from trainer.history import from_prometheus

    servers = {"vm": _victoriametrics(victoriametrics_factory, history),
               "prometheus": _prometheus(prometheus_factory, history)}
    configs = {name: _config(server.url, tmp_path_factory) for name, server in servers.items()}
    end = _pull_end(history)

    # The trainer's history pull: the same panel, value for value.
    panels = {name: from_prometheus(config, days=PULL_DAYS, end=end) for name, config in configs.items()}
    vm, prom = panels["vm"], panels["prometheus"]
    assert vm.instances == prom.instances == sorted(history.names)
    assert vm.signals == prom.signals == SIGNALS
    np.testing.assert_array_equal(vm.timestamps, prom.timestamps)
    assert vm.n_times == PULL_DAYS * 86400 // STEP + 1
    assert not np.isnan(prom.values).any()
    np.testing.assert_allclose(vm.values, prom.values, rtol=1e-6, atol=1e-7)

    # One forecaster cycle each, at the same instant: forecasts for every host and signal, the same.
    forecasts = {}
    for name, config in configs.items():
        result = Service(config, clock=lambda: end + 30).run_cycle()
        assert result.ok, (name, result.errors)
        fs = result.forecasts
        assert fs is not None
        assert set(zip(fs.instances, fs.signals, strict=True)) == {(h, s) for h in history.names for s in SIGNALS}
        order = np.lexsort((fs.signals.astype(str), fs.instances.astype(str)))
        forecasts[name] = fs.quantiles[order]
    assert np.isfinite(forecasts["vm"][:, :, 1]).any()
    np.testing.assert_allclose(forecasts["vm"], forecasts["prometheus"], rtol=1e-4, atol=1e-5)

    # Every rule expression, as an instant query: the same series and values (empty on both for the
    # rules that need forecasts; those run on live series in the scrape test).
    section = configs["vm"].prometheus
    with PrometheusClient(section) as vm_client, \
            PrometheusClient(configs["prometheus"].prometheus) as prom_client:
        for e in prometheus_rule_exprs():
            ours, theirs = _instant(vm_client, e.expr, end), _instant(prom_client, e.expr, end)
            assert ours.keys() == theirs.keys(), e.where
            for key, value in theirs.items():
                assert ours[key] == pytest.approx(value, rel=1e-6, abs=1e-9), (e.where, key)
        signal_rules = [e for e in prometheus_rule_exprs() if e.where.startswith("tft-signals.rules.yml instance:")]
        assert len(signal_rules) == len(SIGNALS)
        for e in signal_rules:
            assert len(_instant(vm_client, e.expr, end)) == HOSTS, e.where

        # The hourly buckets of the same-time inputs (forecaster/contract/seasonal.py): subqueries at a 1 h
        # step, over hours whose every inner step has a full rate() window.
        first, last = (math.ceil((end - PULL_DAYS * 86400) / 3600) + 1) * 3600, math.floor(end / 3600) * 3600
        assert last - first >= 3 * 3600
        for signal in DEFAULT_SIGNALS:
            for expr in bucket_queries(signal.query, 3600, STEP, (signal.min, signal.max)):
                ours = vm_client.query_range(expr, first, last, 3600)
                theirs = prom_client.query_range(expr, first, last, 3600)
                assert [s.labels for s in ours] == [s.labels for s in theirs] and len(theirs) == HOSTS, expr
                for a, b in zip(ours, theirs, strict=True):
                    np.testing.assert_array_equal(a.timestamps, b.timestamps)
                    np.testing.assert_allclose(a.values, b.values, rtol=1e-6, atol=1e-9, err_msg=expr)


def test_victoriametrics_scrapes_the_forecaster(victoriametrics_factory: Callable[..., VictoriaMetricsServer],
                                                history: History, tmp_path_factory: pytest.TempPathFactory) -> None:
    port = free_port()
    vm = _victoriametrics(victoriametrics_factory, history, scrape_configs=[
        {"job_name": "tft-forecaster", "honor_labels": True,
         "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}])
    config = _config(vm.url, tmp_path_factory)
    with start_forecaster(None, "", port=port, config=config) as fc:
        first = fc.wait_for_cycles(1, timeout=WAIT_S)
        assert first.ok, first.errors
        fs = fc.service.published.forecasts
        assert fs is not None
        assert set(zip(fs.instances, fs.signals, strict=True)) == {(h, s) for h in history.names for s in SIGNALS}

        # Scraped back, each with the forecaster's own instance label (honor_labels).
        found = vm.wait_for('count by (instance, signal) (tft_forecast_p50{job="tft-forecaster",horizon="1h"})',
                            min_series=HOSTS * len(SIGNALS), timeout=WAIT_S)
        assert {(r["metric"]["instance"], r["metric"]["signal"]) for r in found} == {
            (h, s) for h in history.names for s in SIGNALS}
        assert vm.query('up{job="tft-forecaster"} == 1')
        assert not vm.query("tft_forecast_p10 > tft_forecast_p50 or tft_forecast_p50 > tft_forecast_p90")

        # Every rule expression, dashboard panel query and Grafana alert query parses and runs on the
        # live series (the forecaster's client: a 4xx raises).
        values = {"instance": history.names[0], "signal": "memory", "signals": "memory", "horizon": "1h",
                  "job": "tft-forecaster", "cluster": ".*", "__rate_interval": "30s", "__interval": "15s",
                  "__range": "1h"}
        with PrometheusClient(config.prometheus) as client:
            for e in prometheus_rule_exprs() + all_dashboard_exprs() + grafana_rule_exprs():
                client.query(substitute(e.expr, values))
        # Their answers at "now" (nocache=1: the samples scraped in the last 30 s included).
        answered = {e.where: vm.query(e.expr) for e in prometheus_rule_exprs()}
    assert answered["tft-alerts.rules.yml TFTForecasterDown"] == []  # up == 1: not down
    assert answered["tft-alerts.rules.yml TFTModelFallback"] == []


def test_victoriametrics_reads_the_scrape_config(victoria_metrics: str) -> None:
    """prometheus/prometheus.yml as ``-promscrape.config``, with ``-promscrape.config.strictParse=false``:
    1.79 refuses keys it does not know (``evaluation_interval``, ``rule_files``, the SD ``refresh_interval``)."""
    proc = subprocess.run([victoria_metrics, f"-promscrape.config={ROOT / 'prometheus' / 'prometheus.yml'}",
                           "-promscrape.config.strictParse=false", "-promscrape.config.dryRun", "-loggerLevel=WARN"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_vmalert_loads_every_rule_file(vmalert: str, tmp_path: Path) -> None:
    files = rule_files()
    assert len(files) >= 3
    proc = subprocess.run([vmalert, "-dryRun", "-loggerLevel=WARN", *(f"-rule={p}" for p in files)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # It does check the expressions: a broken one fails.
    bad = tmp_path / "bad.rules.yml"
    bad.write_text("groups:\n- name: bad\n  rules:\n  - record: x:y:z\n    expr: sum(\n")
    proc = subprocess.run([vmalert, "-dryRun", "-loggerLevel=WARN", f"-rule={bad}"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0 and "bad prometheus expr" in proc.stdout + proc.stderr


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_vmalert_replays_the_signal_rules(vmalert: str, victoriametrics_factory: Callable[..., VictoriaMetricsServer],
                                          history: History, tmp_path: Path) -> None:
    """vmalert evaluates the signal recording rules over the past hour and writes them back; they equal
    the forecaster's own signal queries.

    The rules that read other rules' output (``instance_signal:tft_actual:value``) are replayed in a
    second run, after a flush: in one run vmalert would only wait ``-replay.rulesDelay`` per rule
    and hope the first results are searchable by then.
    """
    vm = _victoriametrics(victoriametrics_factory, history)
    end = _pull_end(history)
    start = end - 3600
    doc = yaml.safe_load(SIGNAL_RULES.read_text())
    (group,) = doc["groups"]
    recorded_names = {r["record"] for r in group["rules"]}
    chained = [r for r in group["rules"] if metric_names(r["expr"]) & recorded_names]
    stages = [[r for r in group["rules"] if r not in chained], chained]
    assert all(stages), "the signal rules are no longer two stages: update this test"
    for number, rules in enumerate(stages):
        path = tmp_path / f"stage{number}.rules.yml"
        path.write_text(yaml.safe_dump({"groups": [{**group, "rules": rules}]}, sort_keys=False))
        proc = subprocess.run(
            [vmalert, f"-rule={path}", f"-datasource.url={vm.url}", f"-remoteWrite.url={vm.url}",
             f"-replay.timeFrom={_iso(start)}", f"-replay.timeTo={_iso(end)}", "-replay.rulesDelay=0s",
             "-replay.disableProgressBar", "-loggerLevel=WARN"],
            capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        vm.flush()
    resp = requests.get(f"{vm.url}/api/v1/export", params={"match[]": "instance_signal:tft_actual:value"},
                        timeout=30)
    resp.raise_for_status()
    recorded = {}
    for line in resp.text.splitlines():
        series = json.loads(line)
        key = (series["metric"]["instance"], series["metric"]["signal"])
        recorded[key] = dict(zip((t / 1000 for t in series["timestamps"]), series["values"], strict=True))
    assert set(recorded) == {(h, s) for h in history.names for s in SIGNALS}
    section = forecaster_config(None, vm.url).prometheus
    with PrometheusClient(section) as client:
        for signal in DEFAULT_SIGNALS:
            for series in client.query_range(signal.query, start, end, INTERVAL):
                points = recorded[(series.labels["instance"], signal.name)]
                assert len(points) >= 3600 // STEP, (signal.name, sorted(points))
                ours = dict(zip(series.timestamps.tolist(), series.values.tolist(), strict=True))
                for t, value in points.items():
                    assert value == pytest.approx(ours[t], rel=1e-9, abs=1e-12), (signal.name, t)
