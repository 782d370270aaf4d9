"""The /metrics HTTP server: a small stdlib ThreadingHTTPServer in its own threads, with
optional TLS and basic auth.

- ``GET /metrics`` (and ``HEAD``): the exposition, gzip-compressed when the client accepts it
  (Prometheus does); ``GET /``: a landing page linking to it; anything else 404; other
  methods 405.
- One thread accepts; each connection gets a thread (HTTP/1.1 keep-alive, so Prometheus
  reuses its connection); the TLS handshake happens in that thread, so a slow or hostile
  client cannot hold up the others; idle connections close after ``IDLE_TIMEOUT``, and at
  most ``MAX_CONNECTIONS`` are open at once.
- Basic auth (``metrics.basic_auth``): every path needs it; a failure is 401 with a
  ``WWW-Authenticate`` challenge. Credentials are checked in constant time
  (``nodenetd.metrics.auth``).
- TLS (``metrics.tls``): TLS 1.2 or newer; with ``client_ca`` clients must show a
  certificate it signed (mutual TLS).

Refusing a non-loopback address without TLS and basic auth is the config check's job
(``nodenetd.config.metrics.check_metrics``), so ``nodenetctl validate`` reports it too.
"""

from __future__ import annotations

import base64
import binascii
import errno
import gzip
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from nodenetd.config.metrics import MetricsSettings, TlsSettings
from nodenetd.metrics.auth import PasswordCheck
from nodenetd.metrics.exposition import CONTENT_TYPE

__all__ = ["MetricsServer"]

log = logging.getLogger("nodenetd.metrics")

IDLE_TIMEOUT = 120.0  # seconds a kept-alive connection may stay silent (a 1-min scrape fits)
MAX_CONNECTIONS = 32  # open connections (one thread each); more are closed at once
_GZIP_MIN = 1024  # bytes below which compressing costs more than it saves

LANDING = b"""<!DOCTYPE html>
<html><head><title>nodenetd</title></head>
<body><h1>nodenetd</h1>
<p>Per-node network tuning and failover. <a href="/metrics">Metrics</a></p>
</body></html>
"""


def tls_context(tls: TlsSettings) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert, tls.key)
    if tls.client_ca:
        context.load_verify_locations(tls.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 64
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], scrape: Callable[[], bytes],
                 auth: PasswordCheck, tls: ssl.SSLContext | None) -> None:
        host = address[0]
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.scrape = scrape
        self.auth = auth
        self.tls = tls
        self._open = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, _Handler)

    def process_request(self, request, client_address) -> None:
        if not self._open.acquire(blocking=False):
            log.warning("metrics: %d connections open; refusing one from %s",
                        MAX_CONNECTIONS, client_address[0])
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._open.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._open.release()

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:  # [::] takes IPv4 too
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def finish_request(self, request, client_address) -> None:  # in the connection's thread
        request.settimeout(IDLE_TIMEOUT)
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        try:
            conn = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.debug("metrics: TLS handshake with %s failed: %s", client_address[0], exc)
            return
        try:
            super().finish_request(conn, client_address)
        finally:
            conn.close()

    def handle_error(self, request, client_address) -> None:
        log.debug("metrics: connection from %s ended with an error", client_address[0],
                  exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "nodenetd"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _not_allowed(self) -> None:
        self._reply(405, b"method not allowed\n", "text/plain; charset=utf-8",
                    {"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    def _serve(self, *, head: bool) -> None:
        if not self._authorized():
            self._reply(401, b"unauthorized\n", "text/plain; charset=utf-8",
                        {"WWW-Authenticate": 'Basic realm="nodenetd", charset="UTF-8"'})
            return
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            body = self.server.scrape()
            headers = {}
            if len(body) >= _GZIP_MIN and _accepts_gzip(self.headers.get("Accept-Encoding")):
                body = gzip.compress(body, compresslevel=1)
                headers["Content-Encoding"] = "gzip"
            self._reply(200, body, CONTENT_TYPE, headers, head=head)
        elif path == "/":
            self._reply(200, LANDING, "text/html; charset=utf-8", head=head)
        else:
            self._reply(404, b"not found; metrics are at /metrics\n",
                        "text/plain; charset=utf-8", head=head)

    def _authorized(self) -> bool:
        auth = self.server.auth
        if not auth:
            return True
        header = self.headers.get("Authorization") or ""
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True
                                                   ).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return bool(sep) and auth.check(user, password)

    def _reply(self, code: int, body: bytes, content_type: str,
               headers: dict[str, str] | None = None, *, head: bool = False) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("metrics: %s %s", self.address_string(), format % args)


def _accepts_gzip(header: str | None) -> bool:
    for part in (header or "").split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() == "gzip":
            return params.replace(" ", "") not in ("q=0", "q=0.0")
    return False


class MetricsServer:
    """``/metrics`` on ``settings.listen``; ``start`` raises OSError/ssl.SSLError when it
    cannot bind or load its certificate."""

    def __init__(self, settings: MetricsSettings, scrape: Callable[[], bytes]) -> None:
        if settings.listen is None:
            raise ValueError("metrics.listen is off")
        self.settings = settings
        self._scrape = scrape
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens (the real port when the config said 0)."""
        if self._server is None:
            raise RuntimeError("not started")
        host, port = self._server.server_address[:2]
        return host, port

    def start(self) -> None:
        settings = self.settings
        tls = tls_context(settings.tls) if settings.tls else None
        host, port = settings.listen  # type: ignore[misc]
        auth = PasswordCheck(settings.basic_auth)
        if host:
            self._server = _Server((host, port), self._scrape, auth, tls)
        else:  # every address: IPv6 and IPv4 on one socket, or IPv4 alone without IPv6
            try:
                self._server = _Server(("::", port), self._scrape, auth, tls)
            except OSError as exc:
                if exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                    raise
                self._server = _Server(("0.0.0.0", port), self._scrape, auth, tls)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.5},
                                        name="nodenetd-metrics-http", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
