"""The console's view models: pure functions of the store's contents."""

from __future__ import annotations

import json

import pytest

from console.objects import FAILED, event, node, pod
from kubenpu.console import reasons
from kubenpu.console.simreport import compute_default, report_view
from kubenpu.console.store import ConsoleStore
from kubenpu.console.views import (
    cluster_view,
    format_age,
    fragmentation,
    measure_name,
    node_view,
    pending_view,
)
from kubenpu.errors import InputError


def kinds(store: ConsoleStore, name: str) -> list[tuple[str, list[tuple[str, int]]]]:
    with store.lock:
        view = cluster_view(store.inputs())
    (row,) = [r for r in view.rows if r.name == name]
    return [(d.kind, [(s.pod, s.milli) for s in d.holders]) for d in row.devices]


def test_grid_draws_whole_shared_free_and_unhealthy_devices(store: ConsoleStore) -> None:
    assert kinds(store, "n1") == [
        ("whole", [("default/a", 1000)]),
        ("shared", [("default/s60", 600), ("default/s30", 300)]),
        ("free", []),
        ("free", []),
    ]
    # The finished pod holds nothing; npu3 is unhealthy.
    assert kinds(store, "n2") == [("free", []), ("free", []), ("free", []), ("unhealthy", [])]


def test_totals_allocation_and_fragmentation(store: ConsoleStore) -> None:
    with store.lock:
        view = cluster_view(store.inputs())
    t = view.totals
    assert (t.nodes, t.devices, t.whole, t.shared, t.free, t.unhealthy) == (2, 8, 1, 1, 5, 1)
    assert view.cpu_nodes == 1
    assert t.allocated_milli == 1900 and t.capacity_milli == 8000
    assert t.allocation_pct == pytest.approx(23.75)
    assert t.pending == 1
    # The 10% left on the shared device fits no shape of the mix (1 NPU, 30%, 60%): that
    # is all the fragmentation there is.
    assert t.fragmented_milli == pytest.approx(100)
    assert t.fragmentation_pct == pytest.approx(100 * 100 / 5100)
    assert view.measure == "host-aware FGD" and view.policy == "kubenpu"
    assert set(t.mix) == {"1 NPU x 2", "30% share x 1", "60% share x 1"}
    assert [r.fragmented_milli for r in view.rows] == [pytest.approx(100), pytest.approx(0)]


def test_fragmentation_needs_a_task_mix_and_follows_the_policy() -> None:
    s = ConsoleStore("fgd")
    s.replace_nodes([node("n1")])
    with s.lock:
        view = cluster_view(s.inputs())
        assert fragmentation(s.cache.state(), "fgd", []) is None
    assert view.totals.fragmented_milli is None and view.totals.fragmentation_pct is None
    assert view.measure == "FGD"
    assert measure_name("fgd:2+bestfit") == "FGD" and measure_name("") == "host-aware FGD"


def test_node_view_has_devices_pods_shares_and_events(store: ConsoleStore) -> None:
    with store.lock:
        view = node_view(store.inputs(), "n1")
    assert view is not None
    assert (view.model, view.instance_type, view.ready) == (
        "hanguang-800",
        "ecs.ebman1.26xlarge",
        "Ready",
    )
    assert [(d.index, d.id, d.group, d.healthy, d.memory_mib) for d in view.row.devices] == [
        (0, "n1-npu0", 0, True, 0),  # memory counts only where the Node advertises npu-mem
        (1, "n1-npu1", 0, True, 0),
        (2, "n1-npu2", 1, True, 0),
        (3, "n1-npu3", 1, True, 0),
    ]
    pods = {p.key: p for p in view.pods}
    assert set(pods) == {"default/a", "default/s30", "default/s60"}
    assert pods["default/a"].devices == ("n1-npu0",) and pods["default/a"].recorded
    assert pods["default/s30"].shares == (("n1-npu1", 30.0),)
    # Newest first.
    assert [e.reason for e in view.events] == ["Rebooted", "NodeReady"]
    assert view.events[0].type == "Warning" and view.events[1].source == "kubelet"
    assert view.groups == (0, 1)


def test_node_view_unknown_node_is_none(store: ConsoleStore) -> None:
    with store.lock:
        assert node_view(store.inputs(), "nope") is None
        assert node_view(store.inputs(), "c1") is not None  # a node, without NPUs


def test_unrecorded_bound_pod_is_inferred_on_a_device() -> None:
    s = ConsoleStore()
    s.replace_nodes([node("n1", 2)])
    s.replace_pods([pod("other", npus=1, node="n1")])  # bound by another scheduler
    with s.lock:
        view = node_view(s.inputs(), "n1")
    assert view is not None
    (row,) = view.pods
    assert len(row.devices) == 1 and not row.recorded
    assert [d.kind for d in view.row.devices].count("whole") == 1


def test_pending_view_gives_the_reason_in_plain_words(store: ConsoleStore) -> None:
    with store.lock:
        (p,) = pending_view(store.inputs())
    assert (p.key, p.wants, p.age, p.scheduler) == (
        "default/w",
        "1 whole NPU",
        "10m0s",
        "default-scheduler",
    )
    assert p.reason.headline == "none of the 3 nodes can take it"
    assert [(c.nodes, c.plain) for c in p.reason.causes] == [
        (1, "a taint the pod does not tolerate"),
        (2, "too few free whole NPUs"),
    ]
    assert p.reason.attempts == 3


