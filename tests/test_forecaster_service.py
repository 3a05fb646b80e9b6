"""The service under faults: Prometheus down, slow, failing, malformed, empty; models replaced,
promoted, missing. In every case: no crash, the last good forecasts stay served with their age
visible, the failure is counted and logged once per cycle, and the service recovers by itself.

Cycles are run directly (``Service.run_cycle``) with a settable clock, against the in-process
fake Prometheus; one test goes through the real HTTP server and scheduler.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
import requests

from devkit.fakeprom import QUERY_RANGE, FakePrometheus, Reply
from forecaster.contract.artifacts import load_model_dir, save_model_dir
from forecaster.contract.registry import Registry
from forecaster.serving.service import Service
from tests.forecaster_harness import (
    HOSTS,
    T0,
    Clock,
    copy_registry,
    forecaster_config,
    make_service,
    metric,
    start_forecaster,
)

SIGNALS = ["cpu", "memory", "filesystem", "iowait"]


# tiny_root, registry and fake: tests/conftest.py


def served(service: Service) -> dict[tuple[str, str], float]:
    """(instance, signal) -> made_at of what is published now."""
    fs = service.published.forecasts
    assert fs is not None
    return {(str(i), str(s)): float(m) for i, s, m in zip(fs.instances, fs.signals, fs.made_at, strict=True)}


def cycle_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "forecaster.serving.service" and r.levelno >= logging.WARNING]


# ---------------------------------------------------------------------------------- Prometheus faults


def test_prometheus_down_at_start_then_recovers(fake: FakePrometheus, registry: Path) -> None:
    fake.go_down()
    service = make_service(fake, registry, Clock())
    result = service.run_cycle()
    assert not result.ok and result.prometheus_failed and "query" in result.errors
    assert service.published.forecasts is None
    assert service.ready()[0] is False
    assert metric(service, "tft_forecaster_failures_total", {"stage": "query"}) == 1
    assert metric(service, "tft_forecaster_cycles_total", {"outcome": "failure"}) == 1
    assert metric(service, "tft_forecaster_prometheus_requests_total",
                  {"endpoint": "query_range", "outcome": "unreachable"}) == 2  # one retry, then give up
    fake.come_back()
    assert service.run_cycle().ok
    assert len(served(service)) == len(HOSTS) * len(SIGNALS)
    assert service.ready() == (True, "Ready.")
    assert metric(service, "tft_forecaster_last_success_timestamp_seconds") == T0
    # The served model's own cut-offs, chosen on its training data, one per horizon.
    cutoffs = load_model_dir(Registry(registry).latest_path()).breach.cutoffs  # type: ignore[arg-type]
    assert set(cutoffs) == {"30m", "1h", "2h", "4h", "8h"}
    for h, cut in cutoffs.items():
        assert metric(service, "tft_breach_probability_cutoff", {"horizon": h}) == pytest.approx(cut, abs=1e-6)


def test_down_mid_cycle_keeps_last_forecasts_with_their_age(fake: FakePrometheus, registry: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    service = make_service(fake, registry, clock)
    assert service.run_cycle().ok
    clock.t += 300

    def go_down(_rec: object) -> Reply:
        threading.Thread(target=fake.go_down, daemon=True).start()  # drops this very request, too
        return Reply.hang(10)

    fake.script(QUERY_RANGE, lambda rec: fake._default(rec), go_down)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="forecaster"):
        result = service.run_cycle()
    assert not result.ok and result.failed_signals == ["memory", "filesystem", "iowait"]
    made = served(service)
    assert len(made) == len(HOSTS) * len(SIGNALS)  # nothing vanished
    assert all(made[(h, "cpu")] == clock.t for h in HOSTS)  # the signal that answered is fresh
    assert all(made[(h, "memory")] == T0 for h in HOSTS)  # the others are the last good ones
    assert metric(service, "tft_breach_probability_cutoff", {"horizon": "8h"}) is not None
    assert metric(service, "tft_forecaster_forecast_age_seconds") == 300
    assert metric(service, "tft_forecaster_failures_total", {"stage": "query"}) == 1
    assert len(cycle_warnings(caplog)) == 1  # one line per cycle, not per series or signal
    assert metric(service, "tft_forecaster_last_success_timestamp_seconds") == T0

    fake.come_back()
    clock.t += 300
    assert service.run_cycle().ok
    assert set(served(service).values()) == {clock.t}
    assert metric(service, "tft_forecaster_forecast_age_seconds") == 0


def test_too_slow_prometheus_times_out_without_trying_every_signal(fake: FakePrometheus, registry: Path) -> None:
    clock = Clock()
    service = make_service(fake, registry, clock, prometheus__timeout_seconds=0.3)
    assert service.run_cycle().ok
    fake.always(QUERY_RANGE, Reply.hang(3))
    fake.clear()
    clock.t += 300
    result = service.run_cycle()
    assert not result.ok and set(result.failed_signals) == set(SIGNALS)
    assert "not tried" in result.errors["query"]
    assert len(fake.requests_for(QUERY_RANGE)) == 2  # the first signal and its one retry
    assert metric(service, "tft_forecaster_prometheus_requests_total",
                  {"endpoint": "query_range", "outcome": "timeout"}) == 2
    assert set(served(service).values()) == {T0}  # still the last good forecasts
    fake.always(QUERY_RANGE, None)
    clock.t += 300
    assert service.run_cycle().ok


@pytest.mark.parametrize("reply,outcome", [
    (Reply.unavailable(), "bad_response"),
    (Reply.error(500, "internal", "boom"), "bad_response"),
    (Reply.malformed(), "bad_response"),
    (Reply.matrix([]), "success"),
    (Reply.success({"resultType": "vector", "result": []}), "success"),
], ids=["503", "500", "malformed-json", "empty-matrix", "wrong-result-type"])
def test_bad_answers_keep_the_last_forecasts(fake: FakePrometheus, registry: Path, reply: Reply, outcome: str) -> None:
    clock = Clock()
    service = make_service(fake, registry, clock)
    assert service.run_cycle().ok
    fake.always(QUERY_RANGE, reply)
    clock.t += 300
    result = service.run_cycle()
    assert not result.ok and "query" in result.errors
    assert set(served(service).values()) == {T0}
    assert metric(service, "tft_forecaster_forecast_age_seconds") == 300
    assert metric(service, "tft_forecaster_prometheus_requests_total",
                  {"endpoint": "query_range", "outcome": outcome}) >= 1
    fake.always(QUERY_RANGE, None)
    clock.t += 300
    assert service.run_cycle().ok and set(served(service).values()) == {clock.t}


def test_nan_and_gaps_in_the_data(fake: FakePrometheus, registry: Path) -> None:
    def holey(t: float) -> float | None:
        k = int(t // 300)
        if k % 7 == 0:
            return None  # a gap: no sample at all
        if k % 5 == 0:
            return float("nan")  # Prometheus's "NaN"
        return 0.5

    fake.add_series({"instance": "holey"}, holey, start=T0 - 86400)
    service = make_service(fake, registry, Clock())
    assert service.run_cycle().ok
    fs = service.published.forecasts
    assert fs is not None and "holey" in set(fs.instances)
    assert np.isfinite(fs.quantiles[:, :96]).all()
    text = service.metrics_text().decode()
    assert "NaN" not in "\n".join(line for line in text.splitlines() if line.startswith("tft_forecast_"))


def test_hosts_that_disappear_stop_being_exported(fake: FakePrometheus, registry: Path) -> None:
    fake.add_series({"instance": "leaving"}, 0.5, start=T0 - 86400, end=T0)
    clock = Clock()
    service = make_service(fake, registry, clock)
    assert service.run_cycle().ok
    assert ("leaving", "cpu") in served(service)
    clock.t += 3600
    assert service.run_cycle().ok
    assert not any(i == "leaving" for i, _ in served(service))
    assert 'instance="leaving"' not in service.metrics_text().decode()


# ---------------------------------------------------------------------------------- models


def _add_version(root: Path, version: str) -> None:
    registry = Registry(root)
    model = load_model_dir(registry.latest_path())
    registry.add(model, version=version)
    registry.promote(version)


def test_hot_reload_of_a_newly_promoted_model(fake: FakePrometheus, registry: Path) -> None:
    service = make_service(fake, registry, Clock())
    assert service.run_cycle().ok
    first = Registry(registry).latest_version()
    assert set(service.published.forecasts.versions) == {first}  # type: ignore[union-attr]
    _add_version(registry, "v2")
    assert service.run_cycle().ok
    assert set(service.published.forecasts.versions) == {"v2"}  # type: ignore[union-attr]
    info = [k for k in service.metrics_text().decode().splitlines() if k.startswith("tft_model_info{")]
    assert len(info) == 1 and 'version="v2"' in info[0] and 'source="model"' in info[0]


def test_model_replaced_by_garbage_keeps_serving_the_loaded_one(fake: FakePrometheus, registry: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    service = make_service(fake, registry, Clock())
    assert service.run_cycle().ok
    version = Registry(registry).latest_version()
    good = load_model_dir(Registry(registry).latest_path())  # type: ignore[arg-type]
    weights = Registry(registry).latest_path() / "model.safetensors"  # type: ignore[operator]
    weights.write_bytes(b"\x00garbage" * 100)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="forecaster.serving.store"):
        for _ in range(2):
            assert service.run_cycle().ok
    assert set(service.published.forecasts.versions) == {version}  # type: ignore[union-attr]
    assert metric(service, "tft_forecaster_failures_total", {"stage": "model_load"}) == 1  # once, not per cycle
    assert len([r for r in caplog.records if r.name == "forecaster.serving.store"]) == 1
    status = service.status_document()["data"]["model"]
    assert "checksum" in status["last_error"] and status["version"] == version
    assert metric(service, "tft_model_fallback") == 0
    Registry(registry).add(good, version="fixed")  # the fault ends: a good model is promoted
    Registry(registry).promote("fixed")
    assert service.run_cycle().ok
    assert set(service.published.forecasts.versions) == {"fixed"}  # type: ignore[union-attr]


@pytest.mark.parametrize("escape", ["relative", "absolute", "symlink"])
def test_a_latest_pointer_leaving_the_registry_is_a_load_error(fake: FakePrometheus, registry: Path, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture, escape: str) -> None:
    """``latest`` naming anything but a version of the registry is never served, even a valid model."""
    reg = Registry(registry)
    version = reg.latest_version()
    good = load_model_dir(reg.latest_path())  # type: ignore[arg-type]
    good.metadata["version"] = "outsider"
    outside = save_model_dir(good, tmp_path / "outside")
    pointer = {"relative": "../../../outside", "absolute": str(outside), "symlink": "linked"}[escape]
    (registry / "global" / "versions" / "linked").symlink_to(outside, target_is_directory=True)

    service = make_service(fake, registry, Clock())
    assert service.run_cycle().ok
    (registry / "global" / "latest").write_text(pointer + "\n")
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="forecaster.serving.store"):
        for _ in range(2):
            assert service.run_cycle().ok
    assert set(service.published.forecasts.versions) == {version}  # type: ignore[union-attr]
    assert metric(service, "tft_forecaster_failures_total", {"stage": "model_load"}) == 1  # once, not per cycle
    assert len([r for r in caplog.records if r.name == "forecaster.serving.store"]) == 1
    assert "latest" in service.status_document()["data"]["model"]["last_error"]

    fresh = make_service(fake, registry, Clock())  # nothing loaded yet: the flagged fallback
    assert fresh.run_cycle().ok
    assert set(fresh.published.forecasts.kinds) == {"fallback"}  # type: ignore[union-attr]
    assert "latest" in fresh.status_document()["data"]["model"]["fallback_reason"]
    assert metric(fresh, "tft_forecaster_failures_total", {"stage": "model_load"}) == 1


def test_fallback_is_served_flagged_and_replaced_when_a_model_appears(fake: FakePrometheus, tiny_root: Path,
                                                                      tmp_path: Path) -> None:
    empty = tmp_path / "models"
    empty.mkdir()
    clock = Clock()
    service = make_service(fake, empty, clock)
    assert service.run_cycle().ok
    fs = service.published.forecasts
    assert fs is not None and len(fs) == len(HOSTS) * len(SIGNALS)
    assert set(fs.kinds) == {"fallback"}
    assert metric(service, "tft_model_fallback") == 1
    assert metric(service, "tft_model_info", {"version": "seasonal_naive", "trained_at": "", "scope": "global",
                                              "source": "fallback"}) == 1
    assert "tft_breach_probability{" not in service.metrics_text().decode()
    assert "tft_breach_probability_cutoff{" not in service.metrics_text().decode()  # no model, no cut-off
    assert metric(service, "tft_forecast_model_info", {"instance": "web-01", "signal": "cpu", "model": "fallback",
                                                       "version": "seasonal_naive"}) == 1
    ok, why = service.ready()
    assert not ok and "no global/latest" in why
    assert "no global/latest" in service.status_document()["data"]["model"]["fallback_reason"]

    shutil.rmtree(empty)
    copy_registry(tiny_root, empty)
    clock.t += 300
    assert service.run_cycle().ok
    assert set(service.published.forecasts.kinds) == {"global"}  # type: ignore[union-attr]
    assert metric(service, "tft_model_fallback") == 0
    assert metric(service, "tft_breach_probability_cutoff", {"horizon": "1h"}) is not None
    assert service.ready()[0]


def test_single_model_directory_and_a_model_with_another_step(fake: FakePrometheus, registry: Path) -> None:
    version_dir = Registry(registry).latest_path()
    service = make_service(fake, version_dir, Clock())
    assert service.run_cycle().ok
    assert set(service.published.forecasts.kinds) == {"global"}  # type: ignore[union-attr]

    other = make_service(fake, registry, Clock(), model__step_seconds=60)
    assert other.run_cycle().ok
    assert other.published.models.in_fallback  # type: ignore[union-attr]
    assert "model step is 300s" in other.published.models.fallback_reason  # type: ignore[union-attr]
    assert metric(other, "tft_forecaster_failures_total", {"stage": "model_load"}) == 1


def test_host_model_is_preferred_for_its_host(fake: FakePrometheus, registry: Path) -> None:
    reg = Registry(registry)
    model = load_model_dir(reg.latest_path())  # type: ignore[arg-type]
    scope = "hosts/db-02"
    reg.add(model, scope=scope, version="own")
    reg.promote("own", scope=scope)
    service = make_service(fake, registry, Clock())
    assert service.run_cycle().ok
    fs = service.published.forecasts
    assert fs is not None
    kinds = {(str(i), str(k)) for i, k in zip(fs.instances, fs.kinds, strict=True)}
    assert ("db-02", "host") in kinds and ("web-01", "global") in kinds and ("db-02", "global") not in kinds
    assert metric(service, "tft_forecast_model_info", {"instance": "db-02", "signal": "cpu", "model": "host",
                                                       "version": "own"}) == 1
    # One cut-off per horizon, the global model's, whichever model served a series.
    glob = load_model_dir(reg.latest_path()).breach.cutoffs  # type: ignore[arg-type]
    assert dict(fs.cutoffs) == glob


# ---------------------------------------------------------------------------------- HTTP, scheduler


def test_http_api_and_live_metrics_page(fake: FakePrometheus, registry: Path) -> None:
    config = forecaster_config(registry, fake.url)
    with start_forecaster(registry, fake.url, config=config) as running:
        assert requests.get(running.url + "/-/healthy", timeout=5).status_code == 200
        running.wait_for_cycles(1, timeout=60, success=True)
        assert requests.get(running.url + "/-/ready", timeout=5).status_code == 200
        status = requests.get(running.url + "/api/v1/status", timeout=5).json()["data"]
        assert status["ready"] and status["last_cycle"]["outcome"] == "success"
        assert status["series"]["served"] == len(HOSTS) * len(SIGNALS)
        doc = requests.get(running.url + "/api/v1/forecasts", params={"instance": "web-01", "signal": "memory"},
                           timeout=5).json()["data"]
        [series] = doc["series"]
        assert series["instance"] == "web-01" and len(series["p50"]) == 96 == len(series["p10"]) == len(series["p90"])
        assert all(a <= b <= c for a, b, c in zip(series["p10"], series["p50"], series["p90"], strict=True))
        assert set(series["breach_probability"]) == {"30m", "1h", "2h", "4h", "8h"}
        assert len(requests.get(running.url + "/api/v1/forecasts", timeout=5).json()["data"]["series"]) == 12
        found = requests.get(running.url + "/api/v1/breaches", timeout=5).json()["data"]["breaches"]
        # Path crossings first, soonest first; then probability-only warnings by horizon.
        paths = [b for b in found if b["reason"] != "probability"]
        assert found[:len(paths)] == paths
        assert [b["eta_seconds"] for b in paths] == sorted(b["eta_seconds"] for b in paths)
        cutoffs = running.service.published.forecasts.cutoffs  # type: ignore[union-attr]
        for b in found[len(paths):]:
            assert b["eta_seconds"] is None and b["cutoff"] == pytest.approx(cutoffs[b["horizon"]])
            assert b["probability"] >= b["cutoff"]
        assert [b["horizon"] for b in found[len(paths):]] == sorted(
            (b["horizon"] for b in found[len(paths):]), key=["30m", "1h", "2h", "4h", "8h"].index)
        assert requests.get(running.url + "/nope", timeout=5).status_code == 404
        # The seed system's paths answer as their counterparts.
        for alias, path in {"/health": "/-/healthy", "/status": "/api/v1/status",
                            "/predictions/current?instance=web-01": "/api/v1/forecasts?instance=web-01",
                            "/alerts/active": "/api/v1/breaches"}.items():
            old, new = (requests.get(running.url + p, timeout=5) for p in (alias, path))
            assert old.status_code == new.status_code == 200, alias
            assert old.headers["Content-Type"] == new.headers["Content-Type"], alias
            if path != "/api/v1/status":  # the status document carries the time it was made
                assert old.content == new.content, alias
        resp = requests.get(running.url + "/metrics", timeout=5)
        assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert resp.text.count("tft_forecast_p50{") == len(HOSTS) * len(SIGNALS) * 5
        if shutil.which("promtool"):
            lint = subprocess.run(["promtool", "check", "metrics"], input=resp.text, capture_output=True, text=True,
                                  timeout=60, check=False)
            assert lint.returncode == 0 and not (lint.stdout + lint.stderr).strip(), lint.stdout + lint.stderr


def test_a_model_appearing_ends_the_fallback_without_waiting_for_the_next_slot(
        fake: FakePrometheus, tiny_root: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    config = forecaster_config(models, fake.url, interval=3600)
    with start_forecaster(models, fake.url, config=config, watch_seconds=0.2) as running:
        running.wait_for_cycles(1, timeout=60)
        assert running.service.published.models.in_fallback  # type: ignore[union-attr]
        shutil.rmtree(models)
        copy_registry(tiny_root, models)
        running.wait_for_cycles(2, timeout=60)  # the hourly schedule would not run it before an hour
        assert set(running.service.published.forecasts.kinds) == {"global"}  # type: ignore[union-attr]


def test_trainer_metrics_are_re_exported(fake: FakePrometheus, registry: Path) -> None:
    from trainer.cron import write_run_metrics

    service = make_service(fake, registry, Clock())
    assert service.run_cycle().ok
    assert "tft_trainer_" not in service.metrics_text().decode()
    write_run_metrics(registry / "trainer_metrics.prom", exit_code=4, outcome="worse_than_baseline",
                      duration_s=3.0)
    assert service.run_cycle().ok
    assert metric(service, "tft_trainer_last_run_exit_code") == 4
    assert metric(service, "tft_trainer_runs_total", {"outcome": "worse_than_baseline"}) == 1
    (registry / "trainer_metrics.prom").write_text("this is { not the text format\n")
    assert service.run_cycle().ok  # an unreadable file is logged and skipped, never fatal
    assert metric(service, "tft_trainer_last_run_exit_code") is None
