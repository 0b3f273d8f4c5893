"""Small hand-made clusters for engine tests."""

from kubenpu.model import Device, Node, Request


def node(
    name: str, npus: int, cpu: int = 64_000, mem: int = 262_144, model: str = "A", groups: int = 1
) -> Node:
    """A node with ``npus`` devices ``<name>-<i>``, split evenly into ``groups`` groups."""
    per = max(1, npus // groups)
    devices = tuple(Device(f"{name}-{i}", i, model=model, group=i // per) for i in range(npus))
    return Node(name, cpu, mem, devices)


def whole(name: str, n: int = 1, cpu: int = 1000, mem: int = 1024, models=()) -> Request:
    return Request(name, cpu, mem, npus=n, models=frozenset(models))


def share(name: str, milli: int, cpu: int = 1000, mem: int = 1024, models=()) -> Request:
    return Request(name, cpu, mem, share_milli=milli, models=frozenset(models))


def cpu_only(name: str, cpu: int = 1000, mem: int = 1024) -> Request:
    return Request(name, cpu, mem)
