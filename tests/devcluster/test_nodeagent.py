"""The node agent's pure parts: what a pod asks for, configs and checkpoints on disk."""

from kubenpu import names
from kubenpu.devcluster.nodeagent import AgentConfig, container_requests, read_checkpoint


def test_container_requests_counts_extended_resources_per_container() -> None:
    pod = {
        "spec": {
            "initContainers": [
                {"name": "init", "resources": {"limits": {names.RESOURCE_NPU: "1"}}}
            ],
            "containers": [
                {"name": "a", "resources": {"limits": {names.RESOURCE_NPU: "2", "cpu": "1"}}},
                {"name": "b", "resources": {"requests": {names.RESOURCE_NPU: "1"}}},
                {"name": "c", "resources": {"limits": {"memory": "1Gi"}}},
                {"name": "d"},
                {"name": "e", "resources": {"limits": {names.RESOURCE_NPU: "0"}}},
            ],
        }
    }
    assert container_requests(pod) == {"a": {names.RESOURCE_NPU: 2}, "b": {names.RESOURCE_NPU: 1}}


def test_agent_config_round_trips(tmp_path) -> None:
    config = AgentConfig(
        node="n1",
        kubeconfig="/k",
        device_plugin_dir="/d",
        labels={"a": "b"},
        capacity={"cpu": "1"},
        kubelet_version="v1.32.13",
    )
    path = tmp_path / "agent.json"
    config.save(path)
    assert AgentConfig.load(path) == config


def test_missing_checkpoint_reads_as_empty(tmp_path) -> None:
    assert read_checkpoint(tmp_path / "none") == {"pods": {}, "devices": {}}
