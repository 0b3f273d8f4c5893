"""Bind: choose the devices on kube-scheduler's node, record them on the pod, bind it.

Races (docs/extender.md): binds to one node are serialised in-process (binds to different
nodes run side by side: they share no device), and every bind (1) reserves
its devices in the cache, so filters see them taken at once, (2) records the placement on
the pod with a PATCH guarded by the pod's resourceVersion, then (3) reads afresh every
placement recorded for that node (label ``kubenpu.io/node``) and backs off if any device
would be over-committed, and only then (4) creates the Binding. Two binders (replicas, or
one before and one after a restart) that race for a device each write before they read,
so at least one of them sees the other's record and backs off: never both win.

A node whose NPUs the DRA driver serves (label ``kubenpu.io/npu-driver=dra``) is bound
without devices chosen or reserved and without a record (the pod's ResourceClaims,
allocated by kube-scheduler's DynamicResources plugin in PreBind, hold the devices): the
binder reads those claims and writes the devices they were allocated as the pod's
``kubenpu.io/devices`` annotation alone (no ``kubenpu.io/node``, so no binder counts it),
before the Binding, so that a container reading it through the downward API (the seed's
``examples/test-npu-pod.yaml``) sees the same ids on both paths. A claim that is missing
or not allocated fails the bind. A stale record from an earlier bind elsewhere is
withdrawn in the same patch.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from kubenpu.adapters.claims import ClaimError, pod_claims, pod_device_ids
from kubenpu.adapters.kube import placement_from_pod, placement_patch, pod_key, request_from_pod
from kubenpu.errors import ApiError, Conflict, ObjectError, PlacementError
from kubenpu.extender.api import KubeApi
from kubenpu.extender.cache import ClusterCache
from kubenpu.extender.gangs import GangBook
from kubenpu.extender.metrics import ExtenderMetrics
from kubenpu.extender.wire import ExtenderBindingArgs
from kubenpu.model import Placement, Request
from kubenpu.names import (
    ANNOTATION_DEVICES,
    ANNOTATION_NODE,
    LABEL_PLACED_NODE,
    MILLI_PER_DEVICE,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


class BindError(PlacementError):
    """A bind that must not (or could not) happen; ``reason`` is the metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        #: Pods read from the API during the bind that the cache should take in.
        self.learned: list[dict[str, Any]] = []


