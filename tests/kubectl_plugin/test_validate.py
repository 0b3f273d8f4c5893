"""``kubectl npu validate`` without a cluster: which nodes, what a pod's state means, the
Job it creates, the table, and the whole loop against a scripted API (the real thing is in
tests/realnodes/test_validate.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from typer.testing import CliRunner

from kubectl_plugin.test_views import node
from kubenpu import names
from kubenpu.kubectl_plugin import cli, validate, views

runner = CliRunner()

SUMMARY = {
    "ok": True,
    "stage": "done",
    "devices": ["/dev/mock-npu0", "/dev/mock-npu1"],
    "visible": {"NPU_VISIBLE_DEVICES": "0,1"},
    "record": "npu-0,npu-1",
    "match": True,
    "device": "CPU",
    "epochs": 1,
    "images_per_s": 88.4,
    "top1": 79.2,
    "top5": 97.5,
}


def vpod(
    node_name: str = "",
    *,
    phase: str = "Pending",
    state: dict[str, Any] | None = None,
    scheduled: dict[str, str] | None = None,
    record: str = "npu-0,npu-1",
    validated: str = "npu-node-1",
    status_extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A validation pod as the API returns it."""
    status: dict[str, Any] = {"phase": phase, **(status_extra or {})}
    if state is not None:
        status["containerStatuses"] = [{"name": validate.CONTAINER, "state": state}]
    if scheduled is not None:
        status["conditions"] = [{"type": "PodScheduled", **scheduled}]
    annotations = {names.ANNOTATION_VALIDATE_NODE: validated}
    if node_name and record:
        annotations[names.ANNOTATION_DEVICES] = record
    spec: dict[str, Any] = {"containers": [{"name": validate.CONTAINER}]}
    if node_name:
        spec["nodeName"] = node_name
    return {
        "metadata": {"name": f"npu-validate-{validated}-abc", "annotations": annotations},
        "spec": spec,
        "status": status,
    }


def terminated(code: int, message: str) -> dict[str, Any]:
    return {"terminated": {"exitCode": code, "message": message}}


UNSCHEDULABLE = {
    "status": "False",
    "reason": "Unschedulable",
    "message": "0/2 nodes are available: 1 Insufficient aliyun.com/npu.",
}


# ---- which nodes --------------------------------------------------------------------------


def test_targets_are_the_npu_nodes_with_all_their_npus() -> None:
    nodes = [
        node("npu-node-2", 4, allocatable=3),
        node("npu-node-1", 8),
        node("cpu-node-1", 0, model=""),
        node("npu-node-3", 0),  # labelled as an NPU node, advertising nothing
    ]
    targets, unknown = views.validation_targets(nodes)
    assert [(t.node, t.npus) for t in targets] == [
        ("npu-node-1", 8),
        ("npu-node-2", 4),  # capacity, not allocatable: every device must be usable
        ("npu-node-3", 0),
    ]
    assert unknown == []
    assert "advertises no aliyun.com/npu" in targets[2].problem
    assert not targets[0].problem and not targets[1].problem

    named, unknown = views.validation_targets(nodes, ["npu-node-2", "cpu-node-1", "npu-node-2"])
    assert [t.node for t in named] == ["npu-node-2"]
    assert unknown == ["cpu-node-1"]


# ---- what a pod's state means ---------------------------------------------------------------


def test_steps_on_the_way() -> None:
    assert views.validation_step(None, None, 2).stage == views.STAGE_CREATING
    waiting = views.validation_step(vpod(), node("npu-node-1", 2), 2)
    assert (waiting.stage, waiting.done) == (views.STAGE_SCHEDULING, False)
    pulling = views.validation_step(
        vpod("npu-node-1", state={"waiting": {"reason": "ContainerCreating"}}), None, 2
    )
    assert (pulling.stage, pulling.detail, pulling.done) == (
        views.STAGE_STARTING,
        "ContainerCreating",
        False,
    )
    running = views.validation_step(
        vpod("npu-node-1", phase="Running", state={"running": {}}),
        None,
        2,
        log_tail="epoch 1/1  loss 2.2866  accuracy 53.0%",
    )
    assert (running.stage, running.detail, running.done) == (
        views.STAGE_RUNNING,
        "epoch 1/1  loss 2.2866  accuracy 53.0%",
        False,
    )


