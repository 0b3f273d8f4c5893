"""``kubenpu console`` against a real dev cluster (kube-apiserver, kube-scheduler with the
extender, one node agent with 4 NPUs): the seed's pod and two shares placed, one pod
waiting, every page over HTTP, SSE after a change, a device turning unhealthy."""

from __future__ import annotations

import time

import pytest

from console.cluster import NODE, Setup, wait_for
from console.server import SseReader, get

pytestmark = pytest.mark.e2e


def test_console_pages_on_a_dev_cluster(setup: Setup) -> None:
    whole, share30 = setup.place_seed_pods()

    # The cluster grid shows exactly those allocations on those devices.
    def grid() -> str | None:
        body = setup.page("/?fragment=1")
        ok = (
            f'data-device="{whole}" data-kind="whole" data-pods="default/test-npu-pod"' in body
            and f'data-device="{share30}" data-kind="shared" '
            'data-pods="default/shared-npu-60 default/shared-npu-30"'
            in body
        )
        return body if ok else None

    body = wait_for("the grid to show the placements", grid, timeout=20)
    assert body.count('data-kind="free"') == 2 and body.count('data-kind="whole"') == 1
    assert '<b id="allocation">47.5%</b>' in body  # 1 + 0.3 + 0.6 of 4 NPUs

    # A pod that cannot fit: 4 whole NPUs, 2 free.
    setup.run_npu_pod("too-big", 4)

    def reason() -> str | None:
        body = setup.page("/pending")
        return body if "too few free whole NPUs" in body else None

    pending = wait_for("the pending page to give the scheduler's reason", reason, timeout=30)
    assert '<tr data-pod="default/too-big">' in pending and "4 whole NPUs" in pending

    # The node page: its devices with index and group, pods and shares.
    node = setup.page(f"/nodes/{NODE}")
    for text in (whole, share30, "default/test-npu-pod", "default/shared-npu-30", "30%", "60%"):
        assert text in node, text
    assert "hanguang-800" in node and "ecs.ebman1.26xlarge" in node
    assert f'<tr data-device="{whole}" data-kind="whole">' in node

    status, _, missing = get(setup.base + "/nodes/no-such-node")
    assert status == 404 and "no-such-node" in missing

    # Live: the stream says something changed after a pod is created.
    reader = SseReader(setup.base + "/events")
    try:
        assert reader.next_event()[0] == "hello"
        setup.run_npu_pod("one-more", 1)
        started = time.monotonic()
        assert reader.next_event()[0] == "change"
        assert time.monotonic() - started < 5
    finally:
        reader.close()

    # A device turning unhealthy shows within 5 s.
    held = {whole, share30, setup.device_of("one-more")}
    sick = next(d for d in setup.inventory() if d not in held)
    setup.dev.set_device_health(NODE, sick, healthy=False)
    started = time.monotonic()
    wait_for(
        f"{sick} drawn unhealthy",
        lambda: f'data-device="{sick}" data-kind="unhealthy"' in setup.page("/?fragment=1"),
        timeout=10,
    )
    elapsed = time.monotonic() - started
    assert elapsed < 5, elapsed
    metrics = setup.page("/metrics")
    assert f'kubenpu_console_npus{{model="hanguang-800",node="{NODE}",state="unhealthy"}} 1.0' in (
        metrics
    )
    assert "kubenpu_console_pending_npu_pods 1.0" in metrics
