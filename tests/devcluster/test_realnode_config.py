"""Real nodes: the address plan, the node configs these machines need, and the relay."""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import sys
import threading
import time
import tomllib

import pytest
import yaml

from kubenpu.devcluster import network, nodeconfig
from kubenpu.errors import ConfigError


def _files() -> nodeconfig.NodeFiles:
    plan = network.NetworkPlan(3)
    node = plan.node(2, "npu-node-2")
    return nodeconfig.NodeFiles(
        name=node.name,
        ip=node.ip,
        pod_cidr=node.pod_cidr,
        cluster_cidr=plan.cluster_cidr,
        service_cidr=plan.service_cidr,
        ca_file="/s/ca.crt",
        serving_cert="/s/kubelet.crt",
        serving_key="/s/kubelet.key",
        kubeconfig="/s/kubeconfig",
        resolv_conf="/s/resolv.conf",
        cni_conf_dir="/s/cni",
        registry_hosts_dir="/s/certs.d",
        cdi_dir="/s/cdi",
        runc="/usr/sbin/runc",
        cni_bin_dir="/usr/lib/cni",
        cgroup_root="/kubenpu/knpu3-npu-node-2",
    )


def test_every_address_is_in_the_benchmark_range_and_nothing_overlaps() -> None:
    benchmark = ipaddress.ip_network("198.18.0.0/15")
    seen: list[ipaddress.IPv4Network] = []
    for slot in range(network.SLOTS):
        plan = network.NetworkPlan(slot)
        nets = [plan.node_cidr, plan.service_cidr]
        nets += [plan.node(i, f"n{i}").pod_cidr for i in range(1, network.MAX_NODES + 1)]
        for text in nets:
            net = ipaddress.ip_network(text)
            assert net.subnet_of(benchmark), net
            assert not any(net.overlaps(other) for other in seen), net
            seen.append(net)
        for i in range(1, network.MAX_NODES + 1):
            node = plan.node(i, f"n{i}")
            assert ipaddress.ip_address(node.ip) in ipaddress.ip_network(plan.node_cidr)
            assert ipaddress.ip_network(node.pod_cidr).subnet_of(
                ipaddress.ip_network(plan.cluster_cidr)
            )
            assert len(node.host_veth) <= 15  # IFNAMSIZ - 1
        assert ipaddress.ip_address(plan.kubernetes_service_ip) in ipaddress.ip_network(
            plan.service_cidr
        )


def test_out_of_range_slots_and_nodes_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"slots are 0\.\.7"):
        network.NetworkPlan(8)
    with pytest.raises(ConfigError, match="--node-agent"):
        network.NetworkPlan(0).node(network.MAX_NODES + 1, "too-many")


def test_kubelet_config_for_cgroup_v1_without_cap_sys_resource() -> None:
    config = yaml.safe_load(nodeconfig.kubelet_config(_files()))
    assert config["kind"] == "KubeletConfiguration"
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["cgroupsPerQOS"] is False
    assert config["enforceNodeAllocatable"] == []
    assert config["failCgroupV1"] is False
    assert config["cgroupRoot"] == "/kubenpu/knpu3-npu-node-2"
    assert config["address"] == "198.18.3.12"
    assert config["readOnlyPort"] == 0
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["authorization"]["mode"] == "Webhook"
    # No resolver off the machine for pods.
    assert config["clusterDNS"] == ["127.0.0.1"]
    assert nodeconfig.resolv_conf().startswith("nameserver 127.0.0.1\n")


def test_containerd_config_restricts_oom_score_and_uses_runc() -> None:
    config = tomllib.loads(nodeconfig.containerd_config(_files()))
    assert config["version"] == 3
    runtime = config["plugins"]["io.containerd.cri.v1.runtime"]
    assert runtime["restrict_oom_score_adj"] is True
    assert runtime["netns_mounts_under_state_dir"] is True
    runc = runtime["containerd"]["runtimes"]["runc"]
    assert runc["options"] == {"BinaryName": "/usr/sbin/runc", "SystemdCgroup": False}
    # Its socket path is shared by every node on the machine.
    assert config["plugins"]["io.containerd.nri.v1.nri"] == {"disable": True}
    images = config["plugins"]["io.containerd.cri.v1.images"]
    assert images["pinned_images"]["sandbox"] == nodeconfig.PAUSE_IMAGE
    assert images["registry"]["config_path"] == "/s/certs.d"


def test_registry_hosts_never_name_a_host_to_resolve() -> None:
    refusing = tomllib.loads(nodeconfig.registry_hosts(None))
    assert refusing == {"server": "https://127.0.0.1:9"}
    ours = tomllib.loads(nodeconfig.registry_hosts("https://198.18.0.1:5000", "/s/ca.crt"))
    assert ours == {"server": "https://198.18.0.1:5000", "ca": "/s/ca.crt"}


def test_cni_network_is_the_nodes_own_pod_network_without_masquerade() -> None:
    import json

    (bridge,) = json.loads(nodeconfig.cni_conflist(_files()))["plugins"]
    assert bridge["type"] == "bridge" and bridge["ipMasq"] is False
    assert bridge["ipam"]["ranges"] == [[{"subnet": "198.19.50.0/24"}]]


def test_relay_copies_both_ways_and_stops_on_sigterm() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        target = server.getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            listen = probe.getsockname()[1]

        def echo() -> None:
            server.settimeout(10)
            conn, _ = server.accept()
            with conn:
                conn.sendall(conn.recv(100).upper())

        thread = threading.Thread(target=echo, daemon=True)
        thread.start()
        relay = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kubenpu.devcluster.relay",
                f"127.0.0.1:{listen}=127.0.0.1:{target}",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert relay.stdout is not None
            assert "relaying" in relay.stdout.readline()
            deadline = time.monotonic() + 10
            with socket.create_connection(("127.0.0.1", listen), timeout=10) as client:
                client.sendall(b"hello")
                assert client.recv(100) == b"HELLO"
            assert time.monotonic() < deadline
        finally:
            relay.terminate()
            assert relay.wait(timeout=10) == 0
        thread.join(timeout=10)
