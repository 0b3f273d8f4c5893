"""The agent's side of Allocate: ask the plugins for each container's devices.

As a kubelet does: for each container and resource, take free healthy devices, ask the
plugin's GetPreferredAllocation when it offers one (advice, taken when valid), call
Allocate, and keep the answer. A plugin that refuses, or is gone, fails the pod.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc

from kubenpu.devcluster.kubelet import KubeletPeer
from kubenpu.devcluster.nodeagent.admission import (
    AdmissionError,
    PodRecord,
    accept_preferred,
    check_available,
)
from kubenpu.deviceplugin.api import pb


def allocate_pod(
    peer: KubeletPeer,
    namespace: str,
    name: str,
    wanted: Mapping[str, Mapping[str, int]],
    free: dict[str, list[str]],
) -> PodRecord:
    """Choose from ``free`` for each container of ``wanted`` and call the plugin's Allocate.

    Raises :class:`AdmissionError` when there are too few free devices or a plugin fails.
    """
    check_available(wanted, free)
    record = PodRecord(namespace, name)
    options = {r.resource_name: r for r in peer.registrations}
    for container, per in wanted.items():
        for resource, count in per.items():
            ids = free[resource][:count]
            registration = options.get(resource)
            try:
                if registration is not None and registration.get_preferred_allocation_available:
                    preferred = peer.get_preferred_allocation(resource, free[resource], count)
                    if accept_preferred(preferred, free[resource], count):
                        ids = preferred
                response = peer.allocate(resource, [ids])
            except (grpc.RpcError, LookupError) as err:
                detail = err.details() if isinstance(err, grpc.RpcError) else str(err)
                raise AdmissionError(
                    f"Allocate of {resource} {ids} for container {container} failed: {detail}"
                ) from err
            record.containers.setdefault(container, {})[resource] = {
                "devices": list(ids),
                "response": response_json(response.container_responses[0]),
            }
            free[resource] = [d for d in free[resource] if d not in ids]
    return record


def response_json(response: pb.ContainerAllocateResponse) -> dict[str, Any]:
    """What the container runtime would get, as plain JSON."""
    return {
        "envs": dict(response.envs),
        "mounts": [
            {"container_path": m.container_path, "host_path": m.host_path, "read_only": m.read_only}
            for m in response.mounts
        ],
        "devices": [
            {
                "container_path": d.container_path,
                "host_path": d.host_path,
                "permissions": d.permissions,
            }
            for d in response.devices
        ],
        "annotations": dict(response.annotations),
        "cdi_devices": [c.name for c in response.cdi_devices],
    }
