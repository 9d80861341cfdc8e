#!/bin/sh
# Docker build step: regenerate server/proto/ from protos/ (server.proto.generate, the gRPC edge's
# generator) with the grpcio-tools version the committed code was generated with (GRPC_GENERATED_VERSION,
# the pin of requirements/lock.txt), and fail the build
# when the result differs from what is committed, i.e. the committed code drifted from the .proto.
#
# Usage: proto-build.sh [SRC_DIR]   (default: the current directory; it must hold protos/ and server/)
# PROTOC_PYTHON=/path/to/python     a Python that already has grpcio-tools (skips the throw-away venv;
#                                   tests/unit/test_deploy_dockerfile.py uses it on a copy of the tree)
set -eu
cd "${1:-.}"
version=$(sed -n "s/^GRPC_GENERATED_VERSION = '\(.*\)'\$/\1/p" server/proto/classifier_pb2_grpc.py)
if [ -z "$version" ]; then
  echo "proto-build: cannot read GRPC_GENERATED_VERSION from server/proto/classifier_pb2_grpc.py" >&2
  exit 1
fi
py=${PROTOC_PYTHON:-}
venv=""
if [ -z "$py" ]; then
  # grpcio-tools only for this step, in its own venv: it never reaches the runtime image.
  venv=$(mktemp -d)
  python -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet "grpcio-tools==$version"
  py="$venv/bin/python"
fi
# The generator must be the pinned one (requirements/lock.txt): another grpcio-tools writes other bytes.
have=$("$py" -c "from importlib.metadata import version; print(version('grpcio-tools'))")
if [ "$have" != "$version" ]; then
  echo "proto-build: grpcio-tools $have is not $version, the generator of server/proto/ (install the lock)" >&2
  rm -rf ${venv:+"$venv"}
  exit 2
fi
committed=$(mktemp -d)
cp -R server/proto/. "$committed/"
# Paths are passed explicitly so the output lands in this tree whatever `server` resolves to.
"$py" -c "
import sys
from pathlib import Path
sys.path.insert(0, '.')
from server.proto.generate import generate
generate(Path('server/proto').resolve(), Path('protos').resolve())
"
status=0
if ! diff -r -x __pycache__ "$committed" server/proto; then
  echo "proto-build: server/proto/ is out of date with protos/ (run python -m server.proto.generate)" >&2
  status=1
fi
rm -rf "$committed" ${venv:+"$venv"}
exit $status