def test_unschedulable_fails_at_once_when_the_node_is_short_of_npus() -> None:
    sick = node("npu-node-1", 4, allocatable=3)
    sick["metadata"]["annotations"] = {
        names.ANNOTATION_DEVICE_INVENTORY: json.dumps(
            [{"id": f"npu-{i}", "index": i, "healthy": i != 0} for i in range(4)]
        )
    }
    step = views.validation_step(vpod(scheduled=UNSCHEDULABLE), sick, 4)
    assert step.done and not step.passed
    assert step.reason == (
        "scheduling: npu-node-1 has 3 of 4 NPUs allocatable (unhealthy: npu-0); "
        "0/2 nodes are available: 1 Insufficient aliyun.com/npu."
    )
    # A stopped device plugin: nothing allocatable, the inventory still says healthy.
    step = views.validation_step(vpod(scheduled=UNSCHEDULABLE), node("npu-node-1", 4, 0), 4)
    assert step.done
    assert "has 0 of 4 NPUs allocatable (none advertised: is its device plugin running?)" in (
        step.reason
    )
    # Every NPU allocatable but held by other pods: wait (the timeout ends it).
    step = views.validation_step(vpod(scheduled=UNSCHEDULABLE), node("npu-node-1", 4), 4)
    assert (step.done, step.stage) == (False, views.STAGE_SCHEDULING)
    assert step.detail == UNSCHEDULABLE["message"]
    # The node is gone.
    assert (
        "the node is gone" in views.validation_step(vpod(scheduled=UNSCHEDULABLE), None, 4).reason
    )


@pytest.mark.parametrize(
    ("waiting", "prefix"),
    [
        ({"reason": "ErrImagePull", "message": "pull access denied"}, "image pull: ErrImagePull"),
        ({"reason": "ImagePullBackOff", "message": "Back-off"}, "image pull: ImagePullBackOff"),
        ({"reason": "CreateContainerError", "message": "x"}, "container start: "),
    ],
)
def test_pull_and_start_failures_end_at_once(waiting: dict[str, str], prefix: str) -> None:
    step = views.validation_step(vpod("npu-node-1", state={"waiting": waiting}), None, 2)
    assert step.done and not step.passed
    assert step.reason.startswith(prefix) and waiting["message"] in step.reason


def test_a_pod_the_kubelet_refused() -> None:
    pod = vpod(
        "npu-node-1",
        phase="Failed",
        status_extra={"reason": "UnexpectedAdmissionError", "message": "devices unhealthy"},
    )
    step = views.validation_step(pod, None, 2)
    assert step.reason == "admission: UnexpectedAdmissionError: devices unhealthy"


def test_a_passing_run_and_its_row() -> None:
    pod = vpod("npu-node-1", phase="Succeeded", state=terminated(0, json.dumps(SUMMARY)))
    step = views.validation_step(pod, None, 2, min_top1=50)
    assert step.done and step.passed and step.reason == ""
    row = views.node_validation(
        views.ValidationTarget("npu-node-1", 2), step, pod, seconds=41.26, job="j"
    )
    assert row.as_dict() == {
        "node": "npu-node-1",
        "npus": 2,
        "passed": True,
        "stage": "done",
        "reason": "",
        "devices": ["/dev/mock-npu0", "/dev/mock-npu1"],
        "record": "npu-0,npu-1",
        "match": True,
        "images_per_s": 88.4,
        "top1": 79.2,
        "top5": 97.5,
        "device": "CPU",
        "seconds": 41.3,
        "job": "j",
    }
    failed = views.node_validation(
        views.ValidationTarget("npu-node-2", 4),
        views.ValidationStep(views.STAGE_STARTING, done=True, reason="image pull: ErrImagePull"),
        None,
        seconds=3,
    )
    assert views.render(views.validation_table([row, failed])).splitlines() == [
        "NODE         NPUS   DEVICES-SEEN          RECORD        MATCH   IMAGES/S   TOP-1   "
        "TOP-5   TIME   RESULT   REASON",
        "npu-node-1   2      mock-npu0,mock-npu1   npu-0,npu-1   yes     88.4       79.2%   "
        "97.5%   41s    PASS",
        "npu-node-2   4      <none>                <none>        -       -          -       "
        "-       3s     FAIL     image pull: ErrImagePull",
    ]
    assert views.validation_verdict([row]) == "1 of 1 NPU node(s) passed"
    assert views.validation_verdict([row, failed]) == "1 of 2 NPU node(s) failed: npu-node-2"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"top1": 31.0}, "accuracy: top-1 31.0% is below 50%"),
        (
            {"devices": ["/dev/mock-npu0"]},
            "device missing: the container sees 1 NPU(s), asked for 2",
        ),
        ({"match": False}, "device mismatch: the container's devices do not match"),
        ({"record": "npu-2,npu-3"}, "device mismatch: the pod's record is npu-0,npu-1"),
        ({"top1": None}, "result: no top-1 accuracy"),
    ],
)
def test_an_exit_0_that_still_fails(change: dict[str, Any], reason: str) -> None:
    summary = {**SUMMARY, **change}
    pod = vpod("npu-node-1", phase="Succeeded", state=terminated(0, json.dumps(summary)))
    step = views.validation_step(pod, None, 2, min_top1=50)
    assert step.done and not step.passed
    assert step.reason.startswith(reason), step.reason


