"""``kubenpu dev-cluster up|status|restart|down``: real Kubernetes with NPU nodes, here."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kubenpu import names
from kubenpu.errors import ConfigError, KubeNpuError

if TYPE_CHECKING:
    from kubenpu.devcluster.cluster import DevCluster

# kubenpu.devcluster pulls in the Kubernetes client and gRPC; it is imported inside the
# commands so that every other `kubenpu` command starts without them.

app = typer.Typer(
    help="A real Kubernetes cluster on this machine: etcd, kube-apiserver, "
    "kube-controller-manager and kube-scheduler (with the kubenpu extender) on loopback, and "
    "NPU nodes that are real kubelets with containerd and runc (or, with --node-agent, "
    "kubelet stand-ins), each with kubenpu device-plugin and simulated NPUs. "
    "See docs/dev-cluster.md.",
    no_args_is_help=True,
)

_STATE_DIR_HELP = "Where the cluster keeps its state [default: ~/.cache/kubenpu/dev-cluster]."


def _state_dir(given: Path | None) -> Path:
    from kubenpu.devcluster.cluster import default_state_dir

    return (given or default_state_dir()).expanduser().absolute()


def _loaded(state_dir: Path | None) -> tuple[Path, DevCluster | None]:
    """The state directory and the cluster recorded there (None: no cluster)."""
    from kubenpu.devcluster.cluster import DevCluster

    root = _state_dir(state_dir)
    try:
        return root, DevCluster.load(root)
    except KubeNpuError as err:
        raise _fail(err) from None


def _fail(err: KubeNpuError) -> typer.Exit:
    typer.echo(f"error: {err}", err=True)
    return typer.Exit(code=2 if isinstance(err, ConfigError) else 1)


@app.command("up")
def up(
    nodes: int = typer.Option(2, "--nodes", help="NPU nodes (ecs.ebman1.26xlarge)."),
    npus: int = typer.Option(4, "--npus", help="NPUs per NPU node."),
    cpu_nodes: int = typer.Option(0, "--cpu-nodes", help="Nodes without NPUs."),
    npu_model: str = typer.Option(
        names.REFERENCE_NPU_MODEL,
        "--npu-model",
        help=f"Value of the {names.LABEL_NPU_MODEL} label.",
    ),
    kubeconfig: Annotated[
        Path | None,
        typer.Option("--kubeconfig", help="Also write the admin kubeconfig here (mode 0600)."),
    ] = None,
    state_dir: Annotated[Path | None, typer.Option("--state-dir", help=_STATE_DIR_HELP)] = None,
    timeout: float = typer.Option(180.0, "--timeout", help="Seconds to wait for the cluster."),
    webhook: bool = typer.Option(
        True, "--webhook/--no-webhook", help="Run and register the admission webhook."
    ),
    addons: bool = typer.Option(
        True,
        "--addons/--no-addons",
        help="Run kubenpu's device plugins, extender and webhook as processes; "
        "--no-addons leaves the cluster bare for `helm install`.",
    ),
    node_agent: bool = typer.Option(
        False,
        "--node-agent",
        help="Kubelet stand-ins that run no containers instead of real kubelets: many "
        "nodes, no root, for scheduling tests.",
    ),
    dra: bool = typer.Option(
        False,
        "--dra",
        help="Serve every NPU node's NPUs with the DRA driver (`kubenpu dra-driver`) "
        "instead of the device plugin (docs/dra.md).",
    ),
    dra_nodes: int = typer.Option(
        0,
        "--dra-nodes",
        help="Serve only the last N NPU nodes with the DRA driver, the others with the "
        "device plugin (a mixed cluster).",
    ),
    workloads: bool = typer.Option(
        False,
        "--workloads",
        help="Serve the Workload API (PodGroups) and kube-scheduler's gang scheduling, "
        "off by default in Kubernetes 1.37 (docs/preemption.md, Gangs).",
    ),
) -> None:
    """Start the cluster and return once it is usable; it keeps running until `down`.

    Builds the Kubernetes, containerd and registry binaries and the images first if they
    are missing (minutes, once). Real nodes need root.
    """
    from kubenpu.devcluster import binaries
    from kubenpu.devcluster.cluster import ClusterSpec
    from kubenpu.devcluster.cluster import up as cluster_up

    root = _state_dir(state_dir)
    started = time.monotonic()
    try:
        spec = ClusterSpec(
            npu_nodes=nodes,
            npus_per_node=npus,
            cpu_nodes=cpu_nodes,
            npu_model=npu_model,
            node_kind="agent" if node_agent else "real",
            dra_nodes=nodes if dra else dra_nodes,
            workloads=workloads,
        )
        if binaries.missing():
            typer.echo(
                f"building Kubernetes {binaries.KUBERNETES_VERSION} into "
                f"{binaries.bin_dir()} (once; several minutes)...",
                err=True,
            )
        target = kubeconfig.expanduser().absolute() if kubeconfig else None
        cluster = cluster_up(
            root, spec, kubeconfig=target, timeout=timeout, webhook=webhook, addons=addons
        )
    except KubeNpuError as err:
        raise _fail(err) from None
    elapsed = time.monotonic() - started
    config = cluster.user_kubeconfig or cluster.kubeconfig
    typer.echo(f"dev cluster up in {elapsed:.1f} s: API server {cluster.server}")
    _echo_nodes(cluster)
    typer.echo(f"kubeconfig: {config}")
    registry = cluster.registry_credentials()
    if registry:
        typer.echo(
            f"private registry {registry['server']} (user {registry['username']}; "
            "`kubenpu dev-cluster status -o json` prints the password)"
        )
    typer.echo(f"  kubectl --kubeconfig {config} get nodes")
    typer.echo(f"stop it with: kubenpu dev-cluster down{_state_flag(state_dir, root)}")


def _echo_nodes(cluster: DevCluster) -> None:
    """One line per Node, as the API server reports it."""
    try:
        nodes = cluster.node_summaries()
    except Exception as err:  # the API server is down: say so, the process list tells why
        typer.echo(f"  nodes: API server not answering ({type(err).__name__})")
        return
    typer.echo(f"  {'NODE':<14} {'READY':<6} {names.RESOURCE_NPU} (allocatable/capacity)")
    for node in nodes:
        npus = f"{node.allocatable_npus}/{node.capacity_npus}" if node.capacity_npus else "-"
        typer.echo(f"  {node.name:<14} {node.ready!s:<6} {npus}")


def _state_flag(given: Path | None, root: Path) -> str:
    return f" --state-dir {root}" if given is not None else ""


@app.command("status")
def status(
    state_dir: Annotated[Path | None, typer.Option("--state-dir", help=_STATE_DIR_HELP)] = None,
    output: str = typer.Option("text", "--output", "-o", help="text or json."),
    as_json: bool = typer.Option(False, "--json", help="The same as -o json."),
) -> None:
    """Show the cluster's processes, ports, nodes and registry. Exit 1 if none runs or one
    died."""
    if output not in ("text", "json"):
        typer.echo(f"error: -o {output}: text or json", err=True)
        raise typer.Exit(code=2)
    as_json = as_json or output == "json"
    from kubenpu.devcluster import binaries

    root, cluster = _loaded(state_dir)
    if cluster is None:
        typer.echo(f"no dev cluster in {root}")
        raise typer.Exit(code=1)
    processes = cluster.status()
    healthy = all(p.running for p in processes)
    if as_json:
        report = {
            "state_dir": str(root),
            "server": cluster.server,
            "kubeconfig": str(cluster.user_kubeconfig or cluster.kubeconfig),
            "healthy": healthy,
            "processes": [
                {"name": p.name, "pid": p.pid, "running": p.running, "log": p.log}
                for p in processes
            ],
            "kubernetes": binaries.KUBERNETES_VERSION,
            "registry": cluster.registry_credentials(),
            "nodes": _node_report(cluster),
            "metrics": cluster.metrics_endpoints(),
        }
        typer.echo(json.dumps(report, indent=2))
    else:
        typer.echo(f"dev cluster in {root}: {'running' if healthy else 'DEGRADED'}")
        typer.echo(f"  API server  {cluster.server}")
        typer.echo(f"  kubeconfig  {cluster.user_kubeconfig or cluster.kubeconfig}")
        for p in processes:
            state = "running" if p.running else "EXITED"
            typer.echo(f"  {p.name:<28} pid {p.pid:<8} {state:<8} {p.log}")
        _echo_nodes(cluster)
    if not healthy:
        raise typer.Exit(code=1)


def _node_report(cluster: DevCluster) -> list[dict[str, object]]:
    """Each node's kind, NPUs and, as its Node reports them, kubelet and runtime versions."""
    try:
        infos = cluster.node_infos()
    except Exception:  # the API server is down: the versions are unknown, not an error
        infos = {}
    report = []
    for n in cluster.nodes:
        info = infos.get(n.name, {})
        report.append(
            {
                "name": n.name,
                "kind": n.kind,
                "npus": n.npus,
                "internal_ip": info.get("internal_ip"),
                "kubelet_version": info.get("kubeletVersion"),
                "container_runtime_version": info.get("containerRuntimeVersion"),
            }
        )
    return report


