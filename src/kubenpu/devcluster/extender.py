"""The scheduler extender in a dev cluster: its identity, process and kube-scheduler config.

``kubenpu scheduler`` runs as one more managed process on 127.0.0.1 (plain HTTP on
loopback) with its own client identity (``kubenpu-scheduler``, granted exactly
``kubenpu.extender.config.RBAC_RULES``), and kube-scheduler is started with a
KubeSchedulerConfiguration that calls it for every pod asking for NPUs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

from kubenpu.devcluster import controlplane, pki, rbac
from kubenpu.devcluster.controlplane import Paths, wait_http_ok
from kubenpu.extender.config import RBAC_RULES, scheduler_configuration

#: The process's name in state.json and its log.
PROCESS = "kubenpu-scheduler"
#: The extender's user name towards the API server (client certificate CN).
USER = "kubenpu-scheduler"


def scheduler_config_path(paths: Paths) -> Path:
    """kube-scheduler's KubeSchedulerConfiguration file."""
    return paths.root / "kube-scheduler-config.yaml"


def _kubeconfig(paths: Paths) -> Path:
    return paths.root / f"{PROCESS}.kubeconfig"


def write_files(paths: Paths, ca: pki.CertificateAuthority, server: str, port: int) -> None:
    """The extender's kubeconfig and kube-scheduler's configuration calling it."""
    identity = ca.issue(USER, client=True)
    pki.write_secret(
        _kubeconfig(paths),
        controlplane.kubeconfig_yaml(server, ca.cert_pem, identity, USER).encode(),
    )
    config = scheduler_configuration(f"http://127.0.0.1:{port}", str(paths.scheduler_kubeconfig))
    scheduler_config_path(paths).write_text(yaml.safe_dump(config, sort_keys=False))


def argv(kubenpu: Sequence[str], paths: Paths, port: int) -> list[str]:
    """The ``kubenpu scheduler`` command line."""
    return [
        *kubenpu,
        "scheduler",
        "--address=127.0.0.1",
        f"--port={port}",
        f"--kubeconfig={_kubeconfig(paths)}",
    ]


def grant(paths: Paths) -> None:
    """Give the extender's user exactly ``RBAC_RULES``."""
    rbac.grant_user(paths, USER, rules=RBAC_RULES)


def wait_ready(port: int, deadline: float) -> None:
    """Poll the extender's /readyz until 200 (synced with the API server)."""
    wait_http_ok("kubenpu scheduler", port, "/readyz", None, deadline)
