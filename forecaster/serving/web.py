"""The HTTP side: a WSGI app for ``/metrics``, health, readiness and the JSON API.

A WSGI app (not handler code inside a server) so tests call it in-process; :func:`toolkit.http.serve`
runs it, threaded so a slow client never blocks a scrape, as it runs the exporter's. Every handler only reads state that
the last cycle published; none of them queries Prometheus or runs the model.

Endpoints: ``/metrics``, ``/-/healthy``, ``/-/ready`` (503 until a model is loaded and a cycle
has succeeded), ``/api/v1/status``, ``/api/v1/forecasts?instance=&signal=`` and
``/api/v1/breaches``. The first version of this system served the same documents under other
paths; :data:`ALIASES` keeps them answering, so scripts written against it do not break.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any, Protocol
from urllib.parse import parse_qs

from forecaster.serving.exposition import CONTENT_TYPE
from toolkit.http import StartResponse, WSGIApp

log = logging.getLogger(__name__)


class Backend(Protocol):
    """What the app needs from the service."""

    def metrics_text(self) -> bytes: ...

    def ready(self) -> tuple[bool, str]: ...

    def status_document(self) -> dict[str, Any]: ...

    def forecasts_document(self, instance: str | None, signal: str | None) -> dict[str, Any]: ...

    def breaches_document(self) -> dict[str, Any]: ...


INDEX = """<html><head><title>tft-forecaster</title></head><body>
<h1>tft-forecaster</h1>
<ul>
<li><a href="/metrics">/metrics</a></li>
<li><a href="/-/healthy">/-/healthy</a>, <a href="/-/ready">/-/ready</a></li>
<li><a href="/api/v1/status">/api/v1/status</a></li>
<li><a href="/api/v1/forecasts">/api/v1/forecasts</a>?instance=&amp;signal=</li>
<li><a href="/api/v1/breaches">/api/v1/breaches</a></li>
</ul></body></html>
"""


#: The seed system's paths and the endpoint each one answers as (docs/FORECASTER.md, "HTTP API").
ALIASES = {
    "/health": "/-/healthy",
    "/status": "/api/v1/status",
    "/predictions/current": "/api/v1/forecasts",
    "/alerts/active": "/api/v1/breaches",
}


def make_app(backend: Backend) -> WSGIApp:
    """The WSGI application serving ``backend``."""

    def reply(start: StartResponse, status: str, body: bytes, ctype: str, head: bool) -> list[bytes]:
        start(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
        return [] if head else [body]

    def as_json(start: StartResponse, doc: dict[str, Any], head: bool, status: str = "200 OK") -> list[bytes]:
        body = json.dumps(doc, separators=(",", ":")).encode()
        return reply(start, status, body, "application/json", head)

    def app(environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        head = method == "HEAD"
        if method not in ("GET", "HEAD"):
            return reply(start, "405 Method Not Allowed", b"only GET and HEAD\n", "text/plain", head)
        path = environ.get("PATH_INFO", "/") or "/"
        path = ALIASES.get(path, path)
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        try:
            if path == "/metrics":
                return reply(start, "200 OK", backend.metrics_text(), CONTENT_TYPE, head)
            if path == "/-/healthy":
                return reply(start, "200 OK", b"Healthy.\n", "text/plain; charset=utf-8", head)
            if path == "/-/ready":
                ok, why = backend.ready()
                status = "200 OK" if ok else "503 Service Unavailable"
                return reply(start, status, (why + "\n").encode(), "text/plain; charset=utf-8", head)
            if path == "/api/v1/status":
                return as_json(start, backend.status_document(), head)
            if path == "/api/v1/forecasts":
                return as_json(start, backend.forecasts_document(query.get("instance"), query.get("signal")), head)
            if path == "/api/v1/breaches":
                return as_json(start, backend.breaches_document(), head)
            if path == "/":
                return reply(start, "200 OK", INDEX.encode(), "text/html; charset=utf-8", head)
        except Exception:
            log.exception("error serving %s", path)
            return as_json(start, {"status": "error", "error": "internal error (logged)"}, head,
                           "500 Internal Server Error")
        return reply(start, "404 Not Found", b"404 page not found\n", "text/plain; charset=utf-8", head)

    return app
