#!/usr/bin/env sh
# Refresh the locks of requirements/: every dependency pinned with its hashes, for CPython 3.11 on
# Linux x86_64, with the CPU build of torch 2.13.0. One command; rerun it after any change to the
# dependencies in pyproject.toml and commit the result:
#
#   sh scripts/lock.sh            # keep every locked version that still satisfies pyproject.toml
#   UPGRADE=1 sh scripts/lock.sh  # move every dependency to the newest release pyproject.toml allows
#
# Writes requirements/lock.txt (the project with extras [test,onnx,docs]: development, CI),
# requirements/runtime.txt (the project alone, at the same versions: the Docker image) and
# requirements/torch-cpu.txt (torch, installed first: PyPI's Linux wheel of torch is the CUDA build, so
# the CPU build comes from PyTorch's CPU index, https://download.pytorch.org/whl/cpu; a folder holding
# that wheel can stand in for the index: TORCH_WHEELS, default /opt/wheels when it holds it).
# The compiler is uv, pinned below (installed into a throw-away venv when `uv` is another version).
set -eu
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9
TORCH=2.13.0+cpu
TORCH_INDEX=https://download.pytorch.org/whl/cpu
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
uv=uv
if [ "$(uv --version 2>/dev/null | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  python3 -m venv "$tmp/venv"
  "$tmp/venv/bin/python" -m pip install -q "uv==$UV_VERSION"
  uv="$tmp/venv/bin/uv"
fi
wheels=${TORCH_WHEELS:-}
if [ -z "$wheels" ] && ls /opt/wheels/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; then
  wheels=/opt/wheels
fi
if [ -n "$wheels" ]; then
  set -- --find-links "$wheels"
else
  set -- --extra-index-url "$TORCH_INDEX" --index-strategy unsafe-best-match
fi
echo "torch==$TORCH" >"$tmp/torch.txt"
# Start from the current lock so a refresh changes only what pyproject.toml forces (or UPGRADE asks).
if [ -z "${UPGRADE:-}" ] && [ -f requirements/lock.txt ]; then
  cp requirements/lock.txt "$tmp/lock.body"
fi
common="--python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes --no-header --quiet"
# shellcheck disable=SC2086  # $common is a list of flags
"$uv" pip compile pyproject.toml --extra test --extra onnx --extra docs $common ${UPGRADE:+--upgrade} \
  "$@" --constraint "$tmp/torch.txt" -o "$tmp/lock.body"
# The image's lock: the runtime dependencies only, at exactly the versions of the full lock.
# shellcheck disable=SC2086
"$uv" pip compile pyproject.toml $common "$@" --constraint "$tmp/torch.txt" \
  --constraint "$tmp/lock.body" -o "$tmp/runtime.body"
python3 scripts/lock_split.py "$tmp/lock.body" "$tmp/runtime.body" "$TORCH" "$TORCH_INDEX" "$UV_VERSION"
