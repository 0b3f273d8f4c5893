"""Our device plugin API is the kubelet's, field for field, at the Kubernetes we run.

The upstream ``api.proto`` comes from the ``k8s.io/kubelet`` module that
hack/build-control-plane.sh downloads (the staging release matching
``binaries.KUBERNETES_VERSION``). Both files are compiled with protoc and their messages,
enums and service compared on everything the wire depends on: names, field numbers,
types, labels and the streaming of each method.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc
from kubelet_module import kubelet_module

OURS = Path(__file__).resolve().parents[2] / "src" / "kubenpu" / "deviceplugin" / "api"


def _compile(proto: Path, tmp: Path) -> descriptor_pb2.FileDescriptorProto:
    out = tmp / f"{proto.parent.name}-{proto.stem}.pb"
    code = protoc.main(["protoc", f"-I{proto.parent}", f"--descriptor_set_out={out}", str(proto)])
    assert code == 0, f"protoc failed on {proto}"
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    (only,) = files
    return only


def _wire(desc: descriptor_pb2.FileDescriptorProto) -> dict[str, object]:
    def message(m: descriptor_pb2.DescriptorProto, prefix: str) -> dict[str, object]:
        out: dict[str, object] = {}
        name = prefix + m.name
        out[name] = sorted(
            (f.number, f.name, f.type, f.label, f.type_name.rsplit(".", 1)[-1]) for f in m.field
        )
        for nested in m.nested_type:
            out.update(message(nested, name + "."))
        return out

    shape: dict[str, object] = {"package": desc.package}
    for m in desc.message_type:
        shape.update(message(m, ""))
    for e in desc.enum_type:
        shape[e.name] = sorted((v.number, v.name) for v in e.value)
    for s in desc.service:
        shape[s.name] = sorted(
            (
                m.name,
                m.input_type.rsplit(".", 1)[-1],
                m.output_type.rsplit(".", 1)[-1],
                m.client_streaming,
                m.server_streaming,
            )
            for m in s.method
        )
    return shape


def test_our_proto_matches_the_kubelets_field_for_field(tmp_path: Path) -> None:
    theirs = _wire(_compile(kubelet_module() / "pkg/apis/deviceplugin/v1beta1/api.proto", tmp_path))
    ours = _wire(_compile(OURS / "v1beta1.proto", tmp_path))
    assert ours == theirs
