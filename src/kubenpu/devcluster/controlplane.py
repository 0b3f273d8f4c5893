"""The control plane of a dev cluster: certificates, kubeconfigs, command lines, health.

Everything listens on 127.0.0.1 only, on ports picked free at start. etcd speaks TLS with
client-certificate authentication on both its client and peer ports, the API server
authenticates by client certificate only (anonymous requests are refused) and authorizes
with Node and RBAC, as a production cluster does; kube-controller-manager runs every
default controller (service accounts and their tokens, Deployments, DaemonSets, Jobs,
garbage collection, node lifecycle).

With real nodes the API server is also reached, through the relay, on the node network's
gateway address, advertises that address for the ``kubernetes`` Service, dials kubelets at
their InternalIP (never a DNS name) with a client certificate and verifies theirs.
"""

from __future__ import annotations

import base64
import http.client
import secrets
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from kubenpu.devcluster import pki
from kubenpu.devcluster.network import NetworkPlan
from kubenpu.errors import KubeNpuError

#: Service IP range. A loopback range on purpose: should kube-apiserver ever dial a
#: Service's cluster IP (a webhook or API service registered by a test), the connection
#: stays on this machine instead of leaving for a private network.
SERVICE_CIDR = "127.96.0.0/16"
#: The first address of SERVICE_CIDR: the ``kubernetes`` Service's cluster IP.
KUBERNETES_SERVICE_IP = "127.96.0.1"
#: The service-account token issuer (what a kubeadm cluster uses).
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
#: User name of the admin client certificate (in group system:masters).
ADMIN_USER = "kubenpu-admin"
#: The API server's user towards kubelets.
KUBELET_CLIENT_USER = "kube-apiserver-kubelet-client"


@dataclass(frozen=True, slots=True)
class Ports:
    """The loopback ports of one control plane."""

    etcd_client: int
    etcd_peer: int
    apiserver: int
    scheduler: int
    #: kube-controller-manager's HTTPS port (health).
    controller_manager: int = 0
    #: The admission webhook's HTTPS port (0: the cluster runs without it).
    webhook: int = 0
    #: The scheduler extender's HTTP port (0: kube-scheduler runs without it).
    extender: int = 0

    @property
    def server(self) -> str:
        """The API server URL clients use."""
        return f"https://127.0.0.1:{self.apiserver}"


@dataclass(frozen=True, slots=True)
class Paths:
    """Where a dev cluster keeps its files inside its state directory."""

    root: Path

    @property
    def pki(self) -> Path:
        """Certificates and keys (directory mode 0700, keys 0600)."""
        return self.root / "pki"

    @property
    def etcd_data(self) -> Path:
        """etcd's data directory."""
        return self.root / "etcd"

    @property
    def logs(self) -> Path:
        """One log file per process."""
        return self.root / "logs"

    @property
    def admin_kubeconfig(self) -> Path:
        """The admin kubeconfig kept in the state directory."""
        return self.root / "admin.kubeconfig"

    @property
    def controller_manager_kubeconfig(self) -> Path:
        """kube-controller-manager's kubeconfig (user system:kube-controller-manager)."""
        return self.root / "kube-controller-manager.kubeconfig"

    @property
    def scheduler_kubeconfig(self) -> Path:
        """kube-scheduler's kubeconfig (user system:kube-scheduler)."""
        return self.root / "kube-scheduler.kubeconfig"

    @property
    def state_file(self) -> Path:
        """The record of the running cluster: ports, processes, nodes."""
        return self.root / "state.json"

    def node_dir(self, node: str) -> Path:
        """A node's own directory (kubeconfig, device-plugin dir, health dir)."""
        return self.root / "nodes" / node

    def cert(self, name: str) -> Path:
        """A certificate in the PKI directory."""
        return self.pki / f"{name}.crt"

    def key(self, name: str) -> Path:
        """A private key in the PKI directory."""
        return self.pki / f"{name}.key"


def kubeconfig_yaml(server: str, ca_pem: bytes, client: pki.KeyPair, user: str) -> str:
    """A self-contained kubeconfig (certificates embedded) for one client certificate."""
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731 - local shorthand
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "kubenpu-dev",
                "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(client.cert_pem),
                    "client-key-data": b64(client.key_pem),
                },
            }
        ],
        "contexts": [{"name": "kubenpu-dev", "context": {"cluster": "kubenpu-dev", "user": user}}],
        "current-context": "kubenpu-dev",
        "preferences": {},
    }
    return yaml.safe_dump(config, sort_keys=False)


