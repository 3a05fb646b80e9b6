"""Tests for forecaster.contract.prometheus against the in-process fake (devkit/fakeprom.py) and a real Prometheus."""

from __future__ import annotations

import gzip
import itertools
import logging
import math
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from devkit.fakeprom import BUILDINFO, QUERY, QUERY_RANGE, FakePrometheus, Reply, series
from forecaster.contract.config import PrometheusSection
from forecaster.contract.prometheus import (
    OUTCOMES,
    InstantSample,
    PrometheusAPI,
    PrometheusBadResponse,
    PrometheusClient,
    PrometheusError,
    PrometheusQueryError,
    PrometheusTimeout,
    PrometheusUnreachable,
    align,
    display_url,
    grid,
    redact,
    tls_arguments,
)
from tests.promserver import free_port

T0 = 1_699_999_200.0  # a multiple of 60, 300 and 3600


class Calls:
    """An observer that records what it is told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float, str]] = []

    def on_request(self, endpoint: str, seconds: float, outcome: str) -> None:
        self.calls.append((endpoint, seconds, outcome))

    def outcomes(self, endpoint: str | None = None) -> list[str]:
        return [o for e, _, o in self.calls if endpoint is None or e == endpoint]


@pytest.fixture
def fake() -> Iterator[FakePrometheus]:
    with FakePrometheus() as server:
        yield server


def make_client(url: str, *, observer: Any = None, sleeps: list[float] | None = None,
                **section: Any) -> PrometheusClient:
    options: dict[str, Any] = {"timeout_seconds": 5.0, "retries": 2, "retry_backoff_seconds": 0.5}
    options.update(section)
    sleep = sleeps.append if sleeps is not None else (lambda _s: None)
    return PrometheusClient(PrometheusSection(url=url, **options), observer=observer, sleep=sleep)


# --------------------------------------------------------------------------- grid + chunking


def test_align_and_grid() -> None:
    assert align(T0 + 59.9, 60) == T0
    assert align(T0, 60) == T0
    assert align(T0 - 0.001, 60) == T0 - 60
    assert list(grid(T0 + 1, T0 + 180, 60)) == [T0 + 60, T0 + 120, T0 + 180]
    assert list(grid(T0 + 1, T0 + 59, 60)) == []
    with pytest.raises(ValueError):
        align(T0, 0)


def test_30_day_range_is_chunked_and_merged_exactly(fake: FakePrometheus) -> None:
    step = 60.0
    start, end = T0 - 30 * 86400, T0
    fake.add_series({"instance": "a"}, lambda t: (t % 3600) / 3600)
    # Present only in a window that straddles a chunk boundary: absent from the first chunk.
    fake.add_series({"instance": "b"}, 0.5, start=start + 12_000 * step, end=start + 25_000 * step)
    client = make_client(fake.url)

    result = client.query_range("cpu", start, end, step)

    reqs = fake.requests_for(QUERY_RANGE)
    assert len(reqs) >= 4
    assert all(r.points() <= 11_000 for r in reqs)
    assert all(r.status == 200 for r in reqs)
    for prev, nxt in itertools.pairwise(reqs):
        assert float(nxt.params["start"]) == float(prev.params["end"]) + step  # no overlap, no gap
    assert float(reqs[0].params["start"]) == start and float(reqs[-1].params["end"]) == end

    assert [s.labels for s in result] == [{"instance": "a"}, {"instance": "b"}]
    a, b = result
    expected = np.arange(start, end + step, step)
    assert len(expected) == 30 * 1440 + 1
    np.testing.assert_array_equal(a.timestamps, expected)
    assert len(np.unique(a.timestamps)) == len(a.timestamps)
    np.testing.assert_allclose(a.values, (expected % 3600) / 3600)
    assert a.timestamps.dtype == np.float64 and a.values.dtype == np.float64
    np.testing.assert_array_equal(b.timestamps, np.arange(start + 12_000 * step, start + 25_001 * step, step))
    assert np.all(b.values == 0.5)


def test_unaligned_window_is_rounded_inwards(fake: FakePrometheus) -> None:
    fake.add_series({"instance": "a"}, 1.0)
    client = make_client(fake.url, max_points_per_query=10)
    result = client.query_range("up", T0 + 0.5, T0 + 1800.2, 60)
    req = fake.requests_for(QUERY_RANGE)[0]
    assert (req.params["start"], req.params["step"]) == (str(int(T0 + 60)), "60")
    assert len(fake.requests_for(QUERY_RANGE)) == 3  # 30 points, 10 per request
    np.testing.assert_array_equal(result[0].timestamps, grid(T0 + 0.5, T0 + 1800.2, 60))
    assert result[0].timestamps[-1] == T0 + 1800


def test_empty_window_sends_nothing_and_bad_arguments_raise(fake: FakePrometheus) -> None:
    client = make_client(fake.url)
    assert client.query_range("up", T0 + 1, T0 + 2, 60) == []
    assert fake.requests == []
    with pytest.raises(ValueError):
        client.query_range("up", T0, T0 + 60, 0)
    with pytest.raises(ValueError):
        client.query_range("up", T0 + 60, T0, 60)


def test_duplicate_points_across_chunks_are_dropped(fake: FakePrometheus) -> None:
    # Some stores answer slightly outside the asked window; the merge must not duplicate.
    fake.script(QUERY_RANGE, Reply.matrix([series({"i": "a"}, [(T0, 1), (T0 + 60, 2)])]),
                Reply.matrix([series({"i": "a"}, [(T0 + 60, 2), (T0 + 120, 3)])]))
    client = make_client(fake.url, max_points_per_query=10)
    (s,) = client.query_range("x", T0, T0 + 60 * 19, 60)
    assert list(s.timestamps) == [T0, T0 + 60, T0 + 120]
    assert list(s.values) == [1, 2, 3]


def test_nan_and_inf_are_parsed_as_floats(fake: FakePrometheus) -> None:
    raw = {"metric": {"i": "a"}, "values": [[T0, "NaN"], [T0 + 60, "+Inf"], [T0 + 120, "-Inf"],
                                           [T0 + 180, "1.5e3"]]}
    fake.script(QUERY_RANGE, Reply.matrix([raw]))
    (s,) = make_client(fake.url).query_range("x", T0, T0 + 180, 60)
    assert math.isnan(s.values[0]) and s.values[1] == math.inf and s.values[2] == -math.inf
    assert s.values[3] == 1500.0

    fake.script(QUERY, Reply.vector([{"metric": {"i": "a"}, "value": [T0, "NaN"]}]))
    (sample,) = make_client(fake.url).query("x", time=T0)
    assert math.isnan(sample.value) and sample.timestamp == T0 and sample.labels == {"i": "a"}


def test_instant_query_vector_and_scalar(fake: FakePrometheus) -> None:
    fake.add_series({"instance": "a"}, lambda t: t / 1e9)
    client = make_client(fake.url)
    expected = [InstantSample({"instance": "a"}, (T0 + 0.25) / 1e9, T0 + 0.25)]
    assert client.query("up", time=T0 + 0.25) == expected
    assert fake.requests_for(QUERY)[0].params["time"] == f"{T0 + 0.25:.2f}"
    fake.script(QUERY, Reply.success({"resultType": "scalar", "result": [T0, "42"]}))
    assert client.query("42") == [InstantSample({}, 42.0, T0)]
    assert "time" not in fake.requests_for(QUERY)[1].params


def test_long_query_goes_by_post(fake: FakePrometheus) -> None:
    fake.add_series({"instance": "a"}, 1.0)
    expr = "sum(" + " + ".join(f'up{{job="j{i}"}}' for i in range(400)) + ")"
    assert len(expr) > 4096
    make_client(fake.url).query_range(expr, T0, T0 + 600, 60)
    (req,) = fake.requests_for(QUERY_RANGE)
    assert req.method == "POST" and req.params["query"] == expr
    make_client(fake.url).query_range("up", T0, T0 + 600, 60)
    assert fake.requests_for(QUERY_RANGE)[1].method == "GET"


# --------------------------------------------------------------------------- retries and errors


def test_503_is_retried_with_backoff_then_succeeds(fake: FakePrometheus) -> None:
    fake.add_series({"instance": "a"}, 1.0)
    fake.script(QUERY_RANGE, Reply.unavailable(), Reply.unavailable())
    sleeps: list[float] = []
    calls = Calls()
    client = make_client(fake.url, retries=3, sleeps=sleeps, observer=calls)
    (s,) = client.query_range("up", T0, T0 + 600, 60)
    assert len(s) == 11
    assert [r.status for r in fake.requests_for(QUERY_RANGE)] == [503, 503, 200]
    assert len(sleeps) == 2 and 0.5 <= sleeps[0] <= 0.6 and 1.0 <= sleeps[1] <= 1.2
    assert calls.outcomes() == ["bad_response", "bad_response", "success"]


def test_429_is_retried_and_retry_after_is_honoured(fake: FakePrometheus) -> None:
    fake.script(QUERY, Reply.error(429, "too_many_requests", "slow down", {"Retry-After": "3"}))
    sleeps: list[float] = []
    make_client(fake.url, sleeps=sleeps).query("up")
    assert len(fake.requests_for(QUERY)) == 2
    assert sleeps == [3.0]


def test_5xx_gives_up_after_bounded_retries(fake: FakePrometheus) -> None:
    fake.always(QUERY_RANGE, Reply.text(502, "<html>Bad Gateway</html>"))
    sleeps: list[float] = []
    with pytest.raises(PrometheusBadResponse) as info:
        make_client(fake.url, retries=2, sleeps=sleeps).query_range("up", T0, T0 + 60, 60)
    assert len(fake.requests_for(QUERY_RANGE)) == 3 and len(sleeps) == 2
    msg = str(info.value)
    assert "HTTP 502" in msg and "gave up after 3 attempts" in msg and "Bad Gateway" in msg
    assert "/api/v1/query_range" in msg and "\n" not in msg
    assert info.value.status_code == 502


def test_400_fails_fast_with_prometheus_text(fake: FakePrometheus) -> None:
    text = '1:9: parse error: unclosed left parenthesis'
    fake.script(QUERY_RANGE, Reply.error(400, "bad_data", text))
    sleeps: list[float] = []
    calls = Calls()
    client = make_client(fake.url, retries=5, sleeps=sleeps, observer=calls)
    with pytest.raises(PrometheusQueryError) as info:
        client.query_range("sum(rate(x", T0, T0 + 60, 60)
    assert len(fake.requests_for(QUERY_RANGE)) == 1 and sleeps == []
    msg = str(info.value)
    assert text in msg and "bad_data" in msg and "sum(rate(x" in msg and "/api/v1/query_range" in msg
    assert info.value.error_type == "bad_data" and info.value.kind == "query_error"
    assert calls.outcomes() == ["query_error"]


def test_422_execution_error_is_a_query_error(fake: FakePrometheus) -> None:
    fake.script(QUERY, Reply.error(422, "execution", "query processing would load too many samples"))
    with pytest.raises(PrometheusQueryError, match="too many samples"):
        make_client(fake.url).query("up")


def test_too_many_points_is_refused_by_the_fake_like_prometheus(fake: FakePrometheus) -> None:
    # Guards the fake itself: an unchunked 30-day query must be rejected as Prometheus does.
    resp = requests.get(fake.url + QUERY_RANGE, timeout=5,
                        params={"query": "up", "start": T0 - 30 * 86400, "end": T0, "step": "1m"})
    assert resp.status_code == 400 and "11,000 points" in resp.json()["error"]


def test_long_query_text_is_truncated_in_messages(fake: FakePrometheus) -> None:
    fake.always(QUERY, Reply.error(400, "bad_data", "nope"))
    with pytest.raises(PrometheusQueryError) as info:
        make_client(fake.url).query("x" * 1000)
    assert len(str(info.value)) < 400


def test_timeout_after_bounded_retries(fake: FakePrometheus) -> None:
    fake.always(QUERY_RANGE, Reply.hang(5))
    calls = Calls()
    client = make_client(fake.url, timeout_seconds=0.3, retries=1, retry_backoff_seconds=0, observer=calls)
    began = time.monotonic()
    with pytest.raises(PrometheusTimeout) as info:
        client.query_range("up", T0, T0 + 60, 60)
    assert time.monotonic() - began < 3
    assert len(fake.requests_for(QUERY_RANGE)) == 2
    assert calls.outcomes() == ["timeout", "timeout"]
    assert "0.3s" in str(info.value) and "gave up after 2 attempts" in str(info.value)


def test_prometheus_side_timeout_maps_to_timeout(fake: FakePrometheus) -> None:
    fake.always(QUERY, Reply.error(503, "timeout", "query timed out in expression evaluation"))
    with pytest.raises(PrometheusTimeout, match="query timed out"):
        make_client(fake.url, retries=1).query("up")


def test_connection_refused_then_back(fake: FakePrometheus) -> None:
    fake.add_series({"instance": "a"}, 1.0)
    calls = Calls()
    sleeps: list[float] = []
    client = make_client(fake.url, retries=1, observer=calls, sleeps=sleeps)
    fake.go_down()
    with pytest.raises(PrometheusUnreachable) as info:
        client.query("up")
    assert "connection refused" in str(info.value) and f"127.0.0.1:{fake.port}" in str(info.value)
    assert calls.outcomes() == ["unreachable", "unreachable"] and len(sleeps) == 1
    assert not client.ready()
    fake.come_back()
    assert client.query("up")[0].value == 1.0
    assert client.ready()


def test_tls_failure_is_unreachable_without_retry(fake: FakePrometheus) -> None:
    sleeps: list[float] = []
    client = make_client(fake.url.replace("http://", "https://"), retries=3, sleeps=sleeps)
    with pytest.raises(PrometheusUnreachable, match="TLS"):
        client.query("up")
    assert sleeps == []  # a certificate or protocol mismatch does not fix itself


def test_malformed_json_is_a_bad_response_without_retry(fake: FakePrometheus) -> None:
    fake.script(QUERY_RANGE, Reply.malformed())
    sleeps: list[float] = []
    with pytest.raises(PrometheusBadResponse, match="not a JSON object"):
        make_client(fake.url, sleeps=sleeps).query_range("up", T0, T0 + 60, 60)
    assert len(fake.requests_for(QUERY_RANGE)) == 1 and sleeps == []


@pytest.mark.parametrize("reply", [
    Reply.vector([]),
    Reply.json({"status": "error", "errorType": "internal", "error": "odd"}),
    Reply.matrix([{"metric": {"i": "a"}, "values": [[T0, "not-a-number"]]}]),
    Reply.json(["not", "an", "object"]),
])
def test_unusable_success_answers_are_bad_responses(fake: FakePrometheus, reply: Reply) -> None:
    fake.script(QUERY_RANGE, reply)
    with pytest.raises(PrometheusBadResponse):
        make_client(fake.url).query_range("up", T0, T0 + 60, 60)


def test_wrong_result_type_for_instant_query(fake: FakePrometheus) -> None:
    fake.script(QUERY, Reply.matrix([]))
    with pytest.raises(PrometheusBadResponse, match="expected a vector or scalar"):
        make_client(fake.url).query("up")


def test_error_hierarchy() -> None:
    for cls in (PrometheusUnreachable, PrometheusTimeout, PrometheusBadResponse, PrometheusQueryError):
        assert issubclass(cls, PrometheusError) and cls.kind in OUTCOMES


# --------------------------------------------------------------------------- auth, headers, prefix


def test_basic_auth_and_secret_never_in_messages(fake: FakePrometheus,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s3cr3t-pa55"
    monkeypatch.setenv("PROM_PASSWORD", secret)
    fake.require(basic=("alice", secret))
    fake.add_series({"instance": "a"}, 1.0)
    auth = {"username": "alice", "password": {"env": "PROM_PASSWORD"}}
    client = make_client(fake.url, basic_auth=auth)
    assert client.query("up")[0].value == 1.0

    # A server (or proxy) that echoes the credential back must not get it into our message.
    fake.script(QUERY, Reply.error(400, "bad_data", f"bad request with password {secret}"))
    with pytest.raises(PrometheusQueryError) as info:
        client.query("up")
    assert secret not in str(info.value) and "***" in str(info.value)

    monkeypatch.setenv("PROM_PASSWORD", "wrong")
    with pytest.raises(PrometheusQueryError, match="HTTP 401") as info:
        client.query("up")
    assert "wrong" not in str(info.value) and "basic_auth" in str(info.value)

    monkeypatch.delenv("PROM_PASSWORD")
    with pytest.raises(PrometheusError, match="PROM_PASSWORD"):
        client.query("up")


def test_bearer_token_file_is_reread_each_request(fake: FakePrometheus, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("token-one\n")
    fake.add_series({"instance": "a"}, 1.0)
    fake.require(bearer="token-one")
    client = make_client(fake.url, bearer_token={"file": str(token_file)}, retries=0)
    client.query("up")
    token_file.write_text("token-two\n")  # rotated
    fake.require(bearer="token-two")
    client.query("up")
    assert [r.header("Authorization") for r in fake.requests_for(QUERY)] == \
        ["Bearer token-one", "Bearer token-two"]

    fake.go_down()
    with pytest.raises(PrometheusUnreachable) as info:
        client.query("up")
    assert "token-two" not in str(info.value) and "token-one" not in str(info.value)


def test_tenant_header_and_path_prefix() -> None:
    with FakePrometheus(prefix="/prometheus") as fake:
        fake.require(headers={"X-Scope-OrgID": "tenant-a"})
        fake.add_series({"instance": "a"}, 1.0)
        assert fake.url.endswith("/prometheus")
        client = make_client(fake.url, headers={"X-Scope-OrgID": "tenant-a"})
        assert client.query_range("up", T0, T0 + 60, 60)[0].labels == {"instance": "a"}
        assert client.ready()
        assert all(r.header("X-Scope-OrgID") == "tenant-a" for r in fake.requests)
        assert {r.path for r in fake.requests} == {QUERY_RANGE, BUILDINFO}

        with pytest.raises(PrometheusQueryError) as info:
            make_client(fake.url).query("up")  # no tenant header
        assert "/prometheus/api/v1/query" in str(info.value)

        with pytest.raises(PrometheusQueryError, match="path prefix"):
            make_client(fake.url.removesuffix("/prometheus")).query("up")


def test_userinfo_in_url_is_refused_and_never_printed(fake: FakePrometheus) -> None:
    url = fake.url.replace("http://", "http://bob:hunter2@")
    with pytest.raises(ValueError, match="basic_auth") as info:
        PrometheusSection(url=url)
    assert "hunter2" not in str(info.value.errors()[0]["msg"])
    # Should one get past the configuration anyway, it is still not shown.
    client = PrometheusClient(PrometheusSection().model_copy(update={"url": url}))
    fake.go_down()
    with pytest.raises(PrometheusUnreachable) as unreachable:
        client.query("up")
    assert "hunter2" not in str(unreachable.value) and "hunter2" not in repr(client)
    assert display_url(url) == fake.url and "hunter2" not in redact(f"see {url}/api")


def test_bearer_tokens_and_authorization_headers_are_redacted(fake: FakePrometheus, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("tok-3f9a8b7c6d5e\n")
    fake.require(bearer="tok-3f9a8b7c6d5e")
    client = make_client(fake.url, bearer_token={"file": str(token_file)}, retries=1)
    fake.script(QUERY, Reply.error(503, "unavailable", "proxy saw Authorization: Bearer tok-3f9a8b7c6d5e"),
                Reply.error(400, "bad_data", "token tok-3f9a8b7c6d5e; other: Bearer abcdef123456, "
                                             "Authorization=Basic Zm9vOmJhcg=="))
    with caplog.at_level(logging.WARNING), pytest.raises(PrometheusQueryError) as info:
        client.query("up")
    logged = " ".join(r.getMessage() for r in caplog.records)
    for text in (str(info.value), logged):
        assert "tok-3f9a8b7c6d5e" not in text and "abcdef123456" not in text and "Zm9vOmJhcg" not in text
    assert "Authorization: ***" in logged and "Bearer ***" in str(info.value)
    # A token set as a plain header is a secret too.
    plain = make_client(fake.url, headers={"Authorization": "Bearer tok-3f9a8b7c6d5e"}, retries=0)
    fake.script(QUERY, Reply.error(400, "bad_data", "echo: tok-3f9a8b7c6d5e"))
    with pytest.raises(PrometheusQueryError) as info:
        plain.query("up")
    assert "tok-3f9a8b7c6d5e" not in str(info.value)


# --------------------------------------------------------------------------- the timeout is a deadline


class _SlowBodyServer:
    """Headers at once, then one body byte every ``interval`` s: a stalling proxy. Bounded: it stops
    after ``max_bytes`` bytes or when the client goes away, whichever is first."""

    def __init__(self, interval: float, max_bytes: int = 200) -> None:
        self.interval, self.max_bytes = interval, max_bytes
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.accepted = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            with conn:
                try:
                    conn.recv(65536)
                    body = b'{"status":"success","data":{"resultType":"vector","result":[]}}' + b" " * 1000
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n" % len(body))
                    for k in range(min(len(body), self.max_bytes)):
                        if self.stop.wait(self.interval):
                            return
                        conn.sendall(body[k:k + 1])
                except OSError:
                    continue  # the client gave up

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        self.thread.join(timeout=5)


def test_a_compressed_answer_is_decoded(fake: FakePrometheus) -> None:
    """The body is streamed off the socket by hand; Prometheus gzips it, and it must still parse."""
    body = Reply.vector([{"metric": {"instance": "a"}, "value": [T0, "0.5"]}]).body
    fake.script(QUERY, Reply(200, gzip.compress(body), {"Content-Type": "application/json",
                                                        "Content-Encoding": "gzip"}))
    assert make_client(fake.url).query("up")[0].value == 0.5
    fake.script(QUERY, Reply(200, b"\x1f\x8bnot gzip",
                             {"Content-Type": "application/json", "Content-Encoding": "gzip"}))
    with pytest.raises(PrometheusBadResponse, match="cannot be decoded"):
        make_client(fake.url).query("up")
    assert fake.requests_for(QUERY)[-1].header("Accept-Encoding") == "gzip, deflate"


def test_timeout_is_a_deadline_for_the_whole_answer() -> None:
    """Each read gets a byte well within the timeout; the answer as a whole does not come in time."""
    server = _SlowBodyServer(interval=0.1)
    calls = Calls()
    try:
        client = make_client(f"http://127.0.0.1:{server.port}", timeout_seconds=0.6, retries=1, observer=calls)
        began = time.monotonic()
        with pytest.raises(PrometheusTimeout, match="timed out") as info:
            client.query("up")
        took = time.monotonic() - began
    finally:
        server.close()
    assert took < 2.0, f"two attempts of 0.6 s took {took:.1f}s"  # was 2 x 100 bytes x 0.1 s and more
    assert calls.outcomes() == ["timeout", "timeout"] and server.accepted == 2
    assert "gave up after 2 attempts" in str(info.value)


# --------------------------------------------------------------------------- check / ready / observer


def test_check_uses_buildinfo_and_falls_back_to_a_query(fake: FakePrometheus) -> None:
    client = make_client(fake.url, retries=3)
    assert client.check()["version"] == "2.42.0-fake"
    fake.always(BUILDINFO, Reply.text(404, "404 page not found\n"))
    assert client.check() == {}
    assert fake.requests_for(QUERY)[-1].params["query"] == "vector(1)"
    fake.always(BUILDINFO, Reply.unavailable())
    fake.clear()
    with pytest.raises(PrometheusBadResponse):
        client.check()
    assert len(fake.requests) == 1  # a readiness probe does not retry
    assert not client.ready()


def test_observer_sees_every_attempt_and_cannot_break_queries(fake: FakePrometheus) -> None:
    fake.add_series({"instance": "a"}, 1.0)
    calls = Calls()
    client = make_client(fake.url, observer=calls, max_points_per_query=10)
    client.query_range("up", T0, T0 + 60 * 25, 60)  # 26 points: 3 chunks
    client.query("up")
    assert [(e, o) for e, _, o in calls.calls] == [("query_range", "success")] * 3 + [("query", "success")]
    assert all(s >= 0 for _, s, _ in calls.calls)

    class Broken:
        def on_request(self, endpoint: str, seconds: float, outcome: str) -> None:
            raise RuntimeError("metrics are broken")

    assert make_client(fake.url, observer=Broken()).query("up")[0].value == 1.0


def test_client_satisfies_the_protocol(fake: FakePrometheus) -> None:
    client = PrometheusClient.from_config(PrometheusSection(url=fake.url))
    assert isinstance(client, PrometheusAPI)
    with client:
        assert client.ready()


# --------------------------------------------------------------------------- TLS


def test_tls_settings_map_to_requests_arguments(tmp_path: Path) -> None:
    ca, cert, key = tmp_path / "ca.pem", tmp_path / "c.pem", tmp_path / "k.pem"
    base = "https://prom.example:9090"
    assert tls_arguments(PrometheusSection(url=base)) == (True, None)
    assert tls_arguments(PrometheusSection(url=base, tls={"ca_file": str(ca)})) == (str(ca), None)
    assert tls_arguments(PrometheusSection(url=base, tls={"cert_file": str(cert), "key_file": str(key)})) == \
        (True, (str(cert), str(key)))
    insecure = {"ca_file": str(ca), "insecure_skip_verify": True}
    assert tls_arguments(PrometheusSection(url=base, tls=insecure)) == (False, None)


class _CapturingSession(requests.Session):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict[str, Any]] = []

    def get(self, url: str | bytes, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.seen.append({"url": url, **kwargs})
        resp = requests.Response()
        resp.status_code = 200
        resp._content = b'{"status":"success","data":{"resultType":"vector","result":[]}}'
        return resp


def test_tls_arguments_are_passed_on_every_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # REQUESTS_CA_BUNDLE would override a session-level verify path; per-request arguments win.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/bundle.pem")
    ca, cert, key = tmp_path / "ca.pem", tmp_path / "c.pem", tmp_path / "k.pem"
    section = PrometheusSection(url="https://prom.example:9090/prefix",
                                tls={"ca_file": str(ca), "cert_file": str(cert), "key_file": str(key)},
                                headers={"X-Scope-OrgID": "t"})
    session = _CapturingSession()
    client = PrometheusClient.from_config(section, session=session)
    assert client.query("up") == []
    (seen,) = session.seen
    assert seen["url"] == "https://prom.example:9090/prefix/api/v1/query"
    assert seen["verify"] == str(ca) and seen["cert"] == (str(cert), str(key))
    assert seen["timeout"] == section.timeout_seconds
    assert session.headers["X-Scope-OrgID"] == "t"


# --------------------------------------------------------------------------- real Prometheus


@pytest.mark.integration
def test_chunked_range_query_against_real_prometheus(prometheus_factory: Any) -> None:
    port = free_port()
    server = prometheus_factory(port=port, scrape_configs=[
        {"job_name": "prometheus", "scrape_interval": "1s",
         "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]},
    ]).start()
    server.wait_for("count_over_time(up[1m]) >= 8", timeout=40)

    # 5 is below the config's validated minimum; model_copy bypasses it to force chunking.
    section = PrometheusSection(url=server.url, timeout_seconds=10)
    section = section.model_copy(update={"max_points_per_query": 5})
    calls = Calls()
    client = PrometheusClient.from_config(section, observer=calls)
    assert client.ready()
    end = align(time.time(), 1)
    result = client.query_range("up", end - 20, end, 1)

    assert calls.outcomes("query_range") == ["success"] * 5  # 21 points, 5 per request
    (up,) = result
    assert up.labels == {"__name__": "up", "instance": f"127.0.0.1:{port}", "job": "prometheus"}
    assert len(up) >= 7
    assert np.all(np.diff(up.timestamps) == 1.0)  # contiguous, unique, across chunk boundaries
    assert up.timestamps[-1] == end and np.all(up.values == 1.0)

    (now,) = client.query("up")
    assert now.value == 1.0
    with pytest.raises(PrometheusQueryError, match="parse error"):
        client.query_range("sum(rate(up", end - 20, end, 1)
