"""A running dev cluster: start it, find it again from its state directory, stop it.

:func:`up` starts etcd, kube-apiserver and kube-scheduler on loopback, then one node agent
per simulated node and one ``kubenpu device-plugin --backend mock`` per NPU node, waits
until the cluster is usable and records everything in ``<state dir>/state.json``. All
processes are detached: they keep running after the command (or fixture) that started
them, until :meth:`DevCluster.down`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from kubenpu import names
from kubenpu.devcluster import binaries, controlplane, pki, processes
from kubenpu.devcluster import extender as dev_extender
from kubenpu.devcluster import webhook as dev_webhook
from kubenpu.devcluster.controlplane import Paths, Ports
from kubenpu.devcluster.nodeagent import AgentConfig, read_checkpoint
from kubenpu.deviceplugin.api import KUBELET_CHECKPOINT
from kubenpu.errors import ConfigError, KubeNpuError

#: Layout version of state.json.
STATE_VERSION = 1
#: Capacity of the reference NPU worker, ecs.ebman1.26xlarge (104 vCPU, 384 GiB).
NPU_NODE_CAPACITY = {"cpu": "104", "memory": "384Gi", "pods": "110", "ephemeral-storage": "200Gi"}
#: A general-purpose worker without NPUs.
CPU_INSTANCE_TYPE = "ecs.g7.8xlarge"
CPU_NODE_CAPACITY = {"cpu": "32", "memory": "128Gi", "pods": "110", "ephemeral-storage": "200Gi"}
# A unix socket path must fit in sun_path (108 bytes with the terminating NUL).
_MAX_SOCKET_PATH = 107
# Room for the socket file names in a device-plugins dir (kubelet.sock, kubenpu-npu.sock,
# kubenpu-npu-core.sock, ...).
_SOCKET_NAME_ALLOWANCE = 24


def default_state_dir() -> Path:
    """Where ``kubenpu dev-cluster`` keeps its cluster unless told otherwise."""
    return binaries.cache_root() / "dev-cluster"


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """The shape of a dev cluster."""

    npu_nodes: int = 2
    npus_per_node: int = 4
    cpu_nodes: int = 0
    npu_model: str = names.REFERENCE_NPU_MODEL

    def __post_init__(self) -> None:
        if self.npu_nodes < 0 or self.cpu_nodes < 0 or self.npu_nodes + self.cpu_nodes < 1:
            raise ConfigError(
                f"--nodes {self.npu_nodes} / --cpu-nodes {self.cpu_nodes}: "
                "a dev cluster needs at least one node and no negative counts"
            )
        if self.npus_per_node < 1:
            raise ConfigError(f"--npus {self.npus_per_node}: each NPU node needs at least 1 NPU")


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One simulated node and where its files are."""

    name: str
    npus: int
    dir: str

    @property
    def device_plugin_dir(self) -> Path:
        """The node's device-plugins dir (kubelet.sock, plugin sockets, checkpoint)."""
        return Path(self.dir) / "device-plugins"

    @property
    def health_dir(self) -> Path:
        """The mock backend's health dir: ``unhealthy-<device id>`` marks a device sick."""
        return Path(self.dir) / "health"

    @property
    def checkpoint(self) -> Path:
        """The node agent's checkpoint (devices held by each pod, latest device lists)."""
        return self.device_plugin_dir / KUBELET_CHECKPOINT

    @property
    def agent_config(self) -> Path:
        """The node agent's config file."""
        return Path(self.dir) / "agent.json"

    @property
    def kubeconfig(self) -> Path:
        """The node's kubeconfig (user system:node:<name>)."""
        return Path(self.dir) / "kubeconfig"


@dataclass(frozen=True, slots=True)
class NodeSummary:
    """A Node as the API server reports it."""

    name: str
    ready: bool
    capacity_npus: int
    allocatable_npus: int


@dataclass(frozen=True, slots=True)
class ProcessStatus:
    """What ``status`` reports about one process."""

    name: str
    pid: int
    running: bool
    log: str


