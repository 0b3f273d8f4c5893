#!/usr/bin/env bash
# Regenerates the device plugin API stubs from src/kubenpu/deviceplugin/api/v1beta1.proto
# with the grpcio-tools pinned in pyproject.toml (run from any directory).
#
# The proto is compiled with src/ as include root, so the stubs import each other as
# kubenpu.deviceplugin.api.v1beta1_pb2 and the descriptor is registered under the stable
# name kubenpu/deviceplugin/api/v1beta1.proto: the output is byte-identical on every run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-$root/.venv/bin/python}"
cd "$root/src"
"$py" -m grpc_tools.protoc -I . \
  --python_out=. --grpc_python_out=. \
  kubenpu/deviceplugin/api/v1beta1.proto
echo "regenerated src/kubenpu/deviceplugin/api/v1beta1_pb2.py and v1beta1_pb2_grpc.py"
