"""The ``kubectl-npu`` command: ``nodes``, ``pods``, ``secret create``, ``run``, ``validate``.

kubectl runs it for ``kubectl npu ...`` with every argument after ``npu`` (kubectl plugins
take their flags after the plugin name), so each sub-command accepts the usual
``--kubeconfig``, ``--context``, ``-n/--namespace`` and ``-o/--output``.
"""

from __future__ import annotations

import base64
import getpass
import json
import sys
from collections.abc import Callable
from typing import Annotated, Any, NoReturn

import typer
import yaml

from kubenpu import names
from kubenpu.kubectl_plugin import validate, views

app = typer.Typer(
    name="kubectl-npu",
    help="NPU nodes, pods, registry secrets, test pods and node validation (kubectl npu ...).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
secret_app = typer.Typer(help="Registry secrets for NPU images.", no_args_is_help=True)
app.add_typer(secret_app, name="secret")

Kubeconfig = Annotated[
    str | None,
    typer.Option("--kubeconfig", help="Kubeconfig file [default: $KUBECONFIG, ~/.kube/config]."),
]
Context = Annotated[str | None, typer.Option("--context", help="Kubeconfig context to use.")]
Namespace = Annotated[
    str | None, typer.Option("-n", "--namespace", help="Namespace [default: the context's].")
]
Output = Annotated[str, typer.Option("-o", "--output", help="table, json or yaml.")]
_FORMATS = ("table", "json", "yaml")


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line to stderr, as kubectl does, and exit."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


class Cluster:
    """The few API calls the plugin makes, each turning failures into one-line errors."""

    def __init__(self, kubeconfig: str | None, context: str | None) -> None:
        from kubernetes import client, config  # imported here: `--help` stays fast

        configuration = client.Configuration()
        try:
            contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
            if context:
                active = next((c for c in contexts if c["name"] == context), None)
                if active is None:
                    fail(f"kubeconfig: no context {context!r}", 2)
            config.load_kube_config(
                config_file=kubeconfig, context=context, client_configuration=configuration
            )
        except (config.ConfigException, OSError, TypeError) as exc:
            fail(f"kubeconfig: {exc}", 2)
        # One quick attempt: a person is waiting, and retries only delay the error.
        configuration.retries = False
        self.server = configuration.host
        self.default_namespace = (active.get("context") or {}).get("namespace") or "default"
        api_client = client.ApiClient(configuration)
        self.api = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    def _call(self, what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.rest import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return call(*args, _request_timeout=15, **kwargs)
        except ApiException as exc:
            fail(f"{what}: {_api_message(exc)}")
        except (HTTPError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            fail(
                f"cannot reach the cluster at {self.server} ({_short(reason)}); "
                "check --kubeconfig and --context"
            )

    def _json(
        self, what: str, call: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(
            self._call(what, call, *args, _preload_content=False, **kwargs).data
        )
        return data

    def nodes(self) -> list[dict[str, Any]]:
        """Every Node."""
        items: list[dict[str, Any]] = self._json("listing nodes", self.api.list_node)["items"]
        return items

    def pods(self, namespace: str | None) -> list[dict[str, Any]]:
        """The pods of ``namespace``, or of all namespaces when None."""
        if namespace is None:
            listing = self._json("listing pods", self.api.list_pod_for_all_namespaces)
        else:
            listing = self._json("listing pods", self.api.list_namespaced_pod, namespace)
        items: list[dict[str, Any]] = listing["items"]
        return items

    def _dra_list(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Every ``resource.k8s.io/v1`` object of ``resource`` (of ``namespace``, or all);
        [] with a warning where the API does not serve it or the user may not list it, so
        that the rest of the table still shows."""
        from kubernetes.client.rest import ApiException

        args: tuple[Any, ...] = ("resource.k8s.io", "v1")
        if namespace is None:
            call: Callable[..., Any] = self.custom.list_cluster_custom_object
            args += (resource,)
        else:
            call = self.custom.list_namespaced_custom_object
            args += (namespace, resource)
        try:
            response = call(*args, _request_timeout=15, _preload_content=False)
        except ApiException as exc:
            if exc.status not in (403, 404):
                fail(f"listing {resource}: {_api_message(exc)}")
            typer.echo(f"warning: listing {resource}: {_api_message(exc)}", err=True)
            return []
        items: list[dict[str, Any]] = json.loads(response.data).get("items") or []
        return items

    def resource_slices(self) -> list[dict[str, Any]]:
        """Every ResourceSlice (DRA-served nodes' devices)."""
        return self._dra_list("resourceslices")

    def resource_claims(self, namespace: str | None) -> list[dict[str, Any]]:
        """The ResourceClaims of ``namespace``, or of all namespaces when None."""
        return self._dra_list("resourceclaims", namespace)

    def create(self, kind: str, namespace: str, body: dict[str, Any]) -> None:
        """Create a Pod or a Secret."""
        call = (
            self.api.create_namespaced_pod if kind == "pod" else self.api.create_namespaced_secret
        )
        self._call(f"creating {kind} {body['metadata']['name']}", call, namespace, body)


def _api_message(exc: Any) -> str:
    try:
        return str(json.loads(exc.body)["message"])
    except (TypeError, ValueError, KeyError):
        return f"HTTP {exc.status} {exc.reason}"


def _short(reason: object) -> str:
    text = str(reason)
    for known in (
        "Connection refused",
        "timed out",
        "Name or service not known",
        "certificate verify failed",
    ):
        if known in text:
            return known.lower()
    return text.split(": ")[-1][:120]


def _emit(
    kind: str, items: list[dict[str, Any]], output: str, table: Callable[[], list[list[str]]]
) -> None:
    if output == "json":
        typer.echo(json.dumps({"kind": kind, "items": items}, indent=2))
    elif output == "yaml":
        typer.echo(yaml.safe_dump({"kind": kind, "items": items}, sort_keys=False), nl=False)
    else:
        typer.echo(views.render(table()), nl=False)


def _check_output(output: str) -> None:
    if output not in _FORMATS:
        fail(f"--output: one of {', '.join(_FORMATS)}, got {output!r}", 2)


def _no_npu_nodes(nodes: list[dict[str, Any]]) -> str:
    return (
        f"no NPU nodes: none of the {len(nodes)} node(s) has {names.RESOURCE_NPU} capacity "
        "(is the kubenpu device plugin running on them?)"
    )


@app.command("nodes")
def nodes_command(
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    output: Output = "table",
) -> None:
    """Per NPU node: model, total, allocated, shared devices and core %, unhealthy, free
    (DRA-served nodes: from their ResourceSlices and the ResourceClaims' allocations)."""
    _check_output(output)
    cluster = Cluster(kubeconfig, context)
    nodes = cluster.nodes()
    listed = cluster.pods(None)
    dra = any(views.is_dra_node(n) for n in nodes)
    claims = cluster.resource_claims(None) if dra or any(map(views.uses_claims, listed)) else []
    slices = cluster.resource_slices() if dra else []
    pods = views.npu_pods(listed, claims)
    rows = views.npu_nodes(nodes, pods, slices, claims)
    if not rows:
        fail(_no_npu_nodes(nodes))
    _emit("NpuNodeList", [r.as_dict() for r in rows], output, lambda: views.node_table(rows))


@app.command("pods")
def pods_command(
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    namespace: Namespace = None,
    all_namespaces: bool = typer.Option(False, "-A", "--all-namespaces", help="Every namespace."),
    output: Output = "table",
) -> None:
    """Pods asking for NPUs: their node, whole NPUs, devices and shares (DRA: their
    claims')."""
    _check_output(output)
    cluster = Cluster(kubeconfig, context)
    ns = None if all_namespaces else namespace or cluster.default_namespace
    listed = cluster.pods(ns)
    # Pods served through DRA: their devices are their claims'.
    claims = cluster.resource_claims(ns) if any(map(views.uses_claims, listed)) else []
    rows = views.npu_pods(listed, claims)
    if not rows and output == "table":
        where = "any namespace" if ns is None else f"namespace {ns}"
        typer.echo(f"No pods asking for NPUs in {where}.", err=True)
        return
    _emit(
        "NpuPodList",
        [r.as_dict() for r in rows],
        output,
        lambda: views.pod_table(rows, all_namespaces=ns is None),
    )


def dockerconfigjson(server: str, username: str, password: str, email: str = "") -> str:
    """The ``.dockerconfigjson`` of a registry login, as ``kubectl create secret
    docker-registry`` writes it."""
    entry: dict[str, str] = {
        "username": username,
        "password": password,
        "auth": base64.b64encode(f"{username}:{password}".encode()).decode(),
    }
    if email:
        entry["email"] = email
    return json.dumps({"auths": {server: entry}})


def _read_password() -> str:
    if sys.stdin.isatty():
        return getpass.getpass("registry password: ")
    # A trailing newline comes from `echo` or a file, never from the password itself.
    return sys.stdin.read().removesuffix("\n").removesuffix("\r")


@secret_app.command("create")
def secret_create(
    name: Annotated[str, typer.Argument(help="Name of the Secret.")],
    server: str = typer.Option(..., "--server", help="Registry server, e.g. registry.example.com."),
    username: str = typer.Option(..., "--username", help="Registry user."),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from standard input (required)."
    ),
    email: str = typer.Option("", "--email", help="E-mail of the registry user (optional)."),
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    namespace: Namespace = None,
) -> None:
    """A docker-registry Secret (kubernetes.io/dockerconfigjson); the password never
    appears on the command line."""
    if not password_stdin:
        fail(
            "pass --password-stdin and the password on standard input, e.g. "
            "`kubectl npu secret create regsecret --server S --username U --password-stdin < file`",
            2,
        )
    password = _read_password()
    if not password:
        fail("the password read from standard input is empty", 2)
    cluster = Cluster(kubeconfig, context)
    ns = namespace or cluster.default_namespace
    config = dockerconfigjson(server, username, password, email)
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(config.encode()).decode()},
    }
    cluster.create("secret", ns, body)
    typer.echo(f"secret/{name} created")


def seed_pod(
    name: str, image: str, npus: int, pull_secret: str = "", command: list[str] | None = None
) -> dict[str, Any]:
    """The seed's test pod: one container with ``npus`` whole NPUs, never restarted."""
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "resources": {"limits": {names.RESOURCE_NPU: str(npus)}},
    }
    if command:
        container["command"] = list(command)
    spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if pull_secret:
        spec["imagePullSecrets"] = [{"name": pull_secret}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


@app.command("run", context_settings={"allow_interspersed_args": True})
def run_command(
    name: Annotated[str, typer.Argument(help="Name of the pod (and its container).")],
    command: Annotated[
        list[str] | None, typer.Argument(help="Command after --, e.g. -- python3 /app/infer.py.")
    ] = None,
    image: str = typer.Option(..., "--image", help="Container image."),
    npu: int = typer.Option(1, "--npu", help="Whole NPUs (aliyun.com/npu)."),
    pull_secret: str = typer.Option("", "--pull-secret", help="imagePullSecrets entry."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the pod, create nothing."),
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    namespace: Namespace = None,
    output: Annotated[
        str, typer.Option("-o", "--output", help="yaml or json, with --dry-run.")
    ] = "yaml",
) -> None:
    """Create a test pod asking for whole NPUs (restartPolicy Never)."""
    if npu < 1:
        fail(f"--npu: at least 1, got {npu}", 2)
    if output not in ("yaml", "json"):
        fail(f"--output: yaml or json, got {output!r}", 2)
    pod = seed_pod(name, image, npu, pull_secret, command)
    if dry_run:
        if namespace:
            pod["metadata"]["namespace"] = namespace
        text = (
            json.dumps(pod, indent=2) + "\n"
            if output == "json"
            else yaml.safe_dump(pod, sort_keys=False)
        )
        typer.echo(text, nl=False)
        return
    cluster = Cluster(kubeconfig, context)
    nodes = cluster.nodes()
    if not views.npu_nodes(nodes, []):
        fail(_no_npu_nodes(nodes))
    ns = namespace or cluster.default_namespace
    cluster.create("pod", ns, pod)
    typer.echo(f"pod/{name} created")


def _secret_missing(cluster: Cluster, namespace: str, name: str) -> bool:
    """Whether the pull secret is known not to exist (False also when it may not be read)."""
    from kubernetes.client.rest import ApiException
    from urllib3.exceptions import HTTPError

    try:
        cluster.api.read_namespaced_secret(name, namespace, _request_timeout=15)
    except ApiException as exc:
        return bool(exc.status == 404)
    except (HTTPError, OSError):
        return False
    return False


@app.command("validate")
def validate_command(
    node: Annotated[
        list[str] | None,
        typer.Option("--node", help="An NPU node to validate; repeat for more."),
    ] = None,
    all_nodes: bool = typer.Option(False, "--all", help="Validate every NPU node."),
    timeout: float = typer.Option(
        600.0, "--timeout", help="Seconds for the whole run (the nodes run in parallel)."
    ),
    image: str = typer.Option(
        validate.DEFAULT_IMAGE, "--image", help="The validation workload's image."
    ),
    pull_secret: str = typer.Option(
        validate.DEFAULT_PULL_SECRET,
        "--pull-secret",
        help="imagePullSecrets entry of the Jobs' pods ('' for none).",
    ),
    epochs: int = typer.Option(1, "--epochs", help="Training epochs per node."),
    min_top1: float = typer.Option(
        50.0, "--min-top1", help="Least top-1 accuracy (percent) on the held-out images."
    ),
    scheduler_name: str = typer.Option(
        "", "--scheduler-name", help="schedulerName of the pods (default: the cluster's)."
    ),
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    namespace: Namespace = None,
    output: Output = "table",
) -> None:
    """Run a short ResNet-50 training Job on each NPU node, using all its NPUs; a table of
    devices seen, placement match, images/s, top-1/top-5 and pass/fail per node. Exit 1 if
    any node fails."""
    _check_output(output)
    if bool(node) == all_nodes:
        fail("name the nodes with --node N (repeatable) or pass --all, not both", 2)
    if timeout <= 0:
        fail(f"--timeout: more than 0 seconds, got {timeout:g}", 2)
    if epochs < 1:
        fail(f"--epochs: at least 1, got {epochs}", 2)
    cluster = Cluster(kubeconfig, context)
    ns = namespace or cluster.default_namespace
    nodes = cluster.nodes()
    targets, unknown = views.validation_targets(nodes, node or ())
    if unknown:
        known = ", ".join(t.node for t in views.validation_targets(nodes)[0]) or "none"
        fail(f"not an NPU node: {', '.join(unknown)} (NPU nodes: {known})", 2)
    if not targets:
        fail(_no_npu_nodes(nodes))
    if pull_secret and _secret_missing(cluster, ns, pull_secret):
        fail(
            f"pull secret {pull_secret!r} not found in namespace {ns} (create it with "
            "`kubectl npu secret create`, or pass --pull-secret '' for a public image)",
            2,
        )
    try:
        rows = validate.run_validation(
            cluster,
            ns,
            targets,
            nodes,
            image=image,
            pull_secret=pull_secret,
            epochs=epochs,
            timeout=timeout,
            min_top1=min_top1,
            scheduler_name=scheduler_name,
        )
    except KeyboardInterrupt:
        fail("interrupted; the validation Jobs were deleted", 130)
    passed = all(r.passed for r in rows)
    if output == "table":
        typer.echo(views.render(views.validation_table(rows)), nl=False)
        typer.echo(views.validation_verdict(rows))
    else:
        doc = {
            "kind": "NpuValidationList",
            "image": image,
            "passed": passed,
            "items": [r.as_dict() for r in rows],
        }
        if output == "json":
            typer.echo(json.dumps(doc, indent=2))
        else:
            typer.echo(yaml.safe_dump(doc, sort_keys=False), nl=False)
    if not passed:
        raise typer.Exit(1)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``kubectl-npu``)."""
    app(args=argv, prog_name="kubectl npu")