@app.command("restart")
def restart(
    name: str = typer.Argument(
        ..., help="A process as `status` names it: kube-apiserver, kubelet/npu-node-1, ..."
    ),
    kill: bool = typer.Option(False, "--kill", help="SIGKILL at once (a crash), not SIGTERM."),
    state_dir: Annotated[Path | None, typer.Option("--state-dir", help=_STATE_DIR_HELP)] = None,
) -> None:
    """Stop one component of the cluster and start it again with the same command line."""
    root, cluster = _loaded(state_dir)
    if cluster is None:
        typer.echo(f"no dev cluster in {root}")
        raise typer.Exit(code=1)
    try:
        if name not in cluster.processes:
            raise ConfigError(f"no process {name!r}; processes: {', '.join(cluster.processes)}")
        cluster.stop_process(name, kill=kill)
        cluster.start_process(name)
    except KubeNpuError as err:
        raise _fail(err) from None
    typer.echo(f"{name} restarted (pid {cluster.processes[name].pid})")


@app.command("down")
def down(
    state_dir: Annotated[Path | None, typer.Option("--state-dir", help=_STATE_DIR_HELP)] = None,
) -> None:
    """Stop every process of the cluster and delete its state (and the kubeconfig it wrote)."""
    root, cluster = _loaded(state_dir)
    if cluster is None:
        typer.echo(f"no dev cluster in {root}; nothing to stop")
        return
    try:
        killed = cluster.down()
    except KubeNpuError as err:
        raise _fail(err) from None
    note = f" (killed after the grace period: {', '.join(killed)})" if killed else ""
    typer.echo(f"dev cluster in {root} stopped{note}")
