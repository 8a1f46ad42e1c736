"""The API's HTTP server: gevent's WSGI server, one greenlet per connection.

Why gevent: an event stream or a slow download waits on its socket, not on a thread, so
hundreds can be open while short requests are still answered at once. And gevent's server
calls the app as soon as the request head is parsed and sends ``100 Continue`` only when
the app first reads the body, so a missing token or an oversized ``Content-Length`` is
answered (401/413) before any body byte is read, and never after a ``100 Continue``.

What this module adds to gevent's server, for hostile or clumsy clients:

- deadlines: a connection closes when idle (no request, or a stalled read or write) for
  ``idle_timeout_s``; once a request starts, its whole head must arrive within
  ``head_timeout_s`` (a slow-header client gets a 408, then the connection closes). gevent
  applies the socket timeout to each write of a download chunk (1 MiB) as a whole, so a
  client reading slower than 1 MiB per ``idle_timeout_s`` (17 KiB/s at the default) is
  cut off too: a slow-read attack holds a connection for a minute at most;
- a bound on open connections (more wait in the listen backlog);
- the server's own errors (400, 408, 414, 431, 500) in the API's JSON error format;
- a body the app answered without reading is read only up to :data:`DRAIN_BYTES` (so
  an ordinary client that sends before it reads still sees the answer), then the
  connection is closed rather than reading gigabytes nobody will use.

The process must be monkey-patched before anything else is imported: ``qat serve`` runs
:mod:`service.server.main`, which does that first, then :func:`run`.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
from dataclasses import dataclass
from http.client import HTTPException
from typing import Any

import gevent
from gevent.pool import Pool
from gevent.pywsgi import WSGIHandler, WSGIServer

log = logging.getLogger(__name__)

# what a body the app did not read may still cost, before the connection is closed instead
DRAIN_BYTES = 1 << 20
DRAIN_S = 2.0
# requests in flight get this long to finish on SIGTERM before the process exits
SHUTDOWN_GRACE_S = 10.0
LISTEN_BACKLOG = 2048
# the longest request line and header line gevent reads (its MAX_REQUEST_LINE)
MAX_LINE = 8192
# the whole request head (line and headers), and the header count http.client allows
MAX_HEAD_BYTES = 64 << 10
HEADERS_OVER_LIMIT = f"the request head is over its limit of {MAX_HEAD_BYTES} bytes and 100 headers"


@dataclass(frozen=True)
class ServerLimits:
    """What one connection may hold: see the module docstring."""

    max_connections: int
    idle_timeout_s: float
    head_timeout_s: float


class _ErrorResponse(ValueError):
    """A request the server itself refuses, with the status and error code to answer."""

    def __init__(self, status: str, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.field = status, code, field


def _error_body(code: str, message: str, field: str | None = None) -> bytes:
    """The API's error format (``service.api.errors``), for answers made below the app."""
    return json.dumps({"error": {"code": code, "message": message, "field": field}}).encode()


def _raw_response(status: str, code: str, message: str, field: str | None = None) -> bytes:
    body = _error_body(code, message, field)
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nConnection: close\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode("latin-1") + body


class _HeadReader:
    """The connection's reader while headers are parsed, refusing a head over ``budget`` bytes."""

    def __init__(self, stream: Any, budget: int) -> None:
        self.stream, self.budget = stream, budget

    def readline(self, limit: int = -1) -> bytes:
        line: bytes = self.stream.readline(self.budget + 1 if limit < 0 else min(limit, self.budget + 1))
        self.budget -= len(line)
        if self.budget < 0:
            raise _ErrorResponse("431 Request Header Fields Too Large", "TOO_LARGE", HEADERS_OVER_LIMIT, "headers")
        return line


