#!/usr/bin/env bash
# Regenerates the device plugin API stubs from src/kubenpu/deviceplugin/api/v1beta1.proto
# (and the DRA driver's, below)
# with the grpcio-tools and mypy-protobuf pinned in pyproject.toml (run from any directory):
# v1beta1_pb2.py and v1beta1_pb2_grpc.py, and their type stubs v1beta1_pb2.pyi (protoc's
# own --pyi_out) and v1beta1_pb2_grpc.pyi (mypy-protobuf's protoc-gen-mypy_grpc).
#
# The proto is compiled with src/ as include root, so the stubs import each other as
# kubenpu.deviceplugin.api.v1beta1_pb2 and the descriptor is registered under the stable
# name kubenpu/deviceplugin/api/v1beta1.proto: the output is byte-identical on every run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-$root/.venv/bin/python}"
mypy_grpc="$(dirname "$py")/protoc-gen-mypy_grpc"
cd "$root/src"
"$py" -m grpc_tools.protoc -I . \
  --python_out=. --grpc_python_out=. --pyi_out=. \
  --plugin=protoc-gen-mypy_grpc="$mypy_grpc" --mypy_grpc_out=quiet:. \
  kubenpu/deviceplugin/api/v1beta1.proto
echo "regenerated src/kubenpu/deviceplugin/api/v1beta1_pb2.py{,i} and v1beta1_pb2_grpc.py{,i}"

# The DRA driver's kubelet APIs: verbatim copies of the published protos of k8s.io/kubelet
# (the version hack/go.mod pins; tests/dra/test_api.py checks they match the module cache).
# Their proto packages (part of every RPC path, e.g. /k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin/
# NodePrepareResources, /pluginregistration.Registration/GetInfo) are kept as published.
"$py" -m grpc_tools.protoc -I . \
  --python_out=. --grpc_python_out=. --pyi_out=. \
  --plugin=protoc-gen-mypy_grpc="$mypy_grpc" --mypy_grpc_out=quiet:. \
  kubenpu/dra/api/dra_v1.proto kubenpu/dra/api/dra_v1beta1.proto \
  kubenpu/dra/api/health_v1.proto kubenpu/dra/api/registration_v1.proto
echo "regenerated src/kubenpu/dra/api/{dra_v1,dra_v1beta1,health_v1,registration_v1}_pb2{,_grpc}.py{,i}"
