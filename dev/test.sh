#!/usr/bin/env bash
# The test command: unit, integration and e2e (real federation, agents and Ray clusters).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m pytest -q "$@"
