#!/usr/bin/env bash
# Regenerates the committed protobuf/gRPC stubs from proto/.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m grpc_tools.protoc -Iproto \
  --python_out=. --grpc_python_out=. --pyi_out=. \
  proto/federation/v1/federation.proto
