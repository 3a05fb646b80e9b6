"""Shared fixtures. A real Prometheus (or VictoriaMetrics) is started per test that needs one; in CI
its absence fails."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.promserver import PrometheusServer, prometheus_binary
from tests.vmserver import VictoriaMetricsServer


def require_tool(name: str, package: str = "prometheus") -> str:
    """The path of a tool of a Debian ``package``. Missing, it fails the test in CI (.ci/run installs
    it) and skips it elsewhere."""
    path = prometheus_binary() if name == "prometheus" else shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed but CI is set: .ci/run must install {package}")
        pytest.skip(f"{name} is not installed (apt-get install {package})")
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_tool("promtool")


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Callable[..., PrometheusServer]]:
    """Build (not yet start) Prometheus servers; every one is stopped at the end of the test."""
    require_tool("prometheus")
    servers: list[PrometheusServer] = []

    def make(**kwargs) -> PrometheusServer:
        server = PrometheusServer(workdir=tmp_path / f"prometheus{len(servers)}", **kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def victoria_metrics() -> str:
    return require_tool("victoria-metrics", "victoria-metrics")


@pytest.fixture(scope="session")
def vmalert() -> str:
    return require_tool("vmalert", "victoria-metrics")


@pytest.fixture
def victoriametrics_factory(tmp_path: Path, victoria_metrics: str) -> Iterator[Callable[..., VictoriaMetricsServer]]:
    """Build (not yet start) single-node VictoriaMetrics servers; every one is stopped at the end of the test."""
    servers: list[VictoriaMetricsServer] = []

    def make(**kwargs) -> VictoriaMetricsServer:
        server = VictoriaMetricsServer(workdir=tmp_path / f"victoria-metrics{len(servers)}", **kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


# ---- the in-process forecaster's fixtures (tests/forecaster_harness.py) -------------------------


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's registry holding one promoted tiny model (read-only: copy it to change it)."""
    from tests.forecaster_harness import shared_tiny_registry

    return shared_tiny_registry(tmp_path_factory)


@pytest.fixture
def registry(tiny_root: Path, tmp_path: Path) -> Path:
    """A copy of the tiny registry this test may change."""
    from tests.forecaster_harness import copy_registry

    return copy_registry(tiny_root, tmp_path / "registry")


@pytest.fixture
def fake() -> Iterator[Any]:
    """A fake Prometheus answering a daily sine per host (tests.forecaster_harness.sine_fleet)."""
    from tests.forecaster_harness import sine_fleet

    with sine_fleet() as f:
        yield f
