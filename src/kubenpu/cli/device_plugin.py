"""``kubenpu device-plugin``: the node daemon speaking the kubelet device plugin API."""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated, Any

import typer

from kubenpu.errors import ConfigError, KubeNpuError


def device_plugin(
    config: str | None = typer.Option(
        None, "--config", help="YAML config file (version: v1, keys as the flags)."
    ),
    kubelet_dir: str | None = typer.Option(
        None, "--kubelet-dir", help="Device-plugins dir (default /var/lib/kubelet/device-plugins)."
    ),
    backend: str | None = typer.Option(
        None, "--backend", help="auto|mock|devfs|nvml|ascend (default auto)."
    ),
    resource: str | None = typer.Option(
        None, "--resource", help="Whole-device resource (default aliyun.com/npu)."
    ),
    sharing: bool | None = typer.Option(
        None, "--sharing/--no-sharing", help="Also serve aliyun.com/npu-core (100 per device)."
    ),
    memory_resource: bool | None = typer.Option(
        None, "--memory-resource/--no-memory-resource", help="With sharing: aliyun.com/npu-mem."
    ),
    node_name: str | None = typer.Option(None, "--node-name", help="Node name (env NODE_NAME)."),
    kubeconfig: str | None = typer.Option(
        None, "--kubeconfig", help="For sharing: kubeconfig (default: in-cluster)."
    ),
    mock_devices: int | None = typer.Option(None, "--mock-devices", help="mock: device count."),
    mock_health_dir: str | None = typer.Option(
        None, "--mock-health-dir", help="mock: DIR/unhealthy-<id> marks a device unhealthy."
    ),
    mock_dev_dir: str | None = typer.Option(
        None, "--mock-dev-dir", help="mock: create real device nodes DIR/mock-npu<i>."
    ),
    mock_numa_nodes: int | None = typer.Option(None, "--mock-numa-nodes", help="mock: NUMA nodes."),
    mock_memory_gib: int | None = typer.Option(
        None, "--mock-memory-gib", help="mock: GiB per device."
    ),
    devfs_glob: str | None = typer.Option(None, "--devfs-glob", help="devfs: device node glob."),
    devfs_memory_gib: int | None = typer.Option(
        None, "--devfs-memory-gib", help="devfs: GiB per device."
    ),
    group_size: int | None = typer.Option(
        None, "--group-size", help="Devices per interconnect group (0: by NUMA node)."
    ),
    control_devices: Annotated[
        list[str] | None,
        typer.Option(
            "--control-device", help="Extra device node for every container (repeatable)."
        ),
    ] = None,
    mounts: Annotated[
        list[str] | None,
        typer.Option("--mount", help="HOST[:CONTAINER][:ro|rw] for every container (repeatable)."),
    ] = None,
    env_var: str | None = typer.Option(
        None, "--env-var", help="Override the backend's visible-devices variable."
    ),
    cdi: bool | None = typer.Option(None, "--cdi/--no-cdi", help="Return CDI device names."),
    cdi_kind: str | None = typer.Option(None, "--cdi-kind", help="CDI vendor/class."),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", help="Prometheus port, 0 = off (default 0)."
    ),
    metrics_address: str | None = typer.Option(
        None, "--metrics-address", help="Address the metrics port binds (default 0.0.0.0)."
    ),
    health_interval: float | None = typer.Option(
        None, "--health-interval", help="Seconds between health checks (default 0.5)."
    ),
    log_level: str | None = typer.Option(None, "--log-level", help="debug|info|warning|error."),
) -> None:
    """Run the NPU device plugin for the kubelet (device plugin API v1beta1).

    Every flag can also be set in the YAML file (same key) or as KUBENPU_DP_<KEY>;
    precedence: flags, then environment, then file.
    """
    from kubenpu.deviceplugin.config import resolve_config

    given: dict[str, Any] = {
        "kubelet-dir": kubelet_dir,
        "backend": backend,
        "resource": resource,
        "sharing": sharing,
        "memory-resource": memory_resource,
        "node-name": node_name,
        "kubeconfig": kubeconfig,
        "mock-devices": mock_devices,
        "mock-health-dir": mock_health_dir,
        "mock-dev-dir": mock_dev_dir,
        "mock-numa-nodes": mock_numa_nodes,
        "mock-memory-gib": mock_memory_gib,
        "devfs-glob": devfs_glob,
        "devfs-memory-gib": devfs_memory_gib,
        "group-size": group_size,
        "control-devices": control_devices or None,
        "mounts": mounts or None,
        "env-var": env_var,
        "cdi": cdi,
        "cdi-kind": cdi_kind,
        "metrics-port": metrics_port,
        "metrics-address": metrics_address,
        "health-interval": health_interval,
        "log-level": log_level,
    }
    flags = {k: v for k, v in given.items() if v is not None}
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    log = logging.getLogger("kubenpu.deviceplugin")
    try:
        resolved = resolve_config(flags, os.environ, config or os.environ.get("KUBENPU_DP_CONFIG"))
        logging.getLogger().setLevel(resolved.log_level.upper())
        log.info("resolved config: %s", resolved.as_dict())
        from kubenpu.deviceplugin.daemon import DevicePluginDaemon

        daemon = DevicePluginDaemon(resolved)
    except KubeNpuError as err:
        log.error("%s", err)
        raise typer.Exit(code=2 if isinstance(err, ConfigError) else 1) from None
    daemon.run()


if __name__ == "__main__":  # python -m kubenpu.cli.device_plugin: the daemon alone
    typer.run(device_plugin)
