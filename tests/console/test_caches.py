"""What keeps the console's pages fast at 1,000 nodes changes nothing they show: rows kept
per node (``views.RowCache``) are rebuilt exactly when their node changes and equal a fresh
build; ``/metrics``' kept lines are byte for byte ``generate_latest``'s."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from console.objects import node, pod
from kubenpu.console import metrics
from kubenpu.console.store import ConsoleStore
from kubenpu.console.views import ClusterView, cluster_view, node_view


def _views(store: ConsoleStore) -> tuple[ClusterView, ClusterView]:
    """(with the store's row cache, built afresh)."""
    with store.lock:
        inputs = store.inputs()
        kept = cluster_view(inputs)
        fresh = cluster_view(dataclasses.replace(inputs, rows=None))
    return kept, fresh


def _changes(store: ConsoleStore) -> list[tuple[str, Callable[[], None]]]:
    b = pod("b", npus=1, node="n1", devices=("n1-npu2",))
    s30 = pod("s30", core=30, node="n1", devices=("n1-npu1",))
    return [
        ("pod on n1", lambda: store.pod_event("ADDED", b)),
        ("pod gone", lambda: store.pod_event("DELETED", s30)),
        ("n2 sick", lambda: store.node_event("MODIFIED", node("n2", unhealthy=(0, 3)))),
        ("pod waits", lambda: store.pod_event("ADDED", pod("w2", core=40))),
        ("node added", lambda: store.node_event("ADDED", node("n3", 8))),
        ("node gone", lambda: store.node_event("DELETED", node("n2"))),
    ]


def test_kept_rows_equal_fresh_ones_after_every_change(store: ConsoleStore) -> None:
    for what, change in _changes(store):
        before, _ = _views(store)
        change()
        kept, fresh = _views(store)
        assert kept == fresh, what
        with store.lock:
            for row in kept.rows:
                page = node_view(store.inputs(), row.name)
                assert page is not None and page.row == row, (what, row.name)
        # Rows of nodes the change did not touch are the very same cells.
        old = {r.name: r.devices for r in before.rows}
        same = {r.name for r in kept.rows if old.get(r.name) is r.devices}
        if what in ("pod on n1", "pod gone"):
            assert same == {r.name for r in kept.rows} - {"n1"}, what
        if what == "n2 sick":
            assert same == {r.name for r in kept.rows} - {"n2"}, what


def test_metrics_exposition_is_generate_latest_byte_for_byte(store: ConsoleStore) -> None:
    collector = metrics.ConsoleCollector(store)
    registry = metrics.registry_of(collector)
    assert collector.exposition() == metrics.render(registry)
    for what, change in _changes(store):
        change()
        assert collector.exposition() == metrics.render(registry), what
        assert collector.exposition() == metrics.render(metrics.registry_for(store)), what
