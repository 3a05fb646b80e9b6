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

A second test runs ``tft-forecaster --once`` three times against one Prometheus holding a backfilled
fleet: unsharded, and as shards 0 and 1 of 2. The shards together must serve exactly what the
single process serves, nothing twice, with the same numbers (see that test for the evaluation time).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from forecaster.contract.artifacts import load_model_dir
from forecaster.contract.config import DEFAULT_SIGNALS
from forecaster.contract.registry import Registry
from forecaster.serving.sharding import shard_of
from forecaster.serving.snapshot import HORIZON_LABELS, horizon_index
from tests.forecaster_harness import forecaster_config, shared_tiny_registry, start_forecaster
from tests.promserver import HeldPort, PrometheusServer, free_port

pytestmark = pytest.mark.integration

HOSTS = 3
STEP = 20  # the tiny model's 96 steps then reach 32 min: the 30m horizon is exported
HISTORY_S = 600
WAIT_S = 60.0
SHARD_HOSTS = ["web-01", "db-02", "batch-03", "cache-04", "web-05", "db-06", "host-with:port", "x"]


def _registry_at_step(tiny_root: Path, dest: Path, step: int = STEP) -> Path:
    model = load_model_dir(Registry(tiny_root).latest_path())  # type: ignore[arg-type]
    model.spec.step_seconds = step
    registry = Registry(dest)
    registry.add(model, version=f"step{step}")
    registry.promote(f"step{step}")
    return dest


def _backfill_fleet(data_dir: Path, work: Path, fleet: object, now: float, seconds: float, interval: int) -> None:
    """The simulator's own history of ``fleet``, ``seconds`` long up to ``now``, as TSDB blocks in ``data_dir``."""
    from exporter.backfill import backfill

    result = backfill(fleet, days=seconds / 86400, out_dir=work / "sim", interval=float(interval),  # type: ignore[arg-type]
                      job="tft-simulator", jobs=1, now=now)
    assert result.blocks_dir is not None, "promtool did not convert the simulator's history"
    for block in result.blocks_dir.iterdir():
        shutil.copytree(block, data_dir / block.name)


def _backfill(data_dir: Path, work: Path, fleet: object, now: float) -> None:
    _backfill_fleet(data_dir, work, fleet, now, HISTORY_S, STEP)
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
    # Prometheus starts after the forecaster and the exporter, which bind ports of their own meanwhile.
    held = HeldPort()
    server = prometheus_factory(port=held.port)
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
            held.release()
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


SHARD_STEP = 1800  # long step slots: the three runs below fall in the same one (see the test)
SHARD_HOSTS_N = 4  # two per shard (asserted)
SHARD_HISTORY_S = 5 * 3600
SLOT_MARGIN_S = 150  # what the three --once runs may take at most, on a busy 2-core machine


def _exported(doc: dict) -> set[tuple[str, str, str]]:
    """The (instance, signal, horizon) series the forecasts of ``doc`` give on /metrics."""
    step = doc["data"]["step_seconds"]
    out = set()
    for s in doc["data"]["series"]:
        for label in HORIZON_LABELS:
            k = horizon_index(label, step)
            if 0 <= k < len(s["p50"]) and s["p50"][k] is not None:
                out.add((s["instance"], s["signal"], label))
    return out


