"""A tiny in-process fake of the Prometheus HTTP API, for unit and fault tests and for benchmarks.

It is a stdlib ``ThreadingHTTPServer`` on 127.0.0.1 (free port) in a daemon thread. It
serves synthetic series through ``/api/v1/query_range`` and ``/api/v1/query`` (enforcing
the 11,000-points limit like Prometheus), records every request, and can be scripted to
fail in the ways a real one does. Nothing here touches the network beyond 127.0.0.1.

Start and stop::

    with FakePrometheus() as fake:                # or FakePrometheus(prefix="/prometheus")
        section = PrometheusSection(url=fake.url)  # fake.url includes the prefix, if any
        ...

Data: ``fake.add_series(labels, value, start=None, end=None, query=None)`` adds a series;
``value`` is a float or ``f(t) -> float | None`` (``None`` = no sample at ``t``); samples
exist only for ``start <= t <= end``, so a series can be present in some chunks and not in
others; ``query=None`` answers every query, a string only that exact expression. Range
queries evaluate at ``start + k*step`` for ``t <= end``, as Prometheus does; a request over
``fake.max_points`` (11,000) points per series gets Prometheus's 400 ``bad_data`` error.

Scripting responses per path (paths are API paths without the prefix, e.g.
``"/api/v1/query_range"``; ``"*"`` matches every path):

* ``fake.script(path, reply, reply, ...)`` queues one-shot replies, used first-in first-out
  by the next requests to that path; once the queue is empty the path answers as before.
* ``fake.always(path, reply)`` replaces the default answer for a path (``None`` restores it).
* A reply is a :class:`Reply` or a function ``(Recorded) -> Reply``. Ready-made replies:
  ``Reply.matrix(result)``, ``Reply.vector(result)``, ``Reply.json(obj, status)``,
  ``Reply.error(status, error_type, text)`` (Prometheus's error JSON),
  ``Reply.unavailable()`` (503), ``Reply.text(status, body)``, ``Reply.malformed()``
  (200 with truncated JSON), ``Reply.hang(seconds, then=None)`` (sleeps, bounded and cut
  short by ``stop()``/``go_down()``, then answers ``then`` or the default). ``series(labels,
  points)`` builds one matrix element from ``[(t, value), ...]``.

Authentication: ``fake.require(basic=("user", "pw"), bearer="token",
headers={"X-Scope-OrgID": "tenant"})`` answers 401 (bad credentials) or 400 (missing header,
as Mimir does for a missing tenant) before any scripted reply is consumed. ``require()``
with no arguments lifts all requirements.

Recorded requests: ``fake.requests`` (all, in arrival order) and ``fake.requests_for(path)``
give :class:`Recorded` objects with ``method``, ``path`` (without prefix), ``params`` (query
string and form body merged, one value per key), ``headers`` (use ``header(name)`` for a
case-insensitive lookup) and ``status`` (what the fake answered). ``fake.clear()`` forgets
them. ``Recorded.points()`` gives the points per series a range request asked for.

Going down and coming back: ``fake.go_down()`` closes the listening socket, so connections
are refused (and hanging requests are released); ``fake.come_back()`` listens again on the
same port with all data, scripts and requirements kept.
"""

from __future__ import annotations

import base64
import json
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from devkit.background import BackgroundServer

QUERY = "/api/v1/query"
QUERY_RANGE = "/api/v1/query_range"
BUILDINFO = "/api/v1/status/buildinfo"
MAX_HANG_SECONDS = 30.0


# --------------------------------------------------------------------------- formatting