@pytest.mark.parametrize(
    ("summary", "message", "reason"),
    [
        (
            {"stage": "npu-check", "error": "no NPU device node under /dev"},
            None,
            "device missing: no NPU device node under /dev",
        ),
        (
            {"stage": "npu-check", "error": "record npu-1 (indices 1) but the container sees 0"},
            None,
            "device mismatch: record npu-1",
        ),
        (
            {"stage": "training", "error": "training failed: MemoryError: "},
            None,
            "training: training failed: MemoryError",
        ),
        # No summary: Kubernetes put the end of the log there instead.
        (None, "Traceback ...\nImportError: no tensorflow\n", "container exited with code 1: "),
    ],
)
def test_failing_containers(summary: dict | None, message: str | None, reason: str) -> None:
    text = json.dumps(summary) if summary is not None else message
    pod = vpod("npu-node-1", phase="Failed", state=terminated(1, text or ""))
    step = views.validation_step(pod, None, 2)
    assert step.done and not step.passed
    assert step.reason.startswith(reason), step.reason


def test_parse_summary_takes_only_an_object() -> None:
    assert views.parse_summary(json.dumps(SUMMARY))["top1"] == 79.2
    assert views.parse_summary("[1]") == {} == views.parse_summary("epoch 1/1 ...")


# ---- the Job ----------------------------------------------------------------------------------


def test_the_job_asks_for_every_npu_of_its_node_and_is_bounded() -> None:
    job = validate.validation_job(
        "npu-node-1", 4, run="a1b2c3", pull_secret="regsecret", epochs=1, deadline_seconds=360
    )
    assert job["metadata"]["name"] == "npu-validate-npu-node-1-a1b2c3"
    assert job["metadata"]["labels"][names.LABEL_VALIDATE_RUN] == "a1b2c3"
    spec = job["spec"]
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"]) == (0, 360)
    assert spec["ttlSecondsAfterFinished"] > 0
    pod = spec["template"]
    assert pod["metadata"]["labels"][names.LABEL_VALIDATE_RUN] == "a1b2c3"
    assert pod["metadata"]["annotations"] == {names.ANNOTATION_VALIDATE_NODE: "npu-node-1"}
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["imagePullSecrets"] == [{"name": "regsecret"}]
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"] == [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["npu-node-1"]}]}
    ]
    assert "nodeName" not in spec  # through the scheduler and the extender, as any NPU pod
    (container,) = spec["containers"]
    assert container["image"] == validate.DEFAULT_IMAGE
    assert container["args"] == ["--epochs", "1"]
    assert container["resources"] == {"limits": {names.RESOURCE_NPU: "4"}}
    assert container["env"][0]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['kubenpu.io/devices']"
    )
    no_secret = validate.validation_job("n", 1, run="r", pull_secret="", scheduler_name="s")
    assert "imagePullSecrets" not in no_secret["spec"]["template"]["spec"]
    assert no_secret["spec"]["template"]["spec"]["schedulerName"] == "s"


def test_job_names_fit_for_any_node_name() -> None:
    name = validate.job_name("Worker.NPU." + "x" * 80, "abcdef")
    assert len(name) <= 52 and name.endswith("-abcdef")
    assert name.startswith("npu-validate-worker-npu-x")
    assert all(c in "abcdefghijklmnopqrstuvwxyz0123456789-" for c in name)


