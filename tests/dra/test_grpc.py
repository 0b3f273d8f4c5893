"""The driver's gRPC servers over real unix sockets, as the kubelet calls them."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import pytest

from kubenpu.deviceplugin.config import DevicePluginConfig
from kubenpu.dra import api
from kubenpu.dra.daemon import DraDriver, DraDriverConfig

from .conftest import DRIVER, NODE, claim


class FakeKube:
    """The API calls of :class:`kubenpu.dra.kubeapi.KubeApi`, in memory."""

    def __init__(self) -> None:
        self.claims: dict[tuple[str, str], dict[str, Any]] = {}
        self.slices: dict[str, dict[str, Any]] = {
            "npu-node-1-stale": {
                "metadata": {"name": "npu-node-1-stale", "resourceVersion": "1"},
                "spec": {"driver": DRIVER, "nodeName": NODE},
            }
        }
        self.version = 1

    def get_claim(self, namespace: str, name: str) -> Mapping[str, Any]:
        return self.claims[(namespace, name)]

    def node_owner(self, node: str) -> dict[str, str]:
        return {"name": node, "uid": "node-uid"}

    def list_slices(self, node: str) -> list[dict[str, Any]]:
        return [s for s in self.slices.values() if s["spec"]["nodeName"] == node]

    def create_slice(self, body: Mapping[str, Any]) -> None:
        self.version += 1
        obj = {**body, "metadata": {**body["metadata"], "resourceVersion": str(self.version)}}
        self.slices[body["metadata"]["name"]] = obj

    def replace_slice(self, name: str, body: Mapping[str, Any]) -> None:
        assert (
            body["metadata"]["resourceVersion"] == self.slices[name]["metadata"]["resourceVersion"]
        )
        self.create_slice(body)

    def delete_slice(self, name: str) -> None:
        del self.slices[name]


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory: unix socket paths must stay under 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="dra-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def driver(short_tmp: Path) -> Iterator[tuple[DraDriver, FakeKube, DraDriverConfig]]:
    tmp_path = short_tmp
    kube = FakeKube()
    health = tmp_path / "health"
    health.mkdir()
    config = DraDriverConfig(
        node_name=NODE,
        kubelet_dir=str(tmp_path / "kubelet"),
        kubelet_own_dir="/var/lib/kubelet",
        cdi_dir=str(tmp_path / "cdi"),
        backend=DevicePluginConfig(backend="mock", mock_devices=2, mock_health_dir=str(health)),
        health_interval=0.05,
        resync_interval=0.2,
    )
    daemon = DraDriver(config, kube=kube)  # type: ignore[arg-type]
    thread = threading.Thread(target=daemon.run, kwargs={"install_signals": False})
    thread.start()
    deadline = time.monotonic() + 10
    while not config.registration_socket.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    yield daemon, kube, config
    daemon.shutdown()
    thread.join(timeout=10)
    assert not thread.is_alive()


def _wait(what: str, check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_registration_prepare_unprepare_and_health(
    driver: tuple[DraDriver, FakeKube, DraDriverConfig], short_tmp: Path
) -> None:
    tmp_path = short_tmp
    daemon, kube, config = driver
    # The slice is published and the stale one of this driver deleted.
    assert sorted(kube.slices) == ["npu-node-1-npu.aliyun.com"]
    devices = kube.slices["npu-node-1-npu.aliyun.com"]["spec"]["devices"]
    assert [d["name"] for d in devices] == ["npu-0", "npu-1"]

    with grpc.insecure_channel(f"unix://{config.registration_socket}") as channel:
        stub = api.registration_rpc.RegistrationStub(channel)
        info = stub.GetInfo(api.registration.InfoRequest(), timeout=5)
        assert info.type == "DRAPlugin"
        assert info.name == DRIVER
        assert info.endpoint == "/var/lib/kubelet/plugins/npu.aliyun.com/dra.sock"
        assert list(info.supported_versions) == [
            "v1.DRAPlugin",
            "v1beta1.DRAPlugin",
            "v1.DRAResourceHealth",
        ]
        stub.NotifyRegistrationStatus(
            api.registration.RegistrationStatus(plugin_registered=True), timeout=5
        )
    assert daemon.registered.is_set()

    kube.claims[("default", "c1")] = claim(["npu-1"])
    with grpc.insecure_channel(f"unix://{config.dra_socket}") as channel:
        v1 = api.v1_rpc.DRAPluginStub(channel)
        request = api.v1.NodePrepareResourcesRequest(
            claims=[
                api.v1.Claim(namespace="default", name="c1", uid="uid-1"),
                api.v1.Claim(namespace="default", name="gone", uid="uid-x"),
            ]
        )
        response = v1.NodePrepareResources(request, timeout=5)
        (device,) = response.claims["uid-1"].devices
        assert (device.pool_name, device.device_name) == (NODE, "npu-1")
        assert list(device.request_names) == ["npu"]
        assert list(device.cdi_device_ids) == ["k8s.npu.aliyun.com/claim=uid-1-npu-1"]
        assert "cannot read it from the API" in response.claims["uid-x"].error
        assert (tmp_path / "cdi" / "npu.aliyun.com-uid-1.json").exists()

        # v1beta1 answers the same (an older kubelet), from the checkpointed state.
        beta = api.v1beta1_rpc.DRAPluginStub(channel)
        again = beta.NodePrepareResources(
            api.v1beta1.NodePrepareResourcesRequest(
                claims=[api.v1beta1.Claim(namespace="default", name="c1", uid="uid-1")]
            ),
            timeout=5,
        )
        assert [d.device_name for d in again.claims["uid-1"].devices] == ["npu-1"]

        # Health: the full list first, then a change when a device turns unhealthy.
        health = api.health_rpc.DRAResourceHealthStub(channel)
        stream = health.NodeWatchResources(api.health.NodeWatchResourcesRequest(), timeout=10)
        first = next(stream)
        assert [(d.device.device_name, d.health) for d in first.devices] == [
            ("npu-0", api.health.HEALTHY),
            ("npu-1", api.health.HEALTHY),
        ]
        (tmp_path / "health" / "unhealthy-npu-0").touch()
        second = next(stream)
        assert second.devices[0].health == api.health.UNHEALTHY
        assert "unhealthy-npu-0" in second.devices[0].message
        stream.cancel()

        # The slice taints the failed device (NoSchedule, since when), and only it.
        def npu(i: int) -> dict[str, Any]:
            return kube.slices["npu-node-1-npu.aliyun.com"]["spec"]["devices"][i]

        _wait("the slice to taint npu-0", lambda: "taints" in npu(0))
        (taint,) = npu(0)["taints"]
        assert (taint["key"], taint["effect"]) == ("npu.aliyun.com/unhealthy", "NoSchedule")
        assert taint["timeAdded"].endswith("Z") and "taints" not in npu(1)
        version = kube.version
        time.sleep(0.5)  # resyncs keep the taint as it was: no rewrite, the same timeAdded
        assert kube.version == version and npu(0)["taints"] == [taint]
        (tmp_path / "health" / "unhealthy-npu-0").unlink()
        _wait("the taint to go when npu-0 recovers", lambda: "taints" not in npu(0))

        response = v1.NodeUnprepareResources(
            api.v1.NodeUnprepareResourcesRequest(
                claims=[api.v1.Claim(namespace="default", name="c1", uid="uid-1")]
            ),
            timeout=5,
        )
        assert response.claims["uid-1"].error == ""
        assert not (tmp_path / "cdi" / "npu.aliyun.com-uid-1.json").exists()

    # A deleted slice comes back on the next resync (the kubelet deletes them on restarts).
    kube.slices.clear()
    _wait("the slice to be published again", lambda: "npu-node-1-npu.aliyun.com" in kube.slices)


def test_shutdown_removes_sockets(driver: tuple[DraDriver, FakeKube, DraDriverConfig]) -> None:
    daemon, _, config = driver
    assert config.dra_socket.exists()
    daemon.shutdown()
    _wait("sockets removed", lambda: not config.registration_socket.exists())
    _wait("sockets removed", lambda: not config.dra_socket.exists())


def test_bad_claims_get_their_error_and_the_others_are_prepared(
    driver: tuple[DraDriver, FakeKube, DraDriverConfig], short_tmp: Path
) -> None:
    _, kube, config = driver
    shared = claim(["npu-0"], uid="uid-s", name="share")
    (result,) = shared["status"]["allocation"]["devices"]["results"]
    result["shareID"] = "1a2b3c4d-0000-4000-8000-000000000001"
    result["consumedCapacity"] = {"compute": "30", "memory": "4Gi"}
    kube.claims[("default", "share")] = shared
    kube.claims[("default", "gone")] = claim(["npu-7"], uid="uid-g", name="gone")
    bad = {"apiVersion": "npu.aliyun.com/v1", "kind": "NpuConfig", "colour": "red"}
    kube.claims[("default", "bad")] = claim(
        ["npu-1"],
        uid="uid-b",
        name="bad",
        config=[{"source": "FromClaim", "opaque": {"driver": DRIVER, "parameters": bad}}],
    )
    v2 = {"apiVersion": "npu.aliyun.com/v2", "kind": "NpuConfig"}
    kube.claims[("default", "v2")] = claim(
        ["npu-1"],
        uid="uid-v",
        name="v2",
        config=[{"source": "FromClass", "opaque": {"driver": DRIVER, "parameters": v2}}],
    )
    names = ("share", "gone", "bad", "v2")
    uids = {"share": "uid-s", "gone": "uid-g", "bad": "uid-b", "v2": "uid-v"}
    with grpc.insecure_channel(f"unix://{config.dra_socket}") as channel:
        v1 = api.v1_rpc.DRAPluginStub(channel)
        response = v1.NodePrepareResources(
            api.v1.NodePrepareResourcesRequest(
                claims=[api.v1.Claim(namespace="default", name=n, uid=uids[n]) for n in names]
            ),
            timeout=5,
        )
    assert set(response.claims) == set(uids.values())
    ok = response.claims["uid-s"]
    assert ok.error == ""
    (device,) = ok.devices
    assert device.share_id == "1a2b3c4d-0000-4000-8000-000000000001"
    assert list(device.cdi_device_ids) == [
        "k8s.npu.aliyun.com/claim=uid-s-npu-0-1a2b3c4d-0000-4000-8000-000000000001"
    ]
    assert "device npu-7 is not on node npu-node-1" in response.claims["uid-g"].error
    assert "parameters.colour: unknown field" in response.claims["uid-b"].error
    assert "parameters.apiVersion: 'npu.aliyun.com/v2' is an unknown version" in (
        response.claims["uid-v"].error
    )
    # Nothing of the refused claims on the node: no CDI spec, no checkpoint entry.
    cdi_files = sorted(p.name for p in Path(config.cdi_dir).iterdir())
    assert cdi_files == ["npu.aliyun.com-uid-s.json"]
    text = config.checkpoint_file.read_text()
    assert "uid-s" in text and not any(u in text for u in ("uid-g", "uid-b", "uid-v"))
