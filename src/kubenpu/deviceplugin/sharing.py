"""Which physical devices a container gets, from the scheduler's record on its pod.

The kubelet hands a shared container N virtual ``aliyun.com/npu-core`` units and says
nothing about the pod. The scheduler, however, recorded its decision on the pod
(``kubenpu.io/devices`` and ``kubenpu.io/shares``, milli of one device per entry). So the
plugin lists the pods bound to this node that are still Pending, and takes the oldest
unclaimed placement entry whose share equals the request (N units x 10 milli).

Race handling: several pending pods may ask for the same share at once, and the kubelet
does not say which one it is admitting. Any of them may get any of the matching entries:
the entries have equal shares, so every device still carries exactly the total the
scheduler reserved on it, and nothing is oversubscribed. Entries are claimed in memory so
one entry is never given twice; claims of pods that are no longer pending are forgotten.
When the API cannot be read, or no entry matches, the caller falls back to a local choice.

Whole devices use the same record: the kubelet asks GetPreferredAllocation for N of the
available ids, and the plugin answers with the devices of the oldest unclaimed pending
placement of exactly N whole devices that are all still available, so the kubelet
allocates what the scheduler chose. Any two pending placements of the same size hold
disjoint devices (the scheduler never gives one device twice), so handing pod A's record
to pod B only swaps which of them gets which set: nothing is oversubscribed either way.

The API is behind :data:`PodLookup`, a plain function; tests pass their own. This module
does no I/O: :func:`kubenpu.deviceplugin.kubeapi.kubernetes_pod_lookup` lists the pods and
hands them to a :class:`PendingReader`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubenpu.adapters.kube import placement_from_pod, placement_time
from kubenpu.errors import ObjectError
from kubenpu.names import MILLI_PER_CORE_UNIT, MILLI_PER_DEVICE

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PendingPlacement:
    """The scheduler's placement record on a pending pod bound to this node."""

    namespace: str
    name: str
    uid: str
    #: Device ids (or indices) per entry, aligned with ``shares_milli``.
    devices: tuple[str, ...]
    shares_milli: tuple[int, ...]
    assumed_at: str = ""


#: Returns the placements of the pending pods bound to this node.
PodLookup = Callable[[], Sequence[PendingPlacement]]


class PendingReader:
    """The placements of a node's pending pods, from their pods: the pure half of a lookup.

    The record is read by :func:`kubenpu.adapters.kube.placement_from_pod`, the reader the
    extender writes it for, so both sides agree on what a record is. A pod without a
    record, with one for another node, or with one that holds no devices, has none here.
    A malformed record (an ``ObjectError``) is decided once, here: the pod is skipped, so
    its containers get the plugin's safe local choice, and the problem is logged once per
    pod (again only when it changes), not on every call of the lookup.
    """

    def __init__(self, node: str) -> None:
        self.node = node
        self._reported: dict[str, str] = {}  # pod uid -> the problem logged for it

    def read(self, pods: Iterable[Mapping[str, Any]]) -> list[PendingPlacement]:
        """The placements among ``pods`` (Pod objects as the API's JSON)."""
        found = []
        reported: dict[str, str] = {}
        for pod in pods:
            meta = pod.get("metadata")
            meta = meta if isinstance(meta, Mapping) else {}
            uid = str(meta.get("uid", ""))
            try:
                placement = placement_from_pod(pod)
                assumed_at = placement_time(pod) if placement is not None else ""
            except ObjectError as err:
                reported[uid] = str(err)
                if self._reported.get(uid) != reported[uid]:
                    log.warning("%s; its containers get a local device choice", err)
                continue
            if placement is None or placement.node != self.node or not placement.device_ids:
                continue
            found.append(
                PendingPlacement(
                    str(meta.get("namespace", "")),
                    str(meta.get("name", "")),
                    uid,
                    placement.device_ids,
                    placement.shares_milli,
                    assumed_at,
                )
            )
        self._reported = reported  # pods gone or mended are forgotten
        return found


class PlacementResolver:
    """Matches shared requests to the scheduler's placement entries (see module doc)."""

    def __init__(self, lookup: PodLookup) -> None:
        self._lookup = lookup
        self._lock = threading.Lock()
        self._claimed: set[tuple[str, int]] = set()

    def _pending(self) -> list[PendingPlacement]:
        """The pending placements, oldest first; forgets claims of pods no longer pending."""
        try:
            placements = list(self._lookup())
        except Exception as err:  # API down, RBAC, timeout: fall back, never fail
            log.warning("cannot read pending pods (%s); using a local choice", err)
            return []
        live = {p.uid for p in placements}
        self._claimed = {c for c in self._claimed if c[0] in live}
        placements.sort(key=lambda p: (p.assumed_at, p.namespace, p.name))
        return placements

    def claim_whole(
        self, size: int, usable: Callable[[tuple[str, ...]], bool]
    ) -> tuple[PendingPlacement, tuple[str, ...]] | None:
        """Claim the oldest unclaimed placement of ``size`` whole devices that ``usable``
        accepts (all still available); return its pod and device entries."""
        with self._lock:
            for p in self._pending():
                whole = len(p.devices) == size and all(
                    s == MILLI_PER_DEVICE for s in p.shares_milli
                )
                if whole and (p.uid, -1) not in self._claimed and usable(p.devices):
                    self._claimed.add((p.uid, -1))
                    return p, p.devices
        return None

    def _candidates(self, units: int) -> list[tuple[PendingPlacement, int]]:
        placements = self._pending()
        want = units * MILLI_PER_CORE_UNIT
        matches = [
            (p, i)
            for p in placements
            for i, share in enumerate(p.shares_milli)
            if share == want and (p.uid, i) not in self._claimed
        ]
        matches.sort(key=lambda m: (m[0].assumed_at, m[0].namespace, m[0].name, m[1]))
        return matches

    def peek(self, units: int) -> str | None:
        """The device of the entry :meth:`claim` would take now, without claiming it."""
        with self._lock:
            matches = self._candidates(units)
        return matches[0][0].devices[matches[0][1]] if matches else None

    def claim(self, units: int) -> tuple[PendingPlacement, str] | None:
        """Claim the oldest matching entry; return its pod and device (id or index)."""
        with self._lock:
            matches = self._candidates(units)
            if not matches:
                return None
            placement, entry = matches[0]
            self._claimed.add((placement.uid, entry))
        return placement, placement.devices[entry]