def format_value(value: float) -> str:
    """A sample value as Prometheus writes it: ``NaN``, ``+Inf``, ``-Inf`` or a number."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def format_timestamp(t: float) -> float | int:
    """Prometheus writes whole seconds as integers and keeps milliseconds otherwise."""
    t = round(t, 3)
    return int(t) if t == int(t) else t


def series(labels: dict[str, str], points: Iterable[tuple[float, float]]) -> dict[str, Any]:
    """One element of a matrix result from ``[(t, value), ...]``."""
    return {"metric": dict(labels),
            "values": [[format_timestamp(t), format_value(v)] for t, v in points]}


def parse_duration(text: str) -> float:
    """Seconds from a float (``"60"``) or a Prometheus duration (``"1m"``, ``"1h30m"``)."""
    try:
        return float(text)
    except ValueError:
        pass
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"cannot parse {text!r} to a valid duration")
    return sum(int(n) * units[u] for n, u in parts)


# --------------------------------------------------------------------------- replies + records


@dataclass
class Reply:
    """An HTTP answer: status, body, headers, and an optional delay before sending it."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    then: Reply | None = None

    @classmethod
    def json(cls, obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
        return cls(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})

    @classmethod
    def success(cls, data: Any, warnings: list[str] | None = None) -> Reply:
        body: dict[str, Any] = {"status": "success", "data": data}
        if warnings:
            body["warnings"] = warnings
        return cls.json(body)

    @classmethod
    def matrix(cls, result: list[dict[str, Any]]) -> Reply:
        return cls.success({"resultType": "matrix", "result": result})

    @classmethod
    def vector(cls, result: list[dict[str, Any]]) -> Reply:
        return cls.success({"resultType": "vector", "result": result})

    @classmethod
    def error(cls, status: int, error_type: str, error: str, headers: dict[str, str] | None = None) -> Reply:
        return cls.json({"status": "error", "errorType": error_type, "error": error}, status, headers)

    @classmethod
    def unavailable(cls, retry_after: float | None = None) -> Reply:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return cls.error(503, "unavailable", "fake: service unavailable", headers)

    @classmethod
    def text(cls, status: int, body: str) -> Reply:
        return cls(status, body.encode(), {"Content-Type": "text/plain; charset=utf-8"})

    @classmethod
    def malformed(cls) -> Reply:
        return cls(200, b'{"status":"success","data":{"resultType":"matrix","result":[{"met',
                   {"Content-Type": "application/json"})

    @classmethod
    def hang(cls, seconds: float, then: Reply | None = None) -> Reply:
        """Sleep ``seconds`` (at most 30, released early by stop/go_down) then answer ``then``."""
        return cls(delay=min(seconds, MAX_HANG_SECONDS), then=then, status=0)


@dataclass
class Recorded:
    """One request as the fake saw it."""

    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    received: float
    status: int = 0

    def header(self, name: str) -> str | None:
        lname = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lname), None)

    def points(self) -> int:
        """Points per series a range request asks for (Prometheus's count, end inclusive)."""
        start, end = float(self.params["start"]), float(self.params["end"])
        return math.floor((end - start) / parse_duration(self.params["step"]) + 1e-9) + 1


@dataclass
class _Series:
    labels: dict[str, str]
    value: float | Callable[[float], float | None]
    start: float | None
    end: float | None
    query: str | None

    def at(self, t: float) -> float | None:
        if (self.start is not None and t < self.start) or (self.end is not None and t > self.end):
            return None
        return self.value(t) if callable(self.value) else float(self.value)


# --------------------------------------------------------------------------- the server


