"""The resource manager: devices, health, preferred allocation and allocation as plain data.

One manager serves one extended resource. It knows nothing of gRPC; the server translates.

Id schemes (what the kubelet sees as "devices"):

- whole (``aliyun.com/npu``): the physical id, e.g. ``npu-0``;
- core (``aliyun.com/npu-core``): 100 virtual units per device, ``<id>-core-<k>``, k = 0..99;
- mem (``aliyun.com/npu-mem``): one virtual unit per GiB, ``<id>-mem-<k>``.

A virtual unit is healthy when its physical device is.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from kubenpu.deviceplugin.backends.base import Backend
from kubenpu.deviceplugin.devices import ContainerAllocation, NpuDevice
from kubenpu.deviceplugin.sharing import PlacementResolver
from kubenpu.engine.device_choice import choose_whole
from kubenpu.errors import DeviceError
from kubenpu.names import (
    ANNOTATION_DEVICES,
    ANNOTATION_SHARES,
    CORE_UNITS_PER_DEVICE,
    ENV_CORE_LIMIT,
    ENV_MEM_LIMIT_GIB,
    ENV_VISIBLE_DEVICES,
    MILLI_PER_CORE_UNIT,
)

log = logging.getLogger(__name__)


class Kind(enum.Enum):
    """How a resource's advertised ids map onto physical devices."""

    WHOLE = "whole"
    CORE = "core"
    MEM = "mem"


@dataclass(frozen=True, slots=True)
class AdvertisedDevice:
    """One entry of the ListAndWatch list."""

    id: str
    healthy: bool
    numa_node: int | None


@dataclass(frozen=True, slots=True)
class _Unit:
    device: NpuDevice
    k: int


