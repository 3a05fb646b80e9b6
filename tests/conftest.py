"""Shared fixtures. A real Prometheus is started per test that needs one; in CI its absence fails."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.promserver import PrometheusServer, prometheus_binary


def require_tool(name: str) -> str:
    """The path of a Prometheus tool. Missing, it fails the test in CI (.ci/run installs it) and
    skips it elsewhere."""
    path = prometheus_binary() if name == "prometheus" else shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed but CI is set: .ci/run must install prometheus")
        pytest.skip(f"{name} is not installed (apt-get install prometheus)")
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
