"""The node agent's settings, as ``kubenpu dev-cluster up`` writes them (one JSON file)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """What one node agent needs to know; written as JSON by ``dev-cluster up``."""

    node: str
    kubeconfig: str
    #: The node's device-plugins directory (kubelet.sock, plugin sockets, checkpoint).
    device_plugin_dir: str
    labels: dict[str, str]
    #: Non-device capacity, e.g. {"cpu": "104", "memory": "384Gi", "pods": "110"}.
    capacity: dict[str, str]
    kubelet_version: str
    lease_duration_s: int = 40
    lease_renew_s: float = 10.0
    #: Status heartbeat period when nothing changed (a kubelet's nodeStatusReportFrequency).
    status_report_s: float = 60.0
    #: How long a pod that needs a device-plugin resource waits for the plugin to register
    #: (after an agent restart) before it is failed.
    plugin_wait_s: float = 30.0

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AgentConfig:
        """Read a config file written by :meth:`save`."""
        return cls(**json.loads(Path(path).read_text()))

    def save(self, path: Path) -> None:
        """Write this config as JSON."""
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
