"""The DRA protos are the published ones of the Kubernetes we run, and the stubs are current.

The ``.proto`` files in src/kubenpu/dra/api are verbatim copies of ``k8s.io/kubelet`` at
the staging release matching ``binaries.KUBERNETES_VERSION`` (hack/build-control-plane.sh
downloads it into the Go module cache), and the committed ``*_pb2.py`` carry exactly what
protoc makes of them (hack/gen-proto.sh was run after the last change).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from grpc_tools import protoc
from kubelet_module import kubelet_module

from kubenpu.dra import api

SRC = Path(__file__).resolve().parents[2] / "src"
OURS = SRC / "kubenpu" / "dra" / "api"
#: Our file -> its path in k8s.io/kubelet.
UPSTREAM = {
    "dra_v1.proto": "pkg/apis/dra/v1/api.proto",
    "dra_v1beta1.proto": "pkg/apis/dra/v1beta1/api.proto",
    "health_v1.proto": "pkg/apis/dra-health/v1/api.proto",
    "registration_v1.proto": "pkg/apis/pluginregistration/v1/api.proto",
}
MODULES = {
    "dra_v1.proto": api.v1,
    "dra_v1beta1.proto": api.v1beta1,
    "health_v1.proto": api.health,
    "registration_v1.proto": api.registration,
}


@pytest.mark.parametrize("ours", sorted(UPSTREAM))
def test_protos_are_the_published_ones(ours: str) -> None:
    upstream = kubelet_module() / UPSTREAM[ours]
    assert (OURS / ours).read_bytes() == upstream.read_bytes(), (
        f"{ours} differs from {upstream}: copy it again and run hack/gen-proto.sh"
    )


@pytest.mark.parametrize("ours", sorted(MODULES))
def test_stubs_are_generated_from_the_protos(ours: str, tmp_path: Path) -> None:
    out = tmp_path / "set.pb"
    rel = f"kubenpu/dra/api/{ours}"
    assert protoc.main(["protoc", f"-I{SRC}", f"--descriptor_set_out={out}", rel]) == 0
    (compiled,) = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    committed = descriptor_pb2.FileDescriptorProto.FromString(
        MODULES[ours].DESCRIPTOR.serialized_pb
    )
    _drop_json_names(compiled)  # protoc's Python generator leaves out the derived json_name
    assert committed == compiled, f"run hack/gen-proto.sh: {ours} changed since its stubs"


def _drop_json_names(desc: descriptor_pb2.FileDescriptorProto) -> None:
    def clear(message: descriptor_pb2.DescriptorProto) -> None:
        for field in message.field:
            field.ClearField("json_name")
        for nested in message.nested_type:
            clear(nested)

    for message in desc.message_type:
        clear(message)


def test_service_names_on_the_wire() -> None:
    assert api.v1.DESCRIPTOR.services_by_name["DRAPlugin"].full_name == (
        "k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin"
    )
    assert api.v1beta1.DESCRIPTOR.services_by_name["DRAPlugin"].full_name == (
        "k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin"
    )
    assert api.health.DESCRIPTOR.services_by_name["DRAResourceHealth"].full_name == (
        api.SERVICE_HEALTH_V1
    )
    assert api.registration.DESCRIPTOR.services_by_name["Registration"].full_name == (
        "pluginregistration.Registration"
    )


def test_advertised_names_match_the_kubelet_constants() -> None:
    root = kubelet_module() / "pkg/apis"
    assert f'DRAPluginService = "{api.SERVICE_V1}"' in (root / "dra/v1/types.go").read_text()
    beta = (root / "dra/v1beta1/types.go").read_text()
    assert f'DRAPluginService = "{api.SERVICE_V1BETA1}"' in beta
    health = (root / "dra-health/v1/types.go").read_text()
    assert f'DRAResourceHealthService = "{api.SERVICE_HEALTH_V1}"' in health
    constants = (root / "pluginregistration/v1/constants.go").read_text()
    assert f'DRAPlugin = "{api.PLUGIN_TYPE}"' in constants
