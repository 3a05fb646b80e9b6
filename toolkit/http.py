"""HTTP serving for every component: listen addresses, and a threaded WSGI server that speaks HTTP/1.1.

Each component writes its endpoints as a plain WSGI app (a function of ``environ``), so tests call
it in-process without a socket, and :func:`serve` runs it. The server is the standard library's
``wsgiref`` with what a Prometheus target needs on top:

* one thread per connection, so a slow client never blocks a scrape;
* IPv6 when the address is ``[v6]:port`` (``wsgiref`` alone binds IPv4 only);
* HTTP/1.1 keep-alive, as Prometheus scrapes over one persistent connection per target
  (``wsgiref`` alone answers HTTP/1.0 and closes after every request);
* status line, headers and body in one write, with Nagle's algorithm off: with headers and body
  in separate segments the body waited for the client's delayed ACK, ~40 ms per scrape
  (measured by benchmarks/exporter_scrape.py);
* requests logged at debug through :mod:`logging`, not printed to stderr.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from http import HTTPStatus
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.headers import Headers
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def parse_listen_address(address: str) -> tuple[str, int]:
    """``host:port``, ``:port`` (every IPv4 interface) or ``[v6]:port`` to ``(host, port)``.

    Raises ValueError with a readable message. An IPv6 address must be in brackets: ``::1:8920``
    could mean port 8920 of ``::1`` or the address ``::1:8920`` without a port.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ValueError(f"invalid listen address {address!r}: must be host:port, [v6]:port or :port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            raise ValueError(f"invalid listen address {address!r}: only an IPv6 address goes in brackets")
    elif ":" in host or "[" in host or "]" in host:
        raise ValueError(f"invalid listen address {address!r}: an IPv6 address goes in brackets, as [::1]:{port}")
    if any(c.isspace() for c in host):
        raise ValueError(f"invalid listen address {address!r}: the host has white space")
    return host or "0.0.0.0", int(port)


def server_url(server: WSGIServer) -> str:
    """The base URL (``http://host:port``) at which this machine reaches ``server``.

    A wildcard bind (``0.0.0.0``, ``::``) is shown as the loopback address of its family, which
    every client can connect to.
    """
    host, port = server.server_address[:2]
    shown = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(str(host), str(host))
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


def respond(start_response: StartResponse, status: int, content_type: str, body: bytes, *, head: bool = False,
            headers: Sequence[tuple[str, str]] = ()) -> list[bytes]:
    """Start a response with a length (so the connection can stay open) and return its body (none for HEAD)."""
    start_response(f"{status} {HTTPStatus(status).phrase}",
                   [("Content-Type", content_type), ("Content-Length", str(len(body))), *headers])
    return [] if head else [body]


class _ServerHandler(ServerHandler):
    """One response: HTTP/1.1, sent in one write, and the connection closed when it has to be."""

    http_version = "1.1"
    request_handler: _RequestHandler
    # Set by wsgiref for each request (its stubs do not declare them).
    headers: Headers
    environ: dict[str, Any] | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: list[bytes] = []

    def cleanup_headers(self) -> None:
        super().cleanup_headers()
        if "Content-Length" not in self.headers:  # only the close can tell the client where the body ends
            self.request_handler.close_connection = True
        if self.request_handler.close_connection:
            self.headers["Connection"] = "close"

    def handle_error(self) -> None:
        # The response may be half sent: the client could not tell where it ends on an open connection.
        self.request_handler.close_connection = True
        super().handle_error()

    def log_exception(self, exc_info: Any) -> None:
        log.error("error serving %s", self.environ.get("PATH_INFO", "?") if self.environ else "?", exc_info=exc_info)

    def _write(self, data: bytes) -> None:
        self._pending.append(data)

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            super()._write(data)
        self.stdout.flush()

    def finish_content(self) -> None:
        super().finish_content()
        self._flush()  # a response without a body (HEAD, empty) is only headers, still pending


class _RequestHandler(WSGIRequestHandler):
    """``WSGIRequestHandler`` serving requests on one connection until either side closes it."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()
        while not self.close_connection:
            self.handle_one_request()

    def handle_one_request(self) -> None:
        try:
            self.raw_requestline = self.rfile.readline(65537)
        except (ConnectionError, TimeoutError):  # the client went away between requests
            self.close_connection = True
            return
        if not self.raw_requestline:
            self.close_connection = True
            return
        if len(self.raw_requestline) > 65536:
            self.requestline = self.request_version = self.command = ""
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
            return
        if not self.parse_request():  # the error response is sent
            return
        if self.headers.get("Content-Length", "0").strip() not in ("", "0") or "Transfer-Encoding" in self.headers:
            # The apps read no request bodies: an unread one would be taken for the next request line.
            self.close_connection = True
        handler = _ServerHandler(self.rfile, self.wfile, self.get_stderr(), self.get_environ(), multithread=True)
        handler.request_handler = self
        handler.run(self.server.get_app())  # type: ignore[attr-defined]  # the server is a WSGIServer

    def log_message(self, format: str, *args: Any) -> None:  # the http.server API
        log.debug("%s - %s", self.address_string(), format % args)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _IPv6Server(_ThreadingServer):
    address_family = socket.AF_INET6


def make_server(app: WSGIApp, address: str) -> WSGIServer:
    """Bind ``address`` (see :func:`parse_listen_address`) for ``app``; OSError when it cannot be bound.

    The caller runs ``serve_forever``; :func:`serve` does that from a thread.
    """
    host, port = parse_listen_address(address)
    server_class = _IPv6Server if ":" in host else _ThreadingServer
    server = server_class((host, port), _RequestHandler)
    server.set_app(app)
    return server


def serve(app: WSGIApp, address: str, *, name: str = "http", poll_interval: float = 0.2,
          ) -> tuple[WSGIServer, threading.Thread]:
    """Bind ``address`` and serve ``app`` from a daemon thread named ``name``; stop with :func:`shutdown`.

    Binding happens before this returns, so a taken port fails here, with OSError. ``shutdown``
    waits up to ``poll_interval`` seconds for the serving loop to notice.
    """
    server = make_server(app, address)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": poll_interval}, name=name,
                              daemon=True)
    thread.start()
    return server, thread


def shutdown(server: WSGIServer, thread: threading.Thread | None = None, timeout: float = 10.0) -> None:
    """Stop accepting connections, close the socket and wait for the serving thread.

    Connections already open are served by their own daemon threads until the client closes them.
    """
    server.shutdown()
    server.server_close()
    if thread is not None:
        thread.join(timeout=timeout)