# ---- the loop, against a scripted API ----------------------------------------------------------


class FakeApi:
    """CoreV1Api and BatchV1Api in one: pods move on by one script entry per poll."""

    def __init__(self, nodes: list[dict], scripts: dict[str, list[Callable[[], dict | None]]]):
        self.nodes = nodes
        self.scripts = scripts
        self.polls = 0
        self.jobs: dict[str, dict] = {}
        self.deleted_jobs: list[str] = []
        self.pods_deleted = False
        self.api_client = None

    @staticmethod
    def _response(items: list[dict]) -> SimpleNamespace:
        return SimpleNamespace(data=json.dumps({"items": items}).encode())

    def create_namespaced_job(self, namespace: str, body: dict, **_: Any) -> None:
        self.jobs[body["metadata"]["name"]] = body

    def list_namespaced_job(self, namespace: str, **_: Any) -> SimpleNamespace:
        return self._response(
            [j for j in self.jobs.values() if j["metadata"]["name"] not in self.deleted_jobs]
        )

    def list_node(self, **_: Any) -> SimpleNamespace:
        return self._response(self.nodes)

    def list_namespaced_pod(self, namespace: str, **_: Any) -> SimpleNamespace:
        if self.pods_deleted:
            return self._response([])
        self.polls += 1
        pods = []
        for script in self.scripts.values():
            pod = script[min(self.polls, len(script)) - 1]()
            if pod is not None:
                pods.append(pod)
        return self._response(pods)

    def read_namespaced_pod_log(self, name: str, namespace: str, **_: Any) -> SimpleNamespace:
        return SimpleNamespace(data=b"epoch 1/1  loss 2.2866\n")

    def delete_namespaced_job(self, name: str, namespace: str, **_: Any) -> None:
        self.deleted_jobs.append(name)

    def delete_collection_namespaced_pod(self, namespace: str, **_: Any) -> None:
        self.pods_deleted = True


def fake_cluster(api: FakeApi) -> SimpleNamespace:
    def call(what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return SimpleNamespace(api=api, batch=api, _call=call)


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validate, "POLL_SECONDS", 0.0)
    monkeypatch.setattr(validate, "LOG_SECONDS", 0.0)


def test_run_validation_follows_each_node_to_its_end_and_cleans_up() -> None:
    nodes = [node("npu-node-1", 2), node("npu-node-2", 2, allocatable=1)]
    done = json.dumps(SUMMARY)
    api = FakeApi(
        nodes,
        {
            "npu-node-1": [
                lambda: None,
                lambda: vpod("npu-node-1", state={"waiting": {"reason": "ContainerCreating"}}),
                lambda: vpod("npu-node-1", phase="Running", state={"running": {}}),
                lambda: vpod("npu-node-1", phase="Succeeded", state=terminated(0, done)),
            ],
            "npu-node-2": [lambda: vpod(scheduled=UNSCHEDULABLE, validated="npu-node-2")],
        },
    )
    targets, _ = views.validation_targets(nodes)
    rows = validate.run_validation(
        fake_cluster(api),
        "default",
        targets,
        nodes,
        image="img",
        pull_secret="regsecret",
        epochs=1,
        timeout=30,
        min_top1=50,
    )
    assert [(r.node, r.passed) for r in rows] == [("npu-node-1", True), ("npu-node-2", False)]
    assert rows[0].top1 == 79.2 and rows[0].job.startswith("npu-validate-npu-node-1-")
    assert rows[1].reason.startswith("scheduling: npu-node-2 has 1 of 2 NPUs allocatable")
    assert sorted(api.deleted_jobs) == sorted(api.jobs) and len(api.jobs) == 2
    assert api.pods_deleted


def test_run_validation_times_out_and_still_cleans_up() -> None:
    nodes = [node("npu-node-1", 2)]
    api = FakeApi(
        nodes, {"npu-node-1": [lambda: vpod("npu-node-1", phase="Running", state={"running": {}})]}
    )
    targets, _ = views.validation_targets(nodes)
    rows = validate.run_validation(
        fake_cluster(api),
        "default",
        targets,
        nodes,
        image="img",
        pull_secret="",
        epochs=1,
        timeout=0.2,
        min_top1=50,
    )
    assert not rows[0].passed
    assert rows[0].reason.startswith("timeout: no result after 0s (running: epoch 1/1")
    assert api.deleted_jobs == list(api.jobs) and api.pods_deleted


