"""A real dev-cluster node: a kubelet, containerd and kube-proxy in namespaces of their own.

Each node gets a network namespace (:mod:`kubenpu.devcluster.network`) and a persistent
mount namespace, in which the directories the kubelet and containerd hard-code are bound
to the node's own state directory: two kubelets on one machine must not share
``/var/lib/kubelet/device-plugins``, nor two containerds ``/run/containerd``. The mount
namespace outlives its processes (it is bound to a file under :data:`NS_DIR`), so one
component can be restarted alone, as on a real node.

Every process of the node runs through ``nsenter`` into both namespaces. Containers are
children of containerd's shims, which leave containerd's process group, so stopping a node
kills whatever descends from a process in the node's namespaces before the namespaces go.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kubenpu.devcluster import nodeconfig
from kubenpu.devcluster.network import NodeNetwork
from kubenpu.errors import KubeNpuError

#: Where the node mount namespaces are bound (a private mount of its own, as /run/netns).
NS_DIR = Path("/run/kubenpu/ns")
#: The node directories bound over the paths the kubelet and containerd hard-code.
_BOUND = {
    "kubelet": nodeconfig.KUBELET_ROOT,
    "containerd/root": "/var/lib/containerd",
    "containerd/state": "/run/containerd",
    "pod-logs": nodeconfig.POD_LOGS,
}


class NodeRuntimeError(KubeNpuError):
    """A real node's namespaces could not be made or removed."""


@dataclass(frozen=True, slots=True)
class RealNode:
    """Where one real node keeps its files, and how its processes are started."""

    dir: Path
    network: NodeNetwork

    @property
    def name(self) -> str:
        """The node's name."""
        return self.network.name

    @property
    def mount_ns(self) -> Path:
        """The file the node's mount namespace is bound to."""
        return NS_DIR / f"{self.network.netns}.mnt"

    @property
    def kubelet_dir(self) -> Path:
        """The kubelet's root directory, as the host sees it."""
        return self.dir / "kubelet"

    @property
    def device_plugin_dir(self) -> Path:
        """The kubelet's device-plugins directory, as the host sees it."""
        return self.kubelet_dir / "device-plugins"

    @property
    def plugins_registry_dir(self) -> Path:
        """The kubelet's plugin registration directory (DRA drivers), as the host sees it."""
        return self.kubelet_dir / "plugins_registry"

    @property
    def dev_dir(self) -> Path:
        """Where the mock backend creates this node's NPU device nodes."""
        return self.dir / "dev"

    @property
    def health_dir(self) -> Path:
        """The mock backend's health markers."""
        return self.dir / "health"

    @property
    def containerd_socket(self) -> Path:
        """containerd's socket, as the host sees it."""
        return self.dir / "containerd" / "state" / "containerd.sock"

    def config_path(self, name: str) -> Path:
        """A config file of the node."""
        return self.dir / "config" / name

    def enter(self, argv: Iterable[str]) -> list[str]:
        """``argv`` run inside the node's network and mount namespaces."""
        return [
            "nsenter",
            f"--net={self.network.netns_path}",
            f"--mount={self.mount_ns}",
            "--",
            *argv,
        ]


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise NodeRuntimeError(f"`{' '.join(argv)}` failed: {result.stderr.strip()}")


def _ensure_ns_dir() -> None:
    """Make :data:`NS_DIR` a private mount, so namespace files can be bound in it."""
    NS_DIR.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mountpoint", "-q", str(NS_DIR)], check=False).returncode == 0
    if not mounted:
        _run(["mount", "--bind", str(NS_DIR), str(NS_DIR)])
    _run(["mount", "--make-private", str(NS_DIR)])


def make_dirs(node: RealNode) -> None:
    """Create the node's directories (before its files are written)."""
    for sub in (*_BOUND, "config", "cni", "certs.d", "cdi", "dev", "health"):
        (node.dir / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    node.device_plugin_dir.mkdir(exist_ok=True)
    node.plugins_registry_dir.mkdir(exist_ok=True)


def make_mount_namespace(node: RealNode) -> None:
    """Create the node's persistent mount namespace with its directories bound in."""
    _ensure_ns_dir()
    node.mount_ns.touch()
    binds = []
    for sub, target in _BOUND.items():
        Path(target).mkdir(parents=True, exist_ok=True)
        binds.append(f"mount --bind '{node.dir / sub}' '{target}'")
    # Shared inside the namespace (as on a systemd host), for the kubelet's mount
    # propagation; nothing propagates back to the host, whose mounts were made private.
    script = " && ".join([*binds, "mount --make-rshared /"])
    _run(
        [
            "unshare",
            f"--mount={node.mount_ns}",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
        ]
    )


def _ns_inode(path: str) -> int | None:
    with contextlib.suppress(OSError):
        return os.stat(path).st_ino
    return None


def _processes() -> dict[int, int]:
    """pid -> parent pid of every process."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            raw = Path(f"/proc/{entry}/stat").read_text()
            parents[int(entry)] = int(raw[raw.rindex(")") + 2 :].split()[1])
    return parents


def processes_of(node: RealNode) -> list[int]:
    """Every process in the node's namespaces, and everything descending from one."""
    mnt = _ns_inode(str(node.mount_ns))
    net = _ns_inode(str(node.network.netns_path))
    parents = _processes()
    inside = set()
    for pid in parents:
        if pid == os.getpid():
            continue
        for kind, inode in (("mnt", mnt), ("net", net)):
            if inode is not None and _ns_inode(f"/proc/{pid}/ns/{kind}") == inode:
                inside.add(pid)
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), list(inside)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return sorted(found)


def kill_leftovers(node: RealNode, timeout: float = 10.0) -> list[int]:
    """SIGKILL every process left in or below the node's namespaces; return their pids."""
    pids = processes_of(node)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and processes_of(node):
        time.sleep(0.05)
    return pids


def remove_mount_namespace(node: RealNode) -> None:
    """Release the node's mount namespace (its mounts go with it) and the file."""
    if node.mount_ns.exists():
        subprocess.run(["umount", str(node.mount_ns)], capture_output=True, check=False)
        node.mount_ns.unlink(missing_ok=True)


def release_namespace_dirs() -> None:
    """Unmount :data:`NS_DIR` and ``/run/netns`` once no namespace is bound in them.

    Both are bind mounts made for namespace files (the second by ``ip netns``); the last
    cluster to go takes them away, so nothing of the dev cluster stays mounted."""
    for directory in (NS_DIR, Path("/run/netns")):
        if directory.is_dir() and not any(directory.iterdir()):
            subprocess.run(["umount", str(directory)], capture_output=True, check=False)


def remove_cgroups(cgroup_root: str) -> None:
    """Remove the (empty, once its processes are gone) cgroup tree of a node."""
    base = Path("/sys/fs/cgroup")
    for controller in base.iterdir() if base.is_dir() else ():
        top = controller / cgroup_root.lstrip("/")
        if not top.is_dir():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)
