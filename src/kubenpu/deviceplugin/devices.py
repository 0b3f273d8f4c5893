"""Plain data shared by backends, the resource manager and the server: no I/O here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NpuDevice:
    """One physical NPU as a backend found it."""

    #: Stable id advertised to the kubelet (at most 63 characters).
    id: str
    #: The device's index on the node (the number in ``/dev/<name><index>``).
    index: int
    model: str = ""
    memory_mib: int = 0
    #: NUMA node of the device's PCIe slot; None when unknown.
    numa_node: int | None = None
    #: Interconnect group (devices linked directly); defaults to the NUMA node.
    group: int = 0
    #: Host device nodes that belong to this device alone.
    paths: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MountSpec:
    """A host path mounted into every container that gets a device."""

    host_path: str
    container_path: str
    read_only: bool = True

    @classmethod
    def parse(cls, text: str) -> MountSpec:
        """Parse ``HOST[:CONTAINER][:ro|rw]``; the container path defaults to the host's."""
        parts = text.split(":")
        if not parts[0] or len(parts) > 3:
            raise ValueError(f"mount {text!r}: expected HOST[:CONTAINER][:ro|rw]")
        mode = "ro"
        if parts[-1] in ("ro", "rw") and len(parts) > 1:
            mode = parts.pop()
        container = parts[1] if len(parts) > 1 and parts[1] else parts[0]
        if len(parts) > 2 or not parts[0].startswith("/") or not container.startswith("/"):
            raise ValueError(f"mount {text!r}: paths must be absolute, HOST[:CONTAINER][:ro|rw]")
        return cls(parts[0], container, mode == "ro")


@dataclass(frozen=True, slots=True)
class ContainerAllocation:
    """What one container gets for its devices: the manager's answer to Allocate."""

    envs: dict[str, str]
    #: (host path, container path, cgroup permissions)
    device_specs: tuple[tuple[str, str, str], ...]
    mounts: tuple[MountSpec, ...]
    annotations: dict[str, str]
    cdi_devices: tuple[str, ...]
    #: Physical device ids behind the request (the virtual ids resolved).
    physical_ids: tuple[str, ...]