@dataclass(slots=True)
class DevCluster:
    """Handle on a dev cluster recorded in a state directory."""

    state_dir: Path
    ports: Ports
    kubeconfig: Path
    nodes: list[NodeInfo]
    processes: dict[str, processes.ProcessRecord] = field(default_factory=dict)
    #: Where ``up`` was asked to also write the admin kubeconfig (removed by ``down``).
    user_kubeconfig: Path | None = None

    # -- persistence ----------------------------------------------------------------

    @property
    def paths(self) -> Paths:
        """The file layout of the state directory."""
        return Paths(self.state_dir)

    @property
    def server(self) -> str:
        """The API server URL."""
        return self.ports.server

    def save(self) -> None:
        """Write state.json (atomically)."""
        data = {
            "version": STATE_VERSION,
            "kubernetes": binaries.KUBERNETES_VERSION,
            "server": self.server,
            "ports": {
                "etcd_client": self.ports.etcd_client,
                "etcd_peer": self.ports.etcd_peer,
                "apiserver": self.ports.apiserver,
                "scheduler": self.ports.scheduler,
                "webhook": self.ports.webhook,
                "extender": self.ports.extender,
            },
            "kubeconfig": str(self.kubeconfig),
            "user_kubeconfig": str(self.user_kubeconfig) if self.user_kubeconfig else None,
            "nodes": [{"name": n.name, "npus": n.npus, "dir": n.dir} for n in self.nodes],
            "processes": {name: r.to_json() for name, r in self.processes.items()},
        }
        path = self.paths.state_file
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, state_dir: Path) -> DevCluster | None:
        """The cluster recorded in ``state_dir``, or None if there is none."""
        path = Paths(state_dir).state_file
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        if data.get("version") != STATE_VERSION:
            raise ConfigError(
                f"{path}: state version {data.get('version')!r}, this kubenpu reads "
                f"{STATE_VERSION}; stop it with the kubenpu that started it or delete {state_dir}"
            )
        user = data.get("user_kubeconfig")
        return cls(
            state_dir=state_dir,
            ports=Ports(**data["ports"]),
            kubeconfig=Path(data["kubeconfig"]),
            nodes=[NodeInfo(**n) for n in data["nodes"]],
            processes={
                name: processes.ProcessRecord.from_json(r) for name, r in data["processes"].items()
            },
            user_kubeconfig=Path(user) if user else None,
        )

    # -- nodes ------------------------------------------------------------------------

    def node(self, name: str) -> NodeInfo:
        """The node called ``name``."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node {name!r}; nodes: {', '.join(n.name for n in self.nodes)}")

    @property
    def npu_nodes(self) -> list[NodeInfo]:
        """Nodes with NPUs."""
        return [n for n in self.nodes if n.npus > 0]

    def node_summaries(self) -> list[NodeSummary]:
        """Every Node from the API server: readiness and NPU capacity/allocatable."""
        config = str(self.kubeconfig)
        api = k8s.CoreV1Api(k8s_config.new_client_from_config(config_file=config))
        listing = json.loads(api.list_node(_preload_content=False, _request_timeout=5).data)
        summaries = []
        for node in listing.get("items", []):
            status = node.get("status", {})
            summaries.append(
                NodeSummary(
                    name=node["metadata"]["name"],
                    ready=any(
                        c["type"] == "Ready" and c["status"] == "True"
                        for c in status.get("conditions", [])
                    ),
                    capacity_npus=int(status.get("capacity", {}).get(names.RESOURCE_NPU, "0")),
                    allocatable_npus=int(
                        status.get("allocatable", {}).get(names.RESOURCE_NPU, "0")
                    ),
                )
            )
        return summaries

    def checkpoint(self, node: str) -> dict[str, Any]:
        """The node agent's checkpoint: devices held per pod uid, latest device lists."""
        return read_checkpoint(self.node(node).checkpoint)

    def allocations(self, node: str) -> dict[tuple[str, str], list[str]]:
        """(namespace, pod name) -> every NPU device id the node agent gave that pod."""
        result: dict[tuple[str, str], list[str]] = {}
        for entry in self.checkpoint(node).get("pods", {}).values():
            devices = [
                d
                for per in entry["containers"].values()
                for d in per.get(names.RESOURCE_NPU, {}).get("devices", [])
            ]
            result[(entry["namespace"], entry["name"])] = sorted(devices)
        return result

    def set_device_health(self, node: str, device_id: str, *, healthy: bool) -> None:
        """Mark a device of the mock backend unhealthy (or healthy again)."""
        marker = self.node(node).health_dir / f"unhealthy-{device_id}"
        if healthy:
            marker.unlink(missing_ok=True)
        else:
            marker.touch()

    # -- processes --------------------------------------------------------------------

    def status(self) -> list[ProcessStatus]:
        """Every recorded process and whether it still runs."""
        return [
            ProcessStatus(name, r.pid, processes.alive(r), r.log)
            for name, r in self.processes.items()
        ]

    def stop_process(self, name: str, *, kill: bool = False) -> None:
        """Stop one recorded process (SIGKILL at once with ``kill``: a crash)."""
        record = self.processes[name]
        processes.stop([record], timeout=0.0 if kill else 10.0)

    def start_process(self, name: str) -> None:
        """Start a recorded process again with the same command line, and record it."""
        old = self.processes[name]
        if processes.alive(old):
            raise KubeNpuError(f"{name} (pid {old.pid}) is still running")
        self.processes[name] = processes.spawn(name, old.argv, Path(old.log))
        self.save()

    def down(self) -> list[str]:
        """Stop every process, remove the state directory; return the names killed hard.

        Node agents and plugins go first, then the scheduler, the API server and etcd, so
        nothing is left writing to a store that is going away.
        """
        killed: list[str] = []
        for tier in _tiers(self.processes.values()):
            killed += processes.stop(tier)
        leftover = [p for p in _ports(self.ports) if processes.port_in_use(p)]
        if self.user_kubeconfig is not None and _same_file(
            self.user_kubeconfig, self.paths.admin_kubeconfig
        ):
            self.user_kubeconfig.unlink(missing_ok=True)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        if leftover:
            raise KubeNpuError(
                f"dev cluster stopped, but ports {leftover} on 127.0.0.1 are still in use"
            )
        return killed


