"""The committed generated code in server/proto must match protos/gliclass/v1/classifier.proto."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from server.proto import classifier_pb2
from server.proto.generate import PACKAGE_DIR, PROTO_NAME, PROTO_ROOT, generate

FIX = "run `python -m server.proto.generate` and commit the result"


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("proto")
    generate(out)
    return out


def _descriptor_of(module_path: Path) -> descriptor_pb2.FileDescriptorProto:
    # Read the serialized descriptor without importing (both would register the same file name).
    text = module_path.read_text(encoding="utf-8")
    start = text.index("AddSerializedFile(") + len("AddSerializedFile(")
    end = text.index(")\n", start)
    proto = descriptor_pb2.FileDescriptorProto()
    proto.ParseFromString(eval(text[start:end]))  # a bytes literal written by protoc
    return proto


def test_committed_message_code_matches_the_proto(regenerated: Path) -> None:
    # Descriptors, not text: a newer grpcio-tools changes version headers, not the contract.
    fresh = _descriptor_of(regenerated / "classifier_pb2.py")
    committed = _descriptor_of(PACKAGE_DIR / "classifier_pb2.py")
    assert committed == fresh, f"server/proto/classifier_pb2.py is stale: {FIX}"


def test_committed_service_code_matches_the_proto(regenerated: Path) -> None:
    fresh = (regenerated / "classifier_pb2_grpc.py").read_text(encoding="utf-8")
    committed = (PACKAGE_DIR / "classifier_pb2_grpc.py").read_text(encoding="utf-8")
    strip = lambda s: [line for line in s.splitlines() if "GENERATED_VERSION =" not in line]  # noqa: E731
    assert strip(committed) == strip(fresh), f"server/proto/classifier_pb2_grpc.py is stale: {FIX}"


def test_the_pinned_generator_reproduces_every_committed_byte(regenerated: Path) -> None:
    # grpcio-tools is pinned (pyproject [test], requirements/lock.txt) to the version that generated
    # server/proto; another version writes other headers, so the comparison needs the pinned one.
    from importlib.metadata import version

    pinned = re.search(
        r"^GRPC_GENERATED_VERSION = '(.+)'$",
        (PACKAGE_DIR / "classifier_pb2_grpc.py").read_text(encoding="utf-8"),
        re.M,
    )
    assert pinned is not None
    assert version("grpcio-tools") == pinned.group(1), "install requirements/lock.txt (scripts/install.sh)"
    for name in ("classifier_pb2.py", "classifier_pb2.pyi", "classifier_pb2_grpc.py"):
        assert (regenerated / name).read_bytes() == (PACKAGE_DIR / name).read_bytes(), f"{name}: {FIX}"


def test_packaged_proto_copy_is_identical() -> None:
    assert (PACKAGE_DIR / "classifier.proto").read_bytes() == (PROTO_ROOT / PROTO_NAME).read_bytes(), FIX


def test_generated_code_imports_as_a_package_without_protos_on_path() -> None:
    # protoc writes `from gliclass.v1 import classifier_pb2`, which would resolve against the
    # reference `gliclass` package (installed for tests) or fail; the generator makes it relative.
    from server.proto import classifier_pb2_grpc

    assert "from gliclass" not in Path(classifier_pb2_grpc.__file__).read_text(encoding="utf-8")

    assert classifier_pb2_grpc.ClassifierStub is not None
    service = classifier_pb2.DESCRIPTOR.services_by_name["Classifier"]
    assert [m.name for m in service.methods] == [
        "Classify",
        "ClassifyStream",
        "GetModelInfo",
        "ListLabelSets",
        "ClassifySession",
    ]


def test_every_message_and_field_in_the_proto_is_documented() -> None:
    # A public contract: each message, field, service and rpc has a comment right above it.
    lines = (PROTO_ROOT / PROTO_NAME).read_text(encoding="utf-8").splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        is_decl = stripped.startswith(("message ", "service ", "rpc ")) or (
            stripped.endswith(";") and "=" in stripped and not stripped.startswith(("option", "//", "syntax"))
        )
        if is_decl and not lines[i - 1].strip().startswith("//"):
            undocumented.append(f"line {i + 1}: {stripped}")
    assert not undocumented, "undocumented declarations:\n" + "\n".join(undocumented)
