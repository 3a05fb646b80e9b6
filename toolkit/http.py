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
* a listen backlog of :data:`LISTEN_BACKLOG` (a burst of scrapes is not dropped) and a timeout on
  every connection, :data:`CONNECTION_TIMEOUT_SECONDS`, so idle or half-open clients free their thread;
* requests logged at debug through :mod:`logging`, not printed to stderr;
* TLS and basic auth from a ``--web.config.file`` (:mod:`toolkit.webconfig`, passed as ``web``), the
  TLS handshake made in the connection's own thread, so a client that stalls in it stalls nobody else.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Sequence
from http import HTTPStatus
from socketserver import ThreadingMixIn
from typing import Any, Protocol
from wsgiref.headers import Headers
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

#: Pending connections the kernel keeps for the accept loop (socketserver's default is 5).
LISTEN_BACKLOG = 128
#: Seconds a connection may stay silent (between or within requests) before it is closed.
CONNECTION_TIMEOUT_SECONDS = 30.0


class WebLayer(Protocol):
    """What :func:`serve` takes from a ``--web.config.file`` (:class:`toolkit.webconfig.WebConfigFile`).

    A protocol, so this module stays standard library only and imports bcrypt and pydantic for
    nobody who does not ask for TLS or authentication.
    """

    #: Whether connections are TLS: fixed for the life of the listening socket.
    tls: bool

    def wrap(self, app: WSGIApp) -> WSGIApp:
        """``app`` behind the configured checks (basic auth, headers)."""
        ...

    def ssl_context(self) -> ssl.SSLContext:
        """The context for the next connection; raising refuses the connection."""
        ...


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
    scheme = "https" if getattr(server, "tls", None) is not None else "http"
    return f"{scheme}://[{shown}]:{port}" if ":" in shown else f"{scheme}://{shown}:{port}"


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
    #: Seconds any one read or write on the connection may wait (socketserver sets it on the socket):
    #: without it a client that opens a connection and sends nothing, or half a request, holds a
    #: thread forever, and 200 of them hold 200 threads.
    timeout = CONNECTION_TIMEOUT_SECONDS

    def handle(self) -> None:
        self.close_connection = True
        if isinstance(self.connection, ssl.SSLSocket):
            try:
                self.connection.do_handshake()
            except (ssl.SSLError, OSError) as exc:  # no or a bad client certificate, plain HTTP, a scanner
                log.debug("TLS handshake with %s failed: %s", self.client_address[0], exc)
                return
        try:
            self.handle_one_request()
            while not self.close_connection:
                self.handle_one_request()
        except (ConnectionError, TimeoutError, ssl.SSLError) as exc:  # stalled, gone or garbled mid-request: drop it
            log.debug("connection from %s closed: %s", self.client_address[0], exc)
            self.close_connection = True

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

    def get_environ(self) -> dict[str, Any]:
        environ = super().get_environ()
        if isinstance(self.connection, ssl.SSLSocket):
            environ["HTTPS"] = "on"  # wsgiref then sets wsgi.url_scheme to https
        return environ

    def log_message(self, format: str, *args: Any) -> None:  # the http.server API
        log.debug("%s - %s", self.address_string(), format % args)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    # The listen backlog (socketserver's default is 5): connections the kernel completes while the
    # accepting thread is busy. Past it, the kernel drops new SYNs and a burst of scrapes waits
    # for 1 s, 3 s, ... retransmits or times out.
    request_queue_size = LISTEN_BACKLOG
    #: The TLS context of each new connection (:meth:`WebLayer.ssl_context`); None serves plain HTTP.
    tls: Callable[[], ssl.SSLContext] | None = None

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        if self.tls is None:
            return sock, address
        try:
            context = self.tls()
        except Exception as exc:  # a changed web config that does not load: refuse until it does (it is logged)
            sock.close()
            raise OSError(f"connection from {address[0]} refused: {exc}") from exc  # socketserver drops it
        # No handshake here: in the accepting thread, one client that stalls in it would stall every accept.
        return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address


class _IPv6Server(_ThreadingServer):
    address_family = socket.AF_INET6


def make_server(app: WSGIApp, address: str, *, web: WebLayer | None = None) -> WSGIServer:
    """Bind ``address`` (see :func:`parse_listen_address`) for ``app``; OSError when it cannot be bound.

    With ``web`` (a loaded ``--web.config.file``) every request passes its checks and, when it
    configures TLS, every connection is TLS. The caller runs ``serve_forever``; :func:`serve` does
    that from a thread.
    """
    host, port = parse_listen_address(address)
    server_class = _IPv6Server if ":" in host else _ThreadingServer
    server = server_class((host, port), _RequestHandler)
    server.set_app(web.wrap(app) if web is not None else app)
    if web is not None and web.tls:
        server.tls = web.ssl_context
    return server


def serve(app: WSGIApp, address: str, *, name: str = "http", poll_interval: float = 0.2,
          web: WebLayer | None = None) -> tuple[WSGIServer, threading.Thread]:
    """Bind ``address`` and serve ``app`` from a daemon thread named ``name``; stop with :func:`shutdown`.

    Binding happens before this returns, so a taken port fails here, with OSError. ``shutdown``
    waits up to ``poll_interval`` seconds for the serving loop to notice. ``web``: see :func:`make_server`.
    """
    server = make_server(app, address, web=web)
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