def test_a_node_without_npus_gets_no_job() -> None:
    nodes = [node("npu-node-3", 0)]
    api = FakeApi(nodes, {})
    targets, _ = views.validation_targets(nodes)
    rows = validate.run_validation(
        fake_cluster(api),
        "default",
        targets,
        nodes,
        image="img",
        pull_secret="",
        epochs=1,
        timeout=5,
        min_top1=50,
    )
    assert api.jobs == {} and not rows[0].passed
    assert rows[0].reason.startswith("device plugin: npu-node-3")


# ---- the command ------------------------------------------------------------------------------


class FakeCluster:
    """cli.Cluster with canned nodes; validation itself is replaced."""

    nodes_: ClassVar[list[dict]] = []

    def __init__(self, kubeconfig: str | None, context: str | None) -> None:
        self.default_namespace = "default"
        self.api = SimpleNamespace(read_namespaced_secret=lambda *a, **k: {})

    def nodes(self) -> list[dict]:
        return self.nodes_


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    FakeCluster.nodes_ = [node("npu-node-1", 4), node("npu-node-2", 4), node("cpu", 0, model="")]
    monkeypatch.setattr(cli, "Cluster", FakeCluster)

    def run(cluster: Any, namespace: str, targets: list, nodes: list, **kwargs: Any) -> list:
        calls.append({"namespace": namespace, "targets": targets, **kwargs})
        rows = []
        for t in targets:
            ok = t.node != "npu-node-2"
            step = views.ValidationStep(
                views.STAGE_DONE, done=True, passed=ok, reason="" if ok else "image pull: x"
            )
            rows.append(views.node_validation(t, step, None, seconds=1))
        return rows

    monkeypatch.setattr(validate, "run_validation", run)
    return calls


def test_command_needs_nodes_or_all(fake: list) -> None:
    for args in ([], ["--all", "--node", "npu-node-1"]):
        out = runner.invoke(cli.app, ["validate", *args])
        assert out.exit_code == 2 and "--node N" in out.stderr
    out = runner.invoke(cli.app, ["validate", "--node", "cpu"])
    assert out.exit_code == 2
    assert out.stderr == "error: not an NPU node: cpu (NPU nodes: npu-node-1, npu-node-2)\n"
    assert fake == []


def test_command_exit_status_table_and_json(fake: list) -> None:
    out = runner.invoke(cli.app, ["validate", "--node", "npu-node-1", "--epochs", "2"])
    assert out.exit_code == 0, out.output
    assert out.stdout.splitlines()[-1] == "1 of 1 NPU node(s) passed"
    assert fake[0]["epochs"] == 2 and fake[0]["pull_secret"] == "regsecret"
    assert fake[0]["image"] == validate.DEFAULT_IMAGE and fake[0]["timeout"] == 600
    out = runner.invoke(cli.app, ["validate", "--all", "-o", "json", "--timeout", "90"])
    assert out.exit_code == 1
    doc = json.loads(out.stdout)
    assert doc["kind"] == "NpuValidationList" and doc["passed"] is False
    assert [(i["node"], i["passed"], i["reason"]) for i in doc["items"]] == [
        ("npu-node-1", True, ""),
        ("npu-node-2", False, "image pull: x"),
    ]


def test_command_checks_the_pull_secret(fake: list, monkeypatch: pytest.MonkeyPatch) -> None:
    from kubernetes.client.rest import ApiException

    def missing(*args: Any, **kwargs: Any) -> None:
        raise ApiException(status=404, reason="Not Found")

    monkeypatch.setattr(
        FakeCluster,
        "__init__",
        lambda self, *a: (
            setattr(self, "api", SimpleNamespace(read_namespaced_secret=missing))
            or setattr(self, "default_namespace", "team-a")
        ),
    )
    out = runner.invoke(cli.app, ["validate", "--all"])
    assert out.exit_code == 2
    assert "pull secret 'regsecret' not found in namespace team-a" in out.stderr
    out = runner.invoke(cli.app, ["validate", "--all", "--pull-secret", ""])
    assert out.exit_code == 1 and fake[-1]["pull_secret"] == ""