class FakePrometheus(BackgroundServer):
    """The fake server; see the module docstring for the API."""

    thread_name = "fakeprom"

    def __init__(self, prefix: str = "", host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port, prefix)
        self.max_points = 11_000
        self.requests: list[Recorded] = []
        self._series: list[_Series] = []
        self._scripts: dict[str, deque[Reply | Callable[[Recorded], Reply]]] = {}
        self._always: dict[str, Reply | Callable[[Recorded], Reply]] = {}
        self._basic: tuple[str, str] | None = None
        self._bearer: str | None = None
        self._headers: dict[str, str] = {}
        self._lock = threading.RLock()  # reentrant: a reply function may call back into the fake

    def go_down(self) -> None:
        """Stop listening (connections are refused); state is kept for :meth:`come_back`."""
        self.stop()

    def come_back(self) -> None:
        """Listen again on the same port."""
        self.start()

    # -- configuration

    def add_series(self, labels: dict[str, str], value: float | Callable[[float], float | None] = 1.0, *,
                   start: float | None = None, end: float | None = None, query: str | None = None) -> None:
        with self._lock:
            self._series.append(_Series(dict(labels), value, start, end, query))

    def script(self, path: str, *replies: Reply | Callable[[Recorded], Reply]) -> None:
        with self._lock:
            self._scripts.setdefault(path, deque()).extend(replies)

    def always(self, path: str, reply: Reply | Callable[[Recorded], Reply] | None) -> None:
        with self._lock:
            if reply is None:
                self._always.pop(path, None)
            else:
                self._always[path] = reply

    def require(self, *, basic: tuple[str, str] | None = None, bearer: str | None = None,
                headers: dict[str, str] | None = None) -> None:
        with self._lock:
            self._basic, self._bearer, self._headers = basic, bearer, dict(headers or {})

    def requests_for(self, path: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    # -- request handling (called from server threads)

    def _handle(self, rec: Recorded) -> Reply:
        with self._lock:
            self.requests.append(rec)
            denied = self._check_auth(rec)
            if denied is not None:
                return denied
            for key in (rec.path, "*"):
                queue = self._scripts.get(key)
                if queue:
                    return self._resolve(queue.popleft(), rec)
            for key in (rec.path, "*"):
                if key in self._always:
                    return self._resolve(self._always[key], rec)
        return self._default(rec)

    def _resolve(self, reply: Reply | Callable[[Recorded], Reply], rec: Recorded) -> Reply:
        return reply(rec) if callable(reply) else reply

    def _check_auth(self, rec: Recorded) -> Reply | None:
        auth = rec.header("Authorization") or ""
        if self._basic is not None:
            expected = "Basic " + base64.b64encode(f"{self._basic[0]}:{self._basic[1]}".encode()).decode()
            if auth != expected:
                return Reply.text(401, "Unauthorized\n")
        if self._bearer is not None and auth != f"Bearer {self._bearer}":
            return Reply.text(401, "Unauthorized\n")
        for name, value in self._headers.items():
            if rec.header(name) != value:
                return Reply.text(400, f"missing or wrong {name} header\n")
        return None

    def _default(self, rec: Recorded) -> Reply:
        if rec.path == QUERY_RANGE:
            return self._query_range(rec)
        if rec.path == QUERY:
            return self._query(rec)
        if rec.path == BUILDINFO:
            return Reply.success({"version": "2.42.0-fake", "revision": "fake", "branch": "fake",
                                  "buildUser": "fake", "buildDate": "", "goVersion": "go"})
        if rec.path in ("/-/ready", "/-/healthy"):
            return Reply.text(200, "Prometheus Server is Ready.\n")
        return Reply.text(404, "404 page not found\n")

    def _matching(self, expr: str) -> list[_Series]:
        with self._lock:
            return [s for s in self._series if s.query is None or s.query == expr]

    def _query_range(self, rec: Recorded) -> Reply:
        p = rec.params
        try:
            expr = p["query"]
            start, end = float(p["start"]), float(p["end"])
            step = parse_duration(p["step"])
        except (KeyError, ValueError) as exc:
            return Reply.error(400, "bad_data", f"invalid parameter: {exc}")
        if step <= 0:
            return Reply.error(400, "bad_data", "zero or negative query resolution step widths are not "
                               "accepted. Try a positive integer")
        if end < start:
            return Reply.error(400, "bad_data", "end timestamp must not be before start time")
        if (end - start) / step > self.max_points:
            return Reply.error(400, "bad_data", "exceeded maximum resolution of 11,000 points per "
                               "timeseries. Try decreasing the query resolution (?step=XX)")
        n = math.floor((end - start) / step + 1e-9) + 1
        times = [start + k * step for k in range(n)]
        result = []
        for s in self._matching(expr):
            points = [(t, v) for t in times if (v := s.at(t)) is not None]
            if points:
                result.append(series(s.labels, points))
        return Reply.matrix(result)

    def _query(self, rec: Recorded) -> Reply:
        try:
            expr = rec.params["query"]
            t = float(rec.params["time"]) if "time" in rec.params else time.time()
        except (KeyError, ValueError) as exc:
            return Reply.error(400, "bad_data", f"invalid parameter: {exc}")
        result = []
        for s in self._matching(expr):
            v = s.at(t)
            if v is not None:
                result.append({"metric": dict(s.labels), "value": [format_timestamp(t), format_value(v)]})
        return Reply.vector(result)


class _Handler(BaseHTTPRequestHandler):
    owner: FakePrometheus
    server_version = "FakePrometheus/1"

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def _serve(self) -> None:
        owner = self.owner
        parts = urlsplit(self.path)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            body = self.rfile.read(length).decode("utf-8", "replace")
            if "form-urlencoded" in (self.headers.get("Content-Type") or ""):
                params.update(parse_qsl(body, keep_blank_values=True))
        path = parts.path
        outside = bool(owner.prefix) and not (path == owner.prefix or path.startswith(owner.prefix + "/"))
        if not outside and owner.prefix:
            path = path[len(owner.prefix):] or "/"
        rec = Recorded(self.command, path, params, dict(self.headers.items()), time.monotonic())
        if outside:  # not under the prefix: recorded with its full path, answered 404
            with owner._lock:
                owner.requests.append(rec)
            reply = Reply.text(404, "404 page not found\n")
        else:
            reply = owner._handle(rec)
        while reply.delay > 0 or reply.then is not None or reply.status == 0:
            if reply.delay > 0 and owner.release.wait(reply.delay):
                return  # released by stop(): drop the connection without answering
            reply = reply.then if reply.then is not None else owner._default(rec)
        rec.status = reply.status
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout): that is the point of a hang


FakePrometheus.handler = _Handler
