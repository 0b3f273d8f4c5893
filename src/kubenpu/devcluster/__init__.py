"""``kubenpu dev-cluster``: a real Kubernetes control plane with simulated NPU nodes.

The official etcd, kube-apiserver and kube-scheduler (built by hack/build-control-plane.sh)
run on loopback; each simulated node is a real ``kubenpu device-plugin`` (mock backend)
and a node agent standing in for the kubelet. See docs/dev-cluster.md.

Modules: ``cluster`` (up, the :class:`~kubenpu.devcluster.cluster.DevCluster` handle,
down), ``controlplane`` (certificates, kubeconfigs, command lines, health checks),
``nodeagent`` (the kubelet stand-in, run as its own process), ``pki``, ``processes``,
``binaries``.
"""
