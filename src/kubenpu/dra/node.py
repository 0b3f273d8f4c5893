"""The driver's files on the node: CDI specs and the checkpoint, kept in step.

:class:`ClaimPreparer` does NodePrepareResources and NodeUnprepareResources for one node.
Order on prepare: the CDI spec, then the checkpoint; on unprepare: the spec goes, then the
checkpoint entry. At start (:meth:`ClaimPreparer.restore`) a claim in the checkpoint gets
its spec written again (a crash between the two writes of an unprepare), and a spec of
this driver that no checkpointed claim owns is removed (a crash between the two writes of
a prepare): nothing is lost and nothing leaks.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kubenpu.adapters.quantity import mebibytes, parse_quantity
from kubenpu.deviceplugin.backends.base import Backend
from kubenpu.deviceplugin.devices import NpuDevice
from kubenpu.dra import cdi, checkpoint
from kubenpu.dra.checkpoint import PreparedClaim, PreparedDevice
from kubenpu.dra.claims import (
    AllocatedDevice,
    ClaimError,
    allocated_devices,
    claim_configs,
    config_env,
)
from kubenpu.dra.slices import CAPACITY_COMPUTE, CAPACITY_MEMORY, COMPUTE_PER_DEVICE, pool_name

log = logging.getLogger(__name__)

#: Reads a ResourceClaim (namespace, name) from the API as a dict.
ClaimGetter = Callable[[str, str], Mapping[str, Any]]


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``path`` so that readers see the old or the new content, never a part."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written file behind
        raise


class ClaimPreparer:
    """Prepares and unprepares claims of one driver on one node (thread-safe)."""

    def __init__(
        self,
        driver: str,
        node: str,
        *,
        backend: Backend,
        devices: Sequence[NpuDevice],
        cdi_dir: Path,
        checkpoint_file: Path,
        get_claim: ClaimGetter,
    ) -> None:
        self.driver = driver
        self.node = node
        self.backend = backend
        self.devices = {d.id: d for d in devices}
        self.cdi_dir = cdi_dir
        self.checkpoint_file = checkpoint_file
        self._get_claim = get_claim
        self._lock = threading.Lock()
        self._unhealthy: dict[str, str] = {}
        self.claims: dict[str, PreparedClaim] = {}
        if checkpoint_file.exists():
            self.claims = checkpoint.decode(
                checkpoint_file.read_text(), driver, node, str(checkpoint_file)
            )

    # -- state -----------------------------------------------------------------------

    def set_unhealthy(self, unhealthy: Mapping[str, str]) -> None:
        """The devices unhealthy now (id -> reason); they are not given to new claims."""
        with self._lock:
            self._unhealthy = dict(unhealthy)

    def restore(self) -> None:
        """Rewrite the specs of checkpointed claims; remove specs no claim owns."""
        self.cdi_dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            for claim in self.claims.values():
                if not claim.devices:
                    continue
                path = self.cdi_dir / cdi.spec_file_name(self.driver, claim.uid)
                write_atomically(path, self._spec_text(claim.uid, claim.devices))
            for entry in os.listdir(self.cdi_dir):
                own = cdi.is_own_spec_file(self.driver, entry)
                if own and cdi.claim_uid_of(self.driver, entry) not in self.claims:
                    log.info("removing CDI spec %s of no prepared claim", entry)
                    (self.cdi_dir / entry).unlink(missing_ok=True)
            self._save()
        if self.claims:
            log.info(
                "restored %d prepared claim(s) from %s: %s",
                len(self.claims),
                self.checkpoint_file,
                ", ".join(f"{c.namespace}/{c.name}" for c in self.claims.values()),
            )

    # -- the kubelet's calls ----------------------------------------------------------

    def prepare(self, uid: str, namespace: str, name: str) -> PreparedClaim:
        """Prepare a claim (or return what an earlier prepare gave it); ClaimError when the
        claim cannot be prepared, with nothing left behind."""
        with self._lock:
            known = self.claims.get(uid)
            if known is not None:
                return known
        try:
            obj = self._get_claim(namespace, name)
        except ClaimError:
            raise
        except Exception as err:
            reason = getattr(err, "reason", None) or err
            raise ClaimError(
                f"claim {namespace}/{name}: cannot read it from the API ({reason})"
            ) from None
        allocated = allocated_devices(obj, self.driver, pool_name(self.node), uid=uid)
        reserved = (*cdi.DRIVER_ENV, self.backend.env_var)
        configs = claim_configs(obj, self.driver, reserved_env=[e for e in reserved if e])
        ref = f"{namespace}/{name}"
        with self._lock:
            known = self.claims.get(uid)
            if known is not None:
                return known
            # One entry per (device, share): a share of a device keeps its own CDI device.
            grouped: dict[tuple[str, str], list[AllocatedDevice]] = {}
            for a in allocated:
                grouped.setdefault((a.device, a.share_id), []).append(a)
            devices: list[PreparedDevice] = []
            for (device, share_id), results in grouped.items():
                compute, memory = _consumed(ref, results[0])
                requests = tuple(dict.fromkeys(r.request for r in results))
                env: dict[str, str] = {}
                for request in requests:
                    env.update(config_env(configs, request))
                devices.append(
                    PreparedDevice(
                        requests,
                        pool_name(self.node),
                        device,
                        (cdi.cdi_device_id(self.driver, uid, device, share_id),),
                        share_id,
                        compute,
                        memory,
                        tuple(sorted(env.items())),
                    )
                )
            self._check_free(devices, ref)
            claim = PreparedClaim(uid, namespace, name, tuple(devices))
            spec_path = self.cdi_dir / cdi.spec_file_name(self.driver, uid)
            try:
                if devices:
                    self.cdi_dir.mkdir(parents=True, exist_ok=True)
                    write_atomically(spec_path, self._spec_text(uid, devices))
                self.claims[uid] = claim
                self._save()
            except Exception:
                self.claims.pop(uid, None)
                spec_path.unlink(missing_ok=True)
                raise
        log.info(
            "prepared claim %s/%s (%s): %s",
            namespace,
            name,
            uid,
            ", ".join(_describe(d) for d in devices) or "no devices of this driver",
        )
        return claim

    def unprepare(self, uid: str) -> None:
        """Remove a claim's spec and forget it (a claim never prepared is fine)."""
        with self._lock:
            (self.cdi_dir / cdi.spec_file_name(self.driver, uid)).unlink(missing_ok=True)
            claim = self.claims.pop(uid, None)
            if claim is None:
                return
            try:
                self._save()
            except Exception:
                self.claims[uid] = claim
                raise
        log.info("unprepared claim %s/%s (%s)", claim.namespace, claim.name, uid)

    # -- helpers ---------------------------------------------------------------------

    def _check_free(self, devices: Sequence[PreparedDevice], ref: str) -> None:
        """ClaimError unless every device is here, healthy, and has the compute left."""
        asked: dict[str, int] = {}
        for d in devices:
            if d.device not in self.devices:
                raise ClaimError(
                    f"claim {ref}: device {d.device} is not on node {self.node} "
                    f"(devices: {', '.join(sorted(self.devices))}); it was allocated from a "
                    "ResourceSlice that no longer says so: delete the pod so it is scheduled again"
                )
            if d.device in self._unhealthy:
                raise ClaimError(
                    f"claim {ref}: device {d.device} is unhealthy "
                    f"({self._unhealthy[d.device]}); it is not given out until it recovers"
                )
            asked[d.device] = asked.get(d.device, 0) + d.compute
        for device, want in asked.items():
            holders = [
                (c, sum(d.compute for d in c.devices if d.device == device))
                for c in self.claims.values()
                if any(d.device == device for d in c.devices)
            ]
            used = sum(share for _, share in holders)
            if used + want > COMPUTE_PER_DEVICE:
                who = ", ".join(f"{c.namespace}/{c.name} ({c.uid}, {n}%)" for c, n in holders)
                raise ClaimError(
                    f"claim {ref}: device {device} is already prepared for claim {who}; this "
                    f"claim asks {want}% of its compute, {COMPUTE_PER_DEVICE - used}% is left"
                )

    def _spec_text(self, uid: str, prepared: Sequence[PreparedDevice]) -> str:
        nodes = []
        for p in prepared:
            device = self.devices.get(p.device)
            if device is None:  # gone since it was prepared: keep the claim, without its node
                log.warning("prepared device %s is no longer on the node", p.device)
                continue
            nodes.append(
                cdi.DeviceNodes(
                    device.id,
                    device.index,
                    tuple(self.backend.device_node(path) for path in device.paths),
                    p.share_id,
                    p.compute,
                    p.memory_mib,
                    device.memory_mib,
                    p.env,
                )
            )
        spec = cdi.claim_spec(
            self.driver,
            uid,
            nodes,
            env_var=self.backend.env_var,
            control_devices=[self.backend.device_node(p) for p in self.backend.control_devices()],
            mounts=self.backend.container_mounts(),
        )
        return json.dumps(spec, indent=2) + "\n"

    def _save(self) -> None:
        self.checkpoint_file.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(
            self.checkpoint_file, checkpoint.encode(self.driver, self.node, self.claims), 0o600
        )


