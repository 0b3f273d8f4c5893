"""The HTTPS server of ``kubenpu webhook``: TLS, routing, metrics; no admission logic.

Routes: ``POST /validate`` and ``POST /mutate`` (AdmissionReview v1), ``GET /healthz``,
``GET /readyz`` and ``GET /metrics`` (Prometheus). The certificate and key are files (a
mounted Secret); every new connection checks whether they changed and, if so, loads them
again, so a rotated certificate is served without a restart. A pair that fails to load
(half written) leaves the previous one in use. Connections: see :mod:`kubenpu.httpserving`
(handshake and read timeout per connection, one write per response, quiet disconnects).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from kubenpu.errors import WireError
from kubenpu.httpserving import IDLE_TIMEOUT, READ_TIMEOUT, BodyError, Handler, HTTPServer
from kubenpu.webhook.admission import Admission
from kubenpu.webhook.registration import MUTATE_PATH, VALIDATE_PATH
from kubenpu.webhook.review import (
    AdmissionReviewRequest,
    AdmissionReviewResponse,
    parse_review,
)

log = logging.getLogger(__name__)

#: Largest body accepted; kube-apiserver caps a request at 3 MiB, a review holds it once.
MAX_BODY = 4 * 1024 * 1024


class WebhookMetrics:
    """Requests by webhook and result, latency, certificate reloads and expiry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "kubenpu_webhook_requests",
            "Admission requests answered, by webhook and result "
            "(allowed, patched, denied, malformed, error).",
            ["webhook", "result"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "kubenpu_webhook_request_seconds",
            "Time to answer one admission request.",
            ["webhook"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0),
            registry=self.registry,
        )
        self.reloads = Counter(
            "kubenpu_webhook_certificate_reloads",
            "Serving certificate loads after a change on disk, by result (ok, failed).",
            ["result"],
            registry=self.registry,
        )
        self.expiry = Gauge(
            "kubenpu_webhook_certificate_expiry_timestamp_seconds",
            "When the serving certificate in use expires (Unix time).",
            registry=self.registry,
        )


class CertificateReloader:
    """The TLS context for the certificate and key files, reloaded when they change."""

    def __init__(self, cert: Path, key: Path, metrics: WebhookMetrics) -> None:
        self.cert = cert
        self.key = key
        self._metrics = metrics
        self._lock = threading.Lock()
        self._stamp = self._fingerprint()
        # The first load must succeed: there is nothing older to fall back to.
        self._context = self._load()

    def _fingerprint(self) -> tuple[tuple[int, int, int], ...]:
        # Secret volumes swap a symlink on update; stat follows it to the new file.
        stats = (os.stat(self.cert), os.stat(self.key))
        return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in stats)

    def _load(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert, self.key)
        pem = self.cert.read_bytes()
        expires = x509.load_pem_x509_certificate(pem).not_valid_after_utc
        self._metrics.expiry.set(expires.timestamp())
        log.info("serving certificate %s loaded, expires %s", self.cert, expires.isoformat())
        return context

    def context(self) -> ssl.SSLContext:
        """The context for a new connection: the files' current pair, or the last good one."""
        with self._lock:
            try:
                stamp = self._fingerprint()
            except OSError as exc:  # mid-rotation: a file is briefly missing
                log.warning("serving certificate not readable, keeping the loaded one: %s", exc)
                return self._context
            if stamp != self._stamp:
                try:
                    self._context = self._load()
                except (OSError, ssl.SSLError, ValueError) as exc:
                    self._metrics.reloads.labels("failed").inc()
                    log.warning("new serving certificate not loadable, keeping the old: %s", exc)
                else:
                    self._metrics.reloads.labels("ok").inc()
                # Either way, do not retry the same files on every connection.
                self._stamp = stamp
            return self._context


class _Server(HTTPServer):
    def __init__(
        self,
        address: tuple[str, int],
        tls: CertificateReloader,
        app: WebhookApp,
        *,
        read_timeout: float,
        idle_timeout: float,
    ) -> None:
        self.app = app
        super().__init__(
            address,
            _Handler,
            tls=tls.context,
            read_timeout=read_timeout,
            idle_timeout=idle_timeout,
        )


