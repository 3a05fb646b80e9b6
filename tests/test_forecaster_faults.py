"""Defects found by fault injection (issue #16), each pinned by a test against the in-process fake.

* credentials never reach a log line, ``/api/v1/status`` or a config error, in any form;
* a cycle that forecasts nothing where forecasts are served is a failure that keeps them;
* a failed model load is one line, and ``last_error`` ends with the problem;
* input values outside a signal's bounds are masked and counted;
* only the trainer's own families are re-exported from its metrics file;
* the command lines refuse what they cannot use, in one line.

The whole fault matrix against a real Prometheus is ``tests/test_fault_matrix.py``.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from devkit.fakeprom import QUERY_RANGE, FakePrometheus, Recorded, Reply
from forecaster.contract.config import ConfigError, load_config
from forecaster.contract.panel import BOUND_TOLERANCE, panel_from_range_results
from forecaster.contract.prometheus import RangeSeries
from forecaster.contract.registry import Registry
from forecaster.serving.service import Service
from tests.forecaster_harness import (
    HOSTS,
    T0,
    Clock,
    forecaster_config,
    make_service,
    metric,
)

SIGNALS = ["cpu", "memory", "filesystem", "iowait"]


# tiny_root, registry and fake: tests/conftest.py


def made_at(service: Service) -> set[float]:
    fs = service.published.forecasts
    assert fs is not None
    return {float(m) for m in fs.made_at}


def rewrite(fake: FakePrometheus, change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
            only: str | None = None) -> Callable[[Recorded], Reply]:
    """A reply function: the fake's own matrix, passed through ``change`` (for one query, or all)."""

    def reply(rec: Recorded) -> Reply:
        answer = fake._default(rec)
        if only is not None and rec.params.get("query") != only:
            return answer
        doc = json.loads(answer.body)
        doc["data"]["result"] = change(doc["data"]["result"])
        return Reply.json(doc)

    return reply


# ---------------------------------------------------------------------------------- credentials


def test_echoed_basic_credentials_reach_neither_the_log_nor_the_status(
        fake: FakePrometheus, registry: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    password = "s3cr3t-pa55"
    encoded = base64.b64encode(f"alice:{password}".encode()).decode()
    monkeypatch.setenv("PROM_PASSWORD", password)
    fake.require(basic=("alice", password))
    clock = Clock()
    service = make_service(fake, registry, clock,
                           prometheus__basic_auth={"username": "alice", "password": {"env": "PROM_PASSWORD"}})
    assert service.run_cycle().ok
    # A proxy that quotes the request it failed: the header, the bare base64, a bearer, the password.
    echo = (f"upstream refused; request headers: Authorization: Basic {encoded}; seen {encoded}; "
            f'{{"authorization": "Basic {encoded}"}}; password={password}; Bearer {encoded}')
    fake.always(QUERY_RANGE, Reply.error(503, "unavailable", echo))
    clock.t += 300
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        assert not service.run_cycle().ok
    logged = "\n".join(r.getMessage() for r in caplog.records)
    status = json.dumps(service.status_document())
    assert "upstream refused" in logged and "upstream refused" in status
    for text in (logged, status, service.metrics_text().decode()):
        assert password not in text and encoded not in text
        assert encoded[:12] not in text  # not even a prefix of it
    assert "Authorization: ***" in status


def test_credentials_in_the_url_are_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from forecaster.cli import main as forecaster_main
    from trainer.cli import main as trainer_main

    url = "http://admin:PW-hunter2@127.0.0.1:1"
    with pytest.raises(ConfigError) as info:
        load_config(None, {"prometheus.url": url})
    assert "hunter2" not in str(info.value) and "basic_auth" in str(info.value)
    assert forecaster_main(["--prometheus.url", url, "--dry-run"]) == 2
    err = capsys.readouterr()
    assert err.out == "" and err.err.count("\n") == 1
    assert "prometheus.url" in err.err and "basic_auth" in err.err and "hunter2" not in err.err
    assert trainer_main(["train", "--prometheus.url", url, "--registry", str(tmp_path / "r"),
                         "--metrics-file", str(tmp_path / "m.prom")]) == 2
    err = capsys.readouterr()
    assert err.err.count("\n") == 1 and "basic_auth" in err.err and "hunter2" not in err.err
    assert not (tmp_path / "m.prom").exists()  # refused before anything ran


# ---------------------------------------------------------------------------------- nothing forecast


def _nan(result: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**s, "values": [[t, "NaN"] for t, _ in s["values"]]} for s in result]


