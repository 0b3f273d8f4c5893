"""The agent's checkpoint: which devices every admitted pod holds, and the device lists.

:class:`~kubenpu.devcluster.nodeagent.admission.PodRecord` is what it keeps per pod.

Kept where a kubelet keeps its own (``<device-plugins dir>/kubelet_internal_checkpoint``,
the one file a kubelet leaves there across restarts). :func:`checkpoint_document` and
:func:`restore` translate between the agent's state and the stored JSON without I/O;
:func:`read_checkpoint` and :func:`write_checkpoint` are the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kubenpu.devcluster.kubelet import PeerDevice
from kubenpu.devcluster.nodeagent.admission import PodRecord
from kubenpu.deviceplugin.protocol import UNHEALTHY


def checkpoint_document(
    node: str,
    pods: Mapping[str, PodRecord],
    devices: Mapping[str, tuple[PeerDevice, ...]],
) -> dict[str, Any]:
    """The checkpoint as stored: ``{"node", "pods": {uid: {...}}, "devices": {...}}``."""
    return {
        "node": node,
        "pods": {uid: asdict(record) for uid, record in sorted(pods.items())},
        "devices": {
            resource: [
                {"id": d.id, "health": d.health, "numa_nodes": list(d.numa_nodes)} for d in listed
            ]
            for resource, listed in sorted(devices.items())
        },
    }


def restore(
    document: Mapping[str, Any],
) -> tuple[dict[str, PodRecord], dict[str, tuple[PeerDevice, ...]]]:
    """The admitted pods and device lists of a stored checkpoint.

    Until its plugin registers again, a resource keeps its devices, all unhealthy:
    capacity stays, allocatable is zero (what a kubelet reports after a restart).
    """
    pods = {
        uid: PodRecord(entry["namespace"], entry["name"], entry["containers"])
        for uid, entry in document.get("pods", {}).items()
    }
    devices = {
        resource: tuple(
            PeerDevice(d["id"], UNHEALTHY, tuple(d.get("numa_nodes", ()))) for d in listed
        )
        for resource, listed in document.get("devices", {}).items()
    }
    return pods, devices


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint as stored (see :func:`checkpoint_document`); empty when there is none."""
    try:
        checkpoint: dict[str, Any] = json.loads(Path(path).read_text())
        return checkpoint
    except FileNotFoundError:
        return {"pods": {}, "devices": {}}


def write_checkpoint(path: Path, document: Mapping[str, Any]) -> None:
    """Replace the checkpoint at ``path`` atomically (a temporary file, then a rename)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    os.replace(tmp, path)
