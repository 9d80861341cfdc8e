"""Regenerate the committed gRPC code from protos/gliclass/v1/classifier.proto.

Run `python -m server.proto.generate` after editing the .proto (needs grpcio-tools, a test
dependency). tests/unit/test_grpc_codegen.py fails when the committed code drifts from the .proto.

protoc writes `from gliclass.v1 import classifier_pb2` into the service module, which only works
with the protos/ folder on sys.path; we rewrite it to a relative import so the code works as the
`server.proto` package.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parents[2] / "protos"
PROTO_NAME = "gliclass/v1/classifier.proto"
PACKAGE_DIR = Path(__file__).resolve().parent
ABSOLUTE_IMPORT = "from gliclass.v1 import classifier_pb2 as"
RELATIVE_IMPORT = "from . import classifier_pb2 as"


def generate(out_dir: Path, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Compile the .proto into `out_dir` as a flat package; return the files written."""
    from grpc_tools import protoc  # test dependency, imported only when generating

    with tempfile.TemporaryDirectory() as tmp:
        include = Path(protoc.__file__).parent / "_proto"
        argv = [
            "protoc",
            f"-I{proto_root}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            str(proto_root / PROTO_NAME),
        ]
        if protoc.main(argv) != 0:
            raise RuntimeError(f"protoc failed on {proto_root / PROTO_NAME}")
        src = Path(tmp) / "gliclass" / "v1"
        written = []
        for name in ("classifier_pb2.py", "classifier_pb2.pyi", "classifier_pb2_grpc.py"):
            text = (src / name).read_text(encoding="utf-8")
            if name == "classifier_pb2_grpc.py":
                if ABSOLUTE_IMPORT not in text:
                    raise RuntimeError("protoc output changed: cannot find the classifier_pb2 import")
                text = text.replace(ABSOLUTE_IMPORT, RELATIVE_IMPORT)
            target = out_dir / name
            target.write_text(text, encoding="utf-8")
            written.append(target)
    # Ship the contract inside the package so installed clients and tools can find it.
    proto_copy = out_dir / "classifier.proto"
    shutil.copyfile(proto_root / PROTO_NAME, proto_copy)
    written.append(proto_copy)
    return written


if __name__ == "__main__":
    for path in generate(PACKAGE_DIR):
        print(f"wrote {path}", file=sys.stderr)