def now() -> str:
    """The time a record is made, RFC 3339 with microseconds."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def overcommitted(placements: Iterable[Placement]) -> str | None:
    """The first device whose recorded shares add up to more than one device, if any.

    A whole device is recorded as 1000 milli, so "held whole and shared" is over too.
    """
    used: dict[str, int] = defaultdict(int)
    holders: dict[str, list[str]] = defaultdict(list)
    for p in placements:
        for dev, share in zip(p.device_ids, p.shares_milli, strict=True):
            used[dev] += share
            holders[dev].append(p.pod)
            if used[dev] > MILLI_PER_DEVICE:
                return f"{dev} is held by {', '.join(holders[dev])} ({used[dev]} milli)"
    return None


class Binder:
    """Binds pods through ``api``; cache access under ``lock`` (the extender's)."""

    def __init__(
        self,
        cache: ClusterCache,
        lock: threading.RLock,
        api: KubeApi | None,
        metrics: ExtenderMetrics,
        clock: Callable[[], str] = now,
        on_bound: Callable[[Mapping[str, Any]], None] | None = None,
        gangs: GangBook | None = None,
    ) -> None:
        self.cache = cache
        self.lock = lock
        self.api = api
        self.metrics = metrics
        self._clock = clock
        #: Told each pod as bound (under ``lock``), before any watch reports it: what
        #: preempt knows of a node's pods must include the ones bound a moment ago, as
        #: kube-scheduler's own cache (which assumes them) does.
        self._on_bound = on_bound
        #: Gang plans: a member binds to its planned devices; everyone else's choice sees
        #: them taken.
        self.gangs = gangs or GangBook()
        #: One lock per node: binds there are serialised, binds elsewhere are not.
        self._serial: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._serial_guard = threading.Lock()

    def bind(self, args: ExtenderBindingArgs) -> None:
        """Choose devices on the node, record them on the pod, then create the Binding;
        raises ``BindError`` (counted and logged) when it must not or could not."""
        started = time.perf_counter()
        try:
            with self._serial_guard:
                node_lock = self._serial[args["Node"]]
            with node_lock:
                self._bind(args)
        except BindError as err:
            ns, name, node = args["PodNamespace"], args["PodName"], args["Node"]
            log.warning("bind %s/%s to %s refused: %s", ns, name, node, err)
            self.metrics.count("bind", "error", err.reason)
            raise
        finally:
            self.metrics.latency.labels("bind").observe(time.perf_counter() - started)
        self.metrics.count("bind", "ok")

    def _bind(self, args: ExtenderBindingArgs) -> None:
        api = self.api
        if api is None:
            raise BindError("api_error", "this extender has no API access to bind with")
        ns, name, uid, node = args["PodNamespace"], args["PodName"], args["PodUID"], args["Node"]
        pod = _call("get", lambda: api.get_pod(ns, name))
        meta = pod.get("metadata") or {}
        if meta.get("uid") != uid:
            raise BindError("gone", f"pod {ns}/{name} is not the one scheduled (uid {uid})")
        bound_to = (pod.get("spec") or {}).get("nodeName")
        if bound_to:
            if bound_to == node:
                return  # a retried bind that already happened
            raise BindError("conflict", f"pod {ns}/{name} is already bound to {bound_to}")
        with self.lock:
            dra = self.cache.served_by_dra(node)
        if dra:
            self._bind_dra(api, ns, name, uid, node, pod)
            return
        try:
            key, req = pod_key(pod), request_from_pod(pod)
            recorded = placement_from_pod(pod)
        except ObjectError as err:
            raise BindError("invalid_pod", str(err)) from None
        placement = self._reserve(key, uid, req, node, recorded, pod)
        try:
            body = placement_patch(
                placement,
                policy=self.cache.policy,
                assumed_at=self._clock(),
                resource_version=str(meta.get("resourceVersion", "")),
            )
            patched = _call("patch", lambda: api.patch_pod(ns, name, body))
            try:
                self._check_node(api, node, key, placement)
                _call("binding", lambda: api.bind_pod(ns, name, uid, node))
            except BindError:
                _withdraw(api, ns, name, patched)
                raise
        except BindError as err:
            with self.lock:
                self.cache.delete_pod(key)
                self.cache.upsert_pod(pod)  # back to what the API had before this bind
                for other in err.learned:
                    if pod_key(other) != key:
                        self.cache.upsert_pod(other)
            raise
        self._bound(pod, node)
        log.info("bound %s to %s: devices %s", key, node, ",".join(placement.device_ids) or "-")

    def _bind_dra(
        self, api: KubeApi, ns: str, name: str, uid: str, node: str, pod: Mapping[str, Any]
    ) -> None:
        """Bind to a DRA-served node: its claims hold the devices; kubenpu records none,
        it only tells the pod which devices they are (``kubenpu.io/devices``)."""
        devices = self._claimed_devices(api, ns, name, node, pod)
        meta = pod.get("metadata") or {}
        annotations, labels = meta.get("annotations") or {}, meta.get("labels") or {}
        stale = ANNOTATION_NODE in annotations or LABEL_PLACED_NODE in labels
        shown = ",".join(devices) or None
        if stale or annotations.get(ANNOTATION_DEVICES) != shown:
            # A stale record (from an earlier bind elsewhere) would hold that node's
            # devices in every binder's fresh read. Guarded (409: changed meanwhile).
            body = placement_patch(None, resource_version=str(meta.get("resourceVersion", "")))
            body["metadata"]["annotations"][ANNOTATION_DEVICES] = shown
            patched = _call("patch", lambda: api.patch_pod(ns, name, body))
            with self.lock:
                self.cache.upsert_pod(patched)  # its old devices are free at once
        _call("binding", lambda: api.bind_pod(ns, name, uid, node))
        self._bound(pod, node)
        log.info(
            "bound %s/%s to %s: devices %s from its claims (DRA)",
            ns,
            name,
            node,
            ",".join(devices) or "-",
        )

    def _claimed_devices(
        self, api: KubeApi, ns: str, name: str, node: str, pod: Mapping[str, Any]
    ) -> tuple[str, ...]:
        """The devices of this driver the pod's claims were allocated; BindError when a
        claim is missing or not allocated, or an NPU pod has no claim at all."""
        try:
            used = pod_claims(pod)
            asks = request_from_pod(pod).npus > 0
        except ObjectError as err:
            raise BindError("invalid_pod", str(err)) from None
        if asks and not any(c.extended for c in used):
            raise BindError(
                "no_claim",
                f"pod {ns}/{name} asks for NPUs on DRA node {node}, but kube-scheduler made "
                "it no claim (status.extendedResourceClaimStatus is missing: is the "
                "DeviceClass with extendedResourceName installed and DRAExtendedResource on?)",
            )
        claims: dict[str, Mapping[str, Any]] = {}
        for claim in dict.fromkeys(c.claim for c in used if c.claim):
            try:
                claims[claim] = _call(
                    "get claim", functools.partial(api.get_resource_claim, ns, claim)
                )
            except BindError as err:
                if err.reason != "gone":
                    raise
                raise BindError(
                    "no_claim", f"pod {ns}/{name}: ResourceClaim {ns}/{claim} not found"
                ) from None
        try:
            return pod_device_ids(pod, claims, self.cache.dra_driver)
        except ClaimError as err:
            raise BindError("no_claim", f"pod {ns}/{name} on DRA node {node}: {err}") from None

    def _bound(self, pod: Mapping[str, Any], node: str) -> None:
        with self.lock:
            self.gangs.bound(pod_key(pod))
            if self._on_bound is not None:
                self._on_bound({**pod, "spec": {**(pod.get("spec") or {}), "nodeName": node}})

    def _reserve(
        self,
        key: str,
        uid: str,
        req: Request,
        node: str,
        recorded: Placement | None,
        pod: Mapping[str, Any],
    ) -> Placement:
        """Choose devices on ``node`` and hold them in the cache."""
        with self.lock:
            self.cache.upsert_pod(pod)
            engine = self.cache.engine()
            i = engine.state.node_index.get(node)
            if i is None:
                raise BindError("unknown_node", f"node {node} is not known to kubenpu")
            planned = self.gangs.planned(key)
            if planned is not None and planned.node == node:
                recorded = planned  # the devices its gang's plan holds for it
            with self.cache.released(key), self.gangs.held(engine.state, key):
                if recorded is not None and recorded.node == node:
                    # Kept from an interrupted bind: the device plugin may already follow it.
                    try:
                        self.cache.assume(key, uid, req, recorded)
                        return recorded
                    except PlacementError:
                        log.info("%s: its recorded placement no longer fits; choosing again", key)
                decision = engine.decide_on(req, i)
                if decision.placement is None:
                    why = decision.reason
                    raise BindError("no_fit", f"pod {key} no longer fits on {node}: {why}")
                self.cache.assume(key, uid, req, decision.placement)
        return decision.placement

    def _check_node(self, api: KubeApi, node: str, key: str, placement: Placement) -> None:
        """Fresh read of every placement recorded for ``node``; back off on over-commit."""
        selector = f"{LABEL_PLACED_NODE}={node}"
        pods = _call("list", lambda: api.list_pods(selector))
        others = []
        for pod in pods:
            try:
                if pod_key(pod) == key or (pod.get("status") or {}).get("phase") in (
                    "Succeeded",
                    "Failed",
                ):
                    continue
                other = placement_from_pod(pod)
            except ObjectError:
                continue
            if other is not None and other.node == node:
                others.append(other)
        problem = overcommitted([*others, placement])
        if problem is not None:
            err = BindError("race", f"another binder took a device on {node}: {problem}")
            err.learned = pods  # what the other binder recorded, for the cache
            raise err


def _withdraw(api: KubeApi, ns: str, name: str, patched: Mapping[str, Any]) -> None:
    """Remove a record this bind wrote (guarded: only if nobody changed the pod since)."""
    version = str((patched.get("metadata") or {}).get("resourceVersion", ""))
    try:
        api.patch_pod(ns, name, placement_patch(None, resource_version=version))
    except ApiError as err:
        # Left in place it only holds devices until the pod is bound or deleted.
        log.warning("could not remove the placement record of %s/%s: %s", ns, name, err)


def _call(what: str, call: Callable[[], T]) -> T:
    """``call()``, its failure as a ``BindError`` (404: gone; 409: changed meanwhile)."""
    try:
        return call()
    except Conflict as err:
        raise BindError("conflict", f"{what}: the pod changed meanwhile ({err})") from None
    except ApiError as err:
        reason = "gone" if err.status == 404 else "api_error"
        raise BindError(reason, f"{what}: {err}") from None
    except Exception as err:  # no answer at all (connection refused, timeout)
        raise BindError("api_error", f"{what}: {err}") from None
