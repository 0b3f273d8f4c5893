"""``kubenpu webhook``: the admission webhook's HTTPS server (see docs/webhook.md)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

_LEVELS = ("debug", "info", "warning", "error")


def webhook(
    tls_cert_file: Annotated[
        Path, typer.Option("--tls-cert-file", help="Serving certificate (PEM); reloaded on change.")
    ],
    tls_private_key_file: Annotated[
        Path,
        typer.Option("--tls-private-key-file", "--tls-key-file", help="Its private key (PEM)."),
    ],
    listen_address: str = typer.Option(
        "0.0.0.0", "--listen-address", "--host", help="Address to listen on."
    ),
    port: int = typer.Option(8443, "--port", help="HTTPS port (/validate, /mutate, probes)."),
    kubeconfig: str = typer.Option(
        "",
        "--kubeconfig",
        help="Kubeconfig for reading Nodes and Namespaces [default: in-cluster].",
    ),
    node_cache_seconds: float = typer.Option(
        30.0, "--node-cache-seconds", help="How long a read of the NPU nodes is reused."
    ),
    namespace_cache_seconds: float = typer.Option(
        10.0, "--namespace-cache-seconds", help="How long a read of a Namespace is reused."
    ),
    metrics_port: int = typer.Option(
        0, "--metrics-port", help="Also serve /metrics over plain HTTP here (0: only on HTTPS)."
    ),
    log_level: str = typer.Option("info", "--log-level", help=f"One of {', '.join(_LEVELS)}."),
) -> None:
    """Serve the validating (/validate) and mutating (/mutate) admission webhook over HTTPS."""
    if log_level not in _LEVELS:
        typer.echo(f"error: --log-level: one of {', '.join(_LEVELS)}, got {log_level!r}", err=True)
        raise typer.Exit(code=2)
    for flag, value in (
        ("--node-cache-seconds", node_cache_seconds),
        ("--namespace-cache-seconds", namespace_cache_seconds),
    ):
        if value < 0:
            typer.echo(f"error: {flag}: must be 0 or more, got {value}", err=True)
            raise typer.Exit(code=2)
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    log = logging.getLogger("kubenpu.webhook")
    from prometheus_client import start_http_server

    from kubenpu.webhook.admission import Admission
    from kubenpu.webhook.lookups import kubernetes_lookups
    from kubenpu.webhook.server import WebhookServer

    try:
        nodes, namespaces = kubernetes_lookups(
            kubeconfig, node_ttl=node_cache_seconds, namespace_ttl=namespace_cache_seconds
        )
        server = WebhookServer(
            Admission(nodes, namespaces),
            tls_cert_file,
            tls_private_key_file,
            host=listen_address,
            port=port,
        )
    except Exception as err:  # bad certificate, port taken, no credentials: one line, exit 1
        log.error("cannot start: %s: %s", type(err).__name__, err)
        raise typer.Exit(code=1) from None
    if metrics_port:
        start_http_server(metrics_port, addr=listen_address, registry=server.metrics.registry)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    server.start()
    stopping.wait()
    log.info("stopping")
    server.stop()
