"""The configuration files of a real dev-cluster node: kubelet, containerd, CNI, kube-proxy.

Pure text builders: each function returns a file's content from plain values, so tests read
the exact settings without a node. The paths they name are the node's view from inside its
own mount namespace (see :mod:`kubenpu.devcluster.realnode`), where the directories the
kubelet and containerd hard-code (``/var/lib/kubelet``, ``/run/containerd``, ...) are bound
to the node's own state directory.

The settings these machines need (docs/dev-cluster.md#real-nodes): cgroup v1 with an empty
v2 mount, so the cgroupfs driver with ``cgroupsPerQOS: false``, ``enforceNodeAllocatable:
[]`` and ``failCgroupV1: false``; no ``CAP_SYS_RESOURCE``, so containerd must not ask for a
negative ``oom_score_adj`` (``restrict_oom_score_adj``); runc, never crun.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import yaml

#: Where the node's containerd listens (inside the node's mount namespace).
CONTAINERD_SOCKET = "/run/containerd/containerd.sock"
#: The kubelet's root directory (bound to the node's own directory).
KUBELET_ROOT = "/var/lib/kubelet"
#: Where the kubelet writes container logs (bound too).
POD_LOGS = "/var/log/pods"
#: The sandbox ("pause") image every pod starts with, loaded into containerd at start.
PAUSE_IMAGE = "kubenpu.local/pause:3.10"
#: The kubelet's HTTPS port on the node's own address.
KUBELET_PORT = 10250
#: A port on the node's loopback where nothing listens: registries other than the dev
#: cluster's own are sent here, so their pulls fail at once without a lookup or a packet
#: leaving the machine.
REFUSING_ENDPOINT = "https://127.0.0.1:9"


@dataclass(frozen=True, slots=True)
class NodeFiles:
    """What a node's files are made from."""

    name: str
    ip: str
    pod_cidr: str
    cluster_cidr: str
    service_cidr: str
    #: Paths as the node sees them (absolute, inside the state directory).
    ca_file: str
    serving_cert: str
    serving_key: str
    kubeconfig: str
    resolv_conf: str
    cni_conf_dir: str
    registry_hosts_dir: str
    cdi_dir: str
    runc: str
    cni_bin_dir: str
    #: The cgroup every container of the node goes under (one tree per node).
    cgroup_root: str


def kubelet_config(files: NodeFiles) -> str:
    """The KubeletConfiguration (v1beta1) of a node on this kind of machine."""
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": files.ip,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "tlsCertFile": files.serving_cert,
        "tlsPrivateKeyFile": files.serving_key,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": files.ca_file},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCKET}",
        "cgroupDriver": "cgroupfs",
        # cgroup v1 with an empty v2 mount: no QoS hierarchy, nothing enforced.
        "cgroupsPerQOS": False,
        "cgroupRoot": files.cgroup_root,
        "enforceNodeAllocatable": [],
        "failCgroupV1": False,
        "failSwapOn": False,
        "podCIDR": files.pod_cidr,
        "podLogsDir": POD_LOGS,
        # Pods get a resolver on their own loopback, where nothing answers: no DNS query
        # leaves the machine (the dev cluster runs no cluster DNS).
        "clusterDomain": "cluster.local",
        "clusterDNS": ["127.0.0.1"],
        "resolvConf": files.resolv_conf,
        # The host is shared by several nodes: the defaults would evict on the host's
        # disk use, which says nothing about these nodes.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 99,
        "imageGCLowThresholdPercent": 98,
        "serializeImagePulls": False,
        "makeIPTablesUtilChains": False,
        "protectKernelDefaults": False,
        "nodeStatusReportFrequency": "10s",
        "shutdownGracePeriod": "0s",
        "logging": {"format": "text", "verbosity": 1},
    }
    return yaml.safe_dump(config, sort_keys=False)


def containerd_config(files: NodeFiles) -> str:
    """containerd 2.x's config.toml (version 3) for one node."""
    return f"""\
version = 3
root = "/var/lib/containerd"
state = "/run/containerd"

[grpc]
  address = "{CONTAINERD_SOCKET}"

[ttrpc]
  address = "{CONTAINERD_SOCKET}.ttrpc"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"

[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = "{PAUSE_IMAGE}"

[plugins.'io.containerd.cri.v1.images'.registry]
  config_path = "{files.registry_hosts_dir}"

[plugins.'io.containerd.cri.v1.runtime']
  # No CAP_SYS_RESOURCE here: a negative oom_score_adj is refused, and runc then fails
  # with "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  enable_cdi = true
  # Pod network namespaces under the node's own state directory, not the host's /run/netns.
  netns_mounts_under_state_dir = true
  cdi_spec_dirs = ["{files.cdi_dir}"]

[plugins.'io.containerd.cri.v1.runtime'.containerd]
  default_runtime_name = "runc"

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  BinaryName = "{files.runc}"
  SystemdCgroup = false

[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = ["{files.cni_bin_dir}"]
  conf_dir = "{files.cni_conf_dir}"
  max_conf_num = 1

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

# NRI listens on /var/run/nri/nri.sock, a path the node namespaces share: a second node's
# containerd would fail with "address already in use". Nothing here uses NRI.
[plugins.'io.containerd.nri.v1.nri']
  disable = true
"""


def registry_hosts(endpoint: str | None, ca_file: str | None = None) -> str:
    """A containerd ``hosts.toml``: pulls go to ``endpoint`` only (None: the refusing one).

    ``server`` replaces the registry's own address, so containerd never looks the
    registry's name up nor dials it."""
    if endpoint is None:
        return f'server = "{REFUSING_ENDPOINT}"\n'
    lines = [f'server = "{endpoint}"']
    if ca_file:
        lines.append(f'ca = "{ca_file}"')
    return "\n".join(lines) + "\n"


def cni_conflist(files: NodeFiles) -> str:
    """The node's CNI network: a bridge with the node's own pod network, no masquerade."""
    config = {
        "cniVersion": "1.0.0",
        "name": "kubenpu-dev",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": files.pod_cidr}]],
                    # Pods route everything to the node, which routes only what is known.
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
        ],
    }
    return json.dumps(config, indent=2) + "\n"


def resolv_conf() -> str:
    """A resolver on the pod's own loopback: every lookup fails at once, on the machine."""
    return "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"


def kube_proxy_config(files: NodeFiles, kubeconfig: str, metrics_port: int) -> str:
    """kube-proxy's KubeProxyConfiguration: iptables rules inside the node's namespace."""
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": kubeconfig},
        "hostnameOverride": files.name,
        "bindAddress": files.ip,
        "healthzBindAddress": f"127.0.0.1:{metrics_port + 1}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "clusterCIDR": files.cluster_cidr,
        "mode": "iptables",
        # A node namespace may not change the host's conntrack table size.
        "conntrack": {"maxPerCore": 0},
        "logging": {"format": "text", "verbosity": 1},
    }
    return yaml.safe_dump(config, sort_keys=False)
