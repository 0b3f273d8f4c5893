"""The network of a real-node dev cluster: one bridge, one network namespace per node.

Every address lives on this machine. A cluster takes a free *slot* ``k`` (0..7) and with it:

- the node network ``198.18.k.0/24`` on a bridge ``knpu<k>`` in the host's namespace: the
  bridge holds the gateway ``198.18.k.1`` (where the relay makes the API server and the
  registry reachable), node ``i`` is ``198.18.k.(10+i)`` inside its own namespace;
- pod networks ``198.19.(16k+i).0/24``, one per node, on a CNI bridge inside the node's
  namespace;
- the Service range ``198.18.(128+k).0/24``, which only kube-proxy's rules inside the node
  namespaces give meaning to.

``198.18.0.0/15`` is reserved for network benchmarks (RFC 2544) and never routed on the
internet. Nothing gets a default route: the node namespaces know only the node network,
their own pod network and their peers' pod networks, so a packet for any other address
fails at once with "network unreachable" instead of leaving the machine, and the host
holds an ``unreachable`` route for the Service range so no host process can send a Service
address out through the host's default route either.
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kubenpu.errors import ConfigError, KubeNpuError

#: Clusters that can run side by side on one machine.
SLOTS = 8
#: Real nodes per cluster (pod networks are /24s in a /20 per cluster, node 0 unused).
MAX_NODES = 15
_NETNS_DIR = Path("/run/netns")


class NetworkError(KubeNpuError):
    """Setting up or removing the dev cluster's network failed."""


@dataclass(frozen=True, slots=True)
class NetworkPlan:
    """Every name and address of one cluster's network (pure: no I/O)."""

    slot: int

    def __post_init__(self) -> None:
        if not 0 <= self.slot < SLOTS:
            raise ConfigError(f"network slot {self.slot}: slots are 0..{SLOTS - 1}")

    @property
    def bridge(self) -> str:
        """The host bridge that joins the nodes."""
        return f"knpu{self.slot}"

    @property
    def node_cidr(self) -> str:
        """The node network."""
        return f"198.18.{self.slot}.0/24"

    @property
    def gateway(self) -> str:
        """The host's address on the node network (relayed API server and registry)."""
        return f"198.18.{self.slot}.1"

    @property
    def service_cidr(self) -> str:
        """The Service range."""
        return f"198.18.{128 + self.slot}.0/24"

    @property
    def kubernetes_service_ip(self) -> str:
        """The ``kubernetes`` Service's cluster IP (first address of the range)."""
        return f"198.18.{128 + self.slot}.1"

    @property
    def cluster_cidr(self) -> str:
        """Every pod network of the cluster."""
        return f"198.19.{16 * self.slot}.0/20"

    def node(self, index: int, name: str) -> NodeNetwork:
        """The network of node ``index`` (1-based) called ``name``."""
        if not 1 <= index <= MAX_NODES:
            raise ConfigError(
                f"node {name}: a real-node dev cluster has at most {MAX_NODES} nodes; "
                "use --node-agent for more"
            )
        return NodeNetwork(
            name=name,
            index=index,
            netns=f"{self.bridge}-{name}",
            host_veth=f"{self.bridge}n{index}",
            ip=f"198.18.{self.slot}.{10 + index}",
            pod_cidr=f"198.19.{16 * self.slot + index}.0/24",
        )


@dataclass(frozen=True, slots=True)
class NodeNetwork:
    """One node's namespace and addresses."""

    name: str
    index: int
    netns: str
    host_veth: str
    ip: str
    pod_cidr: str

    @property
    def netns_path(self) -> Path:
        """The bind-mounted namespace file ``ip netns`` keeps."""
        return _NETNS_DIR / self.netns

    @property
    def pod_gateway(self) -> str:
        """The CNI bridge's address in the node's namespace (first of the pod network)."""
        net = ipaddress.ip_network(self.pod_cidr)
        return str(net.network_address + 1)


def _ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    argv = ["ip", *(("-n", netns) if netns else ()), *args]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise NetworkError(f"`{' '.join(argv)}` failed: {result.stderr.strip()}")
    return result.stdout


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def claim_slot() -> NetworkPlan:
    """Claim the lowest free slot by creating its bridge (atomic: two clusters starting at
    once never get the same one) and return its plan."""
    for slot in range(SLOTS):
        plan = NetworkPlan(slot)
        if _link_exists(plan.bridge):
            continue
        result = subprocess.run(
            ["ip", "link", "add", plan.bridge, "type", "bridge"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode == 0:
            return plan
        if not _link_exists(plan.bridge):  # not lost to a race: a real failure
            raise NetworkError(f"cannot create bridge {plan.bridge}: {result.stderr.strip()}")
    raise NetworkError(
        f"all {SLOTS} dev-cluster network slots are taken (bridges knpu0..knpu{SLOTS - 1}); "
        "stop a dev cluster first"
    )


def set_up(plan: NetworkPlan, nodes: Sequence[NodeNetwork]) -> None:
    """Set up the claimed bridge, every node namespace with its veth, addresses and routes.

    Raises :class:`NetworkError` (and leaves what it made for :func:`tear_down`)."""
    _ip("addr", "add", f"{plan.gateway}/24", "dev", plan.bridge)
    _ip("link", "set", plan.bridge, "up")
    _ip("route", "add", "unreachable", plan.service_cidr)
    for node in nodes:
        _ip("netns", "add", node.netns)
        _ip("link", "set", "lo", "up", netns=node.netns)
        _ip(
            "link",
            "add",
            node.host_veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            node.netns,
        )
        _ip("link", "set", node.host_veth, "master", plan.bridge, "up")
        _ip("addr", "add", f"{node.ip}/24", "dev", "eth0", netns=node.netns)
        _ip("link", "set", "eth0", "up", netns=node.netns)
        # The host reaches each pod network through its node (the API server dials webhook
        # pods and kubelets there).
        _ip("route", "add", node.pod_cidr, "via", node.ip)
        for peer in nodes:
            if peer is not node:
                _ip("route", "add", peer.pod_cidr, "via", peer.ip, netns=node.netns)
        # Pods reach other nodes' pods and the gateway; kube-proxy needs forwarding.
        _sysctl(node.netns, "net.ipv4.ip_forward", "1")
        _sysctl(node.netns, "net.bridge.bridge-nf-call-iptables", "1", optional=True)


def _sysctl(netns: str, key: str, value: str, *, optional: bool = False) -> None:
    path = "/proc/sys/" + key.replace(".", "/")
    argv = ["ip", "netns", "exec", netns, "sh", "-c", f"echo {value} > {path}"]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0 and not optional:
        raise NetworkError(f"`{' '.join(argv)}` failed: {result.stderr.strip()}")


def tear_down(plan: NetworkPlan, nodes: Sequence[NodeNetwork]) -> list[str]:
    """Remove what :func:`set_up` made (whatever part of it exists); return problems."""
    problems = []
    for node in nodes:
        if node.netns_path.exists():
            out = subprocess.run(
                ["ip", "netns", "del", node.netns], capture_output=True, text=True, check=False
            )
            if out.returncode != 0:
                problems.append(f"netns {node.netns}: {out.stderr.strip()}")
        if _link_exists(node.host_veth):
            _ip("link", "del", node.host_veth, check=False)
    _ip("route", "del", "unreachable", plan.service_cidr, check=False)
    if _link_exists(plan.bridge):
        _ip("link", "del", plan.bridge, check=False)
    return problems
