"""The driver's API calls: read claims, keep the node's ResourceSlice as it should be.

The driver acts with the node's identity in the dev cluster (the Node authorizer lets a
node read the claims of its pods and write the ResourceSlices whose ``spec.nodeName`` is
itself), or with a service account bound to the RBAC in docs/dra.md.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, cast

from kubenpu.deviceplugin.devices import NpuDevice
from kubenpu.dra import slices
from kubenpu.errors import ApiError

log = logging.getLogger(__name__)

GROUP = "resource.k8s.io"
VERSION = "v1"


class KubeApi:
    """The few calls the driver makes, with the official client."""

    def __init__(self, kubeconfig: str = "") -> None:
        from kubernetes import client

        from kubenpu.kubeclient import core_api

        self.core = core_api(kubeconfig)
        self.custom = client.CustomObjectsApi(self.core.api_client)

    def get_claim(self, namespace: str, name: str) -> Mapping[str, Any]:
        """The ResourceClaim ``namespace/name``."""
        result = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "resourceclaims", name, _request_timeout=5
        )
        return cast("dict[str, Any]", result)

    def node_owner(self, node: str) -> dict[str, str]:
        """Name and uid of the Node (the slice's owner)."""
        obj = self.core.read_node(node, _request_timeout=5)
        uid = obj.metadata.uid if obj.metadata is not None else None
        return {"name": node, "uid": str(uid)}

    def list_slices(self, node: str) -> list[dict[str, Any]]:
        """The node's ResourceSlices (every driver's)."""
        result = self.custom.list_cluster_custom_object(
            GROUP,
            VERSION,
            "resourceslices",
            field_selector=f"spec.nodeName={node}",
            _request_timeout=5,
        )
        return list(cast("dict[str, Any]", result).get("items", []))

    def create_slice(self, body: Mapping[str, Any]) -> None:
        self.custom.create_cluster_custom_object(
            GROUP, VERSION, "resourceslices", dict(body), _request_timeout=5
        )

    def replace_slice(self, name: str, body: Mapping[str, Any]) -> None:
        self.custom.replace_cluster_custom_object(
            GROUP, VERSION, "resourceslices", name, dict(body), _request_timeout=5
        )

    def delete_slice(self, name: str) -> None:
        self.custom.delete_cluster_custom_object(
            GROUP, VERSION, "resourceslices", name, _request_timeout=5
        )


class SlicePublisher:
    """Makes the API hold exactly one slice of this driver for this node, as it should be.

    :meth:`sync` is called on every health change and periodically: the kubelet removes a
    driver's slices when the driver goes away (and on its own start), and an operator may
    delete them; the next sync puts the slice back."""

    def __init__(self, api: KubeApi, driver: str, node: str) -> None:
        self.api = api
        self.driver = driver
        self.node = node
        self._owner: dict[str, str] | None = None
        self._last_error = ""

    def sync(self, devices: Sequence[NpuDevice], unhealthy_since: Mapping[str, str]) -> bool:
        """One reconcile; True when the slice is as wanted, the devices unhealthy since
        (id -> RFC 3339) tainted. Errors are logged, not raised."""
        try:
            self._sync(devices, unhealthy_since)
        except Exception as err:
            message = str(getattr(err, "reason", None) or err)
            if message != self._last_error:
                log.warning("cannot publish the ResourceSlice (%s); retrying", message)
                self._last_error = message
            return False
        self._last_error = ""
        return True

    def _sync(self, devices: Sequence[NpuDevice], unhealthy: Mapping[str, str]) -> None:
        if self._owner is None:
            self._owner = self.api.node_owner(self.node)
        listed = self.api.list_slices(self.node)
        for name in slices.stale_slices(listed, self.driver, self.node):
            log.info("deleting stale ResourceSlice %s", name)
            self.api.delete_slice(name)
        name = slices.slice_name(self.node, self.driver)
        existing = next((s for s in listed if s["metadata"]["name"] == name), None)
        if existing is not None and existing.get("spec", {}).get("driver") != self.driver:
            raise ApiError(f"ResourceSlice {name} exists with driver {existing['spec']['driver']}")
        generation = int((existing or {}).get("spec", {}).get("pool", {}).get("generation", 1))
        desired = slices.resource_slice(
            self.driver, self.node, devices, unhealthy, generation=generation, owner=self._owner
        )
        if existing is None:
            self.api.create_slice(desired)
            log.info(
                "ResourceSlice %s created: %d devices, %d tainted unhealthy",
                name,
                len(devices),
                len(unhealthy),
            )
        elif not slices.same_devices(existing, desired):
            desired["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
            self.api.replace_slice(name, desired)
            log.info(
                "ResourceSlice %s updated: %d devices, %d tainted unhealthy",
                name,
                len(devices),
                len(unhealthy),
            )

    def delete(self) -> None:
        """Remove this driver's slices of the node (on a clean shutdown)."""
        try:
            for s in self.api.list_slices(self.node):
                if s.get("spec", {}).get("driver") == self.driver:
                    self.api.delete_slice(s["metadata"]["name"])
        except Exception as err:
            log.warning("cannot delete the ResourceSlice (%s)", err)
