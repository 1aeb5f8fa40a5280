#!/usr/bin/env bash
# Fails when the committed stubs differ from what proto/ generates.
set -euo pipefail
cd "$(dirname "$0")/.."
bash dev/gen-protos.sh
if ! git diff --exit-code -- federation/v1; then
  echo "check-protos: generated stubs in federation/v1 are stale; run dev/gen-protos.sh and commit" >&2
  exit 1
fi
echo "check-protos: stubs match proto/"
