"""CDI specs for prepared claims: what the container runtime injects. Pure, no I/O.

One spec per prepared claim, kind ``k8s.<driver>/claim`` (the reference driver's
convention), one CDI device per allocation result named ``<claim uid>-<device>``, with
``-<share id>`` when the result is a share of a device that allows several allocations
(so two claims, or two requests of one claim, sharing ``npu-0`` never name one CDI device
twice). Each carries its device nodes and the environment its opaque config gives. The
spec-wide edits (applied once when any device of the spec is injected) carry the claim's
environment, as the device plugin sets it: ``NPU_VISIBLE_DEVICES`` and the backend's own
variable with the claim's device indices, and for a share the device plugin's shared-path
variables: ``NPU_CORE_LIMIT`` (percent of the device's compute) and, when the claim asked
for memory, ``NPU_MEM_LIMIT_GIB``; with several devices each lists one value per device,
aligned with ``NPU_VISIBLE_DEVICES`` (a whole device counts as 100 and its memory). Plus
the backend's control devices and mounts. containerd (``enable_cdi``) reads the spec from
its CDI directory when the kubelet names the devices in the container's CDI devices.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from kubenpu.deviceplugin.devices import MountSpec
from kubenpu.names import (
    CORE_UNITS_PER_DEVICE,
    ENV_CORE_LIMIT,
    ENV_MEM_LIMIT_GIB,
    ENV_VISIBLE_DEVICES,
)

#: The CDI spec version written (device nodes with hostPath need 0.5.0 or later).
CDI_VERSION: Final = "0.6.0"
#: The class part of the CDI kind.
CDI_CLASS: Final = "claim"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")


#: The variables the spec sets itself (besides the backend's own): no config sets them.
DRIVER_ENV: Final = (ENV_VISIBLE_DEVICES, ENV_CORE_LIMIT, ENV_MEM_LIMIT_GIB)


@dataclass(frozen=True, slots=True)
class DeviceNodes:
    """One allocation result as the spec gives it: the device's name, index and (host,
    container) device nodes; its share id, the compute (percent) and memory (MiB, 0: none
    asked) it consumes, the device's whole memory, and the env its config adds."""

    name: str
    index: int
    nodes: tuple[tuple[str, str], ...]
    share_id: str = ""
    compute: int = CORE_UNITS_PER_DEVICE
    memory_mib: int = 0
    device_memory_mib: int = 0
    env: tuple[tuple[str, str], ...] = ()


def cdi_kind(driver: str) -> str:
    """``vendor/class`` of the specs ``driver`` writes."""
    return f"k8s.{driver}/{CDI_CLASS}"


def cdi_device_name(claim_uid: str, device: str, share_id: str = "") -> str:
    """The CDI device (within the kind) of one device (one share of it) of one claim."""
    name = f"{claim_uid}-{device}-{share_id}" if share_id else f"{claim_uid}-{device}"
    if not _NAME.match(name):
        raise ValueError(f"CDI device name {name!r} is not valid")
    return name


def cdi_device_id(driver: str, claim_uid: str, device: str, share_id: str = "") -> str:
    """The fully qualified CDI device id the kubelet passes to the runtime."""
    return f"{cdi_kind(driver)}={cdi_device_name(claim_uid, device, share_id)}"


def spec_file_name(driver: str, claim_uid: str) -> str:
    """File name of a claim's spec in the CDI directory."""
    return f"{driver}-{claim_uid}.json"


def is_own_spec_file(driver: str, file_name: str) -> bool:
    """Whether a file in the CDI directory is one of ``driver``'s claim specs."""
    return file_name.startswith(f"{driver}-") and file_name.endswith(".json")


def claim_uid_of(driver: str, file_name: str) -> str:
    """The claim uid in one of ``driver``'s spec file names."""
    return file_name[len(driver) + 1 : -len(".json")]


def claim_spec(
    driver: str,
    claim_uid: str,
    devices: Sequence[DeviceNodes],
    *,
    env_var: str = "",
    control_devices: Sequence[tuple[str, str]] = (),
    mounts: Sequence[MountSpec] = (),
) -> dict[str, Any]:
    """The CDI spec of one claim's ``devices`` (its results, in allocation order)."""
    env = claim_env(devices)
    if env_var and env_var != ENV_VISIBLE_DEVICES:
        env.insert(1, f"{env_var}={env[0].partition('=')[2]}")
    edits: dict[str, Any] = {"env": env}
    if control_devices:
        edits["deviceNodes"] = [_node(h, c) for h, c in control_devices]
    if mounts:
        edits["mounts"] = [
            {
                "hostPath": m.host_path,
                "containerPath": m.container_path,
                "type": "bind",
                "options": ["rbind", "ro" if m.read_only else "rw"],
            }
            for m in mounts
        ]
    return {
        "cdiVersion": CDI_VERSION,
        "kind": cdi_kind(driver),
        "devices": [
            {
                "name": cdi_device_name(claim_uid, d.name, d.share_id),
                "containerEdits": _device_edits(d),
            }
            for d in devices
        ],
        "containerEdits": edits,
    }


def claim_env(devices: Sequence[DeviceNodes]) -> list[str]:
    """The claim-wide ``NAME=value`` env: visible devices, and the share's limits."""
    order: dict[str, DeviceNodes] = {}
    compute: dict[str, int] = {}
    memory: dict[str, int] = {}
    for d in devices:
        order.setdefault(d.name, d)
        compute[d.name] = min(CORE_UNITS_PER_DEVICE, compute.get(d.name, 0) + d.compute)
        memory[d.name] = memory.get(d.name, 0) + d.memory_mib
    env = [f"{ENV_VISIBLE_DEVICES}={','.join(str(d.index) for d in order.values())}"]
    if any(c < CORE_UNITS_PER_DEVICE for c in compute.values()):
        env.append(f"{ENV_CORE_LIMIT}={','.join(str(compute[n]) for n in order)}")
    limits = {n: memory[n] or d.device_memory_mib for n, d in order.items()}
    if any(memory[n] and limits[n] < d.device_memory_mib for n, d in order.items()):
        env.append(f"{ENV_MEM_LIMIT_GIB}={','.join(str(-(-limits[n] // 1024)) for n in order)}")
    return env


def _device_edits(device: DeviceNodes) -> dict[str, Any]:
    edits: dict[str, Any] = {"deviceNodes": [_node(h, c) for h, c in device.nodes]}
    if device.env:
        edits["env"] = [f"{k}={v}" for k, v in device.env]
    return edits


def _node(host: str, container: str) -> dict[str, str]:
    node = {"path": container}
    if host != container:
        node["hostPath"] = host
    return node
