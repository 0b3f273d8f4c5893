"""The driver's checkpoint: which claims it prepared, with which devices. Pure, no I/O.

Written after every prepare and unprepare, read at start, so a restarted driver answers a
repeated NodePrepareResources with what it gave before (never a second, different set) and
still knows what to remove on NodeUnprepareResources. The document carries its own
checksum: a torn or edited file is refused rather than trusted. ``shareId``, ``compute``
(percent of the device), ``memoryMiB`` and ``env`` (from the claim's opaque config) may be
absent (a whole device, no config)::

    {"version": "kubenpu.io/dra-checkpoint/v1", "driver": "npu.aliyun.com",
     "node": "npu-node-1",
     "claims": {"<uid>": {"namespace": "default", "name": "c",
                          "devices": [{"requests": ["npu"], "pool": "npu-node-1",
                                       "device": "npu-0", "cdiDeviceIds": ["..."],
                                       "shareId": "<uuid>", "compute": 30,
                                       "memoryMiB": 4096, "env": [["K", "v"]]}]}},
     "checksum": "<sha256 of the canonical JSON of everything above>"}
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from kubenpu.errors import KubeNpuError
from kubenpu.names import CORE_UNITS_PER_DEVICE

VERSION: Final = "kubenpu.io/dra-checkpoint/v1"


class CheckpointError(KubeNpuError):
    """The checkpoint cannot be read (corrupt, another version, another driver or node)."""


@dataclass(frozen=True, slots=True)
class PreparedDevice:
    """One device (or one share of it) given to a claim, as returned to the kubelet, with
    what it consumes: compute in percent, memory in MiB (0: none asked)."""

    requests: tuple[str, ...]
    pool: str
    device: str
    cdi_ids: tuple[str, ...]
    share_id: str = ""
    compute: int = CORE_UNITS_PER_DEVICE
    memory_mib: int = 0
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class PreparedClaim:
    """A claim the driver prepared."""

    uid: str
    namespace: str
    name: str
    devices: tuple[PreparedDevice, ...]


def _canonical(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def encode(driver: str, node: str, claims: Mapping[str, PreparedClaim]) -> str:
    """The checkpoint document for ``claims`` (uid -> claim)."""
    body: dict[str, Any] = {
        "version": VERSION,
        "driver": driver,
        "node": node,
        "claims": {
            uid: {
                "namespace": c.namespace,
                "name": c.name,
                "devices": [_device(d) for d in c.devices],
            }
            for uid, c in sorted(claims.items())
        },
    }
    body["checksum"] = hashlib.sha256(_canonical(body)).hexdigest()
    return json.dumps(body, indent=2, sort_keys=True) + "\n"


def _device(d: PreparedDevice) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "requests": list(d.requests),
        "pool": d.pool,
        "device": d.device,
        "cdiDeviceIds": list(d.cdi_ids),
    }
    if d.share_id:
        entry["shareId"] = d.share_id
    if d.compute != CORE_UNITS_PER_DEVICE:
        entry["compute"] = d.compute
    if d.memory_mib:
        entry["memoryMiB"] = d.memory_mib
    if d.env:
        entry["env"] = [list(kv) for kv in d.env]
    return entry


def decode(
    text: str, driver: str, node: str, source: str = "checkpoint"
) -> dict[str, PreparedClaim]:
    """The claims in a checkpoint document written by :func:`encode` for ``driver`` on
    ``node``; :class:`CheckpointError` when it is not one."""
    try:
        body = json.loads(text)
    except ValueError as err:
        raise CheckpointError(f"{source}: not JSON ({err})") from None
    if not isinstance(body, dict):
        raise CheckpointError(f"{source}: not a JSON object")
    if body.get("version") != VERSION:
        raise CheckpointError(f"{source}: version {body.get('version')!r}, expected {VERSION!r}")
    checksum = body.pop("checksum", None)
    if checksum != hashlib.sha256(_canonical(body)).hexdigest():
        raise CheckpointError(f"{source}: checksum mismatch (torn or edited file)")
    if body.get("driver") != driver or body.get("node") != node:
        raise CheckpointError(
            f"{source}: written by driver {body.get('driver')!r} on node {body.get('node')!r}, "
            f"this is {driver!r} on {node!r}"
        )
    try:
        return {
            uid: PreparedClaim(
                uid,
                entry["namespace"],
                entry["name"],
                tuple(
                    PreparedDevice(
                        tuple(d["requests"]),
                        d["pool"],
                        d["device"],
                        tuple(d["cdiDeviceIds"]),
                        str(d.get("shareId", "")),
                        int(d.get("compute", CORE_UNITS_PER_DEVICE)),
                        int(d.get("memoryMiB", 0)),
                        tuple((str(k), str(v)) for k, v in d.get("env", [])),
                    )
                    for d in entry["devices"]
                ),
            )
            for uid, entry in body["claims"].items()
        }
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise CheckpointError(f"{source}: malformed claim entry ({err!r})") from None