def write_pki(
    paths: Paths, ports: Ports, network: NetworkPlan | None = None
) -> pki.CertificateAuthority:
    """Make the CA and every certificate and key the control plane needs; return the CA.

    With ``network`` (real nodes) the API server's certificate also names the gateway
    address and the ``kubernetes`` Service's cluster IP, and the API server gets a client
    certificate for the kubelets."""
    ca = pki.CertificateAuthority()
    paths.pki.mkdir(parents=True, exist_ok=True, mode=0o700)
    pki.write_public(paths.cert("ca"), ca.cert_pem)
    loopback = {"dns_names": ("localhost",), "ip_addresses": ("127.0.0.1",)}
    issued = {
        # etcd's certificate serves clients and peers and is its own peer client.
        "etcd": ca.issue("etcd", server=True, client=True, **loopback),
        "apiserver-etcd-client": ca.issue("kube-apiserver-etcd-client", client=True),
        "apiserver": ca.issue(
            "kube-apiserver",
            server=True,
            dns_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ip_addresses=(
                "127.0.0.1",
                *(
                    (network.gateway, network.kubernetes_service_ip)
                    if network
                    else (KUBERNETES_SERVICE_IP,)
                ),
            ),
        ),
        # Bound to system:kubelet-api-admin: logs, exec and metrics on every kubelet.
        "apiserver-kubelet-client": ca.issue(KUBELET_CLIENT_USER, client=True),
    }
    for name, pair in issued.items():
        pki.write_public(paths.cert(name), pair.cert_pem)
        pki.write_secret(paths.key(name), pair.key_pem)
    sa_private, sa_public = pki.service_account_keys()
    pki.write_secret(paths.key("service-account"), sa_private)
    pki.write_public(paths.pki / "service-account.pub", sa_public)

    admin = ca.issue(ADMIN_USER, organizations=("system:masters",), client=True)
    pki.write_public(paths.cert("admin"), admin.cert_pem)
    pki.write_secret(paths.key("admin"), admin.key_pem)
    pki.write_secret(
        paths.admin_kubeconfig,
        kubeconfig_yaml(ports.server, ca.cert_pem, admin, ADMIN_USER).encode(),
    )
    for user, path in (
        ("system:kube-scheduler", paths.scheduler_kubeconfig),
        ("system:kube-controller-manager", paths.controller_manager_kubeconfig),
    ):
        pair = ca.issue(user, client=True)
        pki.write_secret(path, kubeconfig_yaml(ports.server, ca.cert_pem, pair, user).encode())
    return ca


def etcd_argv(binary: Path, paths: Paths, ports: Ports) -> list[str]:
    """etcd: one member, TLS with client certificates on the client and peer ports."""
    client_url = f"https://127.0.0.1:{ports.etcd_client}"
    peer_url = f"https://127.0.0.1:{ports.etcd_peer}"
    return [
        str(binary),
        "--name=dev",
        f"--data-dir={paths.etcd_data}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=dev={peer_url}",
        f"--initial-cluster-token=kubenpu-{secrets.token_hex(8)}",
        "--initial-cluster-state=new",
        f"--cert-file={paths.cert('etcd')}",
        f"--key-file={paths.key('etcd')}",
        f"--trusted-ca-file={paths.cert('ca')}",
        "--client-cert-auth",
        f"--peer-cert-file={paths.cert('etcd')}",
        f"--peer-key-file={paths.key('etcd')}",
        f"--peer-trusted-ca-file={paths.cert('ca')}",
        "--peer-client-cert-auth",
        # A throw-away test cluster: durability across power loss buys nothing, and fsync
        # on a busy shared disk is what makes etcd (and so the API server) slow.
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def workload_api_flags(component: str) -> list[str]:
    """The flags that serve the Workload API (PodGroups, gang scheduling) on ``component``:
    GenericWorkload is beta but off by default in 1.37, and its API version is a beta one
    the API server does not serve unless asked."""
    flags = ["--feature-gates=GenericWorkload=true"]
    if component == "kube-apiserver":
        flags.append("--runtime-config=scheduling.k8s.io/v1beta1=true")
    return flags


def apiserver_argv(
    binary: Path,
    paths: Paths,
    ports: Ports,
    network: NetworkPlan | None = None,
    *,
    workloads: bool = False,
) -> list[str]:
    """kube-apiserver on 127.0.0.1, client-certificate authentication, Node and RBAC.

    ``network`` is the real nodes' network; without it (node agents only) the Service
    range stays on loopback and the ``kubernetes`` Service has no endpoints. ``workloads``
    serves the Workload API (:func:`workload_api_flags`)."""
    if network is not None:
        where = [
            f"--advertise-address={network.gateway}",
            f"--service-cluster-ip-range={network.service_cidr}",
            # Webhook and aggregated API Services are dialled at their pods' addresses,
            # never at a cluster IP (which the host routes nowhere).
            "--enable-aggregator-routing=true",
        ]
    else:
        where = [
            "--advertise-address=127.0.0.1",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # The "kubernetes" Service would get 127.0.0.1 as its endpoint, which Endpoints
            # validation rejects; nothing in an agent-only cluster uses that Service.
            "--endpoint-reconciler-type=none",
        ]
    return [
        str(binary),
        *where,
        "--bind-address=127.0.0.1",
        f"--secure-port={ports.apiserver}",
        f"--etcd-servers=https://127.0.0.1:{ports.etcd_client}",
        f"--etcd-cafile={paths.cert('ca')}",
        f"--etcd-certfile={paths.cert('apiserver-etcd-client')}",
        f"--etcd-keyfile={paths.key('apiserver-etcd-client')}",
        f"--client-ca-file={paths.cert('ca')}",
        f"--tls-cert-file={paths.cert('apiserver')}",
        f"--tls-private-key-file={paths.key('apiserver')}",
        f"--cert-dir={paths.pki}",
        f"--service-account-issuer={SA_ISSUER}",
        f"--service-account-key-file={paths.pki / 'service-account.pub'}",
        f"--service-account-signing-key-file={paths.key('service-account')}",
        "--anonymous-auth=false",
        "--authorization-mode=Node,RBAC",
        # Nodes may only change their own Node and the pods bound to them.
        "--enable-admission-plugins=NodeRestriction",
        # Kubelets are dialled at their InternalIP (never a name looked up in DNS), with a
        # client certificate, and must present a certificate of the cluster CA.
        "--kubelet-preferred-address-types=InternalIP",
        f"--kubelet-client-certificate={paths.cert('apiserver-kubelet-client')}",
        f"--kubelet-client-key={paths.key('apiserver-kubelet-client')}",
        f"--kubelet-certificate-authority={paths.cert('ca')}",
        "--allow-privileged=true",
        *(workload_api_flags("kube-apiserver") if workloads else []),
        "--profiling=false",
        "--v=1",
    ]


def scheduler_argv(
    binary: Path, paths: Paths, ports: Ports, config: Path | None = None, *, workloads: bool = False
) -> list[str]:
    """The unmodified kube-scheduler, as system:kube-scheduler: the default profile, or
    the KubeSchedulerConfiguration ``config`` (which names the kubeconfig itself); with
    ``workloads``, its GangScheduling plugin too (:func:`workload_api_flags`)."""
    kubeconfig = str(paths.scheduler_kubeconfig)
    return [
        str(binary),
        f"--config={config}" if config else f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports.scheduler}",
        f"--cert-dir={paths.root / 'kube-scheduler'}",
        # One scheduler; leader election would only delay its start.
        "--leader-elect=false",
        *(workload_api_flags("kube-scheduler") if workloads else []),
        "--profiling=false",
        "--v=1",
    ]


