"""``kubenpu dev-cluster``: real Kubernetes on one machine, with real or stand-in NPU nodes.

The official etcd, kube-apiserver, kube-controller-manager and kube-scheduler (built by
hack/build-control-plane.sh) run on loopback; each NPU node is a real kubelet with its own
containerd and runc in namespaces of its own (or, with ``--node-agent``, a kubelet
stand-in), with a real ``kubenpu device-plugin`` (mock backend). See docs/dev-cluster.md.

Modules: ``cluster`` (up, the :class:`~kubenpu.devcluster.cluster.DevCluster` handle,
down), ``controlplane`` (certificates, kubeconfigs, command lines, health checks),
``network`` (bridge, namespaces, addresses), ``realnode`` (mount namespaces, processes and
clean-up of a real node), ``nodeconfig`` (kubelet, containerd, CNI, kube-proxy configs),
``registry`` (the private registry), ``relay``, ``images`` (OCI images built here),
``nodeagent`` (the kubelet stand-in, run as its own process; a package, a module per
concern), ``kubelet`` (the kubelet's side of the device plugin API, ``KubeletPeer``, which
the node agent and the tests use), ``pki``, ``processes``,
``binaries``.
"""
