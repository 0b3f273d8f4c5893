"""The kubelet device plugin protocol's names and rules, without gRPC.

What both sides of the protocol agree on besides the messages: the API version, where the
kubelet keeps its sockets, the health values, and which resource names the kubelet takes.
The generated stubs are in :mod:`kubenpu.deviceplugin.api` (which re-exports these); the
pure modules (the config) import this one, so they need no gRPC.
"""

from __future__ import annotations

import re
from typing import Final

#: The API version a plugin puts into its RegisterRequest.
VERSION: Final = "v1beta1"
#: Where the kubelet keeps its registration socket and the plugins' sockets.
DEFAULT_KUBELET_DIR: Final = "/var/lib/kubelet/device-plugins"
#: File name of the kubelet's Registration socket inside the device-plugins dir.
KUBELET_SOCKET: Final = "kubelet.sock"
#: The kubelet's checkpoint file; the only file it keeps in the dir when it restarts.
KUBELET_CHECKPOINT: Final = "kubelet_internal_checkpoint"
#: Device health values on the wire.
HEALTHY: Final = "Healthy"
UNHEALTHY: Final = "Unhealthy"

# An extended resource name: a DNS subdomain prefix, '/', and a name; the kubernetes.io
# domains and the "requests." prefix are reserved (the kubelet rejects them likewise).
_QUALIFIED_NAME = re.compile(
    r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)


def is_extended_resource_name(name: str) -> bool:
    """Whether the kubelet accepts ``name`` as a device plugin resource name."""
    if not _QUALIFIED_NAME.match(name) or name.startswith("requests."):
        return False
    domain = name.split("/", 1)[0]
    return not (domain == "kubernetes.io" or domain.endswith(".kubernetes.io"))
