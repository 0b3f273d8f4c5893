"""The node agent: a kubelet stand-in for one simulated node of a dev cluster.

It does the parts of a kubelet's job that scheduling NPUs depends on (no containers run):
registers the Node and keeps it Ready (Lease, status), serves the kubelet side of the
device plugin API and publishes what plugins report as extended resources, admits bound
pods (devices chosen, Allocate called, answer checkpointed, pod reported Running; one that
cannot get its devices fails with ``UnexpectedAdmissionError``), and frees the devices of
deleted and finished pods. It reads its checkpoint back on restart, as a kubelet does, and
authenticates as ``system:node:<name>``. Run as ``python -m kubenpu.devcluster.nodeagent
CONFIG.json``. Modules by concern: ``config``, ``admission``, ``status`` (pure);
``checkpoint``, ``allocation`` (gRPC), ``kubeapi``, ``podfeed``, ``agent``, ``__main__``.
"""

from kubenpu.devcluster.nodeagent.admission import AdmissionError, PodRecord, container_requests
from kubenpu.devcluster.nodeagent.agent import NodeAgent
from kubenpu.devcluster.nodeagent.checkpoint import read_checkpoint
from kubenpu.devcluster.nodeagent.config import AgentConfig

__all__ = [
    "AdmissionError",
    "AgentConfig",
    "NodeAgent",
    "PodRecord",
    "container_requests",
    "read_checkpoint",
]
