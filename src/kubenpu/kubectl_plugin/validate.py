"""``kubectl npu validate``: prove every NPU node works, end to end.

One Job per NPU node, asking for all of its NPUs and pinned to it, so the pod takes the path
of any NPU workload: kube-scheduler and the extender, the kubelet and the device plugin, the
private registry. The container runs the ResNet-50 workload for one epoch, checks it sees
exactly its placement's devices and writes its result as the termination message, read back
here. All of a node's NPUs in one pod because a node is only sound if every device can be
handed out, at the cost of one training run per node; a busy node times out with the
scheduler's reason. A live table shows each node's stage; the Jobs are deleted at the end,
also after a failure or Ctrl-C. The pure parts are in :mod:`kubenpu.kubectl_plugin.views`.
"""

from __future__ import annotations

import json
import re
import secrets
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kubenpu import names
from kubenpu.kubectl_plugin import views

#: The seed's training image, as the dev cluster's registry holds it.
DEFAULT_IMAGE = "npu-registry.example.com/demo/npu-resnet50:1.0"
DEFAULT_PULL_SECRET = "regsecret"
#: Labels on every Job and pod of a run (the run label selects them for clean-up).
LABEL_APP = "app.kubernetes.io/name"
APP = "kubenpu-validate"
CONTAINER = "validate"
#: How often the pods are read, and their logs (for the progress display).
POLL_SECONDS = 1.0
LOG_SECONDS = 3.0
#: The longest the clean-up waits for the pods to be gone.
CLEANUP_SECONDS = 60.0
# Kubernetes names: a Job name becomes a label value (job-name), at most 63 characters, and
# its pods add a 6-character suffix.
_MAX_JOB_NAME = 52


def job_name(node: str, run: str) -> str:
    """``npu-validate-<node>-<run>``, a valid Job name for any node name."""
    safe = re.sub(r"[^a-z0-9-]+", "-", node.lower()).strip("-")
    room = _MAX_JOB_NAME - len("npu-validate--") - len(run)
    return f"npu-validate-{safe[:room].rstrip('-') or 'node'}-{run}"


def validation_job(
    node: str,
    npus: int,
    *,
    run: str,
    image: str = DEFAULT_IMAGE,
    pull_secret: str = DEFAULT_PULL_SECRET,
    epochs: int = 1,
    deadline_seconds: int = 660,
    scheduler_name: str = "",
) -> dict[str, Any]:
    """The Job validating ``node``: one pod asking for ``npus`` whole NPUs, pinned to the
    node, never restarted. ``activeDeadlineSeconds`` and ``ttlSecondsAfterFinished`` end
    and remove it even if the command that created it is gone."""
    labels = {
        LABEL_APP: APP,
        "app.kubernetes.io/managed-by": "kubectl-npu",
        names.LABEL_VALIDATE_RUN: run,
    }
    annotations = {names.ANNOTATION_VALIDATE_NODE: node}
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "args": ["--epochs", str(epochs)],
        "env": [
            {
                "name": "KUBENPU_DEVICES",
                "valueFrom": {
                    "fieldRef": {"fieldPath": f"metadata.annotations['{names.ANNOTATION_DEVICES}']"}
                },
            }
        ],
        "resources": {"limits": {names.RESOURCE_NPU: str(npus)}},
        # The summary the workload writes; the end of its log if it wrote none.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchFields": [
                                {"key": "metadata.name", "operator": "In", "values": [node]}
                            ]
                        }
                    ]
                }
            }
        },
        # The toleration the admission webhook would add, for clusters without it.
        "tolerations": [
            {"key": names.TAINT_NPU, "operator": "Exists", "effect": names.TAINT_NPU_EFFECT}
        ],
        "containers": [container],
    }
    if pull_secret:
        spec["imagePullSecrets"] = [{"name": pull_secret}]
    if scheduler_name:
        spec["schedulerName"] = scheduler_name
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(node, run), "labels": labels, "annotations": annotations},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": deadline_seconds,
            "ttlSecondsAfterFinished": 600,
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": spec,
            },
        },
    }


