"""A fault-injecting HTTP proxy in front of a real Prometheus, for fault tests and the soak benchmark.

The fake Prometheus (:mod:`devkit.fakeprom`) scripts answers; this proxy breaks the answers of a
real one, so a test sees what the forecaster does with Prometheus's own data, encoding and
timing, plus one fault. Standard library only; a ``ThreadingHTTPServer`` on 127.0.0.1 (a free
port) in daemon threads, forwarding to the upstream with ``http.client``.

::

    with FaultProxy(prometheus.url) as proxy:       # proxy.url goes into prometheus.url
        proxy.inject(Fault.hang(5), count=2)         # the next 2 range queries hang 5 s
        proxy.inject(Fault.nan_values())             # every range query from now on: values NaN
        proxy.clear()                                # pass everything through again

Faults (:class:`Fault`): ``hang(seconds)`` (no answer at all, then the connection closes),
``slow_body(interval)`` (the upstream's answer with its headers at once, then one body byte
every ``interval`` seconds), ``status(code, retry_after=None)`` (a Prometheus error answer:
5xx, 429 with ``Retry-After``), ``garbage()`` (200 with bytes that are not JSON), ``empty()``
(200 with no body), ``empty_result()`` (a successful empty matrix), ``nan_values()`` (every
sample ``"NaN"``), ``duplicate_series()`` (every series twice, the copy with a ``replica``
label), ``stale(seconds)`` (samples of the last ``seconds`` dropped), ``scale(factor)`` (every
value multiplied: out of a signal's bounds).

A fault applies to the requests whose path is in ``paths`` (default: range queries only, so a
client's readiness check still passes), to the next ``count`` of them or until :meth:`clear`.
Everything is bounded: a hang or a slow body lasts at most :data:`MAX_FAULT_SECONDS` and ends
at once when the proxy stops; the upstream is given :data:`UPSTREAM_TIMEOUT_SECONDS`. What passes
through (and a slow body) keeps the upstream's compression, as a client would see it.
``proxy.seen`` counts requests by path, ``proxy.faulted`` by fault kind.
"""

from __future__ import annotations

import http.client
import json
import math
import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from devkit.background import BackgroundServer

QUERY_RANGE = "/api/v1/query_range"
#: The longest any fault holds a connection.
MAX_FAULT_SECONDS = 30.0
UPSTREAM_TIMEOUT_SECONDS = 30.0
_HOP_HEADERS = {"host", "connection", "keep-alive", "accept-encoding", "content-length", "transfer-encoding",
                "proxy-connection", "te", "upgrade"}


@dataclass(frozen=True)
class Fault:
    """One way to break an answer; build it with the class methods."""

    kind: str
    seconds: float = 0.0
    status_code: int = 200
    retry_after: float | None = None
    factor: float = 1.0

    @classmethod
    def hang(cls, seconds: float) -> Fault:
        return cls("hang", seconds=min(seconds, MAX_FAULT_SECONDS))

    @classmethod
    def slow_body(cls, interval: float = 1.0) -> Fault:
        """The upstream's answer, headers at once, then one body byte per ``interval`` seconds."""
        return cls("slow_body", seconds=interval)

    @classmethod
    def status(cls, code: int, retry_after: float | None = None) -> Fault:
        return cls("status", status_code=code, retry_after=retry_after)

    @classmethod
    def garbage(cls) -> Fault:
        return cls("garbage")

    @classmethod
    def empty(cls) -> Fault:
        return cls("empty")

    @classmethod
    def empty_result(cls) -> Fault:
        return cls("empty_result")

    @classmethod
    def nan_values(cls) -> Fault:
        return cls("nan_values")

    @classmethod
    def duplicate_series(cls) -> Fault:
        return cls("duplicate_series")

    @classmethod
    def stale(cls, seconds: float) -> Fault:
        """Drop the samples of the last ``seconds`` of each series (the data stopped arriving)."""
        return cls("stale", seconds=seconds)

    @classmethod
    def scale(cls, factor: float) -> Fault:
        return cls("scale", factor=factor)


@dataclass
class _Injection:
    fault: Fault
    paths: frozenset[str]
    left: int | None  # None: until cleared