def test_pending_without_events_reads_the_condition_or_waits() -> None:
    s = ConsoleStore(clock=lambda: 0.0)
    waiting = pod("x", core=40)
    conditioned = pod("y", npus=2)
    conditioned["status"]["conditions"] = [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/2 nodes are available: 2 Insufficient aliyun.com/npu-core: "
            "no NPU with 40 percent free core.",
        }
    ]
    s.replace_pods([waiting, conditioned])
    with s.lock:
        by_key = {p.key: p for p in pending_view(s.inputs())}
    assert by_key["default/x"].wants == "40% of one NPU"
    assert by_key["default/x"].reason.headline.startswith("waiting for default-scheduler")
    (cause,) = by_key["default/y"].reason.causes
    assert cause.nodes == 2
    assert cause.plain == (
        "no NPU has enough free compute for the share (no NPU with 40 percent free core)"
    )


@pytest.mark.parametrize(
    ("message", "headline", "causes"),
    [
        (FAILED, "none of the 3 nodes can take it", 2),
        ("0/0 nodes are available.", "the cluster has no nodes", 0),
        ("0/1 nodes are available: 1 Insufficient cpu.", "the one node cannot take it", 1),
        (
            "0/5 nodes are available: 5 no NPU devices.",
            "none of the 5 nodes can take it",
            1,
        ),
        ("pod has unbound immediate PersistentVolumeClaims", "pod has unbound immediate "
         "PersistentVolumeClaims", 0),
    ],
)  # fmt: skip
def test_parse_message(message: str, headline: str, causes: int) -> None:
    parsed = reasons.parse_message(message)
    assert parsed.headline == headline and len(parsed.causes) == causes


def test_plain_words_keeps_unknown_texts() -> None:
    assert reasons.plain_words("NPU model not hanguang-800") == (
        "another NPU model than the pod allows"
    )
    assert reasons.plain_words("something new") == "something new"


def test_store_events_are_bounded_and_follow_deletions(store: ConsoleStore) -> None:
    for k in range(30):
        store.event_event(
            "ADDED",
            event(f"x{k}", "Node", "n2", "R", str(k), when=f"2026-01-02T00:00:{k:02d}Z"),
        )
    with store.lock:
        view = node_view(store.inputs(), "n2")
    assert view is not None and len(view.events) == 20 and view.events[0].message == "29"
    before = store.version
    store.pod_event("DELETED", pod("w", npus=1))
    assert store.version == before + 1
    assert ("Pod", "default/w") not in store.events
    with store.lock:
        assert pending_view(store.inputs()) == []


def test_store_drops_managed_fields_and_ignores_other_events(store: ConsoleStore) -> None:
    obj = pod("m", npus=1)
    obj["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    store.pod_event("ADDED", obj)
    assert "managedFields" not in store.pods["default/m"]["metadata"]
    before = store.version
    other = event("d", "Deployment", "web", "ScalingReplicaSet", "scaled")
    store.event_event("ADDED", other)
    assert store.version == before


def test_format_age() -> None:
    assert [format_age(s) for s in (5, 75, 3 * 3600 + 120, 2 * 86400 + 4 * 3600)] == [
        "5s",
        "1m15s",
        "3h2m",
        "2d4h",
    ]


# ---- simulator report ------------------------------------------------------------------


def _run(policy: str, seed: int, final: float) -> dict:
    return {
        "policy": policy,
        "seed": seed,
        "tune": 1.3,
        "total_devices": 10,
        "allocation_curve": [0.0, final / 2, final],
        "final_allocation_pct": final,
        "unscheduled_pods": 4,
        "explain_pct": {"fractional": 1.5, "whole devices": 0.5},
    }


def test_report_view_groups_runs_by_policy() -> None:
    data = {"runs": [_run("a", 1, 90.0), _run("a", 2, 92.0), _run("b", 1, 80.0)]}
    view = report_view(data, "r.json")
    a, b = view.rows
    assert (a.policy, a.seeds, a.mean_pct, a.min_pct, a.max_pct) == ("a", 2, 91.0, 90.0, 92.0)
    assert a.curve == (0.0, 45.5, 91.0) and b.colour != a.colour
    assert a.explain is not None and a.explain["fractional"] == 1.5
    assert view.total_explained(a) == pytest.approx(2.0)
    first, *_, last = a.points(1.3).split()
    assert first == "48.0,300.0" and last.startswith("688.0,")
    assert view.x_ticks[0] == (48.0, "0%")


@pytest.mark.parametrize(
    "data",
    [[], {"runs": "x"}, {"runs": [{"policy": 1}]}, {"runs": [{"policy": "a"}]}],
)
def test_report_view_rejects_what_is_no_report(data: object) -> None:
    with pytest.raises(InputError):
        report_view(data, "r.json")


def test_compute_default_is_bounded_in_time() -> None:
    data, notes = compute_default(0.0, ["bestfit", "random"])
    assert data == {"runs": []}
    assert notes == ["stopped at the 0 s budget: left out bestfit, random"]
    data, notes = compute_default(60.0, ["bestfit"])
    (run,) = data["runs"]
    assert run["policy"] == "bestfit" and notes == []
    json.dumps(data)
    assert report_view(data, "default").rows[0].explain is not None
