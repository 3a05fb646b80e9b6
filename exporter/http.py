"""The exporter's HTTP server: multi-target ``/probe``, own ``/metrics``, service discovery.

Endpoints:

* ``/probe?target=<host>`` - the host's node_exporter page at the current time
  (400 without a target, 404 for a host the fleet does not have).
* ``/metrics`` - the exporter's own metrics (private ``CollectorRegistry``).
* ``/sd`` - the host list in Prometheus ``http_sd_configs`` format, grouped by profile, so a
  Prometheus config never hard-codes host names.
* ``/incidents[?from=..&to=..&instance=..]`` - ground-truth JSON (default: the last day and
  the next day around now).
* ``/-/healthy``, ``/-/ready``.

Standard library ``ThreadingHTTPServer``; nothing is computed ahead of a request except the
lazily cached host models.
"""

from __future__ import annotations

import json
import logging
import platform
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.exposition import generate_latest

from exporter import __version__
from exporter.config import parse_listen_address, parse_time
from exporter.exposition import TEXT_CONTENT_TYPE, render, wants_openmetrics
from exporter.incidents import incidents_document
from exporter.profiles import DAY, PROFILE_ORDER
from exporter.simulation import Fleet

logger = logging.getLogger(__name__)

PROBE_RESULTS: tuple[str, ...] = ("success", "bad_request", "unknown_target", "error")


