"""The informer's list/watch loop, the cache's accounting, the service's readiness."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from extender.fakeapi import FakeApi, node, pod
from kubenpu.extender.cache import ClusterCache, pod_entry
from kubenpu.extender.informer import Informer
from kubenpu.extender.service import ExtenderService
from kubenpu.names import ANNOTATION_DEVICES, ANNOTATION_NODE, ANNOTATION_SHARES


def test_informer_relists_on_gone_and_errors_and_resumes_watches() -> None:
    stop = threading.Event()
    lists: list[str] = []
    seen: list[tuple[str, str]] = []
    replaced: list[int] = []
    script: list[object] = [
        # first watch: two events then a normal end -> resumed from version 5
        [{"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "5"}}}],
        # resumed watch: bookmark, then 410 -> list again
        [
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}},
            {"type": "ERROR", "object": {"code": 410, "message": "too old"}},
        ],
        # after the second list: the connection drops -> not synced, list again
        ConnectionError("connection reset"),
        # after the third list: one event, then stop
        [{"type": "DELETED", "object": {"metadata": {"name": "a", "resourceVersion": "12"}}}],
    ]
    versions: list[str] = []
    informer: Informer

    def list_fn() -> tuple[list[dict], str]:
        lists.append("list")
        if len(lists) == 3:
            assert not informer.synced.is_set()  # lost the API: not ready until relisted
        return [{"metadata": {"name": "a"}}], str(len(lists))

    def watch_fn(version: str) -> Iterator[dict]:
        versions.append(version)
        step = script.pop(0)
        if isinstance(step, Exception):
            raise step
        if not script:
            stop.set()
        return iter(step)  # type: ignore[call-overload]

    informer = Informer(
        "pods",
        list_fn,
        watch_fn,
        on_replace=lambda items: replaced.append(len(items)),
        on_event=lambda kind, obj: seen.append((kind, obj["metadata"]["name"])),
        stop=stop,
    )
    informer.run()
    assert lists == ["list", "list", "list"]
    assert versions == ["1", "5", "2", "3"]
    assert seen == [("ADDED", "a"), ("DELETED", "a")]
    assert replaced == [1, 1, 1]
    assert informer.synced.is_set()


def test_a_watch_that_ends_at_once_is_resumed_after_a_growing_pause() -> None:
    class Recording(threading.Event):
        """A stop event that records the pauses asked of it instead of sleeping."""

        def __init__(self) -> None:
            super().__init__()
            self.waits: list[float] = []

        def wait(self, timeout: float | None = None) -> bool:
            self.waits.append(timeout or 0.0)
            return self.is_set()

    stop = Recording()
    watches = 0

    def watch_fn(version: str) -> Iterator[dict]:
        nonlocal watches
        watches += 1
        if watches == 6:  # one event: the pause starts over
            return iter([{"type": "ADDED", "object": {"metadata": {"name": "x"}}}])
        if watches == 9:
            stop.set()
        return iter([])

    informer = Informer(
        "nodes",
        lambda: ([], "1"),
        watch_fn,
        on_replace=lambda items: None,
        on_event=lambda kind, obj: None,
        stop=stop,
        max_backoff_s=1.0,
    )
    informer.run()
    assert stop.waits == [0.2, 0.4, 0.8, 1.0, 1.0, 0.2, 0.4]


def recorded(name: str, target: str, devices: str, shares: str, **kw) -> dict:
    ann = {ANNOTATION_NODE: target, ANNOTATION_DEVICES: devices, ANNOTATION_SHARES: shares}
    return pod(name, annotations=ann, **kw)


def test_cache_accounts_records_bound_pods_finished_pods_and_health() -> None:
    cache = ClusterCache("fgd")
    cache.replace_nodes([node("n1", 4), node("n2", 4)])
    # A recorded whole placement (by index, as an older writer), a share, a bound pod
    # without a record, and a finished one.
    cache.upsert_pod(recorded("a", "n1", "2", "1000", npus=1, node_name="n1"))
    cache.upsert_pod(recorded("s", "n1", "npu-0", "300", core=30))  # unbound: assumed
    cache.upsert_pod(pod("b", npus=2, node_name="n2"))
    done = pod("c", npus=4, node_name="n2")
    done["status"]["phase"] = "Succeeded"
    cache.upsert_pod(done)
    state = cache.state()
    held = {k: (h.placement.node, h.placement.device_ids) for k, h in state.holdings.items()}
    assert held["default/a"] == ("n1", ("npu-2",))
    assert held["default/s"] == ("n1", ("npu-0",))
    assert held["default/b"][0] == "n2" and len(held["default/b"][1]) == 2
    assert "default/c" not in held
    assert state.dev_free[0].tolist() == [700, 1000, 0, 1000]
    # A health change is applied in place (no rebuild), deletion frees.
    cache.upsert_node(node("n1", 4, sick=(3,)))
    assert cache.state() is state
    assert state.dev_free[0].tolist() == [700, 1000, 0, 0]
    cache.delete_pod("default/a")
    assert state.dev_free[0].tolist() == [700, 1000, 1000, 0]
    # A new node rebuilds and re-reserves everything.
    cache.upsert_node(node("n3", 2))
    rebuilt = cache.state()
    assert rebuilt is not state
    assert set(rebuilt.holdings) == {"default/s", "default/b"}
    assert cache.engine().profile.name == "fgd"


def test_pod_entry_prefers_the_binding_over_a_stale_record() -> None:
    moved = recorded("m", "n1", "npu-0", "1000", npus=1, node_name="n2")
    entry = pod_entry(moved)
    assert entry is not None
    assert entry.placement is not None
    assert (entry.placement.node, entry.recorded, entry.bound) == ("n2", False, True)


def test_service_is_ready_once_synced() -> None:
    api = FakeApi([node("n1")], [pod("p", npus=1, node_name="n1")])
    service = ExtenderService(api, policy="bestfit")
    assert service.ready() == (
        False,
        "not synced with the API server: nodes, pods, resourceslices, resourceclaims",
    )
    service.start()
    assert service.wait_synced(5)
    assert service.ready() == (True, "")
    assert service.cache.num_nodes == 1
    assert service.cache.num_pods == 1
    service.shutdown()


def test_untranslatable_objects_show_in_the_metrics() -> None:
    bad = pod("both", npus=1, core=30)  # whole and shared NPUs at once: not translatable
    api = FakeApi([node("n1")], [pod("p", npus=1, node_name="n1"), bad])
    service = ExtenderService(api, policy="bestfit")
    service.start()
    assert service.wait_synced(5)
    text = service.metrics.render().decode()
    assert 'kubenpu_extender_cache_problems{kind="pod"} 1.0' in text
    assert 'kubenpu_extender_cache_problems{kind="node"} 0.0' in text
    assert 'kubenpu_extender_cache_problems{kind="conflict"} 0.0' in text
    service.shutdown()