def controller_manager_argv(
    binary: Path, paths: Paths, ports: Ports, *, workloads: bool = False
) -> list[str]:
    """kube-controller-manager with every default controller, as system:kube-controller-manager
    (each controller with its own service account, as kubeadm sets it up). No --cluster-cidr:
    node IPAM is off (each real node's pod range is set in its own CNI config)."""
    kubeconfig = str(paths.controller_manager_kubeconfig)
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports.controller_manager}",
        f"--cert-dir={paths.root / 'kube-controller-manager'}",
        f"--service-account-private-key-file={paths.key('service-account')}",
        f"--root-ca-file={paths.cert('ca')}",
        "--use-service-account-credentials=true",
        "--leader-elect=false",
        *(workload_api_flags("kube-controller-manager") if workloads else []),
        "--profiling=false",
        "--v=1",
    ]


def wait_controller_manager_healthy(ports: Ports, deadline: float) -> None:
    """Poll kube-controller-manager's /healthz until 200."""
    wait_http_ok(
        "kube-controller-manager", ports.controller_manager, "/healthz", _unverified(), deadline
    )


class HealthError(KubeNpuError):
    """A component did not become healthy in time."""


def wait_http_ok(
    what: str,
    port: int,
    path: str,
    context: ssl.SSLContext | None,
    deadline: float,
    *,
    ok: tuple[int, ...] = (200,),
) -> None:
    """Poll ``GET path`` on 127.0.0.1:``port`` (HTTPS when ``context`` is given) until it
    answers a status in ``ok``, or raise ``HealthError`` with the last answer at
    ``deadline`` (monotonic)."""
    last = "no answer"
    while time.monotonic() < deadline:
        if context is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        else:
            conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            if response.status in ok:
                return
            body = response.read().decode(errors="replace").strip()
            last = f"HTTP {response.status}: {body[-300:]}"
        except OSError as err:
            last = str(err)
        finally:
            conn.close()
        time.sleep(0.1)
    raise HealthError(f"{what} on port {port} not ready: {last}")


def admin_ssl_context(paths: Paths) -> ssl.SSLContext:
    """TLS context that trusts the cluster CA and presents the admin certificate."""
    context = ssl.create_default_context(cafile=str(paths.cert("ca")))
    context.load_cert_chain(str(paths.cert("admin")), str(paths.key("admin")))
    return context


def wait_apiserver_ready(paths: Paths, ports: Ports, deadline: float) -> None:
    """Poll the API server's /readyz until it answers 200 or ``deadline`` (monotonic)."""
    wait_http_ok("kube-apiserver", ports.apiserver, "/readyz", admin_ssl_context(paths), deadline)


def wait_scheduler_healthy(ports: Ports, deadline: float) -> None:
    """Poll kube-scheduler's /healthz (self-signed serving certificate) until 200."""
    wait_http_ok("kube-scheduler", ports.scheduler, "/healthz", _unverified(), deadline)


def _unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    # kube-scheduler and kube-controller-manager serve with a certificate they made
    # themselves at start; there is nothing to verify it against, and the health checks
    # only ask whether they are up.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
