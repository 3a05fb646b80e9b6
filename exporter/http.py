"""The exporter's HTTP server: multi-target ``/probe``, own ``/metrics``, service discovery.

Endpoints:

* ``/probe?target=<host>`` - the host's node_exporter page at the current time
  (400 without a target, 404 for a host the fleet does not have).
* ``/metrics`` - the exporter's own metrics (private ``CollectorRegistry``).
* ``/sd`` - the host list in Prometheus ``http_sd_configs`` format, grouped by profile, so a
  Prometheus config never hard-codes host names.
* ``/incidents[?from=..&to=..&instance=..]`` - ground-truth JSON (default: the last day and
  the next day around now; 400 for a range beyond 7 days before or 2 days after now).
* ``/-/healthy``, ``/-/ready``.

:class:`ExporterApp` is a WSGI app served by :func:`toolkit.http.serve` (threaded, HTTP/1.1
keep-alive, IPv4 or ``[v6]:port``), the same server as the forecaster's; nothing is computed
ahead of a request except the lazily cached host models. GET and HEAD only (405 otherwise).
"""

from __future__ import annotations

import json
import logging
import platform
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.exposition import generate_latest

from exporter.config import parse_time
from exporter.exposition import TEXT_CONTENT_TYPE, render, wants_openmetrics
from exporter.incidents import incidents_document
from exporter.profiles import DAY, PROFILE_ORDER
from exporter.simulation import Fleet
from toolkit.http import StartResponse, WebLayer, respond, serve, server_url, shutdown
from toolkit.version import package_version

logger = logging.getLogger(__name__)

PROBE_RESULTS: tuple[str, ...] = ("success", "bad_request", "unknown_target", "error")
#: How far back and ahead of now ``/incidents`` answers. The ground truth is computed on request
#: (each incident measured on the signal itself) and cached per host, so an open range is CPU time
#: and memory for anyone who asks: ten future years took 4.4 s for 3 hosts, and a month of the
#: past is 10 s for 200. Longer ranges: ``tft-exporter incidents`` or the backfill's incidents.json.
INCIDENTS_MAX_PAST_SECONDS = 7 * DAY
INCIDENTS_MAX_FUTURE_SECONDS = 2 * DAY


def incidents_range_problem(start: float, end: float, now: float) -> str | None:
    """Why ``/incidents`` refuses ``[start, end]`` (one line), or None when it is served."""
    if end < start:
        return "'from' is after 'to'"
    if start < now - INCIDENTS_MAX_PAST_SECONDS or end > now + INCIDENTS_MAX_FUTURE_SECONDS:
        return (f"the range must lie within {INCIDENTS_MAX_PAST_SECONDS / DAY:g} days before and "
                f"{INCIDENTS_MAX_FUTURE_SECONDS / DAY:g} days after now (use tft-exporter incidents for more)")
    return None


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
              registry=self.registry).labels(package_version(), platform.python_version()).set(1)
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
    """The exporter's WSGI app; :meth:`handle` is its routing, callable without HTTP in tests."""

    def __init__(self, fleet: Fleet, clock: Callable[[], float] = time.time) -> None:
        self.fleet = fleet
        self.clock = clock
        self.metrics = ExporterMetrics(fleet)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        """WSGI: any failure of a route is logged and answered 500 with one line, never a traceback."""
        method = environ.get("REQUEST_METHOD", "GET")
        head = method == "HEAD"
        if method not in ("GET", "HEAD"):
            return respond(start_response, 405, "text/plain; charset=utf-8", b"only GET and HEAD\n", head=head,
                           headers=[("Allow", "GET, HEAD")])
        path = environ.get("PATH_INFO") or "/"
        try:
            status, content_type, body = self.handle(path, parse_qs(environ.get("QUERY_STRING", "")),
                                                     environ.get("HTTP_ACCEPT"))
        except Exception:
            logger.exception("request %s failed", path)
            status, content_type, body = 500, "text/plain; charset=utf-8", b"internal error\n"
        return respond(start_response, status, content_type, body, head=head)

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
        problem = incidents_range_problem(start, end, now)
        if problem is not None:
            return 400, "text/plain; charset=utf-8", f"{problem}\n".encode()
        hosts = list(dict.fromkeys(query.get("instance") or self.fleet.names))  # a repeated host once
        unknown = [h for h in hosts if h not in self.fleet]
        if unknown:
            return 404, "text/plain; charset=utf-8", f"unknown instance {unknown[0]!r}\n".encode()
        records = self.fleet.incidents(start, end, hosts)
        doc = incidents_document(records, seed=self.fleet.seed, scenario=self.fleet.scenario,
                                 anchor=self.fleet.anchor, start=start, end=end, hosts=hosts,
                                 jobs=self.fleet.job_runs(start, end, hosts))
        return 200, "application/json", json.dumps(doc).encode()


_INDEX = """<html><head><title>tft-exporter</title></head><body>
<h1>tft-exporter: simulated node_exporter fleet</h1>
<ul><li><a href="/sd">/sd</a> (http_sd_configs targets)</li>
<li><a href="/metrics">/metrics</a> (the exporter's own metrics)</li>
<li>/probe?target=HOST (a simulated host's node_exporter page)</li>
<li><a href="/incidents">/incidents</a> (ground truth)</li></ul></body></html>
"""


def start_server(fleet: Fleet, address: str = "127.0.0.1:0", clock: Callable[[], float] = time.time, *,
                 web: WebLayer | None = None) -> tuple[WSGIServer, threading.Thread, str]:
    """Serve ``fleet`` from a background thread; returns ``(server, thread, base URL)``.

    ``address`` defaults to a free port on 127.0.0.1 (for tests and demos); ``[::1]:0`` serves
    over IPv6. Binding happens here, so a taken port raises OSError. ``web`` is a loaded
    ``--web.config.file`` (TLS, basic auth: :class:`toolkit.webconfig.WebConfigFile`). Stop it with
    :func:`stop_server`.
    """
    server, thread = serve(ExporterApp(fleet, clock), address, name="tft-exporter-http", poll_interval=0.05,
                           web=web)
    return server, thread, server_url(server)


def stop_server(server: WSGIServer, thread: threading.Thread | None = None) -> None:
    """Stop :func:`start_server`'s server and wait for its thread."""
    shutdown(server, thread)


__all__ = ["ExporterApp", "ExporterMetrics", "sd_targets", "start_server", "stop_server"]
