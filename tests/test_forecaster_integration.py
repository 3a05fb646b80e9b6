"""A real Prometheus scrapes the simulator and the forecaster; the forecasts come back through PromQL.

The forecaster runs at a 20 s step so that ten minutes of history suffice: Prometheus starts
with ten minutes of the simulated fleet backfilled (the exporter's own backfill, converted by
promtool) and then scrapes the simulator every second. The tiny model is re-registered with
``step_seconds: 20``; its weights do not depend on the step (only the meaning of its calendar
features does, which does not matter here). Its 96 steps then reach 32 minutes, so only the
30m horizon is exported: longer horizons are beyond what this model forecasts.

The same Prometheus also checks what the forecaster relies on:

* the forecaster starts *before* Prometheus, so its first cycle fails and it must recover alone;
* a counter that reset (a restarted process, backfilled with the reset in the middle) is read
  through ``rate()`` and still gives finite, non-negative forecasts;
* :func:`forecaster.serving.sharding.shard_of` assigns hosts exactly as Prometheus's ``hashmod`` does.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from forecaster.contract.artifacts import load_model_dir
from forecaster.contract.config import DEFAULT_SIGNALS
from forecaster.contract.registry import Registry
from forecaster.serving.sharding import shard_of
from tests.forecaster_harness import forecaster_config, shared_tiny_registry, start_forecaster
from tests.promserver import PrometheusServer, free_port

pytestmark = pytest.mark.integration

HOSTS = 3
STEP = 20  # the tiny model's 96 steps then reach 32 min: the 30m horizon is exported
HISTORY_S = 600
WAIT_S = 60.0
SHARD_HOSTS = ["web-01", "db-02", "batch-03", "cache-04", "web-05", "db-06", "host-with:port", "x"]


def _registry_at_step(tiny_root: Path, dest: Path) -> Path:
    model = load_model_dir(Registry(tiny_root).latest_path())  # type: ignore[arg-type]
    model.spec.step_seconds = STEP
    registry = Registry(dest)
    registry.add(model, version=f"step{STEP}")
    registry.promote(f"step{STEP}")
    return dest


def _backfill(data_dir: Path, work: Path, fleet: object, now: float) -> None:
    from exporter.backfill import backfill

    result = backfill(fleet, days=HISTORY_S / 86400, out_dir=work / "sim", interval=float(STEP),  # type: ignore[arg-type]
                      job="tft-simulator", jobs=1, now=now)
    assert result.blocks_dir is not None, "promtool did not convert the simulator's history"
    for block in result.blocks_dir.iterdir():
        shutil.copytree(block, data_dir / block.name)
    # A counter of a restarted process: +50 per step, back to 0 half way.
    lines = ["# TYPE tft_test_requests counter"]
    times = np.arange(now - HISTORY_S, now, STEP)
    for k, t in enumerate(times):
        value = 50 * (k if k < len(times) // 2 else k - len(times) // 2)
        lines.append(f'tft_test_requests_total{{job="app",instance="app-1"}} {value} {t:.0f}')
    lines.append("# EOF")
    om = work / "counter.om"
    om.write_text("\n".join(lines) + "\n")
    proc = subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(om), str(data_dir)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_forecasts_for_every_simulated_host_reach_prometheus(
        prometheus_factory: Callable[..., PrometheusServer], tmp_path: Path,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    from exporter.http import start_server, stop_server
    from exporter.simulation import Fleet

    now = time.time()
    fleet = Fleet(HOSTS, seed=7, scenario="degrading", anchor=math.ceil(now / 60) * 60)
    registry = _registry_at_step(shared_tiny_registry(tmp_path_factory), tmp_path / "models")
    server = prometheus_factory(port=free_port())
    server.workdir.mkdir(parents=True)
    server.data_dir.mkdir()
    _backfill(server.data_dir, tmp_path / "backfill", fleet, now)

    signals = [s.model_dump() for s in DEFAULT_SIGNALS]
    signals.append({"name": "requests", "query": "sum by (instance) (rate(tft_test_requests_total[1m]))",
                    "unit": "requests/s", "min": 0, "max": None, "threshold": 1000})
    config = forecaster_config(registry, server.url, signals=signals, model__step_seconds=STEP,
                               model__min_history_steps=6)

    exporter_server, exporter_thread, exporter_url = start_server(fleet)
    try:
        # The forecaster first: Prometheus is down when its first cycle runs.
        with start_forecaster(registry, "", config=config) as fc:
            first = fc.wait_for_cycles(1, timeout=WAIT_S)
            assert first.prometheus_failed and not first.ok
            server.scrape_configs = [
                {"job_name": "tft-simulator", "metrics_path": "/probe",
                 "http_sd_configs": [{"url": exporter_url + "/sd", "refresh_interval": "5s"}],
                 "relabel_configs": [
                     {"source_labels": ["__address__"], "target_label": "__param_target"},
                     {"source_labels": ["__param_target"], "target_label": "instance"},
                     {"target_label": "__address__", "replacement": exporter_url.removeprefix("http://")}]},
                {"job_name": "tft-forecaster", "honor_labels": True,
                 "static_configs": [{"targets": [fc.url.removeprefix("http://")]}]},
                {"job_name": "hashmod", "static_configs": [{"targets": ["127.0.0.1:1"], "labels": {"host": h}}
                                                           for h in SHARD_HOSTS],
                 "relabel_configs": [
                     {"source_labels": ["host"], "modulus": 3, "target_label": "__tmp_hash", "action": "hashmod"},
                     {"source_labels": ["__tmp_hash"], "target_label": "shard"},
                     {"source_labels": ["host"], "target_label": "instance"}]},
            ]
            server.start()

            # Every simulated host's forecast, scraped back from the forecaster, with its own instance.
            found = server.wait_for('count by (instance) (tft_forecast_p50{horizon="30m",signal="memory"})',
                                    min_series=HOSTS, timeout=WAIT_S)
            assert {r["metric"]["instance"] for r in found} == set(fleet.names)
            every = server.query('count by (instance, signal) (tft_forecast_p50{job="tft-forecaster"})')
            assert {(r["metric"]["instance"], r["metric"]["signal"]) for r in every} >= {
                (h, s.name) for h in fleet.names for s in DEFAULT_SIGNALS}
            disorder = server.query("tft_forecast_p10 > tft_forecast_p50 or tft_forecast_p50 > tft_forecast_p90")
            assert not disorder, disorder
            assert server.query('tft_model_fallback{job="tft-forecaster"} == 0')
            assert server.query('tft_forecaster_failures_total{stage="query"} >= 1')  # the down start, counted
            assert server.query('tft_forecaster_cycles_total{outcome="success"} >= 1')

            # The counter reset: the rate-based signal is forecast, finite and >= 0.
            fs = fc.service.published.forecasts
            assert fs is not None
            rows = [k for k, s in enumerate(fs.signals) if s == "requests"]
            assert rows, f"the counter's signal was not forecast: {fc.service.published.last_cycle}"
            q = fs.quantiles[rows]
            q = q[np.isfinite(q)]
            assert len(q) and (q >= 0).all() and (q < 50).all()  # 5/s before and after the reset

            # hashmod: Prometheus's own assignment equals ours.
            up = server.wait_for('up{job="hashmod"}', min_series=len(SHARD_HOSTS), timeout=WAIT_S)
            theirs = {r["metric"]["host"]: int(r["metric"]["shard"]) for r in up}
            assert theirs == {h: shard_of(h, 3) for h in SHARD_HOSTS}
    finally:
        stop_server(exporter_server, exporter_thread)