def _job_failure(job: Mapping[str, Any] | None) -> str:
    """The Job's own failure (deadline exceeded, ...), "" when none."""
    for cond in ((job or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Failed" and cond.get("status") == "True":
            reason = cond.get("reason") or "Failed"
            kind = "timeout" if reason == "DeadlineExceeded" else "job"
            return f"{kind}: {reason}: {cond.get('message', '')}".rstrip(": ")
    return ""


class Progress:
    """The live display: a rich table on a terminal, one line per change elsewhere."""

    def __init__(self, targets: Sequence[views.ValidationTarget], header: str) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.targets = targets
        self.header = header
        self.live: Any = None
        self.last: dict[str, tuple[str, str]] = {}

    def __enter__(self) -> Progress:
        if self.console.is_terminal:
            from rich.live import Live

            self.live = Live(console=self.console, refresh_per_second=4, transient=True)
            self.live.__enter__()
        else:
            self.console.print(self.header, highlight=False, soft_wrap=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def update(self, steps: Mapping[str, views.ValidationStep], elapsed: float) -> None:
        """Show every node's current step."""
        if self.live is not None:
            from rich.table import Table

            table = Table(title=self.header, title_justify="left", box=None, pad_edge=False)
            for column in ("NODE", "NPUS", "STAGE", "ELAPSED", "DETAIL"):
                table.add_column(column, no_wrap=column != "DETAIL")
            for target in self.targets:
                step = steps[target.node]
                stage = step.stage
                if step.done:
                    stage = "[green]passed[/]" if step.passed else "[red]failed[/]"
                detail = step.reason if step.done and not step.passed else step.detail
                table.add_row(target.node, str(target.npus), stage, f"{elapsed:.0f}s", detail)
            self.live.update(table)
            return
        for target in self.targets:
            step = steps[target.node]
            stage = ("passed" if step.passed else "failed") if step.done else step.stage
            key = (stage, step.reason if step.done else "")
            if self.last.get(target.node) != key:
                self.last[target.node] = key
                extra = f": {step.reason}" if step.done and step.reason else ""
                self.console.print(
                    f"{target.node}: {stage} ({elapsed:.0f}s){extra}",
                    highlight=False,
                    soft_wrap=True,
                )


def _quiet(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """One API call of the polling loop; None on any failure (the next poll tries again,
    the overall deadline still applies)."""
    from kubernetes.client.rest import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return call(*args, _request_timeout=10, **kwargs)
    except (ApiException, HTTPError, OSError, ValueError):
        return None


def _items(response: Any) -> list[dict[str, Any]] | None:
    if response is None:
        return None
    try:
        return list(json.loads(response.data)["items"])
    except (ValueError, KeyError, TypeError):
        return None


def run_validation(
    cluster: Any,
    namespace: str,
    targets: Sequence[views.ValidationTarget],
    nodes: Sequence[Mapping[str, Any]],
    *,
    image: str,
    pull_secret: str,
    epochs: int,
    timeout: float,
    min_top1: float,
    scheduler_name: str = "",
) -> list[views.NodeValidation]:
    """Create the Jobs, follow them to the end or the timeout, clean up; the rows.

    ``nodes`` are the Nodes as listed before (kept when a later listing fails)."""
    core, batch = cluster.api, cluster.batch
    run = secrets.token_hex(3)
    selector = f"{names.LABEL_VALIDATE_RUN}={run}"
    started = time.monotonic()
    deadline = started + timeout
    jobs = {t.node: job_name(t.node, run) for t in targets if not t.problem}
    steps: dict[str, views.ValidationStep] = {}
    ended: dict[str, float] = {}
    pods: dict[str, dict[str, Any]] = {}
    for target in targets:
        if target.problem:
            steps[target.node] = views.ValidationStep(
                views.STAGE_CREATING, done=True, reason=target.problem
            )
            ended[target.node] = 0.0
        else:
            steps[target.node] = views.ValidationStep(views.STAGE_CREATING, "creating the Job")
    header = (
        f"validating {len(targets)} NPU node(s) with {image} (--epochs {epochs}, "
        f"timeout {timeout:.0f}s, run {run})"
    )
    known_nodes = {str(n["metadata"]["name"]): n for n in nodes}
    logs: dict[str, str] = {}
    log_read: dict[str, float] = {}
    try:
        with Progress(targets, header) as progress:
            for target in targets:
                if target.problem:
                    continue
                body = validation_job(
                    target.node,
                    target.npus,
                    run=run,
                    image=image,
                    pull_secret=pull_secret,
                    epochs=epochs,
                    deadline_seconds=int(timeout) + 60,
                    scheduler_name=scheduler_name,
                )
                cluster._call(
                    f"creating job {body['metadata']['name']}",
                    batch.create_namespaced_job,
                    namespace,
                    body,
                )
            while True:
                now = time.monotonic()
                pod_list = _items(
                    _quiet(
                        core.list_namespaced_pod,
                        namespace,
                        label_selector=selector,
                        _preload_content=False,
                    )
                )
                job_list = _items(
                    _quiet(
                        batch.list_namespaced_job,
                        namespace,
                        label_selector=selector,
                        _preload_content=False,
                    )
                )
                node_list = _items(_quiet(core.list_node, _preload_content=False))
                if pod_list is not None:
                    pods = _pods_by_node(pod_list)
                by_job = {j["metadata"]["name"]: j for j in job_list or []}
                if node_list is not None:
                    known_nodes = {str(n["metadata"]["name"]): n for n in node_list}
                for target in targets:
                    if steps[target.node].done:
                        continue
                    pod = pods.get(target.node)
                    if (
                        pod is not None
                        and _running(pod)
                        and now - log_read.get(target.node, 0.0) >= LOG_SECONDS
                    ):
                        log_read[target.node] = now
                        logs[target.node] = _log_tail(core, namespace, pod) or logs.get(
                            target.node, ""
                        )
                    step = views.validation_step(
                        pod,
                        known_nodes.get(target.node),
                        target.npus,
                        min_top1=min_top1,
                        log_tail=logs.get(target.node, ""),
                    )
                    failure = _job_failure(by_job.get(jobs[target.node]))
                    if failure and not step.done:
                        step = views.ValidationStep(step.stage, done=True, reason=failure)
                    if not step.done and now >= deadline:
                        last = f"{step.stage}: {step.detail}" if step.detail else step.stage
                        step = views.ValidationStep(
                            step.stage,
                            step.detail,
                            done=True,
                            reason=f"timeout: no result after {timeout:.0f}s ({last})",
                        )
                    steps[target.node] = step
                    if step.done:
                        ended[target.node] = now - started
                progress.update(steps, now - started)
                if all(s.done for s in steps.values()):
                    break
                time.sleep(POLL_SECONDS)
    finally:
        _clean_up(core, batch, namespace, selector, list(jobs.values()))
    return [
        views.node_validation(
            t,
            steps[t.node],
            pods.get(t.node),
            seconds=ended.get(t.node, time.monotonic() - started),
            job=jobs.get(t.node, ""),
        )
        for t in targets
    ]


def _running(pod: Mapping[str, Any]) -> bool:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return bool(statuses) and "running" in (statuses[0].get("state") or {})


def _pods_by_node(pod_list: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The newest pod of each validated node."""
    found: dict[str, dict[str, Any]] = {}
    for pod in sorted(pod_list, key=lambda p: p["metadata"].get("creationTimestamp") or ""):
        node = (pod["metadata"].get("annotations") or {}).get(names.ANNOTATION_VALIDATE_NODE)
        if node:
            found[node] = dict(pod)
    return found


def _log_tail(core: Any, namespace: str, pod: Mapping[str, Any]) -> str:
    response = _quiet(
        core.read_namespaced_pod_log,
        pod["metadata"]["name"],
        namespace,
        container=CONTAINER,
        tail_lines=1,
        _preload_content=False,
    )
    if response is None:
        return ""
    return str(response.data.decode(errors="replace")).strip()


def _clean_up(core: Any, batch: Any, namespace: str, selector: str, jobs: Sequence[str]) -> None:
    """Delete the run's Jobs and pods and wait (bounded) until the pods are gone."""
    if not jobs:
        return
    for name in jobs:
        _quiet(batch.delete_namespaced_job, name, namespace, propagation_policy="Background")
    # The pods at once too, with a short grace period: the NPUs are free when this returns.
    _quiet(
        core.delete_collection_namespaced_pod,
        namespace,
        label_selector=selector,
        grace_period_seconds=1,
    )
    deadline = time.monotonic() + CLEANUP_SECONDS
    while time.monotonic() < deadline:
        left = _items(
            _quiet(
                core.list_namespaced_pod, namespace, label_selector=selector, _preload_content=False
            )
        )
        if left == []:
            return
        time.sleep(POLL_SECONDS)
    print(
        f"warning: the validation pods are not all gone after {CLEANUP_SECONDS:.0f}s; "
        f"remove them with: kubectl delete jobs,pods -n {namespace} -l {selector}",
        file=sys.stderr,
    )
