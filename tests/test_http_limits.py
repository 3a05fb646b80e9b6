"""toolkit/http.py under load and abuse: a burst of connections, and clients that connect and stall.

127.0.0.1 only; every wait is bounded.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import toolkit.http
from toolkit.http import make_server, respond, serve, shutdown


def _app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    return respond(start_response, 200, "text/plain", b"ok\n")


def test_a_burst_of_connections_is_not_dropped_while_the_server_is_busy() -> None:
    """The kernel completes connections up to the listen backlog while the accept loop is busy (here:
    not running at all); with socketserver's default of 5, the rest of a burst of 50 scrapes waits
    for SYN retransmits (1 s, 3 s, ...) or times out."""
    server = make_server(_app, "127.0.0.1:0")
    clients: list[socket.socket] = []
    try:
        port = server.server_address[1]
        for _ in range(50):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            clients.append(sock)
        deadline = time.monotonic() + 0.5  # well under the first SYN retransmit (1 s)
        pending = list(clients)
        while pending and time.monotonic() < deadline:
            _, writable, _ = select.select([], pending, [], max(0.0, deadline - time.monotonic()))
            pending = [s for s in pending if s not in writable]
        connected = [s for s in clients if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 and s not in pending]
        assert len(connected) == 50
    finally:
        for sock in clients:
            sock.close()
        server.server_close()


def test_every_connection_has_a_timeout_by_default() -> None:
    """The stall tests below shorten it; this is what serves: finite, and long enough for a slow scrape."""
    assert toolkit.http._RequestHandler.timeout == toolkit.http.CONNECTION_TIMEOUT_SECONDS == 30
    assert toolkit.http._ThreadingServer.request_queue_size == toolkit.http.LISTEN_BACKLOG >= 128


@pytest.fixture
def short_timeout(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(toolkit.http._RequestHandler, "timeout", 0.3)
    server, thread = serve(_app, "127.0.0.1:0", poll_interval=0.05)
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        shutdown(server, thread)


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """True when the server closes the connection within ``within`` seconds (recv gives EOF)."""
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


@pytest.mark.parametrize("sent", [b"", b"GET / HTTP/1.1\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nAccept: "],
                         ids=["silent", "half-request-line", "half-headers"])
def test_a_stalled_connection_is_closed_and_frees_its_thread(short_timeout: str, sent: bytes,
                                                             capfd: pytest.CaptureFixture[str]) -> None:
    host, port = short_timeout.split(":")
    before = threading.active_count()
    socks = [socket.create_connection((host, int(port)), timeout=5) for _ in range(20)]
    try:
        for sock in socks:
            if sent:
                sock.sendall(sent)
        assert all(_closed_by_server(sock, within=3.0) for sock in socks)
    finally:
        for sock in socks:
            sock.close()
    deadline = time.monotonic() + 3
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before
    assert "Traceback" not in capfd.readouterr().err  # dropped quietly, not via socketserver's handle_error


def test_a_connection_in_use_is_kept(short_timeout: str) -> None:
    """The timeout is per read, not per connection: a keep-alive client that keeps asking is served."""
    host, port = short_timeout.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        for _ in range(4):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            reply = b""
            while not reply.endswith(b"ok\n"):
                chunk = sock.recv(4096)
                assert chunk, "closed while in use"
                reply += chunk
            time.sleep(0.15)  # idle, but less than the timeout