# Stop order: higher first.
_STOP_ORDER = {
    dev_extender.PROCESS: -2,
    "kube-scheduler": -2,
    "kube-apiserver": -3,
    "etcd": -4,
}


def _tiers(
    records: Iterable[processes.ProcessRecord],
) -> Iterable[list[processes.ProcessRecord]]:
    """The records grouped by stop order, the group to stop first first."""
    by_rank: dict[int, list[processes.ProcessRecord]] = {}
    for record in records:
        by_rank.setdefault(_STOP_ORDER.get(record.name, -1), []).append(record)
    for rank in sorted(by_rank, reverse=True):
        yield by_rank[rank]


def _ports(ports: Ports) -> list[int]:
    ours = [ports.etcd_client, ports.etcd_peer, ports.apiserver, ports.scheduler, ports.webhook]
    ours.append(ports.extender)
    return [p for p in ours if p]


def _same_file(a: Path, b: Path) -> bool:
    with contextlib.suppress(OSError):
        return a.read_bytes() == b.read_bytes()
    return False


def _kubenpu_command() -> list[str]:
    """How to run the ``kubenpu`` CLI of this very installation."""
    script = Path(sys.executable).parent / "kubenpu"
    if script.is_file():
        return [str(script)]
    found = shutil.which("kubenpu")
    if found is None:
        raise ConfigError("the kubenpu command is not installed next to this Python nor on PATH")
    return [found]


def device_plugin_argv(node: NodeInfo) -> list[str]:
    """``kubenpu device-plugin`` with the mock backend for ``node``."""
    return [
        *_kubenpu_command(),
        "device-plugin",
        "--backend",
        "mock",
        "--mock-devices",
        str(node.npus),
        "--kubelet-dir",
        str(node.device_plugin_dir),
        "--mock-health-dir",
        str(node.health_dir),
        # Shares on, and API access as the node itself (a node may patch only its own
        # Node and read the pods bound to it): whole devices follow the extender's record,
        # shares resolve from it, and the device inventory is published on the Node.
        "--sharing",
        "--node-name",
        node.name,
        "--kubeconfig",
        str(node.kubeconfig),
    ]


