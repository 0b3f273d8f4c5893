"""The kubenpu device plugin: tells the kubelet about a node's NPUs and hands them out.

Layers, each knowing only the one below it:

- ``backends``: discover devices and watch their health (mock, devfs, nvml, ascend);
- ``manager``: the resource manager; devices, health, preferred and actual allocation as
  plain data, with no gRPC in sight;
- ``server``: translates the kubelet device plugin API v1beta1 (gRPC over unix sockets)
  to and from the manager, owns sockets and (re-)registration;
- ``daemon``: wires config, backend, managers, servers and metrics into one process.

Beside them: ``protocol`` (the API's names and rules, no gRPC), ``api`` (the generated
stubs), ``sharing`` and ``inventory`` (the scheduler's records, pure), ``kubeapi`` (the
Kubernetes API calls behind them). The other side of the protocol, a kubelet stand-in
for tests and the dev cluster's node agent, is ``kubenpu.devcluster.kubelet``.
"""
