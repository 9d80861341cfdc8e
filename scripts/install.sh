#!/usr/bin/env sh
# Install gliclass-stream for development from the lock, into the active Python environment (a venv):
# the CPU build of torch, then every other dependency at its locked version and hash, then the project
# itself (editable, no dependency resolution left to the day's index).
#
#   python3.11 -m venv .venv && . .venv/bin/activate && sh scripts/install.sh
set -eu
cd "$(dirname "$0")/.."
# Few retries: where the wheel lies on local disk, an unreachable PyTorch index must not stall the install.
python -m pip install -q --retries 1 --timeout 10 --require-hashes --no-deps -r requirements/torch-cpu.txt
python -m pip install -q --require-hashes -r requirements/lock.txt
python -m pip install -q --no-deps -e .
python -c "import torch, server.app.cli; print('gliclass-stream installed; torch', torch.__version__)"
