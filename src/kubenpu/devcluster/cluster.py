"""A running dev cluster: start it, find it again from its state directory, stop it.

:func:`up` starts etcd, kube-apiserver, kube-controller-manager and kube-scheduler (with
the kubenpu extender) on loopback, then the nodes, waits until the cluster is usable and
records everything in ``<state dir>/state.json``. Nodes are of one of two kinds:

- ``real`` (the default): each node is a real kubelet with its own containerd and runc and
  kube-proxy, in network and mount namespaces of its own (:mod:`kubenpu.devcluster.realnode`),
  with the private registry holding the workload images; containers really run.
- ``agent``: each node is kubenpu's node agent, a kubelet stand-in that runs no containers;
  light enough for many nodes, and no root needed.

Every NPU node runs ``kubenpu device-plugin --backend mock``, or, for the last
``ClusterSpec.dra_nodes`` real NPU nodes, ``kubenpu dra-driver --backend mock`` (the DRA
driver, docs/dra.md) instead. All processes are detached:
they keep running after the command (or fixture) that started them, until
:meth:`DevCluster.down`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from kubenpu import names
from kubenpu.devcluster import (
    binaries,
    controlplane,
    network,
    nodeconfig,
    pki,
    processes,
    rbac,
    realnode,
    registry_client,
)
from kubenpu.devcluster import extender as dev_extender
from kubenpu.devcluster import images as dev_images
from kubenpu.devcluster import registry as dev_registry
from kubenpu.devcluster import webhook as dev_webhook
from kubenpu.devcluster.controlplane import Paths, Ports
from kubenpu.devcluster.nodeagent import AgentConfig, read_checkpoint
from kubenpu.deviceplugin.api import KUBELET_CHECKPOINT
from kubenpu.dra import deviceclass as dra_deviceclass
from kubenpu.dra import slices as dra_slices
from kubenpu.errors import ConfigError, KubeNpuError
from kubenpu.kubeclient import raw
from kubenpu.names import LABEL_NPU_DRIVER, NPU_DRIVER_DRA

#: Layout version of state.json.
STATE_VERSION = 2
#: Images the private registry holds at start: image -> (repository, tag), as the
#: examples/ manifests name them (under :data:`dev_registry.SERVER`).
WORKLOADS = {
    "npu-check": ("demo/npu-check", "0.1.0"),
    "resnet50": ("demo/npu-resnet50", "1.0"),
}
#: The kinds of node a dev cluster can run.
NODE_KINDS = ("real", "agent")
#: How a node's NPUs are served: the device plugin or the DRA driver.
NPU_DRIVERS = ("device-plugin", "dra")
#: The DRA driver's name in the dev cluster, and its DeviceClass's.
DRA_DRIVER = dra_slices.DEFAULT_DRIVER
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
    #: "real" (kubelet + containerd per node) or "agent" (the kubelet stand-in).
    node_kind: str = "real"
    #: How many NPU nodes (the last ones) the DRA driver serves instead of the device
    #: plugin; real nodes only.
    dra_nodes: int = 0
    #: Serve the Workload API (PodGroups; kube-scheduler's gang scheduling), off by
    #: default in Kubernetes 1.37.
    workloads: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.dra_nodes <= self.npu_nodes:
            raise ConfigError(
                f"--dra-nodes {self.dra_nodes}: between 0 and the NPU nodes ({self.npu_nodes})"
            )
        if self.dra_nodes and self.node_kind != "real":
            raise ConfigError("--dra needs real nodes (the kubelet prepares DRA claims)")
        if self.node_kind not in NODE_KINDS:
            raise ConfigError(f"node kind {self.node_kind!r}: one of {', '.join(NODE_KINDS)}")
        if self.node_kind == "real" and self.npu_nodes + self.cpu_nodes > network.MAX_NODES:
            raise ConfigError(
                f"--nodes {self.npu_nodes} / --cpu-nodes {self.cpu_nodes}: at most "
                f"{network.MAX_NODES} real nodes; use --node-agent for more"
            )
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
    #: "real" or "agent" (see the module docstring).
    kind: str = "agent"
    #: Position among the nodes (1-based): the node's addresses derive from it.
    index: int = 0
    #: What serves the node's NPUs: "device-plugin" or "dra" (:data:`NPU_DRIVERS`).
    npu_driver: str = "device-plugin"
    #: The device plugin's Prometheus port on 127.0.0.1 (0: none).
    metrics_port: int = 0

    @property
    def real(self) -> bool:
        """Whether this node is a real kubelet."""
        return self.kind == "real"

    @property
    def dra(self) -> bool:
        """Whether the DRA driver serves this node's NPUs."""
        return self.npus > 0 and self.npu_driver == "dra"

    @property
    def kubelet_dir(self) -> Path:
        """The real kubelet's root dir, as the host sees it (DRA sockets below it)."""
        return Path(self.dir) / "kubelet"

    @property
    def cdi_dir(self) -> Path:
        """The node's CDI spec dir (containerd's ``cdi_spec_dirs``)."""
        return Path(self.dir) / "cdi"

    @property
    def device_plugin_dir(self) -> Path:
        """The node's device-plugins dir (kubelet.sock, plugin sockets, checkpoint)."""
        if self.real:
            return Path(self.dir) / "kubelet" / "device-plugins"
        return Path(self.dir) / "device-plugins"

    @property
    def health_dir(self) -> Path:
        """The mock backend's health dir: ``unhealthy-<device id>`` marks a device sick."""
        return Path(self.dir) / "health"

    @property
    def checkpoint(self) -> Path:
        """The kubelet's (or node agent's) device checkpoint."""
        return self.device_plugin_dir / KUBELET_CHECKPOINT

    @property
    def plugin_kubeconfig(self) -> Path:
        """The node identity's kubeconfig towards 127.0.0.1 (host-side processes)."""
        return Path(self.dir) / "plugin.kubeconfig" if self.real else self.kubeconfig

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
    #: The network slot of a cluster with real nodes (None: agent nodes only).
    network_slot: int | None = None
    #: The private registry's port on 127.0.0.1 (0: none).
    registry_port: int = 0

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
                "controller_manager": self.ports.controller_manager,
            },
            "network_slot": self.network_slot,
            "registry_port": self.registry_port,
            "kubeconfig": str(self.kubeconfig),
            "user_kubeconfig": str(self.user_kubeconfig) if self.user_kubeconfig else None,
            "nodes": [
                {
                    "name": n.name,
                    "npus": n.npus,
                    "dir": n.dir,
                    "kind": n.kind,
                    "index": n.index,
                    "npu_driver": n.npu_driver,
                    "metrics_port": n.metrics_port,
                }
                for n in self.nodes
            ],
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
        except (OSError, ValueError) as err:
            raise ConfigError(
                f"{path}: not a dev cluster's state ({err}); delete {state_dir}"
            ) from None
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            data = data if isinstance(data, dict) else {}
            raise ConfigError(
                f"{path}: state version {data.get('version')!r}, this kubenpu reads "
                f"{STATE_VERSION}; stop it with the kubenpu that started it or delete {state_dir}"
            )
        user = data.get("user_kubeconfig")
        try:
            return cls(
                state_dir=state_dir,
                ports=Ports(**data["ports"]),
                kubeconfig=Path(data["kubeconfig"]),
                nodes=[NodeInfo(**n) for n in data["nodes"]],
                processes={
                    name: processes.ProcessRecord.from_json(r)
                    for name, r in data["processes"].items()
                },
                user_kubeconfig=Path(user) if user else None,
                network_slot=data.get("network_slot"),
                registry_port=data.get("registry_port", 0),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as err:
            raise ConfigError(
                f"{path}: incomplete dev cluster state ({err!r}); delete {state_dir}"
            ) from None

    def metrics_endpoints(self) -> dict[str, str]:
        """Process name -> the URL of its Prometheus ``/metrics`` (all on 127.0.0.1): the
        extender's (plain HTTP), the webhook's (HTTPS, certificate of the cluster CA,
        ``paths.cert("ca")``) and each device plugin's."""
        found: dict[str, str] = {}
        if self.ports.extender and dev_extender.PROCESS in self.processes:
            found[dev_extender.PROCESS] = f"http://127.0.0.1:{self.ports.extender}/metrics"
        if self.ports.webhook and dev_webhook.PROCESS in self.processes:
            found[dev_webhook.PROCESS] = f"https://127.0.0.1:{self.ports.webhook}/metrics"
        for n in self.nodes:
            if n.metrics_port and f"device-plugin/{n.name}" in self.processes:
                found[f"device-plugin/{n.name}"] = f"http://127.0.0.1:{n.metrics_port}/metrics"
        return found

    # -- network and registry -----------------------------------------------------------

    @property
    def network(self) -> network.NetworkPlan | None:
        """The real nodes' network (None for a cluster of node agents)."""
        return None if self.network_slot is None else network.NetworkPlan(self.network_slot)

    def real_node(self, name: str) -> realnode.RealNode:
        """The namespaces and paths of the real node ``name``."""
        node, plan = self.node(name), self.network
        if not node.real or plan is None:
            raise KeyError(f"{name} is not a real node")
        return realnode.RealNode(Path(node.dir), plan.node(node.index, node.name))

    @property
    def registry_files(self) -> dev_registry.RegistryFiles:
        """The private registry's files."""
        return dev_registry.RegistryFiles(self.state_dir / "registry")

    def registry_credentials(self) -> dict[str, str] | None:
        """What ``kubectl create secret docker-registry`` needs: server, username, password."""
        if not self.registry_port:
            return None
        return {
            "server": dev_registry.SERVER,
            "username": dev_registry.USERNAME,
            "password": self.registry_files.password(),
        }

    def push_image(self, archive: Path, repository: str, tag: str) -> str:
        """Push an image archive (:mod:`kubenpu.devcluster.images`) to the private registry
        as ``npu-registry.example.com/<repository>:<tag>``; return its digest."""
        if not self.registry_port:
            raise KubeNpuError("this dev cluster has no registry (agent nodes only)")
        return registry_client.push(
            archive,
            f"127.0.0.1:{self.registry_port}",
            repository,
            tag,
            username=dev_registry.USERNAME,
            password=self.registry_files.password(),
            cafile=self.paths.cert("ca"),
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
        listing = json.loads(raw(api.list_node(_preload_content=False, _request_timeout=5)).data)
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

    def node_infos(self) -> dict[str, dict[str, str]]:
        """Node name -> its ``status.nodeInfo`` fields and ``internal_ip``, from the API."""
        config = str(self.kubeconfig)
        api = k8s.CoreV1Api(k8s_config.new_client_from_config(config_file=config))
        listing = json.loads(raw(api.list_node(_preload_content=False, _request_timeout=5)).data)
        infos = {}
        for node in listing.get("items", []):
            status = node.get("status", {})
            info = dict(status.get("nodeInfo", {}))
            for address in status.get("addresses", []):
                if address.get("type") == "InternalIP":
                    info["internal_ip"] = address["address"]
            infos[node["metadata"]["name"]] = info
        return infos

    def checkpoint(self, node: str) -> dict[str, Any]:
        """The node agent's checkpoint: devices held per pod uid, latest device lists."""
        return read_checkpoint(self.node(node).checkpoint)

    def kubelet_devices(self, node: str) -> dict[str, list[str]]:
        """Pod uid -> every NPU device id the real kubelet's checkpoint gave that pod."""
        data = json.loads(self.node(node).checkpoint.read_text())
        result: dict[str, list[str]] = {}
        for entry in data.get("Data", {}).get("PodDeviceEntries", []):
            if entry.get("ResourceName") != names.RESOURCE_NPU:
                continue
            ids = [d for per_numa in entry.get("DeviceIDs", {}).values() for d in per_numa]
            result.setdefault(entry["PodUID"], []).extend(ids)
        return {uid: sorted(ids) for uid, ids in result.items()}

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
        nothing is left writing to a store that is going away. Real nodes then lose what
        their containerd left running (shims, containers), their mounts, cgroups and
        namespaces, and the cluster its bridge.
        """
        killed: list[str] = []
        for tier in _tiers(self.processes.values()):
            killed += processes.stop(tier)
        problems = self._remove_real_nodes()
        leftover = [p for p in _ports(self.ports) if processes.port_in_use(p)]
        if self.user_kubeconfig is not None and _same_file(
            self.user_kubeconfig, self.paths.admin_kubeconfig
        ):
            self.user_kubeconfig.unlink(missing_ok=True)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        if leftover:
            problems.append(f"ports {leftover} on 127.0.0.1 are still in use")
        if problems:
            raise KubeNpuError("dev cluster stopped, but " + "; ".join(problems))
        return killed

    def _remove_real_nodes(self) -> list[str]:
        plan = self.network
        if plan is None:
            return []
        real = [self.real_node(n.name) for n in self.nodes if n.real]
        for node in real:
            realnode.kill_leftovers(node)
            realnode.remove_mount_namespace(node)
            realnode.remove_cgroups(_cgroup_root(node))
        problems = network.tear_down(plan, [n.network for n in real])
        realnode.release_namespace_dirs()
        return problems


# Stop order: higher first (kubelets before their containerd; the relay and the API
# server after everything that talks to them).
_STOP_ORDER = {
    dev_extender.PROCESS: -2,
    "kube-scheduler": -2,
    "kube-controller-manager": -2,
    dev_registry.PROCESS: -2,
    "relay": -3,
    "kube-apiserver": -3,
    "etcd": -4,
}


def _stop_rank(name: str) -> int:
    if name.startswith("containerd/"):
        return -1
    return _STOP_ORDER.get(name, 0)


def _cgroup_root(node: realnode.RealNode) -> str:
    return f"/kubenpu/{node.network.netns}"


def _tiers(
    records: Iterable[processes.ProcessRecord],
) -> Iterable[list[processes.ProcessRecord]]:
    """The records grouped by stop order, the group to stop first first."""
    by_rank: dict[int, list[processes.ProcessRecord]] = {}
    for record in records:
        by_rank.setdefault(_stop_rank(record.name), []).append(record)
    for rank in sorted(by_rank, reverse=True):
        yield by_rank[rank]


def _ports(ports: Ports) -> list[int]:
    ours = [ports.etcd_client, ports.etcd_peer, ports.apiserver, ports.scheduler, ports.webhook]
    ours += [ports.extender, ports.controller_manager]
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
    argv = [
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
        str(node.plugin_kubeconfig),
    ]
    if node.metrics_port:
        argv += ["--metrics-address", "127.0.0.1", "--metrics-port", str(node.metrics_port)]
    if node.real:
        # Real device nodes, which the kubelet and runc pass into the containers.
        argv += ["--mock-dev-dir", str(Path(node.dir) / "dev")]
    return argv


def dra_driver_argv(node: NodeInfo) -> list[str]:
    """``kubenpu dra-driver`` with the mock backend for the real node ``node``.

    It runs on the host, as the device plugin does, acting as the node (the Node
    authorizer lets a node write its own ResourceSlices and read its pods' claims); its
    sockets are in the node's kubelet dir, which the kubelet sees as /var/lib/kubelet."""
    return [
        *_kubenpu_command(),
        "dra-driver",
        "--driver",
        DRA_DRIVER,
        "--node-name",
        node.name,
        "--kubeconfig",
        str(node.plugin_kubeconfig),
        "--kubelet-dir",
        str(node.kubelet_dir),
        "--kubelet-own-dir",
        nodeconfig.KUBELET_ROOT,
        "--cdi-dir",
        str(node.cdi_dir),
        "--backend",
        "mock",
        "--mock-devices",
        str(node.npus),
        "--mock-health-dir",
        str(node.health_dir),
        "--mock-dev-dir",
        str(Path(node.dir) / "dev"),
    ]


def create_device_class(cluster: DevCluster) -> None:
    """The DeviceClass of the DRA driver, mapping ``aliyun.com/npu`` (docs/dra.md)."""
    custom = k8s.CustomObjectsApi(
        k8s_config.new_client_from_config(config_file=str(cluster.kubeconfig))
    )
    body = dra_deviceclass.device_class(DRA_DRIVER)
    try:
        custom.create_cluster_custom_object("resource.k8s.io", "v1", "deviceclasses", body)
    except k8s.ApiException as err:
        if err.status != 409:
            raise


def resource_slice_devices(cluster: DevCluster) -> dict[str, list[str]]:
    """Node name -> the device names in its ResourceSlices of the DRA driver."""
    custom = k8s.CustomObjectsApi(
        k8s_config.new_client_from_config(config_file=str(cluster.kubeconfig))
    )
    listing: dict[str, Any] = custom.list_cluster_custom_object(  # type: ignore[assignment]
        "resource.k8s.io", "v1", "resourceslices", _request_timeout=5
    )
    found: dict[str, list[str]] = {}
    for item in listing.get("items", []):
        spec = item.get("spec", {})
        if spec.get("driver") == DRA_DRIVER and spec.get("nodeName"):
            names_ = [d["name"] for d in spec.get("devices", [])]
            found.setdefault(spec["nodeName"], []).extend(names_)
    return {node: sorted(devices) for node, devices in found.items()}


def wait_resource_slices(cluster: DevCluster, deadline: float) -> None:
    """Wait until every DRA node's ResourceSlice lists all its NPUs."""
    want = {n.name: n.npus for n in cluster.nodes if n.dra}
    last: dict[str, int] = {}
    while time.monotonic() < deadline:
        seen = resource_slice_devices(cluster)
        last = {name: len(seen.get(name, [])) for name in want}
        if last == want:
            return
        time.sleep(0.2)
    raise controlplane.HealthError(f"ResourceSlices not published in time: {last} of {want}")


def node_agent_argv(node: NodeInfo) -> list[str]:
    """The node agent process for ``node``."""
    return [sys.executable, "-m", "kubenpu.devcluster.nodeagent", str(node.agent_config)]


def _served_by_dra(spec: ClusterSpec, index: int) -> bool:
    """Whether the node at ``index`` (1-based) is one of the last ``dra_nodes`` NPU nodes."""
    return spec.npu_nodes - spec.dra_nodes < index <= spec.npu_nodes


def _node_names(spec: ClusterSpec) -> list[tuple[str, int]]:
    npu = [(f"npu-node-{i}", spec.npus_per_node) for i in range(1, spec.npu_nodes + 1)]
    cpu = [(f"cpu-node-{i}", 0) for i in range(1, spec.cpu_nodes + 1)]
    return npu + cpu


def _labels(spec: ClusterSpec, node: NodeInfo) -> dict[str, str]:
    """The labels a node registers with (what an ACK node of its kind carries)."""
    if node.dra:
        return {
            names.LABEL_INSTANCE_TYPE: names.REFERENCE_INSTANCE_TYPE,
            names.LABEL_NPU_MODEL: spec.npu_model,
            LABEL_NPU_DRIVER: NPU_DRIVER_DRA,
        }
    if node.npus:
        return {
            names.LABEL_INSTANCE_TYPE: names.REFERENCE_INSTANCE_TYPE,
            names.LABEL_NPU_MODEL: spec.npu_model,
        }
    return {names.LABEL_INSTANCE_TYPE: CPU_INSTANCE_TYPE}


def _write_identity(
    cluster: DevCluster, ca: pki.CertificateAuthority, node: NodeInfo, server: str
) -> pki.KeyPair:
    """The node's client certificate (system:node:<name>) and its kubeconfig(s)."""
    user = f"system:node:{node.name}"
    pair = ca.issue(user, organizations=("system:nodes",), client=True)
    pki.write_secret(
        node.kubeconfig, controlplane.kubeconfig_yaml(server, ca.cert_pem, pair, user).encode()
    )
    if node.real:
        pki.write_secret(
            node.plugin_kubeconfig,
            controlplane.kubeconfig_yaml(cluster.server, ca.cert_pem, pair, user).encode(),
        )
    return pair


def _write_agent_node(
    cluster: DevCluster, ca: pki.CertificateAuthority, spec: ClusterSpec, node: NodeInfo
) -> None:
    """Create the agent node's directories, its client certificate and the agent's config."""
    root = Path(node.dir)
    root.mkdir(parents=True, mode=0o700)
    node.device_plugin_dir.mkdir()
    node.health_dir.mkdir()
    _check_socket_room(cluster, node)
    _write_identity(cluster, ca, node, cluster.server)
    labels = {
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        **_labels(spec, node),
    }
    AgentConfig(
        node=node.name,
        kubeconfig=str(node.kubeconfig),
        device_plugin_dir=str(node.device_plugin_dir),
        labels=labels,
        capacity=dict(NPU_NODE_CAPACITY if node.npus else CPU_NODE_CAPACITY),
        kubelet_version=binaries.KUBERNETES_VERSION,
    ).save(node.agent_config)


def _check_socket_room(cluster: DevCluster, node: NodeInfo) -> None:
    socket_room = len(str(node.device_plugin_dir)) + 1 + _SOCKET_NAME_ALLOWANCE
    if node.dra:  # <kubelet>/plugins_registry/npu.aliyun.com-reg.sock
        registry = node.kubelet_dir / "plugins_registry"
        socket_room = max(socket_room, len(str(registry)) + 1 + len(DRA_DRIVER) + 9)
    if socket_room > _MAX_SOCKET_PATH:
        raise ConfigError(
            f"state dir {cluster.state_dir} is too deep: socket paths under "
            f"{node.device_plugin_dir} would exceed {_MAX_SOCKET_PATH} bytes; "
            "pass a shorter --state-dir"
        )


def _write_real_node(
    cluster: DevCluster, ca: pki.CertificateAuthority, node: NodeInfo, kube_proxy: pki.KeyPair
) -> nodeconfig.NodeFiles:
    """Directories, certificates, configs and the mount namespace of a real node."""
    plan = cluster.network
    assert plan is not None
    real = cluster.real_node(node.name)
    realnode.make_dirs(real)
    _check_socket_room(cluster, node)
    gateway_server = f"https://{plan.gateway}:{cluster.ports.apiserver}"
    _write_identity(cluster, ca, node, gateway_server)
    serving = ca.issue(node.name, server=True, ip_addresses=(real.network.ip,))
    pki.write_public(real.config_path("kubelet.crt"), serving.cert_pem)
    pki.write_secret(real.config_path("kubelet.key"), serving.key_pem)
    pki.write_public(real.config_path("ca.crt"), ca.cert_pem)
    files = nodeconfig.NodeFiles(
        name=node.name,
        ip=real.network.ip,
        pod_cidr=real.network.pod_cidr,
        cluster_cidr=plan.cluster_cidr,
        service_cidr=plan.service_cidr,
        ca_file=str(real.config_path("ca.crt")),
        serving_cert=str(real.config_path("kubelet.crt")),
        serving_key=str(real.config_path("kubelet.key")),
        kubeconfig=str(node.kubeconfig),
        resolv_conf=str(real.config_path("resolv.conf")),
        cni_conf_dir=str(real.dir / "cni"),
        registry_hosts_dir=str(real.dir / "certs.d"),
        cdi_dir=str(real.dir / "cdi"),
        runc=binaries.RUNC,
        cni_bin_dir=binaries.CNI_BIN_DIR,
        cgroup_root=_cgroup_root(real),
    )
    real.config_path("kubelet.yaml").write_text(nodeconfig.kubelet_config(files))
    real.config_path("containerd.toml").write_text(nodeconfig.containerd_config(files))
    real.config_path("resolv.conf").write_text(nodeconfig.resolv_conf())
    (real.dir / "cni" / "10-kubenpu.conflist").write_text(nodeconfig.cni_conflist(files))
    hosts = real.dir / "certs.d"
    (hosts / "_default").mkdir(exist_ok=True)
    (hosts / "_default" / "hosts.toml").write_text(nodeconfig.registry_hosts(None))
    ours = hosts / dev_registry.SERVER
    ours.mkdir(exist_ok=True)
    (ours / "hosts.toml").write_text(
        nodeconfig.registry_hosts(f"https://{plan.gateway}:{cluster.registry_port}", files.ca_file)
    )
    proxy_kubeconfig = real.config_path("kube-proxy.kubeconfig")
    pki.write_secret(
        proxy_kubeconfig,
        controlplane.kubeconfig_yaml(
            gateway_server, ca.cert_pem, kube_proxy, "system:kube-proxy"
        ).encode(),
    )
    real.config_path("kube-proxy.yaml").write_text(
        nodeconfig.kube_proxy_config(files, str(proxy_kubeconfig), 10249)
    )
    realnode.make_mount_namespace(real)
    return files


def _require_root(spec: ClusterSpec) -> None:
    if spec.node_kind == "real" and os.geteuid() != 0:
        raise ConfigError(
            "real nodes need root (network and mount namespaces, device nodes, cgroups); "
            "run as root, or pass --node-agent for kubelet stand-ins that run no containers"
        )


def up(
    state_dir: Path,
    spec: ClusterSpec,
    *,
    kubeconfig: Path | None = None,
    timeout: float = 180.0,
    webhook: bool = True,
    addons: bool = True,
) -> DevCluster:
    """Start a dev cluster recorded in ``state_dir`` and wait until it is usable.

    Usable means: the API server is ready, the controller manager and the scheduler
    healthy, every node Ready and every NPU node's allocatable ``aliyun.com/npu`` equal to
    its NPU count. The admin kubeconfig is written to ``state_dir/admin.kubeconfig`` and,
    if given, ``kubeconfig``. With ``webhook`` the admission webhook runs too and is
    registered and in effect. Without ``addons`` no kubenpu component runs (no device
    plugins, extender or webhook; kube-scheduler has its default profile): a bare cluster to
    install the Helm chart into, where nodes are Ready but have no NPUs until the chart's
    device plugin registers. On any failure everything started so far is stopped again.
    """
    webhook = webhook and addons
    existing = DevCluster.load(state_dir)
    if existing is not None:
        if any(s.running for s in existing.status()):
            raise ConfigError(
                f"a dev cluster is already running from {state_dir} (API server "
                f"{existing.server}); run `kubenpu dev-cluster down` first"
            )
        existing.down()  # leftovers of a cluster whose processes are all gone
    _require_root(spec)
    bin_dir = binaries.ensure_built()
    real = spec.node_kind == "real"
    if real:
        node_bin = binaries.ensure_node_built()
        wanted = ("pause", *WORKLOADS)
        archives = {n: i.path for n, i in zip(wanted, dev_images.build(wanted), strict=True)}
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
        extender=processes.free_port() if addons else 0,
        controller_manager=processes.free_port(),
    )
    nodes = [
        NodeInfo(
            name,
            npus,
            str(paths.node_dir(name)),
            kind=spec.node_kind,
            index=i,
            npu_driver="dra" if _served_by_dra(spec, i) else "device-plugin",
            metrics_port=(
                processes.free_port() if npus and addons and not _served_by_dra(spec, i) else 0
            ),
        )
        for i, (name, npus) in enumerate(_node_names(spec), start=1)
    ]
    cluster = DevCluster(state_dir, ports, paths.admin_kubeconfig, nodes, user_kubeconfig=None)
    deadline = time.monotonic() + timeout
    try:
        plan = None
        if real:
            plan = network.claim_slot()
            cluster.network_slot = plan.slot
            cluster.registry_port = processes.free_port()
            cluster.save()
            network.set_up(plan, [cluster.real_node(n.name).network for n in nodes])
        ca = controlplane.write_pki(paths, ports, plan)
        if plan is not None:
            kube_proxy = ca.issue("system:kube-proxy", client=True)
            for node in nodes:
                _write_real_node(cluster, ca, node, kube_proxy)
            dev_registry.write_files(
                cluster.registry_files, ca, cluster.registry_port, plan.gateway
            )
        else:
            for node in nodes:
                _write_agent_node(cluster, ca, spec, node)
        if webhook:
            dev_webhook.write_files(paths, ca, ports.server)
        if addons:
            dev_extender.write_files(paths, ca, ports.server, ports.extender)
        if kubeconfig is not None:
            pki.write_secret(kubeconfig, paths.admin_kubeconfig.read_bytes())
            cluster.user_kubeconfig = kubeconfig

        def start(name: str, argv: list[str]) -> None:
            cluster.processes[name] = processes.spawn(
                name, argv, paths.logs / f"{name.replace('/', '-')}.log"
            )
            cluster.save()

        start("etcd", controlplane.etcd_argv(bin_dir / "etcd", paths, ports))
        start(
            "kube-apiserver",
            controlplane.apiserver_argv(
                bin_dir / "kube-apiserver", paths, ports, plan, workloads=spec.workloads
            ),
        )
        start(
            "kube-scheduler",
            controlplane.scheduler_argv(
                bin_dir / "kube-scheduler",
                paths,
                ports,
                dev_extender.scheduler_config_path(paths) if addons else None,
                workloads=spec.workloads,
            ),
        )
        if plan is not None:
            start("relay", _relay_argv(plan.gateway, [ports.apiserver, cluster.registry_port]))
            start(
                dev_registry.PROCESS,
                dev_registry.argv(node_bin / "registry", cluster.registry_files),
            )
            for node in nodes:
                real_node = cluster.real_node(node.name)
                start(f"containerd/{node.name}", _containerd_argv(node_bin, real_node))
        else:
            for node in nodes:
                start(f"node-agent/{node.name}", node_agent_argv(node))
        if plan is not None:
            for node in nodes:
                real_node = cluster.real_node(node.name)
                _load_images(node_bin, real_node, [archives["pause"]], deadline)
                start(f"kubelet/{node.name}", _kubelet_argv(bin_dir, real_node, spec, node))
                start(
                    f"kube-proxy/{node.name}",
                    real_node.enter(
                        [
                            str(bin_dir / "kube-proxy"),
                            f"--config={real_node.config_path('kube-proxy.yaml')}",
                        ]
                    ),
                )
        for node in nodes:
            if node.dra and addons:
                start(f"dra-driver/{node.name}", dra_driver_argv(node))
            elif node.npus and addons:
                start(f"device-plugin/{node.name}", device_plugin_argv(node))
        if webhook:
            start(dev_webhook.PROCESS, dev_webhook.argv(_kubenpu_command(), paths, ports.webhook))
        controlplane.wait_apiserver_ready(paths, ports, deadline)
        # Started once the bootstrap roles exist: it exits if its first reads are refused.
        start(
            "kube-controller-manager",
            controlplane.controller_manager_argv(
                bin_dir / "kube-controller-manager", paths, ports, workloads=spec.workloads
            ),
        )
        # The extender starts once its role exists: until then every list would be refused.
        if plan is not None:
            # The API server's own client identity may use the kubelets' API (logs, exec).
            rbac.grant_user(
                paths, controlplane.KUBELET_CLIENT_USER, role="system:kubelet-api-admin"
            )
        if addons:
            dev_extender.grant(paths)
            start(
                dev_extender.PROCESS,
                dev_extender.argv(_kubenpu_command(), paths, ports.extender),
            )
        controlplane.wait_controller_manager_healthy(ports, deadline)
        controlplane.wait_scheduler_healthy(ports, deadline)
        if plan is not None:
            _push_workload_images(cluster, archives, deadline)
        wait_nodes_ready(cluster, deadline, npus=addons)
        if addons and any(n.dra for n in nodes):
            create_device_class(cluster)
            wait_resource_slices(cluster, deadline)
        wait_default_service_account(cluster, deadline)
        if addons:
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


def _relay_argv(gateway: str, ports: Iterable[int]) -> list[str]:
    routes = [f"{gateway}:{p}=127.0.0.1:{p}" for p in ports]
    return [sys.executable, "-m", "kubenpu.devcluster.relay", *routes]


def _containerd_argv(node_bin: Path, node: realnode.RealNode) -> list[str]:
    # containerd finds its shim and runc on PATH.
    path = f"{node_bin}:/usr/sbin:/usr/bin:/sbin:/bin"
    return node.enter(
        [
            "env",
            f"PATH={path}",
            str(node_bin / "containerd"),
            f"--config={node.config_path('containerd.toml')}",
        ]
    )


def _kubelet_argv(
    bin_dir: Path, node: realnode.RealNode, spec: ClusterSpec, info: NodeInfo
) -> list[str]:
    files_config = str(node.config_path("kubelet.yaml"))
    return node.enter(
        [
            "env",
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            str(bin_dir / "kubelet"),
            f"--config={files_config}",
            f"--kubeconfig={info.kubeconfig}",
            f"--hostname-override={info.name}",
            f"--node-ip={node.network.ip}",
            f"--root-dir={nodeconfig.KUBELET_ROOT}",
            "--node-labels=" + ",".join(f"{k}={v}" for k, v in sorted(_labels(spec, info).items())),
        ]
    )


def _ctr(node_bin: Path, node: realnode.RealNode, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [str(node_bin / "ctr"), f"--address={node.containerd_socket}", "-n", "k8s.io", *args]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def _load_images(
    node_bin: Path, node: realnode.RealNode, archives: Iterable[Path], deadline: float
) -> None:
    """Import image archives into the node's containerd once it answers."""
    while _ctr(node_bin, node, "version").returncode != 0:
        if time.monotonic() > deadline:
            raise controlplane.HealthError(f"containerd of {node.name} did not answer")
        time.sleep(0.1)
    for archive in archives:
        result = _ctr(node_bin, node, "images", "import", "--local", str(archive))
        if result.returncode != 0:
            raise KubeNpuError(
                f"importing {archive} into {node.name}'s containerd failed: {result.stderr.strip()}"
            )


def _push_workload_images(cluster: DevCluster, archives: dict[str, Path], deadline: float) -> None:
    """Put the example workloads into the private registry, as the seed's team would."""
    controlplane.wait_http_ok(
        "registry",
        cluster.registry_port,
        "/",
        _registry_context(cluster.registry_files),
        deadline,
        ok=(200, 401),
    )
    for name, (repository, tag) in WORKLOADS.items():
        cluster.push_image(archives[name], repository, tag)


def _registry_context(files: dev_registry.RegistryFiles) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(files.root.parent / "pki" / "ca.crt"))


def _dump_logs(cluster: DevCluster, lines: int = 15) -> None:
    """Print the end of each process's log to stderr, to explain a failed start."""
    for name, record in cluster.processes.items():
        with contextlib.suppress(OSError):
            tail = Path(record.log).read_text(errors="replace").splitlines()[-lines:]
            print(f"--- {name} ({record.log}) ---", file=sys.stderr)
            print("\n".join(tail), file=sys.stderr)


def wait_default_service_account(cluster: DevCluster, deadline: float) -> None:
    """Wait for kube-controller-manager to create ``default/default``: until it exists, the
    ServiceAccount admission plugin refuses every pod of the namespace."""
    api = k8s.CoreV1Api(k8s_config.new_client_from_config(config_file=str(cluster.kubeconfig)))
    while True:
        listing = json.loads(
            raw(
                api.list_namespaced_service_account(
                    "default", _preload_content=False, _request_timeout=5
                )
            ).data
        )
        if any(sa["metadata"]["name"] == "default" for sa in listing.get("items", [])):
            return
        if time.monotonic() > deadline:
            raise controlplane.HealthError("ServiceAccount default/default not created in time")
        time.sleep(0.1)


def wait_nodes_ready(cluster: DevCluster, deadline: float, *, npus: bool = True) -> None:
    """Wait until every node is Ready and (with ``npus``) reports all its NPUs allocatable."""
    # DRA nodes publish their NPUs as ResourceSlices, not as allocatable aliyun.com/npu.
    want = {n.name: n.npus if npus and not n.dra else 0 for n in cluster.nodes}
    last: dict[str, str] = {}
    while time.monotonic() < deadline:
        for name, record in cluster.processes.items():
            if not processes.alive(record):
                raise KubeNpuError(f"{name} exited during start-up; see {record.log}")
        seen = {n.name: n for n in cluster.node_summaries()}
        last = {}
        for name, count in want.items():
            node = seen.get(name)
            if node is None:
                last[name] = "not registered"
            elif not (node.ready and node.allocatable_npus == count):
                last[name] = (
                    f"ready={node.ready}, {names.RESOURCE_NPU} allocatable "
                    f"{node.allocatable_npus}/{count}"
                )
        if not last:
            return
        time.sleep(0.2)
    raise controlplane.HealthError(f"nodes not ready in time: {last}")
