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
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kubenpu.deviceplugin.backends.base import Backend
from kubenpu.deviceplugin.devices import NpuDevice
from kubenpu.dra import cdi, checkpoint
from kubenpu.dra.checkpoint import PreparedClaim, PreparedDevice
from kubenpu.dra.claims import ClaimError, allocated_devices
from kubenpu.dra.slices import pool_name

log = logging.getLogger(__name__)

#: Reads a ResourceClaim (namespace, name) from the API as a dict.
ClaimGetter = Callable[[str, str], Mapping[str, Any]]


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``path`` so that readers see the old or the new content, never a part."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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

    def holder_of(self, device: str) -> PreparedClaim | None:
        """The prepared claim holding ``device``, if any."""
        for claim in self.claims.values():
            if any(d.device == device for d in claim.devices):
                return claim
        return None

    def restore(self) -> None:
        """Rewrite the specs of checkpointed claims; remove specs no claim owns."""
        self.cdi_dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            for claim in self.claims.values():
                if not claim.devices:
                    continue
                path = self.cdi_dir / cdi.spec_file_name(self.driver, claim.uid)
                write_atomically(
                    path, self._spec_text(claim.uid, [d.device for d in claim.devices])
                )
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
        with self._lock:
            known = self.claims.get(uid)
            if known is not None:
                return known
            order: list[str] = []
            requests: dict[str, list[str]] = {}
            for a in allocated:
                if a.device not in requests:
                    order.append(a.device)
                requests.setdefault(a.device, []).append(a.request)
            for device in order:
                self._check_free(device, namespace, name)
            ids = {d: cdi.cdi_device_id(self.driver, uid, d) for d in order}
            claim = PreparedClaim(
                uid,
                namespace,
                name,
                tuple(
                    PreparedDevice(tuple(requests[d]), pool_name(self.node), d, (ids[d],))
                    for d in order
                ),
            )
            spec_path = self.cdi_dir / cdi.spec_file_name(self.driver, uid)
            if order:
                self.cdi_dir.mkdir(parents=True, exist_ok=True)
                write_atomically(spec_path, self._spec_text(uid, order))
            self.claims[uid] = claim
            try:
                self._save()
            except Exception:
                del self.claims[uid]
                spec_path.unlink(missing_ok=True)
                raise
        log.info(
            "prepared claim %s/%s (%s): %s",
            namespace,
            name,
            uid,
            ", ".join(order) or "no devices of this driver",
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

    def _check_free(self, device: str, namespace: str, name: str) -> None:
        if device not in self.devices:
            raise ClaimError(
                f"claim {namespace}/{name}: device {device} is not on node {self.node} "
                f"(devices: {', '.join(sorted(self.devices))})"
            )
        if device in self._unhealthy:
            raise ClaimError(
                f"claim {namespace}/{name}: device {device} is unhealthy "
                f"({self._unhealthy[device]}); it is not given out until it recovers"
            )
        holder = self.holder_of(device)
        if holder is not None:
            raise ClaimError(
                f"claim {namespace}/{name}: device {device} is already prepared for claim "
                f"{holder.namespace}/{holder.name} ({holder.uid})"
            )

    def _spec_text(self, uid: str, device_ids: Sequence[str]) -> str:
        nodes = []
        for device_id in device_ids:
            device = self.devices.get(device_id)
            if device is None:  # gone since it was prepared: keep the claim, without its node
                log.warning("prepared device %s is no longer on the node", device_id)
                continue
            nodes.append(
                cdi.DeviceNodes(
                    device.id,
                    device.index,
                    tuple(self.backend.device_node(p) for p in device.paths),
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
