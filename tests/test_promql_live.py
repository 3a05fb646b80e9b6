"""Every PromQL expression of the dashboards and alert rules, run against a real Prometheus.

Prometheus (1 s scrape and rule evaluation) loads the project's recording and alerting rules
and scrapes, through the scrape jobs of prometheus/prometheus.yml, the simulator (in-process,
through /sd and /probe) and the forecaster (in-process, serving a tiny trained model). Before
it starts, its TSDB receives past data only:

* six hours of the simulated fleet (``exporter.backfill``), so the forecaster has history to
  forecast from and rate() windows are full at once;
* synthetic ``tft_forecast_*`` series for the last nine hours and the recorded actual
  (``instance_signal:tft_actual:value``) for the last 25 hours, written as OpenMetrics and
  converted with ``promtool tsdb create-blocks-from openmetrics``: the accuracy rules compare
  forecasts made up to 8 h ago (``offset 8h``) and the seasonal-naive forecast (``offset 1d``)
  with the actual, and a test cannot wait that long. All timestamps are in the past.

Then every expression, with Grafana's variables substituted, must parse and return at least
one series as an instant query; alert conditions (which return series only while firing) must
parse, and their value part (query A of the Grafana rule) must return data. The dashboards'
annotations mark events (firing alerts, a new model, a simulated incident): they must parse, and
the series they watch must exist. The variables take the values a user of a single Prometheus
sees: the forecaster's job, and cluster "All" (``.*``, matching series without a cluster label).
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from forecaster.contract.config import DEFAULT_SIGNALS, HORIZON_LABELS
from tests.monitoring_exprs import (
    ROOT,
    Expr,
    all_dashboard_exprs,
    annotation_exprs,
    grafana_rule_exprs,
    metric_names,
    prometheus_rules,
    rule_files,
    substitute,
)
from tests.promserver import PrometheusServer, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOSTS = 3
SIGNALS = [s.name for s in DEFAULT_SIGNALS]
RAW_HISTORY_DAYS = 0.25
FORECAST_HISTORY_S = 9 * 3600
ACTUAL_HISTORY_S = 25 * 3600
SYNTHETIC_STEP_S = 120
WAIT_S = 60.0


# ---- past data ------------------------------------------------------------------------------


def write_synthetic_history(path: Path, instances: list[str], end: float) -> None:
    """OpenMetrics text of past forecasts and past actuals, ending before ``end``."""
    lines: list[str] = []

    def shape(i: int, j: int, t: float) -> float:
        return 0.3 + 0.1 * j + 0.05 * i + 0.1 * math.sin(2 * math.pi * t / 86400 + i)

    start_a = end - ACTUAL_HISTORY_S
    lines.append("# TYPE instance_signal:tft_actual:value gauge")
    for i, inst in enumerate(instances):
        for j, sig in enumerate(SIGNALS):
            t = start_a
            while t < end:
                lines.append(f'instance_signal:tft_actual:value{{instance="{inst}",signal="{sig}"}} '
                             f"{shape(i, j, t):.4f} {t:.0f}")
                t += SYNTHETIC_STEP_S
    start_f = end - FORECAST_HISTORY_S
    for q, delta in (("p10", -0.05), ("p50", 0.0), ("p90", 0.05)):
        lines.append(f"# TYPE tft_forecast_{q} gauge")
        for i, inst in enumerate(instances):
            for j, sig in enumerate(SIGNALS):
                for h, secs in HORIZON_LABELS.items():
                    t = start_f
                    while t < end:
                        value = shape(i, j, t + secs) + delta
                        lines.append(f'tft_forecast_{q}{{instance="{inst}",signal="{sig}",horizon="{h}",'
                                     f'job="tft-forecaster"}} {value:.4f} {t:.0f}')
                        t += SYNTHETIC_STEP_S
    lines.append("# EOF")
    path.write_text("\n".join(lines) + "\n")


def backfill_into(data_dir: Path, work: Path, fleet: Any, now: float) -> None:
    from exporter.backfill import backfill

    result = backfill(fleet, days=RAW_HISTORY_DAYS, out_dir=work / "raw", interval=60.0, job="tft-simulator",
                      series="signals", jobs=1, now=now)
    assert result.blocks_dir is not None, "promtool did not convert the simulator's history"
    for block in result.blocks_dir.iterdir():
        shutil.copytree(block, data_dir / block.name)
    synthetic = work / "synthetic.om"
    write_synthetic_history(synthetic, list(fleet.names), end=now - 90)
    proc = subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", "--max-block-duration=54h",
                           str(synthetic), str(data_dir)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---- the project's scrape config and rules, pointed at the in-process services --------------


def scrape_configs(exporter: str, forecaster: str, prometheus: str, targets_dir: Path) -> list[dict[str, Any]]:
    text = (ROOT / "prometheus" / "prometheus.yml").read_text()
    text = (text.replace("exporter:8920", exporter).replace("forecaster:8921", forecaster)
            .replace("localhost:9090", prometheus))
    config = yaml.safe_load(text)
    for job in config["scrape_configs"]:
        for sd in job.get("file_sd_configs", []):
            sd["files"] = [str(targets_dir / Path(f).name) for f in sd["files"]]
        for sd in job.get("http_sd_configs", []):
            sd["refresh_interval"] = "5s"
    return config["scrape_configs"]


def rules_for_test(workdir: Path) -> list[str]:
    """The rule files, without group intervals so that every group is evaluated every second."""
    out = []
    (workdir / "rules").mkdir(parents=True, exist_ok=True)
    for path in rule_files():
        doc = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            group.pop("interval", None)
        copy = workdir / "rules" / path.name
        copy.write_text(yaml.safe_dump(doc, sort_keys=False))
        out.append(str(copy))
    return out


# ---- the test -------------------------------------------------------------------------------


def instant(server: PrometheusServer, expr: str) -> tuple[str | None, list[dict[str, Any]]]:
    resp = requests.get(f"{server.url}/api/v1/query", params={"query": expr}, timeout=30)
    body = resp.json()
    if body.get("status") != "success":
        return f"{body.get('errorType')}: {body.get('error')}", []
    return None, body["data"]["result"]


def wait_until(check: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def forecaster_signals() -> list[dict[str, Any]]:
    """The default signals, with a CPU threshold every host exceeds: so that some series have a
    predicted breach (an ETA) whatever the tiny model forecasts, and others have none."""
    signals = [s.model_dump(mode="json") for s in DEFAULT_SIGNALS]
    for s in signals:
        if s["name"] == "cpu":
            s["threshold"] = 0.01
    return signals


def test_every_dashboard_and_alert_expression_returns_data(
        prometheus_factory: Callable[..., PrometheusServer], tmp_path: Path,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    from exporter.http import start_server, stop_server
    from exporter.simulation import Fleet
    from tests.forecaster_harness import copy_registry, forecaster_config, shared_tiny_registry, start_forecaster
    from trainer.cron import write_run_metrics

    now = time.time()
    fleet = Fleet(HOSTS, seed=3, scenario="critical", anchor=now // 60 * 60)
    registry = copy_registry(shared_tiny_registry(tmp_path_factory), tmp_path / "registry")
    # A finished training run, as cron leaves it: the forecaster re-exports it as tft_trainer_*.
    write_run_metrics(registry / "trainer_metrics.prom", exit_code=0, outcome="promoted", duration_s=12.5,
                      scores={"candidate": {"sql": 0.8, "mase": 0.9, "coverage": 0.79},
                              "seasonal_naive": {"sql": 1.0, "mase": 1.1, "coverage": 0.7}}, version="test")

    server = prometheus_factory()
    server.port = free_port()
    server.workdir.mkdir(parents=True)
    server.data_dir.mkdir()
    backfill_into(server.data_dir, tmp_path / "backfill", fleet, now)

    exporter_server, exporter_thread, exporter_url = start_server(fleet)
    forecaster_port = free_port()
    # A declared schedule that is always on, so the planned-windows annotation's series exists.
    config = forecaster_config(registry, server.url, signals=forecaster_signals(),
                               schedules=[{"name": "always", "cron": "* * * * *", "duration": "1m"}])
    try:
        with start_forecaster(registry, server.url, forecaster_port, config=config):
            targets = tmp_path / "targets"
            targets.mkdir()
            server.scrape_configs = scrape_configs(exporter_url.removeprefix("http://"),
                                                   f"127.0.0.1:{forecaster_port}", f"127.0.0.1:{server.port}",
                                                   targets)
            server.rule_files = rules_for_test(server.workdir)
            server.start()
            _check_everything(server, fleet)
    finally:
        stop_server(exporter_server, exporter_thread)


def _check_everything(server: PrometheusServer, fleet: Any) -> None:
    started = time.time()
    # Data flows: raw scrapes, the signal rules, live forecasts, the accuracy rules over the
    # backfilled forecasts.
    server.wait_for('up{job="tft-simulator"} == 1', min_series=HOSTS, timeout=WAIT_S)
    server.wait_for('up{job="tft-forecaster"} == 1', timeout=WAIT_S)
    server.wait_for("instance_signal:tft_actual:value", min_series=HOSTS * len(SIGNALS), timeout=WAIT_S)
    # Forecasts scraped from the running forecaster, not the backfilled ones (which end before
    # Prometheus started).
    live = server.wait_for(f'timestamp(tft_forecast_p50{{horizon="1h"}}) > {started:.0f}', timeout=WAIT_S)
    server.wait_for('tft_breach_eta_seconds{path="p50"}', timeout=WAIT_S)
    # The served model's cut-offs, one per horizon: the probability alerts join on them.
    server.wait_for('tft_breach_probability_cutoff{job="tft-forecaster"}', min_series=len(HORIZON_LABELS),
                    timeout=WAIT_S)
    server.wait_for("signal_horizon:tft_forecast_relative_abs_error:avg1d", timeout=WAIT_S)
    server.wait_for("tft_trainer_last_run_exit_code", timeout=WAIT_S)

    instance = live[0]["metric"]["instance"]
    signal = live[0]["metric"]["signal"]
    assert instance in fleet.names
    values = {"instance": instance, "signal": signal, "signals": signal, "horizon": "1h",
              "job": "tft-forecaster", "cluster": ".*",
              "__rate_interval": "30s", "__interval": "15s", "__range": "1h"}

    exprs: list[Expr] = all_dashboard_exprs() + grafana_rule_exprs()
    empty: list[str] = []
    errors: list[str] = []

    def check(e: Expr, want_data: bool = True) -> None:
        query = substitute(e.expr, values)
        error, result = instant(server, query)
        if error:
            errors.append(f"{e.where}: {error}\n    {query}")
        elif want_data and not result:
            # "x unless <condition>" is empty while the condition holds everywhere: then x
            # itself must have data.
            head = query.split(" unless ")[0] if " unless " in query else None
            if head is None or not instant(server, head)[1]:
                empty.append(f"{e.where}\n    {query}")

    # Counters and histograms need two scrapes of a finished cycle before rate() has a value.
    time.sleep(3)
    for e in exprs:
        check(e)
    for e in annotation_exprs():
        check(e, want_data=False)
        for name in metric_names(e.expr) - {"ALERTS"}:  # no alert fires in this short run
            check(Expr(f"{e.where} watches {name}", name))
    for rule in prometheus_rules():
        e = Expr(f"{rule['_file']} {rule.get('alert') or rule['record']}", rule["expr"])
        # Alert conditions return series only while firing: they must parse. Recording rules
        # must produce data (the series they record exist).
        check(e, want_data="record" in rule)
        if "record" in rule:
            sel = rule["record"] + "{" + ",".join(f'{k}="{v}"' for k, v in rule.get("labels", {}).items()) + "}"
            check(Expr(f"{rule['_file']} recorded {sel}", sel))
    assert not errors, "expressions that do not parse or fail:\n" + "\n".join(errors)
    assert not empty, "expressions that return no series:\n" + "\n".join(empty)

    # The host drill-down's range ends 8 h in the future: each horizon's forecast, shifted by its
    # offset, must reach that far (8h: up to now + 8h, from forecasts stored up to now).
    now = time.time()
    for h, secs in HORIZON_LABELS.items():
        q = f'max(tft_forecast_p50{{instance="{instance}", signal="{signal}", horizon="{h}"}} offset {h})'
        [series] = server.query_range(q, now - 3600, now + 8 * 3600, 300)
        last = max(float(ts) for ts, _ in series["values"])
        assert last > now + secs - 900, f"horizon {h} reaches only {(last - now) / 3600:.2f} h ahead"
