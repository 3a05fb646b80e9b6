"""Shared fixtures. A real Prometheus is started per test that needs one; in CI its absence fails."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.promserver import PrometheusServer, prometheus_binary


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Callable[..., PrometheusServer]]:
    """Build (not yet start) Prometheus servers; every one is stopped at the end of the test."""
    if prometheus_binary() is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is not installed but CI is set: .ci/run must install it")
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    servers: list[PrometheusServer] = []

    def make(**kwargs) -> PrometheusServer:
        server = PrometheusServer(workdir=tmp_path / f"prometheus{len(servers)}", **kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
