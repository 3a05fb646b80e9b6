"""The fault matrix: a real Prometheus behind the fault proxy (devkit/faultproxy.py), one fault per case.

Prometheus holds six hours of four gauges for three hosts, backfilled with promtool and ending
at ``T_END``; the forecaster's clock stays just past ``T_END``, so the data never ages and no
live scrape is needed. Each case runs a good cycle, the faulty one and a recovery, and checks
what the forecaster then serves (the forecasts and their age), what it counts (its
self-metrics) and what it logs (one warning line per failed cycle). Everything is bounded:
every fault lasts at most ``FaultProxy``'s 30 s and is cut short when the proxy stops; the
client's timeout is 1 s.
"""

from __future__ import annotations

import logging
import math
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from devkit.faultproxy import Fault, FaultProxy
from forecaster.serving.exposition import ForecastCollector
from forecaster.serving.service import Service
from tests.conftest import require_tool
from tests.forecaster_harness import forecaster_config, shared_tiny_registry
from tests.promserver import PrometheusServer

pytestmark = pytest.mark.integration

HOSTS = ["web-01", "db-02", "batch-03"]
SIGNALS = ["cpu", "memory", "filesystem", "iowait"]
STEP = 300
HISTORY_S = 6 * 3600
SCRAPE_S = 60
T_END = (int(time.time()) // 3600 - 2) * 3600  # a grid point, two hours back: blocks, not the head
TIMEOUT_S = 1.0


@dataclass
class Case:
    fault: Fault
    count: int | None = None  # faulted requests; None: every range query until cleared
    ok: bool = False  # the cycle under the fault still succeeds
    stage: str = "query"
    outcomes: dict[str, int] = field(default_factory=dict)  # prometheus request outcomes, at least
    skipped: dict[str, int] = field(default_factory=dict)
    log: str = ""  # in the cycle's warning line
    max_seconds: float = 5.0  # the faulty cycle, whole


CASES = {
    "hang": Case(Fault.hang(20), outcomes={"timeout": 2}, log="timed out", max_seconds=4.0),
    "slow-body": Case(Fault.slow_body(0.25), outcomes={"timeout": 2}, log="timed out", max_seconds=4.0),
    "503": Case(Fault.status(503), outcomes={"bad_response": 8}, log="HTTP 503"),
    "429-retry-after": Case(Fault.status(429, retry_after=0.4), count=1, ok=True, outcomes={"bad_response": 1}),
    "garbage": Case(Fault.garbage(), outcomes={"bad_response": 4}, log="not a JSON object"),
    "empty-body": Case(Fault.empty(), outcomes={"bad_response": 4}, log="not a JSON object"),
    "empty-result": Case(Fault.empty_result(), outcomes={"success": 4}, log="returned no series"),
    "nan-values": Case(Fault.nan_values(), stage="preprocess", outcomes={"success": 4},
                       skipped={"no_data": 12}, log="could be forecast"),
    "duplicate-series": Case(Fault.duplicate_series(), stage="preprocess", skipped={"duplicate_instance": 12},
                             log="could be forecast"),
    "stale": Case(Fault.stale(1800), stage="preprocess", skipped={"stale": 12}, log="could be forecast"),
    "out-of-bounds": Case(Fault.scale(10.0), stage="preprocess", skipped={"no_data": 12}, log="could be forecast"),
}


def _value(host: int, signal: int, t: float) -> float:
    return 0.3 + 0.08 * signal + 0.15 * math.sin(2 * math.pi * t / 86400 + host) + 0.01 * math.sin(t / 700 + signal)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    promtool = require_tool("promtool")
    require_tool("prometheus")
    work = tmp_path_factory.mktemp("fault-matrix")
    server = PrometheusServer(workdir=work / "prometheus")
    server.workdir.mkdir(parents=True)
    server.data_dir.mkdir()
    lines = []
    for j, sig in enumerate(SIGNALS):
        lines.append(f"# TYPE tft_fault_{sig} gauge")
        for t in range(T_END - HISTORY_S, T_END + 1, SCRAPE_S):
            lines += [f'tft_fault_{sig}{{job="node",instance="{h}"}} {_value(i, j, t):.6f} {t}'
                      for i, h in enumerate(HOSTS)]
    lines.append("# EOF")
    (work / "data.om").write_text("\n".join(lines) + "\n")
    proc = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(work / "data.om"),
                           str(server.data_dir)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    server.start()
    try:
        server.wait_for(f"tft_fault_cpu @ {T_END}", min_series=len(HOSTS), timeout=30)
        yield server
    finally:
        server.stop()


@pytest.fixture
def proxy(prometheus: PrometheusServer) -> Iterator[FaultProxy]:
    with FaultProxy(prometheus.url) as p:
        yield p


class Clock:
    """Just past T_END, moving 10 s per cycle: the query window stays [T_END - context, T_END]."""

    def __init__(self) -> None:
        self.t = float(T_END + 5)

    def __call__(self) -> float:
        return self.t


def _service(proxy: FaultProxy, registry: Path, clock: Clock) -> Service:
    signals = [{"name": s, "query": f"max by (instance) (tft_fault_{s})", "threshold": 0.9 if s != "iowait" else 0.3}
               for s in SIGNALS]
    config = forecaster_config(registry, proxy.url, signals=signals, prometheus__timeout_seconds=TIMEOUT_S,
                               prometheus__retries=1, prometheus__retry_backoff_seconds=0.05)
    return Service(config, clock=clock)


def _metric(service: Service, name: str, labels: dict[str, str] | None = None) -> float | None:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(service.state_collector)
    reg.register(ForecastCollector(lambda: service.published.forecasts))
    return reg.get_sample_value(name, labels or {})


def _made_at(service: Service) -> set[float]:
    fs = service.published.forecasts
    assert fs is not None
    return {float(m) for m in fs.made_at}


@pytest.mark.parametrize("name", list(CASES))
def test_fault(name: str, proxy: FaultProxy, prometheus: PrometheusServer, tmp_path_factory: pytest.TempPathFactory,
               caplog: pytest.LogCaptureFixture) -> None:
    case = CASES[name]
    clock = Clock()
    service = _service(proxy, shared_tiny_registry(tmp_path_factory), clock)
    assert service.run_cycle().ok, service.published.last_cycle.errors  # type: ignore[union-attr]
    good = clock.t
    served = len(service.published.forecasts)  # type: ignore[arg-type]
    assert served == len(HOSTS) * len(SIGNALS)
    before = {o: _metric(service, "tft_forecaster_prometheus_requests_total",
                         {"endpoint": "query_range", "outcome": o}) or 0.0 for o in case.outcomes}

    clock.t += 10
    proxy.inject(case.fault, count=case.count)
    caplog.clear()
    began = time.monotonic()
    with caplog.at_level(logging.INFO, logger="forecaster"):
        result = service.run_cycle()
    took = time.monotonic() - began
    proxy.clear()
    assert took < case.max_seconds, f"the cycle took {took:.1f}s"
    for outcome, n in case.outcomes.items():
        got = _metric(service, "tft_forecaster_prometheus_requests_total",
                      {"endpoint": "query_range", "outcome": outcome})
        assert got is not None and got - before[outcome] >= n, (outcome, got, before[outcome])
    for reason, n in case.skipped.items():
        assert _metric(service, "tft_forecaster_series_skipped", {"reason": reason}) == n
    cycle_lines = [r for r in caplog.records if r.name == "forecaster.serving.service"]
    assert len(cycle_lines) == 1  # one line per cycle
    status = service.status_document()["data"]
    if case.ok:
        assert result.ok and cycle_lines[0].levelno == logging.INFO
        assert _made_at(service) == {clock.t}
        assert any("retrying in 0.4" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    else:
        assert not result.ok and case.stage in result.errors, result.errors
        assert cycle_lines[0].levelno == logging.WARNING and case.log in cycle_lines[0].getMessage()
        assert _made_at(service) == {good}  # the last good forecasts, every one of them
        assert len(service.published.forecasts) == served  # type: ignore[arg-type]
        assert _metric(service, "tft_forecaster_failures_total", {"stage": case.stage}) == 1
        assert _metric(service, "tft_forecaster_cycles_total", {"outcome": "failure"}) == 1
        assert _metric(service, "tft_forecaster_last_success_timestamp_seconds") == good
        assert _metric(service, "tft_forecaster_forecast_age_seconds") == clock.t - good
        assert status["last_cycle"]["outcome"] == "failure" and case.stage in status["last_cycle"]["errors"]
    assert service.metrics_text().decode().count("tft_forecast_p50{") == served * 5
    if name == "out-of-bounds":
        assert all(_metric(service, "tft_forecaster_input_out_of_bounds_samples", {"signal": s}) for s in SIGNALS)

    clock.t += 10
    assert service.run_cycle().ok  # recovers by itself
    assert _made_at(service) == {clock.t} and len(service.published.forecasts) == served  # type: ignore[arg-type]
    assert _metric(service, "tft_forecaster_input_out_of_bounds_samples", {"signal": "cpu"}) == 0
    assert service.ready()[0]