class WebhookApp:
    """Routes requests to the admission rules and counts them."""

    def __init__(self, admission: Admission, metrics: WebhookMetrics) -> None:
        self.admission = admission
        self.metrics = metrics
        self.routes: dict[str, Callable[[AdmissionReviewRequest], AdmissionReviewResponse]] = {
            VALIDATE_PATH: admission.validate,
            MUTATE_PATH: admission.mutate,
        }

    def review(self, path: str, body: bytes) -> tuple[int, str, bytes]:
        """(status, content type, body) for a POST of ``body`` to ``path``."""
        webhook = path.strip("/")
        started = time.perf_counter()
        try:
            review = parse_review(body)
            answer = self.routes[path](review)
        except WireError as exc:
            self.metrics.requests.labels(webhook, "malformed").inc()
            log.warning("%s: malformed AdmissionReview: %s", path, exc)
            return 400, "text/plain", f"malformed AdmissionReview: {exc}\n".encode()
        except Exception:
            self.metrics.requests.labels(webhook, "error").inc()
            log.exception("%s: failed to answer", path)
            return 500, "text/plain", b"internal error; see the webhook's log\n"
        response = answer["response"]
        if not response["allowed"]:
            result = "denied"
        elif "patch" in response:
            result = "patched"
        else:
            result = "allowed"
        self.metrics.requests.labels(webhook, result).inc()
        self.metrics.seconds.labels(webhook).observe(time.perf_counter() - started)
        return 200, "application/json", json.dumps(answer).encode()


class _Handler(Handler):
    server: _Server
    server_version = "kubenpu-webhook"
    sys_version = ""

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.respond(status, content_type, body)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/healthz", "/readyz", "/livez"):
            # Serving at all means the certificate loaded and the rules are wired up; the
            # lookups are not a condition, as the rules work (leniently) without them.
            self._send(200, "text/plain", b"ok\n")
        elif path == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, generate_latest(self.server.app.metrics.registry))
        else:
            self._send(404, "text/plain", b"not found\n")

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]  # kube-apiserver adds ?timeout=5s
        if path not in self.server.app.routes:
            self._drain()
            self._send(404, "text/plain", b"not found; POST to /validate or /mutate\n")
            return
        content_type = self.headers.get("Content-Type", "")
        try:
            body = self.read_body(MAX_BODY)
        except BodyError as exc:
            # Answered at once: a negative or missing length must not wait for more bytes.
            self._send(exc.status, "text/plain", f"{exc}\n".encode())
            return
        if content_type.split(";")[0].strip() != "application/json":
            msg = f"malformed AdmissionReview: Content-Type {content_type!r}, want application/json"
            self._send(400, "text/plain", (msg + "\n").encode())
            return
        self._send(*self.server.app.review(path, body))

    def _drain(self) -> None:
        if not self.headers.get("Content-Length"):
            return  # no body
        # On a BodyError read_body closes the connection: what follows cannot be framed.
        with contextlib.suppress(BodyError):
            self.read_body(MAX_BODY)


class WebhookServer:
    """The HTTPS server on ``host:port`` (port 0: any free one), serving in a thread;
    ``read_timeout``, ``idle_timeout``: see :mod:`kubenpu.httpserving`."""

    def __init__(
        self,
        admission: Admission,
        cert: Path,
        key: Path,
        *,
        host: str = "0.0.0.0",
        port: int = 8443,
        metrics: WebhookMetrics | None = None,
        read_timeout: float = READ_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.metrics = metrics or WebhookMetrics()
        self.tls = CertificateReloader(cert, key, self.metrics)
        self.app = WebhookApp(admission, self.metrics)
        self._server = _Server(
            (host, port),
            self.tls,
            self.app,
            read_timeout=read_timeout,
            idle_timeout=idle_timeout,
        )
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="webhook", daemon=True
        )
        self._thread.start()
        host, port = self._server.server_address[:2]
        log.info("webhook serving https://%s:%d (%s, %s)", host, port, VALIDATE_PATH, MUTATE_PATH)

    def stop(self) -> None:
        """Stop accepting, finish, and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
