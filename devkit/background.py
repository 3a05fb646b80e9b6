"""A test double's HTTP server on a background thread: the lifecycle both fakes share.

:class:`devkit.fakeprom.FakePrometheus` and :class:`devkit.faultproxy.FaultProxy` answer
requests their own way; listening on 127.0.0.1, stopping cleanly (and cutting short any reply
that is waiting on :attr:`BackgroundServer.release`), and the context manager are the same.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self


class BackgroundServer:
    """Serves ``handler`` (a request handler class with an ``owner`` attribute) on a thread.

    ``port`` 0 picks a free one; after :meth:`stop`, :meth:`start` listens on the same port again.
    """

    handler: ClassVar[type[BaseHTTPRequestHandler]]
    thread_name: ClassVar[str] = "fake"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, prefix: str = "") -> None:
        self.host = host
        self.port = port
        self.prefix = prefix.rstrip("/")
        #: Set while stopping: a reply that hangs or trickles waits on it and gives up at once.
        self.release = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.prefix}"

    def start(self) -> Self:
        self.release.clear()
        handler: Any = type(self.handler.__name__, (self.handler,), {"owner": self})
        server = ThreadingHTTPServer((self.host, self.port), handler)
        server.daemon_threads = True
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"{self.thread_name}-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every waiting reply short."""
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
