"""Run the real forecaster in-process for tests, and share one tiny trained model per session.

::

    from tests.forecaster_harness import start_forecaster, shared_tiny_registry

    registry_root = shared_tiny_registry(tmp_path_factory)       # trained once per session (~10 s)
    with start_forecaster(registry_root, prometheus.url, port=0) as fc:
        fc.wait_for_cycles(1)
        requests.get(fc.url + "/metrics")

``start_forecaster`` builds the config the way the CLI does (file defaults plus dotted
overrides), binds ``127.0.0.1:<port>`` (0 = a free one), runs the first cycle at once and then
every ``interval`` seconds (5 s, the smallest the config allows), and stops everything on exit.
The tiny model (context 48 steps of 300 s, 4 hidden units) is what ``tests/modelkit.py`` trains;
``min_history_steps`` is lowered to its context so hosts with 1 h of history are forecast.
"""

from __future__ import annotations

import math
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from devkit.fakeprom import FakePrometheus
from forecaster.contract.config import Config, parse_config
from forecaster.serving.service import RunningService, Service, start

_TINY_LOCK = threading.Lock()
_TINY: dict[str, Path] = {}


def shared_tiny_registry(factory: pytest.TempPathFactory) -> Path:
    """Root of a registry holding one promoted tiny model, trained at most once per test session.

    Tests that change the registry must copy it first (:func:`copy_registry`).
    """
    with _TINY_LOCK:
        if "root" not in _TINY:
            from tests.modelkit import tiny_registry

            registry, _model, _version = tiny_registry(factory.mktemp("tiny-model"))
            _TINY["root"] = registry.root
        return _TINY["root"]


def copy_registry(root: Path, dest: Path) -> Path:
    shutil.copytree(root, dest, ignore=shutil.ignore_patterns("work"))
    return dest


#: The fake clock's start, and the hosts and signals of :func:`sine_fleet`.
T0 = 1_750_000_000.0
HOSTS = ["web-01", "db-02", "batch-03"]


class Clock:
    """A clock the test moves by hand (``clock.t += 300``), for a ``Service(clock=...)``."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@contextmanager
def sine_fleet(hosts: list[str] = HOSTS) -> Iterator[FakePrometheus]:
    """A fake Prometheus whose every query answers a daily sine per host, from a day before :data:`T0`."""
    with FakePrometheus() as fake:
        for i, host in enumerate(hosts):
            fake.add_series({"instance": host}, lambda t, i=i: 0.4 + 0.2 * math.sin(2 * math.pi * t / 86400 + i),
                            start=T0 - 86400)
        yield fake


def make_service(fake: FakePrometheus, registry_dir: Path | None, clock: Clock, **overrides: Any) -> Service:
    """An in-process service (no HTTP server, no scheduler) reading ``fake``, on ``clock``."""
    return Service(forecaster_config(registry_dir, fake.url, **overrides), clock=clock)


def metric(service: Service, name: str, labels: dict[str, str] | None = None) -> float | None:
    """One sample of what the service's ``/metrics`` would show (its state and its forecasts)."""
    from prometheus_client import CollectorRegistry

    from forecaster.serving.exposition import ForecastCollector

    reg = CollectorRegistry(auto_describe=False)
    reg.register(service.state_collector)
    reg.register(ForecastCollector(lambda: service.published.forecasts))
    return reg.get_sample_value(name, labels or {})


def forecaster_config(registry_dir: Path | str | None, prometheus_url: str, *, interval: int = 5,
                      **overrides: Any) -> Config:
    """The config a test forecaster runs with; ``overrides`` are dotted keys, e.g. ``model__step_seconds``."""
    data: dict[str, Any] = {
        "prometheus": {"url": prometheus_url, "timeout_seconds": 5, "retries": 1, "retry_backoff_seconds": 0.05},
        "model": {"min_history_steps": 12},
        "forecaster": {"interval_seconds": interval, "listen_address": "127.0.0.1:0"},
    }
    if registry_dir is not None:
        data["forecaster"]["registry_dir"] = str(registry_dir)
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return parse_config(data, "test config")


@contextmanager
def start_forecaster(registry_dir: Path | str | None, prometheus_url: str, port: int = 0, *,
                     interval: int = 5, config: Config | None = None, scheduler: bool = True,
                     watch_seconds: float | None = None, **kwargs: Any) -> Iterator[RunningService]:
    """The forecaster service on ``127.0.0.1:port`` in background threads; stopped on exit.

    ``watch_seconds`` is how often the registry is checked between cycles; ``kwargs`` go to
    :class:`forecaster.serving.service.Service` (``client=``, ``store=``, ``clock=``).
    """
    config = config or forecaster_config(registry_dir, prometheus_url, interval=interval)
    running = start(config, address=f"127.0.0.1:{port}", scheduler=scheduler, watch_seconds=watch_seconds,
                    **kwargs)
    try:
        yield running
    finally:
        running.stop()
