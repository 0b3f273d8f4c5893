"""The device inventory on the plugin's own Node, for the scheduler extender.

The extender must know each node's real device ids, models, interconnect groups and
health (the kubelet publishes only counts). The plugin writes them as the Node annotation
``kubenpu.io/device-inventory`` (see ``adapters.kube.device_inventory_annotation``), at
start and after every health change. Least privilege: it patches only its own Node, with
a merge patch of that one annotation.

The API is behind :data:`NodePatcher`, a plain function; tests pass their own, and
:func:`kubenpu.deviceplugin.kubeapi.kubernetes_node_patcher` is the real one (this module
does no I/O).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kubenpu.adapters.kube import device_inventory_annotation
from kubenpu.deviceplugin.devices import NpuDevice
from kubenpu.model import Device
from kubenpu.names import ANNOTATION_DEVICE_INVENTORY

log = logging.getLogger(__name__)

#: Applies a JSON merge patch to this node's Node object.
NodePatcher = Callable[[dict[str, Any]], None]


def inventory_text(devices: Sequence[NpuDevice], unhealthy: Mapping[str, str]) -> str:
    """The annotation value for ``devices`` with the ``unhealthy`` ones marked so."""
    return device_inventory_annotation(
        Device(d.id, d.index, d.model, d.memory_mib, d.id not in unhealthy, d.group)
        for d in devices
    )


class InventoryPublisher:
    """Writes the inventory when it changed; a failed write is retried on the next call."""

    def __init__(self, patch: NodePatcher) -> None:
        self._patch = patch
        self._written: str | None = None
        self._last_error = ""

    def publish(self, devices: Sequence[NpuDevice], unhealthy: Mapping[str, str]) -> bool:
        """Make the Node's annotation describe ``devices`` now; True when it does."""
        text = inventory_text(devices, unhealthy)
        if text == self._written:
            return True
        try:
            self._patch({"metadata": {"annotations": {ANNOTATION_DEVICE_INVENTORY: text}}})
        except Exception as err:  # API down or not yet up: retried on the next health tick
            message = str(getattr(err, "reason", None) or err)
            if message != self._last_error:  # once per reason, not every half second
                log.warning("cannot publish the device inventory (%s); retrying", message)
                self._last_error = message
            return False
        self._written, self._last_error = text, ""
        log.info(
            "device inventory published: %d devices, %d unhealthy", len(devices), len(unhealthy)
        )
        return True