class QatHandler(WSGIHandler):
    """gevent's handler with the deadlines, the JSON errors and the bounded drain."""

    server: QatServer
    rfile: Any  # the connection's buffered reader, or a _HeadReader while headers are parsed

    def read_requestline(self) -> str:
        """Wait up to the idle timeout for a request to start, then give its head the head timeout."""
        # the socket's own timeout (set in QatServer.handle) bounds this wait
        if not self.rfile.peek(1):
            return ""
        self._head_deadline = gevent.Timeout(self.server.limits.head_timeout_s)
        self._head_deadline.start()
        try:
            line: str = self._within_head_deadline(super().read_requestline)
        except BaseException:
            self._head_deadline.close()
            raise
        if len(line) >= MAX_LINE:
            self._head_deadline.close()
            raise _ErrorResponse(
                "414 URI Too Long", "TOO_LARGE", f"the request line is over {MAX_LINE} bytes; shorten the URL"
            )
        return line

    def read_request(self, raw_requestline: str) -> bool:
        stream, self.rfile = self.rfile, _HeadReader(self.rfile, MAX_HEAD_BYTES - len(raw_requestline))
        try:
            ok: bool = self._within_head_deadline(super().read_request, raw_requestline)
            return ok
        except HTTPException as error:  # http.client's "got more than 100 headers"
            raise _ErrorResponse(
                "431 Request Header Fields Too Large", "TOO_LARGE", HEADERS_OVER_LIMIT, "headers"
            ) from error
        finally:
            self.rfile = stream
            self._head_deadline.close()

    def _within_head_deadline(self, read: Any, *args: Any) -> Any:
        try:
            return read(*args)
        except gevent.Timeout as expired:
            if expired is not self._head_deadline:
                raise
            message = f"the request head did not arrive within {self.server.limits.head_timeout_s:g} s"
            raise _ErrorResponse("408 Request Timeout", "REQUEST_TIMEOUT", message) from None

    def handle_one_request(self) -> Any:
        try:
            return super().handle_one_request()
        except _ErrorResponse as refused:  # raised by read_requestline, which gevent does not guard
            return self._refuse(refused)

    def _handle_client_error(self, ex: Exception) -> tuple[str, bytes]:
        if isinstance(ex, _ErrorResponse):
            return self._refuse(ex)
        return "400", _raw_response("400 Bad Request", "INVALID_ARGUMENT", f"not a valid HTTP request: {ex}")

    def _refuse(self, refused: _ErrorResponse) -> tuple[str, bytes]:
        log.info("refused a request from %s: %s", self.client_address[0], refused)
        return refused.status.split()[0], _raw_response(refused.status, refused.code, str(refused), refused.field)

    def handle_error(self, t: type[BaseException], v: BaseException, tb: Any) -> None:
        """A socket that timed out is a client that stopped reading or sending: close it, quietly."""
        if issubclass(t, TimeoutError):
            idle_s = self.server.limits.idle_timeout_s
            log.info("closed a connection from %s: no progress for %g s", self.client_address[0], idle_s)
            self.close_connection = True
            return
        super().handle_error(t, v, tb)

    def _send_error_response_if_possible(self, error_code: int) -> None:
        """gevent's own 400/500 answers, in JSON."""
        if self.response_length:
            self.close_connection = True
            return
        if error_code == 500:
            status, code, message = "500 Internal Server Error", "INTERNAL", "internal error; safe to retry"
        else:
            status, code, message = "400 Bad Request", "INVALID_ARGUMENT", "the request body is not valid HTTP framing"
        body = _error_body(code, message)
        headers = [("Content-Type", "application/json"), ("Connection", "close"), ("Content-Length", str(len(body)))]
        try:
            self.start_response(status, headers)
            self.write(body)
        except OSError:
            self.close_connection = True

    def run_application(self) -> None:
        super().run_application()
        self._drain_unread_body()

    def _drain_unread_body(self) -> None:
        """Read what is left of the body up to a bound; past it, close instead of reading on."""
        body = self.wsgi_input
        if body is None or (body.position >= (body.content_length or 0) and not body.chunked_input):
            return
        if body.socket is not None:  # the client waits for a 100 Continue it will not get: no body comes
            self._close_unread(body)
            return
        body.send_100_continue_enabled = False
        drained = 0
        with gevent.Timeout(DRAIN_S, False):
            while drained < DRAIN_BYTES:
                chunk = body.read(64 << 10)
                if not chunk:
                    return
                drained += len(chunk)
        self._close_unread(body)

    def _close_unread(self, body: Any) -> None:
        self.close_connection = True
        # gevent's own flag for "the connection will be closed: do not read the rest"
        body._chunked_input_error = True


class QatServer(WSGIServer):
    """gevent's WSGI server with a bounded connection pool and per-socket idle timeouts."""

    handler_class = QatHandler

    def __init__(self, address: tuple[str, int], app: Any, limits: ServerLimits) -> None:
        listener = socket.create_server(address, backlog=LISTEN_BACKLOG, reuse_port=False)
        super().__init__(listener, app, spawn=Pool(limits.max_connections), log=None)
        self.limits = limits

    def handle(self, sock: socket.socket, address: Any) -> None:
        sock.settimeout(self.limits.idle_timeout_s)
        # answers go out as written: Nagle's algorithm held each keep-alive answer for the
        # client's delayed ACK (40 ms a request on Linux)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().handle(sock, address)


def run(app: Any, host: str, port: int, limits: ServerLimits) -> None:
    """Serve ``app`` until SIGINT or SIGTERM; on SIGTERM, requests in flight get a grace period."""
    server = QatServer((host, port), app, limits)
    gevent.signal_handler(signal.SIGTERM, server.stop, SHUTDOWN_GRACE_S)
    server.serve_forever()
