"""The node agent: a kubelet stand-in for one simulated node of a dev cluster.

It does the parts of a kubelet's job that scheduling NPUs depends on, and nothing else
(no containers run):

- registers its Node with the labels and capacity of the simulated machine, keeps it
  Ready by renewing its Lease in ``kube-node-lease`` and posting status heartbeats;
- serves the kubelet side of the device plugin API
  (:class:`~kubenpu.devcluster.kubelet.KubeletPeer`) in the node's
  device-plugins directory, and publishes what the plugins report as the Node's extended
  resources: capacity = every device, allocatable = the healthy ones;
- admits the pods bound to the node: for each container that asks for a device-plugin
  resource it chooses free healthy devices (asking the plugin's GetPreferredAllocation
  when offered), calls the plugin's Allocate, records the answer in its checkpoint file,
  and then reports the pod Running with container statuses. A pod that cannot get its
  devices fails with reason ``UnexpectedAdmissionError``, as on a kubelet;
- finishes pod deletions (the grace period of a container that does not exist is over at
  once) and frees the devices of deleted and finished pods.

Simulated containers never exit, so pods stay Running (also with ``restartPolicy:
Never``) and keep their devices until they are deleted.

The checkpoint (``<device-plugins dir>/kubelet_internal_checkpoint``, the file a kubelet
keeps there across restarts) holds every admitted pod's devices and Allocate answers and
the latest device lists. A restarted agent reads it back, so pods keep their devices, and
wipes the rest of the directory as a kubelet does, which makes the plugins register again.

The agent authenticates as ``system:node:<name>`` in group ``system:nodes``, so the API
server's Node authorizer and NodeRestriction admission hold it to what a kubelet may do.

Run as ``python -m kubenpu.devcluster.nodeagent CONFIG.json``; ``kubenpu dev-cluster up``
starts one per node.

Modules, by concern (the pure ones do no I/O):

- ``config``: :class:`AgentConfig`, the JSON file ``dev-cluster up`` writes;
- ``checkpoint``: the checkpoint document (pure) and its file;
- ``admission``: what a pod asks for, what is free, :class:`PodRecord`,
  :class:`AdmissionError` (pure);
- ``status``: the Node status, Lease spec and pod status bodies (pure);
- ``allocation``: the agent's side of GetPreferredAllocation and Allocate (gRPC);
- ``kubeapi``: :class:`~kubenpu.devcluster.nodeagent.kubeapi.NodeApi`, every API call;
- ``podfeed``: list and watch of the node's pods, and the work queue;
- ``agent``: :class:`NodeAgent`, the state and threads tying them together;
- ``__main__``: the process (signals, logging).
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