def _duplicated(result: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return result + [{**s, "metric": {**s["metric"], "replica": "b"}} for s in result]


def _stale(result: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**s, "values": [v for v in s["values"] if float(v[0]) <= T0 - 1800]} for s in result]


@pytest.mark.parametrize("change,reason", [(_nan, "no_data"), (_duplicated, "duplicate_instance"),
                                           (_stale, "stale")], ids=["all-nan", "duplicates", "stale-30m"])
def test_a_cycle_that_forecasts_nothing_is_a_failure_that_keeps_the_forecasts(
        fake: FakePrometheus, registry: Path, caplog: pytest.LogCaptureFixture,
        change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]], reason: str) -> None:
    clock = Clock()
    service = make_service(fake, registry, clock)
    assert service.run_cycle().ok
    fake.always(QUERY_RANGE, rewrite(fake, change))
    clock.t += 60
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="forecaster.serving.service"):
        result = service.run_cycle()
    assert not result.ok and "preprocess" in result.errors and "keeping the previous forecasts" in result.errors[
        "preprocess"]
    assert made_at(service) == {T0} and len(service.published.forecasts) == len(HOSTS) * len(SIGNALS)  # type: ignore[arg-type]
    assert metric(service, "tft_forecaster_series_skipped", {"reason": reason}) == len(HOSTS) * len(SIGNALS)
    assert metric(service, "tft_forecaster_failures_total", {"stage": "preprocess"}) == 1
    assert metric(service, "tft_forecaster_cycles_total", {"outcome": "failure"}) == 1
    assert metric(service, "tft_forecaster_last_success_timestamp_seconds") == T0  # the staleness alert can fire
    assert metric(service, "tft_forecaster_forecast_age_seconds") == 60
    assert len(caplog.records) == 1 and reason in caplog.records[0].getMessage()
    assert service.status_document()["data"]["last_cycle"]["outcome"] == "failure"

    fake.always(QUERY_RANGE, None)
    clock.t += 60
    assert service.run_cycle().ok and made_at(service) == {clock.t}


def test_only_the_signal_that_forecast_nothing_is_carried_over(fake: FakePrometheus, registry: Path) -> None:
    cpu = forecaster_config(registry, fake.url).signal("cpu").query
    clock = Clock()
    service = make_service(fake, registry, clock)
    assert service.run_cycle().ok
    fake.always(QUERY_RANGE, rewrite(fake, _nan, only=cpu))
    clock.t += 60
    result = service.run_cycle()
    assert not result.ok and "cpu" in result.errors["preprocess"] and "memory" not in result.errors["preprocess"]
    fs = service.published.forecasts
    assert fs is not None
    by_signal = {str(s): float(m) for s, m in zip(fs.signals, fs.made_at, strict=True)}
    assert by_signal["cpu"] == T0 and by_signal["memory"] == clock.t


def test_nothing_to_forecast_on_a_first_cycle_is_not_a_failure(fake: FakePrometheus, registry: Path) -> None:
    """No forecasts were ever served: there is nothing to keep (``--once`` exits 3 for it, as before)."""
    fake.always(QUERY_RANGE, rewrite(fake, _nan))
    service = make_service(fake, registry, Clock())
    result = service.run_cycle()
    assert result.ok and result.forecasts is not None and len(result.forecasts) == 0


# ---------------------------------------------------------------------------------- models


def test_a_model_whose_weights_do_not_fit_is_one_log_line(fake: FakePrometheus, registry: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    reg = Registry(registry)
    meta_path = reg.latest_path() / "model.json"  # type: ignore[operator]
    meta = json.loads(meta_path.read_text())
    meta["spec"]["hidden_size"] = 2 * meta["spec"]["hidden_size"]  # torch lists every mismatched tensor
    meta_path.write_text(json.dumps(meta))
    service = make_service(fake, registry, Clock())
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="forecaster.serving.store"):
        service.run_cycle()
    store = [r for r in caplog.records if r.name == "forecaster.serving.store"]
    errors = [r for r in store if r.levelno >= logging.WARNING]
    assert len(errors) == 1
    line = errors[0].getMessage()
    assert "\n" not in line and "cannot load weights" in line and len(line) < 600
    assert errors[0].exc_info is None  # the traceback only at debug level
    assert any(r.levelno == logging.DEBUG and r.exc_info for r in store)
    last_error = service.status_document()["data"]["model"]["last_error"]
    assert "\n" not in last_error and len(last_error) < 600


