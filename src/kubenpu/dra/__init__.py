"""kubenpu's DRA driver: NPUs through Dynamic Resource Allocation (``resource.k8s.io/v1``).

The node daemon ``kubenpu dra-driver`` publishes the node's NPUs (from the device plugin's
backends) as a ResourceSlice, registers with the kubelet through the plugin registration
API and serves the kubelet's DRA gRPC service: it prepares the devices a ResourceClaim was
allocated as CDI devices and keeps a checkpoint of what it prepared.

Pure logic, no I/O: :mod:`~kubenpu.dra.slices` (the ResourceSlice),
:mod:`~kubenpu.dra.claims` (a claim's allocation), :mod:`~kubenpu.dra.cdi` (CDI specs),
:mod:`~kubenpu.dra.checkpoint` (the checkpoint format). The I/O: :mod:`~kubenpu.dra.kubeapi`
(the API server), :mod:`~kubenpu.dra.node` (files: CDI dir and checkpoint),
:mod:`~kubenpu.dra.server` (gRPC), :mod:`~kubenpu.dra.daemon` (the process).
See docs/dra.md.
"""
