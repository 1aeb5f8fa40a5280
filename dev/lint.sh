#!/usr/bin/env bash
# Lint, import order and types; fails on any finding. Settings are in pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check .
mypy