def _consumed(ref: str, result: AllocatedDevice) -> tuple[int, int]:
    """Compute (percent) and memory (MiB) a result consumes; a result without
    ``consumedCapacity`` (a device that allows one allocation) has the whole device."""
    consumed = dict(result.consumed)
    try:
        compute = consumed.get(CAPACITY_COMPUTE)
        percent = COMPUTE_PER_DEVICE if compute is None else math.ceil(parse_quantity(compute))
        memory = consumed.get(CAPACITY_MEMORY)
        mib = 0 if memory is None else mebibytes(memory)
    except ValueError as err:
        raise ClaimError(
            f"claim {ref}: device {result.device}: consumedCapacity is not valid ({err})"
        ) from None
    if not 0 < percent <= COMPUTE_PER_DEVICE or mib < 0:
        raise ClaimError(
            f"claim {ref}: device {result.device}: consumes {percent}% of its compute and "
            f"{mib} MiB; this driver serves 1..{COMPUTE_PER_DEVICE}% and no negative memory"
        )
    return percent, mib


def _describe(device: PreparedDevice) -> str:
    if device.compute == COMPUTE_PER_DEVICE and not device.share_id:
        return device.device
    share = f"{device.compute}%" + (f" {device.memory_mib} MiB" if device.memory_mib else "")
    return f"{device.device} ({share})"
