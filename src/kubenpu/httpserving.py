"""What the extender's and the webhook's HTTP(S) servers share: connection handling.

- A thread per connection (kube-scheduler and kube-apiserver keep theirs alive), with a
  **read timeout**: a client that stops sending in the middle of a request (or never
  sends one) is dropped after :data:`READ_TIMEOUT` seconds, so stalled clients cannot
  pile up and hold threads; between two requests a kept-alive connection may sit idle for
  :data:`IDLE_TIMEOUT`. The TLS handshake runs in the connection's thread, under the read
  timeout, never in the accept loop.
- Every response leaves in **one write** (up to 64 KiB) on a socket with **TCP_NODELAY**:
  headers and body written apart made Nagle's algorithm hold the second part until the
  client's delayed ACK, 40 ms on every kept-alive request.
- A client that goes away (reset, broken pipe, timeout, TLS failure) costs one debug
  line, not a traceback; any other error is logged with its traceback.
"""

from __future__ import annotations

import logging
import socket
import ssl
import sys
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kubenpu.errors import WireError

log = logging.getLogger(__name__)

#: Seconds a client may leave a request half sent (or a new connection, its TLS handshake
#: or first request unsent) before the connection is dropped.
READ_TIMEOUT = 5.0
#: Seconds a kept-alive connection may wait for its next request.
IDLE_TIMEOUT = 60.0
#: Exceptions that mean the client went away or stalled, not that the server failed.
CLIENT_GONE = (ConnectionError, TimeoutError, ssl.SSLError, EOFError)


class BodyError(WireError):
    """A request body that cannot be read as sent; ``status`` is 400, or 413 when too large."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class HTTPServer(ThreadingHTTPServer):
    """A thread per connection, with read and idle timeouts and optional TLS.

    ``tls``: the TLS context, or a function that returns the one for each new connection
    (a reloader may hand out a new one after a certificate rotation); ``None`` serves
    plain HTTP.
    """

    daemon_threads = True
    # Room for a burst of new connections (after a burst of pod creations, say): the
    # default, 5, drops the SYNs beyond it, which then wait a second to be sent again.
    request_queue_size = 64

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        tls: ssl.SSLContext | Callable[[], ssl.SSLContext] | None = None,
        read_timeout: float = READ_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        if read_timeout <= 0 or idle_timeout <= 0:
            raise ValueError(f"timeouts must be positive, got {read_timeout}, {idle_timeout}")
        if isinstance(tls, ssl.SSLContext):
            context = tls
            self.tls: Callable[[], ssl.SSLContext] | None = lambda: context
        else:
            self.tls = tls
        self.read_timeout = read_timeout
        self.idle_timeout = idle_timeout
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept a connection; with TLS, wrap it without the handshake (see setup)."""
        sock, address = super().get_request()
        sock.settimeout(self.read_timeout)
        if self.tls is None:
            return sock, address
        return self.tls().wrap_socket(
            sock, server_side=True, do_handshake_on_connect=False
        ), address

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One debug line when the client went away; a traceback for anything else."""
        exc = sys.exc_info()[1]
        if isinstance(exc, CLIENT_GONE):
            log.debug("connection from %s ended: %s", _host(client_address), _describe(exc))
        else:
            log.error("connection from %s failed", _host(client_address), exc_info=True)


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive; :meth:`respond` sends a whole response in one write."""

    server: HTTPServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    # Buffered: the status line and headers wait for the body and leave with it (flushed
    # by respond(), or by BaseHTTPRequestHandler after each request).
    wbufsize = 64 * 1024

    def setup(self) -> None:
        """TCP_NODELAY, then the TLS handshake (if any) under the read timeout."""
        self._served = 0
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()
        super().setup()

    def handle_one_request(self) -> None:
        """Wait up to the idle timeout for the next request on a kept-alive connection,
        then read it under the read timeout."""
        if self._served:
            self.connection.settimeout(self.server.idle_timeout)
            try:
                waiting = self.rfile.peek(1)  # type: ignore[attr-defined]
            except TimeoutError:
                self.close_connection = True
                return
            if not waiting:  # the client closed it
                self.close_connection = True
                return
            self.connection.settimeout(self.server.read_timeout)
        self._served += 1
        super().handle_one_request()

    def handle_expect_100(self) -> bool:
        """Send ``100 Continue`` at once (the write buffer would hold it back)."""
        ok = super().handle_expect_100()
        self.wfile.flush()
        return ok

    def log_message(self, format: str, *args: Any) -> None:
        """Request lines and timeouts at debug level: decisions are counted in metrics."""
        log.debug("%s %s", self.address_string(), format % args)

    def respond(self, status: int, content_type: str, body: bytes) -> None:
        """Send a complete response: status line, headers and ``body`` in one write (a
        body larger than the write buffer follows the headers in a second one, which
        TCP_NODELAY sends at once)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def read_body(self, limit: int) -> bytes:
        """The request body of ``Content-Length`` bytes, at most ``limit``.

        :class:`BodyError` when the header is missing, not a whole number or over the
        limit (the connection is then closed: what follows cannot be framed); a client
        that stops sending raises ``TimeoutError``, one that closes ``ConnectionError``.
        """
        length = (self.headers.get("Content-Length") or "").strip()
        if not length.isascii() or not length.isdigit():
            self.close_connection = True
            if not length:
                raise BodyError("a Content-Length header is required")
            raise BodyError(f"Content-Length {length[:40]!r} is not a whole number of bytes")
        size = int(length)
        if size > limit:
            self.close_connection = True
            raise BodyError(f"body of {size} bytes is over the limit of {limit}", 413)
        body = self.rfile.read(size)
        if len(body) < size:
            raise ConnectionResetError(f"client closed after {len(body)} of {size} bytes")
        return body


def _host(address: Any) -> str:
    return str(address[0]) if isinstance(address, tuple) and address else str(address)


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no error"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