def test_last_error_is_cleared_once_the_problem_is_fixed(fake: FakePrometheus, registry: Path) -> None:
    service = make_service(fake, registry, Clock())
    assert service.run_cycle().ok
    weights = Registry(registry).latest_path() / "model.safetensors"  # type: ignore[operator]
    good = weights.read_bytes()
    weights.write_bytes(b"\x00garbage" * 100)
    assert service.run_cycle().ok
    assert "checksum" in service.status_document()["data"]["model"]["last_error"]
    weights.write_bytes(good)  # fixed in place
    assert service.run_cycle().ok
    assert service.status_document()["data"]["model"]["last_error"] is None


# ---------------------------------------------------------------------------------- bounds


def test_values_outside_the_signal_bounds_are_masked_and_counted(fake: FakePrometheus, registry: Path) -> None:
    def spiky(t: float) -> float:
        return 7.0 if int(t // 300) % 6 == 0 else 0.5  # a broken exporter: CPU utilisation 7

    fake.add_series({"instance": "spiky"}, spiky, start=T0 - 86400)
    service = make_service(fake, registry, Clock())
    assert service.run_cycle().ok
    context = 48  # the tiny model's context, which is what is queried
    spikes = sum(1 for k in range(context) if int((T0 - k * 300) // 300) % 6 == 0)
    for s in SIGNALS:
        assert metric(service, "tft_forecaster_input_out_of_bounds_samples", {"signal": s}) == spikes
    fs = service.published.forecasts
    assert fs is not None
    rows = [r for r in range(len(fs)) if fs.instances[r] == "spiky"]
    assert rows and float(np.nanmax(fs.quantiles[rows])) <= 1.0
    # Masked, not fed in: the spiky host's forecast is the one of a flat 0.5 series.
    assert abs(float(np.nanmedian(fs.quantiles[rows, :, 1])) - 0.5) < 0.1


def test_bounds_tolerate_rounding_and_mask_the_rest() -> None:
    ts = np.arange(0, 3000, 300, dtype=np.float64)
    noise = BOUND_TOLERANCE / 2
    values = np.array([-noise, 0.2, 1 + noise, 1.5, -0.5, np.nan, 0.3, 0.4, 0.5, 0.6])
    panel = panel_from_range_results({"cpu": [RangeSeries({"instance": "a"}, ts, values)]}, ["cpu"], 0, 2700, 300,
                                     bounds={"cpu": (0.0, 1.0)})
    row = panel.values[0, 0]
    assert row[0] == 0.0 and row[2] == 1.0  # rounding: clipped
    assert np.isnan(row[3]) and np.isnan(row[4]) and np.isnan(row[5])
    assert panel.out_of_bounds == {"cpu": 2}
    unbounded = panel_from_range_results({"cpu": [RangeSeries({"instance": "a"}, ts, values)]}, ["cpu"], 0, 2700,
                                         300)
    assert unbounded.values[0, 0, 3] == 1.5 and not unbounded.out_of_bounds


# ---------------------------------------------------------------------------------- trainer metrics file


def test_only_the_trainer_families_are_re_exported(fake: FakePrometheus, registry: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    (registry / "trainer_metrics.prom").write_text(
        "# TYPE tft_trainer_last_run_exit_code gauge\ntft_trainer_last_run_exit_code 0\n"
        "# TYPE node_textfile_thing gauge\nnode_textfile_thing 1\n"
        "# TYPE tft_forecast_p50 gauge\ntft_forecast_p50{instance=\"x\",signal=\"cpu\",horizon=\"1h\"} 9\n")
    service = make_service(fake, registry, Clock())
    with caplog.at_level(logging.WARNING, logger="forecaster.serving.service"):
        assert service.run_cycle().ok
    text = service.metrics_text().decode()
    assert "tft_trainer_last_run_exit_code 0.0" in text
    assert "node_textfile_thing" not in text and 'instance="x"' not in text
    assert any("node_textfile_thing" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------------- command lines


@pytest.mark.parametrize("argv", [["train", "--time-budget", "-1"], ["train", "--time-budget", "nan"],
                                  ["train", "--days", "0"], ["backtest", "--data", "d", "--out", "o",
                                                             "--batch-size", "0"]])
def test_trainer_refuses_non_positive_numbers_in_one_line(argv: list[str], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer.cli import main

    monkeypatch.chdir(tmp_path)  # nothing may be written, but if it were, not into the checkout
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tft-trainer: argument ")
    assert list(tmp_path.iterdir()) == []