class ResourceManager:
    """Devices of one resource. Thread-safe; health updates wake :meth:`wait_for_change`
    and the callbacks given to :meth:`watch`."""

    def __init__(
        self,
        resource: str,
        devices: Sequence[NpuDevice],
        backend: Backend,
        *,
        kind: Kind = Kind.WHOLE,
        resolver: PlacementResolver | None = None,
        cdi_kind: str | None = None,
    ) -> None:
        self.resource = resource
        self.kind = kind
        self._backend = backend
        self._resolver = resolver
        self._cdi_kind = cdi_kind
        self._devices = {d.id: d for d in sorted(devices, key=lambda d: d.index)}
        self._by_index = {str(d.index): d for d in devices}
        self._units: dict[str, _Unit] = {}
        for device in self._devices.values():
            for k in range(self._unit_count(device)):
                self._units[self._unit_id(device, k)] = _Unit(device, k)
        self._unhealthy: dict[str, str] = {}
        self._cond = threading.Condition()
        self._version = 0
        self._closed = False
        self._watchers: set[Callable[[], None]] = set()
        self._listing: list[AdvertisedDevice] = self._build_listing()

    # -- ids -------------------------------------------------------------------------

    def _unit_count(self, device: NpuDevice) -> int:
        if self.kind is Kind.CORE:
            return CORE_UNITS_PER_DEVICE
        if self.kind is Kind.MEM:
            return device.memory_mib // 1024
        return 1

    def _unit_id(self, device: NpuDevice, k: int) -> str:
        if self.kind is Kind.WHOLE:
            return device.id
        return f"{device.id}-{self.kind.value}-{k}"

    @property
    def devices(self) -> list[NpuDevice]:
        """The physical devices, ordered by index."""
        return list(self._devices.values())

    # -- health ----------------------------------------------------------------------

    def _build_listing(self) -> list[AdvertisedDevice]:
        return [
            AdvertisedDevice(uid, unit.device.id not in self._unhealthy, unit.device.numa_node)
            for uid, unit in self._units.items()
        ]

    def set_unhealthy(self, unhealthy: Mapping[str, str]) -> bool:
        """Replace the set of unhealthy physical devices; True (and wake-up) if it changed."""
        known = {i: r for i, r in unhealthy.items() if i in self._devices}
        with self._cond:
            if known.keys() == self._unhealthy.keys():
                return False
            for dev_id in known.keys() - self._unhealthy.keys():
                log.warning("%s: device %s unhealthy: %s", self.resource, dev_id, known[dev_id])
            for dev_id in self._unhealthy.keys() - known.keys():
                log.info("%s: device %s healthy again", self.resource, dev_id)
            self._unhealthy = dict(known)
            self._listing = self._build_listing()
            self._version += 1
            self._cond.notify_all()
            watchers = list(self._watchers)
        for wake in watchers:
            wake()
        return True

    def health_counts(self) -> tuple[int, int]:
        """(healthy, unhealthy) physical devices."""
        with self._cond:
            bad = len(self._unhealthy)
        return len(self._devices) - bad, bad

    def listing(self) -> tuple[int, list[AdvertisedDevice]]:
        """The current version and the full list to advertise."""
        with self._cond:
            return self._version, self._listing

    def wait_for_change(self, version: int, timeout: float) -> int:
        """Block until the version differs from ``version`` (or timeout/close); return it."""
        with self._cond:
            self._cond.wait_for(lambda: self._version != version or self._closed, timeout)
            return self._version

    def watch(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake()`` after every change of the listing and on :meth:`close`, from the
        thread that made it (so it must be quick and thread-safe); return the function
        that stops it. A waiter that needs no thread of its own (an asyncio stream) uses
        this instead of :meth:`wait_for_change`."""
        with self._cond:
            self._watchers.add(wake)

        def unwatch() -> None:
            with self._cond:
                self._watchers.discard(wake)

        return unwatch

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (streams should end)."""
        return self._closed

    def close(self) -> None:
        """Wake every waiter so ListAndWatch streams end."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            watchers = list(self._watchers)
        for wake in watchers:
            wake()

    # -- preferred allocation ---------------------------------------------------------

    def preferred(
        self, available: Sequence[str], must_include: Sequence[str], size: int
    ) -> list[str]:
        """Choose ``size`` ids from ``available``, keeping ``must_include``.

        Whole devices: the devices the scheduler recorded on a pending pod of this size
        when they are all available (see ``sharing``); else the engine's own rule,
        :func:`kubenpu.engine.device_choice.choose_whole`: the groups of the must-include
        devices first, then the tightest group that holds the rest (keeps large groups
        whole for large requests), else the largest groups first (as few as possible).
        Virtual units: pack onto one device, the scheduler's choice when known, else the
        device with the fewest free units that fits (keeps whole devices free).
        """
        avail = list(dict.fromkeys(available))
        must = list(dict.fromkeys(must_include))
        unknown = [i for i in [*avail, *must] if i not in self._units]
        if unknown:
            raise DeviceError(f"{self.resource}: unknown device ids {sorted(unknown)[:5]}")
        if size < len(must) or size > len(set(avail) | set(must)):
            raise DeviceError(
                f"{self.resource}: preferred allocation of {size} from {len(avail)} available "
                f"with {len(must)} required is impossible"
            )
        with self._cond:
            bad = set(self._unhealthy)
        chosen_set = set(must)
        free = [i for i in avail if i not in chosen_set and self._units[i].device.id not in bad]
        need = size - len(must)
        if self.kind is Kind.WHOLE:
            chosen = self._scheduled_whole(free, size) if not must else None
            if chosen is not None:
                return chosen
            extra = self._pick_whole(free, must, need)
        else:
            extra = self._pick_units(free, must, need)
        return must + extra

    def _scheduled_whole(self, free: list[str], size: int) -> list[str] | None:
        """The devices the scheduler chose for a pending pod of ``size`` devices, if free."""
        if self._resolver is None:
            return None
        free_set = set(free)

        def usable(refs: tuple[str, ...]) -> bool:
            devices = [self._resolve_ref(r) for r in refs]
            return all(d is not None and d.id in free_set for d in devices)

        claim = self._resolver.claim_whole(size, usable)
        if claim is None:
            return None
        pod, refs = claim
        ids = [d.id for r in refs if (d := self._resolve_ref(r)) is not None]
        log.info(
            "%s: preferring %s, placed on pod %s/%s", self.resource, ids, pod.namespace, pod.name
        )
        return ids

    def _pick_whole(self, free: list[str], must: list[str], need: int) -> list[str]:
        # The engine's rule (the scheduler would choose the same), lowest indices first
        # within a group; the groups of the must-include devices cost nothing extra.
        ordered = sorted(free, key=lambda i: self._devices[i].index)
        picks = choose_whole(
            [self._devices[i].group for i in ordered],
            need,
            spanned={self._devices[i].group for i in must},
        )
        return [ordered[p] for p in picks]

    def _pick_units(self, free: list[str], must: list[str], need: int) -> list[str]:
        by_device: dict[str, list[str]] = defaultdict(list)
        for uid in free:
            by_device[self._units[uid].device.id].append(uid)
        order: list[str] = [self._units[m].device.id for m in must]
        hinted = self._hint(need) if not must else None
        if hinted is not None:
            order.append(hinted)
        fitting = sorted(
            (d for d, units in by_device.items() if len(units) >= need),
            key=lambda d: (len(by_device[d]), self._devices[d].index),
        )
        largest = sorted(by_device, key=lambda d: (-len(by_device[d]), self._devices[d].index))
        picked: list[str] = []
        for dev_id in dict.fromkeys([*order, *fitting, *largest]):
            if len(picked) == need:
                break
            picked.extend(by_device.get(dev_id, [])[: need - len(picked)])
        return picked

    def _hint(self, units: int) -> str | None:
        """The physical device the scheduler chose for a pending request of this size."""
        if self.kind is not Kind.CORE or self._resolver is None:
            return None
        ref = self._resolver.peek(units)
        device = self._resolve_ref(ref) if ref is not None else None
        return device.id if device is not None else None

    def _resolve_ref(self, ref: str) -> NpuDevice | None:
        """A device from an annotation entry: its id, or its index."""
        return self._devices.get(ref) or self._by_index.get(ref)

    # -- allocation ------------------------------------------------------------------

    def allocate(self, ids: Sequence[str]) -> ContainerAllocation:
        """What one container gets for ``ids``; DeviceError says why it cannot."""
        self._check_ids(ids)
        if self.kind is Kind.WHOLE:
            devices = [self._devices[i] for i in ids]
            return self._container(devices, {}, {ANNOTATION_DEVICES: ",".join(ids)})
        by_device: dict[str, int] = defaultdict(int)
        for uid in ids:
            by_device[self._units[uid].device.id] += 1
        if self.kind is Kind.MEM:
            return self._allocate_mem(by_device, len(ids))
        return self._allocate_core(by_device, len(ids))

    def _check_ids(self, ids: Sequence[str]) -> None:
        if not ids:
            raise DeviceError(f"{self.resource}: Allocate with no device ids")
        if len(set(ids)) != len(ids):
            dupes = sorted({i for i in ids if list(ids).count(i) > 1})
            raise DeviceError(f"{self.resource}: device ids repeated in one request: {dupes}")
        if len(ids) > len(self._units):
            raise DeviceError(
                f"{self.resource}: Allocate of {len(ids)} devices, but the node has "
                f"{len(self._units)}"
            )
        unknown = [i for i in ids if i not in self._units]
        if unknown:
            raise DeviceError(
                f"{self.resource}: unknown device ids {unknown[:5]}; this node has "
                f"{_describe(self._units)}"
            )
        with self._cond:
            sick = {
                i: self._unhealthy[self._units[i].device.id]
                for i in ids
                if self._units[i].device.id in self._unhealthy
            }
        if sick:
            first = next(iter(sick))
            raise DeviceError(
                f"{self.resource}: {len(sick)} requested device(s) unhealthy, e.g. {first}: "
                f"{sick[first]}"
            )

    def _allocate_core(self, by_device: Mapping[str, int], units: int) -> ContainerAllocation:
        if units > CORE_UNITS_PER_DEVICE:
            raise DeviceError(
                f"{self.resource}: {units} core units asked, one shared container gets at "
                f"most {CORE_UNITS_PER_DEVICE} (one device); ask for {self.resource} whole"
            )
        device = None
        claim = self._resolver.claim(units) if self._resolver is not None else None
        if claim is not None:
            pod, ref = claim
            device = self._resolve_ref(ref)
            if device is None:
                log.warning("pod %s/%s names unknown device %r", pod.namespace, pod.name, ref)
            elif device.id in self._unhealthy:
                raise DeviceError(
                    f"{self.resource}: pod {pod.namespace}/{pod.name} was placed on {device.id}, "
                    f"which is unhealthy: {self._unhealthy[device.id]}"
                )
            elif device.id not in by_device:
                log.warning(
                    "pod %s/%s placed on %s but the kubelet chose units of %s; following the "
                    "scheduler",
                    pod.namespace,
                    pod.name,
                    device.id,
                    ",".join(by_device),
                )
        if device is None:
            # Local choice: the kubelet never hands out one unit twice, so units that all
            # sit on one device prove that device has that much compute free.
            if len(by_device) != 1:
                raise DeviceError(
                    f"{self.resource}: {units} units span devices {sorted(by_device)} and no "
                    "scheduler placement names one; a shared container must fit on one device"
                )
            device = self._devices[next(iter(by_device))]
        envs = {ENV_CORE_LIMIT: str(units)}
        annotations = {
            ANNOTATION_DEVICES: device.id,
            ANNOTATION_SHARES: str(units * MILLI_PER_CORE_UNIT),
        }
        return self._container([device], envs, annotations)

    def _allocate_mem(self, by_device: Mapping[str, int], units: int) -> ContainerAllocation:
        # Memory is an accounting dimension; the visible device comes from the core
        # allocation, so this answer carries only the limit.
        if len(by_device) != 1:
            raise DeviceError(
                f"{self.resource}: {units} GiB span devices {sorted(by_device)}; memory of a "
                "shared container must come from one device"
            )
        return ContainerAllocation(
            envs={ENV_MEM_LIMIT_GIB: str(units)},
            device_specs=(),
            mounts=(),
            annotations={},
            cdi_devices=(),
            physical_ids=tuple(by_device),
        )

    def _container(
        self, devices: Sequence[NpuDevice], envs: dict[str, str], annotations: dict[str, str]
    ) -> ContainerAllocation:
        backend = self._backend
        specs = [(*backend.device_node(p), "rw") for d in devices for p in d.paths]
        specs += [(p, p, "rw") for p in backend.control_devices()]
        all_envs = {ENV_VISIBLE_DEVICES: ",".join(str(d.index) for d in devices)}
        if backend.env_var:
            all_envs[backend.env_var] = backend.env_value(devices)
        all_envs.update(envs)
        cdi = tuple(f"{self._cdi_kind}={d.id}" for d in devices) if self._cdi_kind else ()
        return ContainerAllocation(
            envs=all_envs,
            device_specs=tuple(dict.fromkeys(specs)),
            mounts=backend.container_mounts(),
            annotations=annotations,
            cdi_devices=cdi,
            physical_ids=tuple(d.id for d in devices),
        )


def _describe(ids: Iterable[str]) -> str:
    ids = list(ids)
    if len(ids) <= 4:
        return ", ".join(ids)
    return f"{len(ids)} ids: {ids[0]} .. {ids[-1]}"
