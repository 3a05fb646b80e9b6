"""The one module that talks HTTP to Prometheus (or Thanos, Mimir, VictoriaMetrics).

Everything else in the project sees Prometheus through :class:`PrometheusAPI`, a two-method
``Protocol``, so tests and the forecaster can inject a fake without a network. The real
client, :class:`PrometheusClient`, speaks only the standard HTTP query API
(``/api/v1/query``, ``/api/v1/query_range``, ``/api/v1/status/buildinfo``), which is what
keeps it compatible with every PromQL store.

Design points, each with its reason:

* **Chunked range queries.** Prometheus refuses a range query returning more than 11,000
  points per series; a 30-day history at a 60 s step has 43,201. ``query_range`` walks the
  step grid in chunks of at most ``max_points_per_query`` points; the chunks are disjoint
  slices of one integer grid, so boundaries neither duplicate nor drop a point, and the
  pieces are merged per label set (a series may be absent from some chunks).
* **Alignment is done here.** ``query_range`` evaluates on the absolute grid
  ``k * step`` (epoch seconds) and returns exactly the grid points inside ``[start, end]``:
  the start is rounded up and the end down (see :func:`align`). Repeated queries therefore
  yield the same timestamps, which the input pipeline needs to join signals, and results
  are cache friendly for query frontends.
* **Retries only where they can help.** Connection errors, timeouts, HTTP 5xx and 429 are
  retried a bounded number of times with exponential backoff plus jitter (honouring a
  ``Retry-After`` header). A 4xx is never retried: a bad PromQL expression must fail fast,
  carrying Prometheus's own error text.
* **Secrets are read per request and never printed.** The bearer token or password is
  resolved from its env var / file at each request, so a rotated token file is picked up,
  and every error message and logged warning goes through :func:`redact`: the resolved
  values in every form a server may echo them (raw, ``base64(user:password)``, URL-quoted),
  any ``Authorization:`` header value and any ``Basic``/``Bearer`` credential, and URL
  user-info (which the configuration refuses anyway).
* **The timeout is a deadline.** ``timeout_seconds`` bounds each attempt as a whole: the body
  is streamed and the time left is checked between reads (each socket read may wait only that
  long), so a proxy that trickles the answer byte by byte cannot stretch an attempt past it.
* **Observability without globals.** An optional :class:`PrometheusObserver` is told the
  endpoint, duration and outcome of every HTTP attempt; the forecaster turns that into its
  own self-metrics. The module only logs through its own logger and configures nothing.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
import random
import re
import socket
import ssl
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import numpy as np
import requests
import urllib3.exceptions

from forecaster.contract.config import ConfigError, PrometheusSection

__all__ = [
    "OUTCOMES",
    "InstantSample",
    "PrometheusAPI",
    "PrometheusBadResponse",
    "PrometheusClient",
    "PrometheusError",
    "PrometheusObserver",
    "PrometheusQueryError",
    "PrometheusTimeout",
    "PrometheusUnreachable",
    "RangeSeries",
    "align",
    "display_url",
    "grid",
    "redact",
    "tls_arguments",
]

logger = logging.getLogger(__name__)

#: Prometheus's hard limit on points per series in one range query.
PROMETHEUS_MAX_POINTS = 11_000
#: Upper bound on one backoff sleep, whatever the attempt number or Retry-After says.
MAX_BACKOFF_SECONDS = 30.0
#: Queries longer than this (URL-encoded) go by POST, so proxies' URL limits do not bite.
POST_THRESHOLD_BYTES = 4096
#: How much of a PromQL expression goes into an error message.
QUERY_IN_MESSAGE = 200

ENDPOINT_QUERY = "query"
ENDPOINT_QUERY_RANGE = "query_range"
ENDPOINT_BUILDINFO = "buildinfo"

#: Every outcome an observer may be told; equal to the ``kind`` of the matching error class.
OUTCOMES = ("success", "unreachable", "timeout", "bad_response", "query_error", "error")

_API_QUERY = "/api/v1/query"
_API_QUERY_RANGE = "/api/v1/query_range"
_API_BUILDINFO = "/api/v1/status/buildinfo"
_GRID_TOLERANCE = 1e-6  # seconds
_USERINFO_RE = re.compile(r"(?<=//)[^/@\s]+@")
# An echoed request header (``Authorization: Basic ...``, ``"authorization": "Bearer ..."``): its
# value (an optional scheme and one token) goes, whatever the scheme.
_AUTH_HEADER_RE = re.compile(r"(?i)(\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)(?:[a-z-]+\s+)?[^\s\"',;}]+")
# A credential outside a header (``Bearer eyJ...`` in a proxy's error page).
_AUTH_SCHEME_RE = re.compile(r"\b(Basic|Bearer|Digest|Negotiate|Token)\s+[A-Za-z0-9+/=._~-]{6,}")
#: Body bytes asked for per read while streaming an answer; each read also waits at most the time left.
_READ_SIZE = 65536


# --------------------------------------------------------------------------- errors


class PrometheusError(Exception):
    """Anything that went wrong talking to Prometheus; the message is one printable line.

    ``kind`` is a short, fixed string meant for a metric label (errors by kind).
    """

    kind = "error"

    def __init__(self, message: str, *, path: str = "", query: str | None = None,
                 status_code: int | None = None, error_type: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.query = query
        self.status_code = status_code
        self.error_type = error_type


class PrometheusUnreachable(PrometheusError):
    """No HTTP answer at all: connection refused, DNS failure, TLS handshake failure."""

    kind = "unreachable"


class PrometheusTimeout(PrometheusError):
    """The request (or Prometheus's own query evaluation) ran out of time."""

    kind = "timeout"


class PrometheusBadResponse(PrometheusError):
    """Prometheus answered but not usefully: 5xx after retries, bad JSON, ``status: error``,
    or a result type the caller did not ask for."""

    kind = "bad_response"


class PrometheusQueryError(PrometheusError):
    """A 4xx: the request itself is wrong (bad PromQL, bad credentials, wrong URL prefix).

    Retrying cannot help, so it is raised at the first attempt, with Prometheus's text.
    """

    kind = "query_error"


# --------------------------------------------------------------------------- data + seams


@dataclass(frozen=True)
class RangeSeries:
    """One series of a range query: parallel arrays, timestamps in float seconds, ascending.

    Values are float64; Prometheus's ``"NaN"``, ``"+Inf"`` and ``"-Inf"`` become ``nan``,
    ``inf`` and ``-inf``.
    """

    labels: dict[str, str]
    timestamps: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return int(self.timestamps.shape[0])


@dataclass(frozen=True)
class InstantSample:
    """One element of an instant-query vector (a scalar result has empty labels)."""

    labels: dict[str, str]
    value: float
    timestamp: float


@runtime_checkable
class PrometheusAPI(Protocol):
    """What the rest of the project needs from Prometheus; inject a fake in tests."""

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[RangeSeries]: ...

    def query(self, expr: str, time: float | None = None) -> list[InstantSample]: ...


class PrometheusObserver(Protocol):
    """Told about every HTTP attempt (retries and chunks included), for self-metrics.

    ``endpoint`` is one of ``query``, ``query_range``, ``buildinfo`` (a fixed set, safe as a
    label); ``outcome`` is one of :data:`OUTCOMES`. It must not raise; if it does, the error
    is logged and ignored, because metrics must never break querying.
    """

    def on_request(self, endpoint: str, seconds: float, outcome: str) -> None: ...


# --------------------------------------------------------------------------- grid helpers


def align(t: float, step: float) -> float:
    """Round ``t`` down to the absolute step grid (a multiple of ``step`` since the epoch).

    Use it to pick an ``end`` that is certain to be a grid point, e.g.
    ``end = align(time.time(), step)``.
    """
    if step <= 0:
        raise ValueError("step must be positive")
    return float(_index_floor(t, step) * step)


def grid(start: float, end: float, step: float) -> np.ndarray:
    """The grid timestamps ``query_range`` evaluates for ``[start, end]`` (start up, end down)."""
    first, last = _index_ceil(start, step), _index_floor(end, step)
    if last < first:
        return np.empty(0, dtype=np.float64)
    return np.arange(first, last + 1, dtype=np.float64) * step


def _index_floor(t: float, step: float) -> int:
    k = math.floor(t / step)
    # Float noise (t/step = 28333332.999999996 for a grid point) must not move t off its point;
    # a microsecond is far below the millisecond resolution Prometheus keeps.
    return k + 1 if abs((k + 1) * step - t) < _GRID_TOLERANCE else k


def _index_ceil(t: float, step: float) -> int:
    k = math.ceil(t / step)
    return k - 1 if abs((k - 1) * step - t) < _GRID_TOLERANCE else k


def _fmt_seconds(t: float) -> str:
    """Seconds as Prometheus parses them; millisecond precision is all it keeps anyway."""
    text = f"{t:.3f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def _chunks(first: int, last: int, per_chunk: int) -> Iterator[tuple[int, int]]:
    """Disjoint inclusive index ranges covering ``[first, last]``, each ``per_chunk`` long at most."""
    lo = first
    while lo <= last:
        hi = min(lo + per_chunk - 1, last)
        yield lo, hi
        lo = hi + 1


# --------------------------------------------------------------------------- TLS


def tls_arguments(section: PrometheusSection) -> tuple[bool | str, tuple[str, str] | None]:
    """Map the ``tls`` config to requests' ``verify`` and ``cert`` arguments.

    ``insecure_skip_verify`` wins over ``ca_file`` (it is the explicit "do not check" switch).
    """
    tls = section.tls
    verify: bool | str
    if tls.insecure_skip_verify:
        verify = False
    elif tls.ca_file is not None:
        verify = str(tls.ca_file)
    else:
        verify = True
    cert = None
    if tls.cert_file is not None and tls.key_file is not None:
        cert = (str(tls.cert_file), str(tls.key_file))
    return verify, cert


# --------------------------------------------------------------------------- client


class PrometheusClient:
    """HTTP client for the Prometheus query API; implements :class:`PrometheusAPI`.

    Build it with :meth:`from_config`. ``sleep`` and ``rng`` are seams for tests (backoff
    without waiting); ``session`` lets a caller share a connection pool.
    """

    def __init__(
        self,
        section: PrometheusSection,
        *,
        observer: PrometheusObserver | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if section.max_points_per_query < 1:
            raise ValueError("max_points_per_query must be at least 1")
        self.section = section
        self.observer = observer
        self.max_points_per_query = min(section.max_points_per_query, PROMETHEUS_MAX_POINTS)
        self._base = section.url.rstrip("/")
        self._display_base = _strip_userinfo(self._base)
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._secrets: set[str] = set()
        for name, value in section.headers.items():  # a token configured as a plain header is one too
            if name.lower() in ("authorization", "proxy-authorization") and value.strip():
                self._secrets.update((value, value.split(None, 1)[-1]))
        self.verify, self.cert = tls_arguments(section)
        if section.tls.insecure_skip_verify:
            logger.warning("TLS certificate verification is disabled for %s", self._display_base)
        self.session = session or requests.Session()
        # Only what _decode undoes (requests would also offer br or zstd where those modules exist).
        self.session.headers.update({"Accept": "application/json", "User-Agent": "tft-monitor",
                                     "Accept-Encoding": "gzip, deflate"})
        self.session.headers.update(section.headers)
        # Also set on the session for code that inspects it; passed per request as well because
        # requests lets REQUESTS_CA_BUNDLE override a session-level ``verify`` path.
        self.session.verify = self.verify
        self.session.cert = self.cert

    @classmethod
    def from_config(cls, section: PrometheusSection, *, observer: PrometheusObserver | None = None,
                    session: requests.Session | None = None) -> PrometheusClient:
        return cls(section, observer=observer, session=session)

    # -- lifecycle

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> PrometheusClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PrometheusClient({self._display_base!r})"

    # -- public API

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[RangeSeries]:
        """Evaluate ``expr`` on the step grid inside ``[start, end]``, chunked under the point limit.

        Timestamps are epoch seconds. The start is rounded up and the end down to multiples
        of ``step`` (so the result always lies inside the window and repeated queries agree).
        An empty window gives ``[]`` without a request. Series come back sorted by labels.
        """
        if not step > 0 or not math.isfinite(step):
            raise ValueError(f"step must be a positive number of seconds, got {step!r}")
        if end < start:
            raise ValueError(f"end ({end}) is before start ({start})")
        first, last = _index_ceil(start, step), _index_floor(end, step)
        if last < first:
            return []
        parts: dict[tuple[tuple[str, str], ...], list[tuple[np.ndarray, np.ndarray]]] = {}
        chunks = list(_chunks(first, last, self.max_points_per_query))
        for lo, hi in chunks:
            params = {"query": expr, "start": _fmt_seconds(lo * step), "end": _fmt_seconds(hi * step),
                      "step": _fmt_seconds(step)}
            data = self._call(ENDPOINT_QUERY_RANGE, _API_QUERY_RANGE, params, expr)
            for labels, ts, vs in self._parse_matrix(data, expr):
                parts.setdefault(tuple(sorted(labels.items())), []).append((ts, vs))
        if len(chunks) > 1:
            logger.debug("query_range split into %d chunks: %s", len(chunks), _short(expr))
        return [_merge(dict(key), pieces) for key, pieces in sorted(parts.items())]

    def query(self, expr: str, time: float | None = None) -> list[InstantSample]:
        """Evaluate ``expr`` at ``time`` (epoch seconds; Prometheus's "now" when ``None``).

        A vector gives one sample per series, a scalar one sample with empty labels.
        """
        params = {"query": expr}
        if time is not None:
            params["time"] = _fmt_seconds(time)
        data = self._call(ENDPOINT_QUERY, _API_QUERY, params, expr)
        return self._parse_instant(data, expr)

    def check(self) -> dict[str, Any]:
        """Raise a :class:`PrometheusError` unless the query API answers; return its build info.

        One attempt, no retries: a readiness probe should report the present, and callers that
        want to wait poll it. ``/api/v1/status/buildinfo`` goes through the same auth, TLS and
        tenant headers as queries (unlike ``/-/ready``, which path-prefixed stores such as
        Mimir do not serve under the API prefix). A store that lacks it (404) is checked with
        the instant query ``vector(1)`` instead.
        """
        try:
            data = self._call(ENDPOINT_BUILDINFO, _API_BUILDINFO, {}, None, attempts=1)
        except PrometheusQueryError as exc:
            if exc.status_code != 404:
                raise
            self._call(ENDPOINT_QUERY, _API_QUERY, {"query": "vector(1)"}, "vector(1)", attempts=1)
            return {}
        return data if isinstance(data, dict) else {}

    def ready(self) -> bool:
        """``True`` when :meth:`check` passes; the reason for ``False`` is logged at debug level."""
        try:
            self.check()
        except PrometheusError as exc:
            logger.debug("Prometheus not ready: %s", exc)
            return False
        return True

    # -- HTTP with retries

    def _call(self, endpoint: str, path: str, params: dict[str, str], expr: str | None,
              attempts: int | None = None) -> Any:
        """One logical API call: retries, error mapping, observer; returns the ``data`` field."""
        total = attempts if attempts is not None else self.section.retries + 1
        url = self._base + path
        where = urlsplit(self._display_base).path + path
        for attempt in range(1, total + 1):
            began = time.monotonic()
            retry_after: float | None = None
            data: Any = None
            try:
                resp, body = self._send(url, params)
            except PrometheusError as exc:  # credentials could not be read
                self._observe(endpoint, time.monotonic() - began, exc.kind)
                raise
            except requests.RequestException as exc:
                error, retryable = self._transport_error(exc, where, expr)
            else:
                error, retryable, data = self._classify(resp, body, where, expr)
                retry_after = _retry_after(resp) if error is not None else None
            self._observe(endpoint, time.monotonic() - began, error.kind if error else "success")
            if error is None:
                return data
            if not retryable or attempt >= total:
                if retryable and total > 1:
                    error.args = (f"{error} (gave up after {total} attempts)",)
                raise error
            delay = self._backoff(attempt, retry_after)
            logger.warning("Prometheus request failed (attempt %d of %d), retrying in %.2fs: %s",
                           attempt, total, delay, error)
            self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover - the loop always returns or raises

    def _send(self, url: str, params: dict[str, str]) -> tuple[requests.Response, bytes]:
        """One attempt: the response (headers) and its whole body, within ``timeout_seconds`` overall.

        requests' own timeout bounds each socket operation, not the request: an answer trickled
        a byte at a time never trips it. So the body is streamed and read against a deadline
        (:func:`_read_body`); the connection and the wait for the headers keep requests' bound.
        """
        headers: dict[str, str] = {}
        auth: tuple[str, str] | None = None
        try:
            if self.section.bearer_token is not None:
                token = self.section.bearer_token.resolve()
                self._secrets.add(token)
                headers["Authorization"] = f"Bearer {token}"
            elif self.section.basic_auth is not None:
                username = self.section.basic_auth.username
                password = self.section.basic_auth.password.resolve()
                self._secrets.update((password, base64.b64encode(f"{username}:{password}".encode()).decode()))
                auth = (username, password)
        except ConfigError as exc:
            raise PrometheusError(f"cannot read Prometheus credentials: {exc}") from exc
        timeout = self.section.timeout_seconds
        deadline = time.monotonic() + timeout
        encoded = urlencode(params)
        if len(encoded) > POST_THRESHOLD_BYTES:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            resp = self.session.post(url, data=encoded, headers=headers, auth=auth, timeout=timeout,
                                     verify=self.verify, cert=self.cert, stream=True)
        else:
            resp = self.session.get(url, params=params, headers=headers, auth=auth, timeout=timeout,
                                    verify=self.verify, cert=self.cert, stream=True)
        try:
            body = _read_body(resp, deadline, timeout)
        except BaseException:
            resp.close()  # half read: the connection cannot be reused
            raise
        return resp, body

    def _transport_error(self, exc: requests.RequestException, where: str,
                         expr: str | None) -> tuple[PrometheusError, bool]:
        """Map a requests exception to our hierarchy; returns (error, retryable)."""
        target = f"{self._display_base.split('//', 1)[-1].split('/', 1)[0]}{where}"
        # A timeout while reading the body surfaces as a ConnectionError wrapping ReadTimeoutError.
        # (Not urllib3's TimeoutError in general: NewConnectionError, i.e. "refused", derives from it.)
        if isinstance(exc, requests.Timeout) or _caused_by(exc, urllib3.exceptions.ReadTimeoutError):
            phase = "connecting" if isinstance(exc, requests.ConnectTimeout) else "waiting for an answer"
            msg = (f"Prometheus timed out {phase} after {self.section.timeout_seconds:g}s: "
                   f"{target}{_query_part(expr)}")
            return _chain(PrometheusTimeout(msg, path=where, query=expr), exc), True
        if isinstance(exc, requests.exceptions.ContentDecodingError):
            msg = f"Prometheus sent a body that cannot be decoded from {target}: {self._reason(exc)}{_query_part(expr)}"
            return _chain(PrometheusBadResponse(msg, path=where, query=expr), exc), False
        if isinstance(exc, requests.ConnectionError | requests.exceptions.ChunkedEncodingError):
            msg = f"cannot reach Prometheus at {target}: {self._reason(exc)}{_query_part(expr)}"
            retryable = not _caused_by(exc, ssl.SSLError)  # a bad certificate will not fix itself
            return _chain(PrometheusUnreachable(msg, path=where, query=expr), exc), retryable
        msg = f"cannot send request to Prometheus at {target}: {self._reason(exc)}{_query_part(expr)}"
        return _chain(PrometheusUnreachable(msg, path=where, query=expr), exc), False

    def _classify(self, resp: requests.Response, raw: bytes, where: str,
                  expr: str | None) -> tuple[PrometheusError | None, bool, Any]:
        """Turn an HTTP response and its body into (error or None, retryable, data)."""
        status = resp.status_code
        try:
            body = json.loads(raw)
        except ValueError:  # UnicodeDecodeError included
            body = None
        text = raw.decode(resp.encoding or "utf-8", "replace") if body is None else ""
        error_type = body.get("errorType") if isinstance(body, dict) else None
        # Not JSON: a proxy's HTML page or a plain "404 page not found"; show its start.
        error_text = str(body.get("error") or "") if isinstance(body, dict) else _one_line(text, 200)
        detail = f"HTTP {status}" + (f" {error_type}" if error_type else "")
        tail = f": {self._scrub(_one_line(error_text, 500))}" if error_text else ""
        kw: dict[str, Any] = {"path": where, "query": expr, "status_code": status, "error_type": error_type}
        if status >= 500 or status == 429:
            # Prometheus answers 503 errorType=timeout when its own query evaluation timed out.
            cls: type[PrometheusError] = PrometheusBadResponse
            if error_type == "timeout":
                cls = PrometheusTimeout
            return cls(f"Prometheus error ({detail}) for {where}{_query_part(expr)}{tail}", **kw), True, None
        if status >= 400:
            hint = {401: " (check basic_auth / bearer_token)", 403: " (check credentials and tenant headers)",
                    404: " (check the URL and its path prefix)"}.get(status, "")
            msg = f"Prometheus rejected the request ({detail}){hint} for {where}{_query_part(expr)}{tail}"
            return PrometheusQueryError(msg, **kw), False, None
        if not isinstance(body, dict):
            msg = (f"Prometheus sent a response that is not a JSON object (HTTP {status}) for {where}"
                   f"{_query_part(expr)}: {self._scrub(_one_line(text, 120))!r}")
            return PrometheusBadResponse(msg, **kw), False, None
        if body.get("status") != "success":
            msg = (f"Prometheus answered status {body.get('status')!r} ({detail}) for {where}"
                   f"{_query_part(expr)}{tail}")
            return PrometheusBadResponse(msg, **kw), False, None
        for warning in body.get("warnings") or ():
            logger.warning("Prometheus warning for %s%s: %s", where, _query_part(expr),
                           self._scrub(_one_line(str(warning), 300)))
        return None, False, body.get("data")

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with up to 20 % jitter, at least ``Retry-After``, capped."""
        base = self.section.retry_backoff_seconds * (2 ** (attempt - 1))
        delay = min(MAX_BACKOFF_SECONDS, base) * (1.0 + 0.2 * self._rng.random())
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, MAX_BACKOFF_SECONDS)

    def _observe(self, endpoint: str, seconds: float, outcome: str) -> None:
        logger.debug("prometheus %s %s in %.3fs", endpoint, outcome, seconds)
        if self.observer is None:
            return
        try:
            self.observer.on_request(endpoint, seconds, outcome)
        except Exception:
            logger.exception("Prometheus observer failed (ignored)")

    def _scrub(self, text: str) -> str:
        """``text`` without any credential: see :func:`redact`."""
        return redact(text, self._secrets)

    def _reason(self, exc: BaseException) -> str:
        """A short, secret-free reason for a transport failure, from the exception chain."""
        for inner in _exception_chain(exc):
            if isinstance(inner, ConnectionRefusedError):
                return "connection refused"
            if isinstance(inner, socket.gaierror):
                return "name resolution failed"
            if isinstance(inner, ssl.SSLCertVerificationError):
                return f"TLS certificate verification failed ({inner.verify_message or inner.reason})"
            if isinstance(inner, ssl.SSLError):
                return f"TLS error ({inner.reason or inner.__class__.__name__})"
            if isinstance(inner, ConnectionResetError):
                return "connection reset"
        innermost = list(_exception_chain(exc))[-1]
        return self._scrub(_one_line(f"{innermost.__class__.__name__}: {innermost}", 200))

    # -- parsing

    def _parse_matrix(self, data: Any, expr: str) -> list[tuple[dict[str, str], np.ndarray, np.ndarray]]:
        where = urlsplit(self._display_base).path + _API_QUERY_RANGE
        if not isinstance(data, dict) or data.get("resultType") != "matrix":
            got = data.get("resultType") if isinstance(data, dict) else type(data).__name__
            raise PrometheusBadResponse(f"expected a matrix from {where}, got {got!r}{_query_part(expr)}",
                                        path=where, query=expr)
        out = []
        try:
            for series in data["result"]:
                points = series.get("values") or []
                if not points:
                    continue  # e.g. native-histogram-only series: no float samples to use
                ts = np.fromiter((p[0] for p in points), dtype=np.float64, count=len(points))
                vs = np.array([p[1] for p in points], dtype=np.float64)
                out.append((_labels(series.get("metric")), ts, vs))
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise PrometheusBadResponse(f"malformed matrix from {where}{_query_part(expr)}: {exc}",
                                        path=where, query=expr) from exc
        return out

    def _parse_instant(self, data: Any, expr: str) -> list[InstantSample]:
        where = urlsplit(self._display_base).path + _API_QUERY
        kind = data.get("resultType") if isinstance(data, dict) else None
        try:
            if kind == "vector":
                return [InstantSample(_labels(s.get("metric")), float(s["value"][1]), float(s["value"][0]))
                        for s in data["result"] if "value" in s]
            if kind == "scalar":
                ts, value = data["result"]
                return [InstantSample({}, float(value), float(ts))]
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise PrometheusBadResponse(f"malformed {kind} from {where}{_query_part(expr)}: {exc}",
                                        path=where, query=expr) from exc
        msg = f"expected a vector or scalar from {where}, got {kind!r}{_query_part(expr)}"
        raise PrometheusBadResponse(msg, path=where, query=expr)


# --------------------------------------------------------------------------- small helpers


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every credential replaced by ``***``, for messages that are logged or served.

    Each of ``secrets`` (resolved passwords and tokens, and ``base64(user:password)``) goes in
    the forms a server echoes it back: as is and URL-quoted. Whatever was not resolved here
    goes too: URL user-info, the value of any ``Authorization:`` header and any credential
    after ``Basic``/``Bearer`` (a proxy's error page quoting the request it refused).
    """
    text = _USERINFO_RE.sub("***@", text)
    text = _AUTH_HEADER_RE.sub(r"\1***", text)
    text = _AUTH_SCHEME_RE.sub(r"\1 ***", text)
    # Longest first: a password may be part of its own base64 form's neighbourhood, never the reverse.
    for secret in sorted({f for s in secrets if s for f in (s, quote(s, safe=""))}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def display_url(url: str) -> str:
    """``url`` without user-info, for logs and messages (the configuration refuses it; this is defence)."""
    return _strip_userinfo(url)


def _read_body(resp: requests.Response, deadline: float, timeout: float) -> bytes:
    """The whole body of a streamed response, or requests' ReadTimeout once ``deadline`` passes.

    Each read waits at most the time left (the socket's timeout is lowered before it), so the
    overrun is at most one read's scheduling; errors come out as requests exceptions, which
    :meth:`PrometheusClient._transport_error` maps.
    """
    raw = resp.raw
    if raw is None:  # a response made in memory (a session that is a test double): nothing to stream
        return resp.content or b""
    # read1: whatever one socket read brings (urllib3 >= 2.3). Raw bytes, decoded at the end: urllib3's
    # own decoding keeps reading inside one call until the decompressor yields output, which for a
    # trickled gzip body is the end of it, past any deadline.
    read = getattr(raw, "read1", None) or raw.read
    parts: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise requests.exceptions.ReadTimeout(f"the answer did not complete within {timeout:g}s")
        _set_read_timeout(raw, min(timeout, left))
        try:
            chunk = read(_READ_SIZE, decode_content=False)
        except urllib3.exceptions.ReadTimeoutError as exc:
            raise requests.exceptions.ReadTimeout(exc) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:  # reset, truncated, bad chunking
            raise requests.exceptions.ConnectionError(exc) from exc
        if not chunk:
            return _decode(b"".join(parts), resp.headers.get("Content-Encoding"))
        parts.append(chunk)


def _decode(data: bytes, encoding: str | None) -> bytes:
    """The body without its Content-Encoding (the client asks for gzip or deflate only)."""
    coding = (encoding or "identity").strip().lower()
    try:
        if coding in ("gzip", "x-gzip"):
            return zlib.decompress(data, wbits=31)
        if coding == "deflate":  # zlib-wrapped as the RFC says, or raw as some servers send it
            try:
                return zlib.decompress(data)
            except zlib.error:
                return zlib.decompress(data, wbits=-15)
    except zlib.error as exc:
        raise requests.exceptions.ContentDecodingError(f"cannot decode the {coding} body: {exc}") from exc
    if coding != "identity":
        raise requests.exceptions.ContentDecodingError(f"unsupported Content-Encoding {coding!r}")
    return data


def _set_read_timeout(raw: Any, seconds: float) -> None:
    """Lower the socket timeout of a streamed urllib3 response; a no-op where the socket is not reachable."""
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed: the read reports it
            sock.settimeout(max(seconds, 0.001))


def _merge(labels: dict[str, str], pieces: list[tuple[np.ndarray, np.ndarray]]) -> RangeSeries:
    """Concatenate a series' chunks in time order; a repeated timestamp keeps its first value."""
    if len(pieces) == 1:
        ts, vs = pieces[0]
    else:
        ts, vs = np.concatenate([p[0] for p in pieces]), np.concatenate([p[1] for p in pieces])
    order = np.argsort(ts, kind="stable")
    ts, vs = ts[order], vs[order]
    if ts.size > 1:
        keep = np.concatenate(([True], np.diff(ts) > 0))
        if not keep.all():
            ts, vs = ts[keep], vs[keep]
    return RangeSeries(labels=labels, timestamps=ts, values=vs)


def _labels(metric: Any) -> dict[str, str]:
    if metric is None:
        return {}
    if not isinstance(metric, Mapping):
        raise TypeError(f"series labels are a {type(metric).__name__}, not an object")
    return {str(k): str(v) for k, v in metric.items()}


def _retry_after(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # the HTTP-date form is rare for APIs; plain backoff is good enough then
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _strip_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _short(expr: str) -> str:
    return _one_line(expr, QUERY_IN_MESSAGE)


def _query_part(expr: str | None) -> str:
    return f", query={_short(expr)!r}" if expr else ""


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything it wraps (cause, context, urllib3 ``reason``, exception args)."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 32:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        nested = [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
        todo.extend(n for n in nested if isinstance(n, BaseException))


def _caused_by(exc: BaseException, *types: type[BaseException]) -> bool:
    return any(isinstance(inner, types) for inner in _exception_chain(exc))


def _chain(error: PrometheusError, cause: BaseException) -> PrometheusError:
    error.__cause__ = cause
    return error
