"""``kubenpu dra-driver``: the node daemon serving NPUs through DRA (resource.k8s.io/v1)."""

from __future__ import annotations

import logging
import os
import sys

import typer

from kubenpu import names
from kubenpu.errors import ConfigError, KubeNpuError


def dra_driver(
    driver: str = typer.Option(names.DRA_DRIVER, "--driver", help="DRA driver name."),
    node_name: str | None = typer.Option(None, "--node-name", help="Node name (env NODE_NAME)."),
    kubeconfig: str = typer.Option("", "--kubeconfig", help="Kubeconfig (default: in-cluster)."),
    kubelet_dir: str = typer.Option(
        "/var/lib/kubelet", "--kubelet-dir", help="The kubelet's root dir, as this process sees it."
    ),
    kubelet_own_dir: str = typer.Option(
        "",
        "--kubelet-own-dir",
        help="The same dir as the kubelet sees it (when the driver runs outside its mount "
        "namespace; default: --kubelet-dir).",
    ),
    cdi_dir: str = typer.Option("/var/run/cdi", "--cdi-dir", help="The runtime's CDI spec dir."),
    backend: str = typer.Option("auto", "--backend", help="auto|mock|devfs|nvml|ascend."),
    mock_devices: int = typer.Option(4, "--mock-devices", help="mock: device count."),
    mock_health_dir: str = typer.Option(
        "", "--mock-health-dir", help="mock: DIR/unhealthy-<id> marks a device unhealthy."
    ),
    mock_dev_dir: str = typer.Option(
        "", "--mock-dev-dir", help="mock: create real device nodes DIR/mock-npu<i>."
    ),
    mock_numa_nodes: int = typer.Option(2, "--mock-numa-nodes", help="mock: NUMA nodes."),
    mock_memory_gib: int = typer.Option(16, "--mock-memory-gib", help="mock: GiB per device."),
    devfs_glob: str = typer.Option("/dev/alinpu*", "--devfs-glob", help="devfs: node glob."),
    devfs_memory_gib: int = typer.Option(0, "--devfs-memory-gib", help="devfs: GiB per device."),
    group_size: int = typer.Option(
        0, "--group-size", help="Devices per interconnect group (0: by NUMA node)."
    ),
    health_interval: float = typer.Option(
        0.5, "--health-interval", help="Seconds between health checks."
    ),
    resync_interval: float = typer.Option(
        5.0, "--resync-interval", help="Seconds between ResourceSlice checks."
    ),
    v1beta1: bool = typer.Option(
        True, "--v1beta1/--no-v1beta1", help="Also serve the v1beta1 DRA service."
    ),
    health_service: bool = typer.Option(
        True, "--health-service/--no-health-service", help="Serve DRAResourceHealth v1."
    ),
    log_level: str = typer.Option("info", "--log-level", help="debug|info|warning|error."),
) -> None:
    """Run the NPU DRA driver: ResourceSlice, kubelet plugin registration, DRA gRPC, CDI."""
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    log = logging.getLogger("kubenpu.dra")
    try:
        from kubenpu.deviceplugin.config import resolve_config
        from kubenpu.dra.daemon import DraDriver, DraDriverConfig

        backend_config = resolve_config(
            {
                "backend": backend,
                "mock-devices": mock_devices,
                "mock-health-dir": mock_health_dir,
                "mock-dev-dir": mock_dev_dir,
                "mock-numa-nodes": mock_numa_nodes,
                "mock-memory-gib": mock_memory_gib,
                "devfs-glob": devfs_glob,
                "devfs-memory-gib": devfs_memory_gib,
                "group-size": group_size,
            },
            {},
        )
        config = DraDriverConfig(
            node_name=node_name or os.environ.get("NODE_NAME", ""),
            driver=driver,
            kubeconfig=kubeconfig,
            kubelet_dir=kubelet_dir,
            kubelet_own_dir=kubelet_own_dir,
            cdi_dir=cdi_dir,
            backend=backend_config,
            health_interval=health_interval,
            resync_interval=resync_interval,
            v1beta1=v1beta1,
            health_service=health_service,
        )
        daemon = DraDriver(config)
    except KubeNpuError as err:
        log.error("%s", err)
        raise typer.Exit(code=2 if isinstance(err, ConfigError) else 1) from None
    daemon.run()


if __name__ == "__main__":  # python -m kubenpu.cli.dra_driver: the daemon alone
    typer.run(dra_driver)