def node_agent_argv(node: NodeInfo) -> list[str]:
    """The node agent process for ``node``."""
    return [sys.executable, "-m", "kubenpu.devcluster.nodeagent", str(node.agent_config)]


def _node_names(spec: ClusterSpec) -> list[tuple[str, int]]:
    npu = [(f"npu-node-{i}", spec.npus_per_node) for i in range(1, spec.npu_nodes + 1)]
    cpu = [(f"cpu-node-{i}", 0) for i in range(1, spec.cpu_nodes + 1)]
    return npu + cpu


def _write_node(
    cluster: DevCluster, ca: pki.CertificateAuthority, spec: ClusterSpec, node: NodeInfo
) -> None:
    """Create the node's directories, its client certificate and the agent's config."""
    root = Path(node.dir)
    root.mkdir(parents=True, mode=0o700)
    node.device_plugin_dir.mkdir()
    node.health_dir.mkdir()
    socket_room = len(str(node.device_plugin_dir)) + 1 + _SOCKET_NAME_ALLOWANCE
    if socket_room > _MAX_SOCKET_PATH:
        raise ConfigError(
            f"state dir {cluster.state_dir} is too deep: socket paths under "
            f"{node.device_plugin_dir} would exceed {_MAX_SOCKET_PATH} bytes; "
            "pass a shorter --state-dir"
        )
    user = f"system:node:{node.name}"
    pair = ca.issue(user, organizations=("system:nodes",), client=True)
    pki.write_secret(
        node.kubeconfig,
        controlplane.kubeconfig_yaml(cluster.server, ca.cert_pem, pair, user).encode(),
    )
    labels = {
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
    }
    if node.npus:
        labels[names.LABEL_INSTANCE_TYPE] = names.REFERENCE_INSTANCE_TYPE
        labels[names.LABEL_NPU_MODEL] = spec.npu_model
        capacity = NPU_NODE_CAPACITY
    else:
        labels[names.LABEL_INSTANCE_TYPE] = CPU_INSTANCE_TYPE
        capacity = CPU_NODE_CAPACITY
    AgentConfig(
        node=node.name,
        kubeconfig=str(node.kubeconfig),
        device_plugin_dir=str(node.device_plugin_dir),
        labels=labels,
        capacity=dict(capacity),
        kubelet_version=binaries.KUBERNETES_VERSION,
    ).save(node.agent_config)


