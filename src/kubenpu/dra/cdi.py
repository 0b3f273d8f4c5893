"""CDI specs for prepared claims: what the container runtime injects. Pure, no I/O.

One spec per prepared claim, kind ``k8s.<driver>/claim`` (the reference driver's
convention), one CDI device per allocated NPU named ``<claim uid>-<device>`` carrying its
device nodes, and spec-wide edits (applied once when any device of the spec is injected)
with the claim's environment: ``NPU_VISIBLE_DEVICES`` and the backend's own variable with
the claim's device indices, as the device plugin sets them, plus the backend's control
devices and mounts. containerd (``enable_cdi``) reads the spec from its CDI directory when
the kubelet names the devices in the container's CDI devices.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from kubenpu.deviceplugin.devices import MountSpec
from kubenpu.names import ENV_VISIBLE_DEVICES

#: The CDI spec version written (device nodes with hostPath need 0.5.0 or later).
CDI_VERSION: Final = "0.6.0"
#: The class part of the CDI kind.
CDI_CLASS: Final = "claim"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")


@dataclass(frozen=True, slots=True)
class DeviceNodes:
    """One NPU as the spec gives it: its name, index and (host, container) device nodes."""

    name: str
    index: int
    nodes: tuple[tuple[str, str], ...]


def cdi_kind(driver: str) -> str:
    """``vendor/class`` of the specs ``driver`` writes."""
    return f"k8s.{driver}/{CDI_CLASS}"


def cdi_device_name(claim_uid: str, device: str) -> str:
    """The CDI device (within the kind) of one device of one claim."""
    name = f"{claim_uid}-{device}"
    if not _NAME.match(name):
        raise ValueError(f"CDI device name {name!r} is not valid")
    return name


def cdi_device_id(driver: str, claim_uid: str, device: str) -> str:
    """The fully qualified CDI device id the kubelet passes to the runtime."""
    return f"{cdi_kind(driver)}={cdi_device_name(claim_uid, device)}"


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
    """The CDI spec of one claim's ``devices`` (in allocation order)."""
    indices = ",".join(str(d.index) for d in devices)
    env = [f"{ENV_VISIBLE_DEVICES}={indices}"]
    if env_var and env_var != ENV_VISIBLE_DEVICES:
        env.append(f"{env_var}={indices}")
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
                "name": cdi_device_name(claim_uid, d.name),
                "containerEdits": {"deviceNodes": [_node(h, c) for h, c in d.nodes]},
            }
            for d in devices
        ],
        "containerEdits": edits,
    }


def _node(host: str, container: str) -> dict[str, str]:
    node = {"path": container}
    if host != container:
        node["hostPath"] = host
    return node