@dataclass
class _Upstream:
    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class FaultProxy(BackgroundServer):
    """The proxy; see the module docstring."""

    thread_name = "faultproxy"

    def __init__(self, upstream: str, host: str = "127.0.0.1", port: int = 0) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http:// URL, got {upstream!r}")
        # The proxy answers under the upstream's own path prefix, so its URL stands in for it.
        super().__init__(host, port, parts.path)
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.seen: Counter[str] = Counter()
        self.faulted: Counter[str] = Counter()
        self._injections: list[_Injection] = []
        self._lock = threading.Lock()
        self._rng = random.Random(0)

    # -- faults

    def inject(self, fault: Fault, *, count: int | None = None, paths: tuple[str, ...] = (QUERY_RANGE,)) -> None:
        """Apply ``fault`` to the next ``count`` requests for ``paths`` (None: until :meth:`clear`).

        Faults queue: the first one with requests left applies. ``paths`` are API paths without
        the upstream's prefix; ``("*",)`` matches every path.
        """
        if count is not None and count < 1:
            raise ValueError("count must be at least 1")
        with self._lock:
            self._injections.append(_Injection(fault, frozenset(paths), count))

    def clear(self) -> None:
        """No more faults: everything passes through."""
        with self._lock:
            self._injections.clear()

    def active(self) -> bool:
        with self._lock:
            return bool(self._injections)

    def _take(self, path: str) -> Fault | None:
        with self._lock:
            self.seen[path] += 1
            for inj in self._injections:
                if path in inj.paths or "*" in inj.paths:
                    if inj.left is not None:
                        inj.left -= 1
                        if inj.left == 0:
                            self._injections.remove(inj)
                    self.faulted[inj.fault.kind] += 1
                    return inj.fault
        return None

    # -- upstream

    def _forward(self, method: str, target: str, headers: dict[str, str], body: bytes, *,
                 identity: bool) -> _Upstream:
        """The upstream's answer; compressed as the client asked unless ``identity`` (a transform reads it)."""
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=UPSTREAM_TIMEOUT_SECONDS)
        try:
            out = {k: v for k, v in headers.items() if k.lower() not in _HOP_HEADERS}
            out["Accept-Encoding"] = "identity" if identity else headers.get("Accept-Encoding", "identity")
            conn.request(method, self.prefix + target, body=body or None, headers=out)
            resp = conn.getresponse()
            data = resp.read()
            keep = {k: v for k, v in resp.getheaders() if k.lower() in ("retry-after", "content-encoding")}
            return _Upstream(resp.status, resp.getheader("Content-Type") or "application/json", data, keep)
        finally:
            conn.close()

    def _transform(self, fault: Fault, answer: _Upstream) -> _Upstream:
        """The answer with its matrix changed as the fault says (other answers pass unchanged)."""
        try:
            doc = json.loads(answer.body)
            result = doc["data"]["result"]
            if doc["data"]["resultType"] != "matrix":
                return answer
        except (ValueError, KeyError, TypeError):
            return answer
        if fault.kind == "nan_values":
            for series in result:
                series["values"] = [[t, "NaN"] for t, _ in series.get("values", [])]
        elif fault.kind == "duplicate_series":
            result.extend({"metric": {**s.get("metric", {}), "replica": "b"}, "values": s.get("values", [])}
                          for s in list(result))
        elif fault.kind == "stale":
            newest = max((float(v[0]) for s in result for v in s.get("values", [])), default=0.0)
            for series in result:
                series["values"] = [v for v in series.get("values", []) if float(v[0]) <= newest - fault.seconds]
            doc["data"]["result"] = [s for s in result if s["values"]]
        elif fault.kind == "scale":
            for series in result:
                series["values"] = [[t, _format(float(v) * fault.factor)] for t, v in series.get("values", [])]
        return _Upstream(answer.status, answer.content_type, json.dumps(doc).encode(), answer.headers)

    def _garbage(self) -> bytes:
        return bytes(self._rng.randrange(256) for _ in range(512))


def _format(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    server_version = "FaultProxy/1"
    protocol_version = "HTTP/1.0"  # one request per connection: a broken answer never poisons the next

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        owner = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = urlsplit(self.path).path
        fault = owner._take(path)
        if fault is not None and fault.kind == "hang":
            owner.release.wait(fault.seconds)
            return  # no answer: the connection closes
        if fault is not None and fault.kind == "status":
            doc = {"status": "error", "errorType": "unavailable" if fault.status_code >= 500 else "too_many_requests",
                   "error": f"fault proxy: HTTP {fault.status_code}"}
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            self._answer(_Upstream(fault.status_code, "application/json", json.dumps(doc).encode(), headers))
            return
        if fault is not None and fault.kind == "garbage":
            self._answer(_Upstream(200, "application/json", owner._garbage()))
            return
        if fault is not None and fault.kind == "empty":
            self._answer(_Upstream(200, "application/json", b""))
            return
        if fault is not None and fault.kind == "empty_result":
            doc = {"status": "success", "data": {"resultType": "matrix", "result": []}}
            self._answer(_Upstream(200, "application/json", json.dumps(doc).encode()))
            return
        try:
            transforms = fault is not None and fault.kind != "slow_body"
            answer = owner._forward(self.command, self.path, dict(self.headers.items()), body, identity=transforms)
        except (OSError, http.client.HTTPException) as exc:
            self._answer(_Upstream(502, "text/plain", f"fault proxy: upstream failed: {exc}\n".encode()))
            return
        if fault is not None and fault.kind == "slow_body":
            self._trickle(answer, fault.seconds)
            return
        if fault is not None:
            answer = owner._transform(fault, answer)
        self._answer(answer)

    def _answer(self, answer: _Upstream) -> None:
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up

    def _trickle(self, answer: _Upstream, interval: float) -> None:
        """Headers at once, then the body a byte at a time, for at most MAX_FAULT_SECONDS."""
        release = self.owner.release
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.flush()
            steps = int(MAX_FAULT_SECONDS / max(interval, 1e-3))
            for k in range(min(len(answer.body), steps)):
                if release.wait(interval):
                    return
                self.wfile.write(answer.body[k:k + 1])
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # the client gave up: that is the point


FaultProxy.handler = _Handler