def up(
    state_dir: Path,
    spec: ClusterSpec,
    *,
    kubeconfig: Path | None = None,
    timeout: float = 90.0,
    webhook: bool = True,
) -> DevCluster:
    """Start a dev cluster recorded in ``state_dir`` and wait until it is usable.

    Usable means: the API server is ready, the scheduler healthy, every node Ready and
    every NPU node's allocatable ``aliyun.com/npu`` equal to its NPU count. The admin
    kubeconfig is written to ``state_dir/admin.kubeconfig`` and, if given, ``kubeconfig``.
    With ``webhook`` the admission webhook runs too and is registered and in effect.
    On any failure everything started so far is stopped again.
    """
    existing = DevCluster.load(state_dir)
    if existing is not None:
        if any(s.running for s in existing.status()):
            raise ConfigError(
                f"a dev cluster is already running from {state_dir} (API server "
                f"{existing.server}); run `kubenpu dev-cluster down` first"
            )
        existing.down()  # leftovers of a cluster whose processes are all gone
    bin_dir = binaries.ensure_built()
    if state_dir.exists() and any(state_dir.iterdir()):
        raise ConfigError(f"state dir {state_dir} is not empty; remove it or pick another")
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    state_dir.chmod(0o700)

    paths = Paths(state_dir)
    ports = Ports(
        etcd_client=processes.free_port(),
        etcd_peer=processes.free_port(),
        apiserver=processes.free_port(),
        scheduler=processes.free_port(),
        webhook=processes.free_port() if webhook else 0,
        extender=processes.free_port(),
    )
    nodes = [NodeInfo(name, npus, str(paths.node_dir(name))) for name, npus in _node_names(spec)]
    cluster = DevCluster(state_dir, ports, paths.admin_kubeconfig, nodes, user_kubeconfig=None)
    deadline = time.monotonic() + timeout
    try:
        ca = controlplane.write_pki(paths, ports)
        for node in nodes:
            _write_node(cluster, ca, spec, node)
        if webhook:
            dev_webhook.write_files(paths, ca, ports.server)
        dev_extender.write_files(paths, ca, ports.server, ports.extender)
        if kubeconfig is not None:
            pki.write_secret(kubeconfig, paths.admin_kubeconfig.read_bytes())
            cluster.user_kubeconfig = kubeconfig

        def start(name: str, argv: list[str]) -> None:
            cluster.processes[name] = processes.spawn(name, argv, paths.logs / f"{name}.log")
            cluster.save()

        start("etcd", controlplane.etcd_argv(bin_dir / "etcd", paths, ports))
        start(
            "kube-apiserver", controlplane.apiserver_argv(bin_dir / "kube-apiserver", paths, ports)
        )
        start(
            "kube-scheduler",
            controlplane.scheduler_argv(
                bin_dir / "kube-scheduler", paths, ports, dev_extender.scheduler_config_path(paths)
            ),
        )
        # Node agents and plugins start while the API server comes up: they retry until it
        # answers, and Python's start-up time overlaps with the API server's.
        for node in nodes:
            start(f"node-agent/{node.name}", node_agent_argv(node))
            if node.npus:
                start(f"device-plugin/{node.name}", device_plugin_argv(node))
        if webhook:
            start(dev_webhook.PROCESS, dev_webhook.argv(_kubenpu_command(), paths, ports.webhook))
        controlplane.wait_apiserver_ready(paths, ports, deadline)
        # The extender starts once its role exists: until then every list would be refused.
        dev_extender.grant(paths)
        start(dev_extender.PROCESS, dev_extender.argv(_kubenpu_command(), paths, ports.extender))
        controlplane.wait_scheduler_healthy(ports, deadline)
        wait_nodes_ready(cluster, deadline)
        dev_extender.wait_ready(ports.extender, deadline)
        if webhook:
            dev_webhook.wait_ready(paths, ports.webhook, deadline)
            dev_webhook.register(paths, ports.webhook, deadline)
    except BaseException:
        with contextlib.suppress(Exception):
            _dump_logs(cluster)
        cluster.down()
        raise
    return cluster


def _dump_logs(cluster: DevCluster, lines: int = 15) -> None:
    """Print the end of each process's log to stderr, to explain a failed start."""
    for name, record in cluster.processes.items():
        with contextlib.suppress(OSError):
            tail = Path(record.log).read_text(errors="replace").splitlines()[-lines:]
            print(f"--- {name} ({record.log}) ---", file=sys.stderr)
            print("\n".join(tail), file=sys.stderr)


def wait_nodes_ready(cluster: DevCluster, deadline: float) -> None:
    """Wait until every node is Ready and reports all its NPUs allocatable."""
    want = {n.name: n.npus for n in cluster.nodes}
    last: dict[str, str] = {}
    while time.monotonic() < deadline:
        for name, record in cluster.processes.items():
            if not processes.alive(record):
                raise KubeNpuError(f"{name} exited during start-up; see {record.log}")
        seen = {n.name: n for n in cluster.node_summaries()}
        last = {}
        for name, npus in want.items():
            node = seen.get(name)
            if node is None:
                last[name] = "not registered"
            elif not (node.ready and node.allocatable_npus == npus):
                last[name] = (
                    f"ready={node.ready}, {names.RESOURCE_NPU} allocatable "
                    f"{node.allocatable_npus}/{npus}"
                )
        if not last:
            return
        time.sleep(0.2)
    raise controlplane.HealthError(f"nodes not ready in time: {last}")
