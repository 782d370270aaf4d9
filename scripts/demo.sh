#!/usr/bin/env bash
# README command 1: install what is needed, then run the demo on an embedded namespace lab.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m scripts.demo