def _curve(values: list[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def test_two_shards_together_serve_exactly_what_one_forecaster_serves(
        prometheus_factory: Callable[..., PrometheusServer], tmp_path: Path,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """``--shard.count 2``: shards 0 and 1 split the fleet, disjoint, and their union is the unsharded forecast.

    Three ``tft-forecaster --once --output`` processes read the same backfilled Prometheus (nothing
    is scraped meanwhile, so the data cannot change between them). The CLI has no fixed evaluation
    time: a cycle queries the window ending at ``now`` rounded down to the step, so the runs are
    started early in a 30-minute step slot and must report the same ``origin``; the forecasts then
    depend only on that window. Only ``made_at`` (the wall clock) and the breach ETA, counted from
    it, differ: the ETA is compared as an absolute time.
    """
    from exporter.simulation import Fleet

    now = time.time()
    fleet = Fleet(SHARD_HOSTS_N, seed=7, scenario="degrading", anchor=math.ceil(now / 60) * 60)
    owner = {h: shard_of(h, 2) for h in fleet.names}
    assert sorted(owner.values()) == [0, 0, 1, 1], owner
    registry = _registry_at_step(shared_tiny_registry(tmp_path_factory), tmp_path / "models", step=SHARD_STEP)
    server = prometheus_factory(port=free_port())
    server.workdir.mkdir(parents=True)
    server.data_dir.mkdir()
    _backfill_fleet(server.data_dir, tmp_path / "backfill", fleet, now, SHARD_HISTORY_S, 60)
    # Prometheus's own hashmod over the same names, as a scrape config would split them.
    server.scrape_configs = [
        {"job_name": "hashmod", "static_configs": [{"targets": ["127.0.0.1:1"], "labels": {"host": h}}
                                                   for h in fleet.names],
         "relabel_configs": [
             {"source_labels": ["host"], "modulus": 2, "target_label": "__tmp_hash", "action": "hashmod"},
             {"source_labels": ["__tmp_hash"], "target_label": "shard"},
             {"source_labels": ["host"], "target_label": "instance"}]}]
    server.start()
    config = tmp_path / "forecaster.yml"
    config.write_text(yaml.safe_dump({
        "prometheus": {"timeout_seconds": 30, "retries": 1},
        "model": {"step_seconds": SHARD_STEP, "min_history_steps": 6},
        "forecaster": {"torch_threads": 1}}))

    left = SHARD_STEP - time.time() % SHARD_STEP
    if left < SLOT_MARGIN_S:  # too close to the next step: wait for it rather than straddle it
        time.sleep(left + 1)
    shard_flags = {"all": [], "0": ["--shard.count", "2", "--shard.index", "0"],
                   "1": ["--shard.count", "2", "--shard.index", "1"]}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = {name: subprocess.Popen(
        [sys.executable, "-m", "forecaster", "--config.file", str(config), "--model.dir", str(registry),
         "--prometheus.url", server.url, "--once", "--output", str(tmp_path / f"{name}.json"), "--log.level", "warn",
         *flags], cwd=Path(__file__).resolve().parent.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True) for name, flags in shard_flags.items()}
    outputs = {name: proc.communicate(timeout=300)[0] for name, proc in procs.items()}
    for name, proc in procs.items():
        assert proc.returncode == 0, f"{name}: exit {proc.returncode}\n{outputs[name]}"
    docs = {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in shard_flags}
    series = {name: {(s["instance"], s["signal"]): s for s in doc["data"]["series"]} for name, doc in docs.items()}

    origins = {s["origin_unix"] for by_key in series.values() for s in by_key.values()}
    assert len(origins) == 1, f"the runs evaluated different step windows: {origins}"
    assert {name: doc["data"]["step_seconds"] for name, doc in docs.items()} == dict.fromkeys(docs, SHARD_STEP)

    # The same (instance, signal, horizon) series, each from exactly one shard, each shard its own hosts.
    everything = _exported(docs["all"])
    assert {i for i, _, _ in everything} == set(fleet.names)
    assert {s for _, s, _ in everything} == {s.name for s in DEFAULT_SIGNALS}
    parts = [_exported(docs["0"]), _exported(docs["1"])]
    assert parts[0] and parts[1] and not parts[0] & parts[1]
    assert parts[0] | parts[1] == everything
    for index, part in enumerate(parts):
        assert {i for i, _, _ in part} == {h for h, o in owner.items() if o == index}
    up = server.wait_for('up{job="hashmod"}', min_series=len(fleet.names), timeout=WAIT_S)
    assert {r["metric"]["host"]: int(r["metric"]["shard"]) for r in up} == owner

    # The same numbers.
    sharded = {**series["0"], **series["1"]}
    assert sharded.keys() == series["all"].keys()
    for key, one in series["all"].items():
        part = sharded[key]
        for field in ("model", "version", "warming_up", "origin_unix", "step_seconds", "threshold"):
            assert part[field] == one[field], (key, field)
        for q in ("p10", "p50", "p90"):
            np.testing.assert_allclose(_curve(part[q]), _curve(one[q]), rtol=0, atol=2e-6, err_msg=f"{key} {q}")
        assert (part["breach_probability"] is None) == (one["breach_probability"] is None), key
        if one["breach_probability"] is not None:
            labels = list(one["breach_probability"])
            np.testing.assert_allclose(_curve([part["breach_probability"][h] for h in labels]),
                                       _curve([one["breach_probability"][h] for h in labels]), rtol=0, atol=2e-6,
                                       err_msg=f"{key} breach_probability")
        for path, eta in one["breach_eta_seconds"].items():
            other = part["breach_eta_seconds"][path]
            assert (eta is None) == (other is None), (key, path)
            if eta is not None:  # made_at is in whole seconds: the absolute breach time within 1 s
                at = [_unix(s["made_at"]) + s["breach_eta_seconds"][path] for s in (one, part)]
                assert abs(at[0] - at[1]) <= 1.0, (key, path, at)


def _unix(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