class ExporterMetrics:
    """Self-metrics in a private registry; every labelled series exists from the start at 0."""

    def __init__(self, fleet: Fleet) -> None:
        self.registry = CollectorRegistry()
        self.probes = Counter("tft_exporter_probes", "Probes served, by result.", ["result"],
                              registry=self.registry)
        for result in PROBE_RESULTS:
            self.probes.labels(result)
        self.probe_duration = Histogram(
            "tft_exporter_probe_duration_seconds", "Time spent rendering one /probe page.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0), registry=self.registry)
        Gauge("tft_exporter_hosts_simulated", "Number of simulated hosts.",
              registry=self.registry).set(len(fleet))
        Gauge("tft_exporter_build_info", "A metric with a constant '1' value labeled by version and "
              "python version of the exporter.", ["version", "pythonversion"],
              registry=self.registry).labels(__version__, platform.python_version()).set(1)
        Gauge("tft_exporter_scenario_info", "A metric with a constant '1' value labeled by the simulated "
              "scenario and seed.", ["scenario", "seed"],
              registry=self.registry).labels(fleet.scenario, str(fleet.seed)).set(1)
        Gauge("tft_exporter_scenario_anchor_timestamp_seconds", "Anchor of the scenario's incident "
              "schedule, in unixtime.", registry=self.registry).set(fleet.anchor)
        ProcessCollector(registry=self.registry)


def sd_targets(fleet: Fleet) -> list[dict[str, Any]]:
    """``http_sd_configs`` groups: one per profile, labelled ``profile``."""
    groups: dict[str, list[str]] = {}
    for name in fleet.names:
        groups.setdefault(fleet.profile(name), []).append(name)
    return [{"targets": groups[p], "labels": {"profile": p}} for p in PROFILE_ORDER if p in groups]


class ExporterApp:
    """Request routing, separated from the server so tests can call it directly."""

    def __init__(self, fleet: Fleet, clock: Callable[[], float] = time.time) -> None:
        self.fleet = fleet
        self.clock = clock
        self.metrics = ExporterMetrics(fleet)

    def handle(self, path: str, query: dict[str, list[str]], accept: str | None) -> tuple[int, str, bytes]:
        """``(status, content type, body)`` for a GET request."""
        if path == "/probe":
            return self._probe(query, accept)
        if path == "/metrics":
            return 200, TEXT_CONTENT_TYPE, generate_latest(self.metrics.registry)
        if path == "/sd":
            return 200, "application/json", json.dumps(sd_targets(self.fleet)).encode()
        if path == "/incidents":
            return self._incidents(query)
        if path in ("/-/healthy", "/-/ready"):
            return 200, "text/plain; charset=utf-8", b"OK\n"
        if path == "/":
            return 200, "text/html; charset=utf-8", _INDEX.encode()
        return 404, "text/plain; charset=utf-8", b"not found\n"

    def _probe(self, query: dict[str, list[str]], accept: str | None) -> tuple[int, str, bytes]:
        target = (query.get("target") or [""])[0]
        if not target:
            self.metrics.probes.labels("bad_request").inc()
            return 400, "text/plain; charset=utf-8", b"missing 'target' parameter\n"
        if target not in self.fleet:
            self.metrics.probes.labels("unknown_target").inc()
            return 404, "text/plain; charset=utf-8", f"unknown target {target!r}\n".encode()
        started = time.perf_counter()
        try:
            body, content_type = render(self.fleet.model(target), self.clock(), wants_openmetrics(accept))
        except Exception:
            self.metrics.probes.labels("error").inc()
            logger.exception("rendering target %s failed", target)
            return 500, "text/plain; charset=utf-8", b"internal error while rendering the target\n"
        self.metrics.probe_duration.observe(time.perf_counter() - started)
        self.metrics.probes.labels("success").inc()
        return 200, content_type, body

    def _incidents(self, query: dict[str, list[str]]) -> tuple[int, str, bytes]:
        now = self.clock()
        try:
            start = parse_time(query["from"][0]) if "from" in query else now - DAY
            end = parse_time(query["to"][0]) if "to" in query else now + DAY
        except ValueError as exc:
            return 400, "text/plain; charset=utf-8", f"{exc}\n".encode()
        hosts = query.get("instance") or list(self.fleet.names)
        unknown = [h for h in hosts if h not in self.fleet]
        if unknown:
            return 404, "text/plain; charset=utf-8", f"unknown instance {unknown[0]!r}\n".encode()
        records = self.fleet.incidents(start, end, hosts)
        doc = incidents_document(records, seed=self.fleet.seed, scenario=self.fleet.scenario,
                                 anchor=self.fleet.anchor, start=start, end=end, hosts=hosts)
        return 200, "application/json", json.dumps(doc).encode()


_INDEX = """<html><head><title>tft-exporter</title></head><body>
<h1>tft-exporter: simulated node_exporter fleet</h1>
<ul><li><a href="/sd">/sd</a> (http_sd_configs targets)</li>
<li><a href="/metrics">/metrics</a> (the exporter's own metrics)</li>
<li>/probe?target=HOST (a simulated host's node_exporter page)</li>
<li><a href="/incidents">/incidents</a> (ground truth)</li></ul></body></html>
"""


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle's algorithm the body then waits for
    # the client's delayed ACK (~40 ms per scrape, measured by benchmarks/exporter_scrape.py).
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # the http.server API
        parts = urlsplit(self.path)
        try:
            status, content_type, body = self.server.app.handle(
                parts.path, parse_qs(parts.query), self.headers.get("Accept"))
        except Exception:
            logger.exception("request %s failed", self.path)
            status, content_type, body = 500, "text/plain; charset=utf-8", b"internal error\n"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # the http.server API
        logger.debug("%s - %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: ExporterApp) -> None:
        self.app = app
        super().__init__(address, _Handler)


def make_server(app: ExporterApp, address: str) -> ThreadingHTTPServer:
    """Bind (OSError if the port is taken); the caller runs ``serve_forever``."""
    host, port = parse_listen_address(address)
    return _Server((host, port), app)


def start_server(fleet: Fleet, address: str = "127.0.0.1:0", clock: Callable[[], float] = time.time,
                 ) -> tuple[ThreadingHTTPServer, threading.Thread, str]:
    """Serve ``fleet`` from a background thread; returns ``(server, thread, base URL)``.

    For tests and demos: ``address`` defaults to a free port on 127.0.0.1. Stop it with
    :func:`stop_server`.
    """
    server = make_server(ExporterApp(fleet, clock), address)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="tft-exporter-http", daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in str(host) else str(host)
    return server, thread, f"http://{shown}:{port}"


def stop_server(server: ThreadingHTTPServer, thread: threading.Thread | None = None) -> None:
    server.shutdown()
    server.server_close()
    if thread is not None:
        thread.join(timeout=10)


__all__ = ["ExporterApp", "ExporterMetrics", "make_server", "parse_listen_address", "sd_targets",
           "start_server", "stop_server"]
