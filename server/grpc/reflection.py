"""Server reflection under both names clients ask for: grpc.reflection.v1 and v1alpha.

grpcio-reflection implements only v1alpha. The v1 service is the same protocol under a new package
(the same messages, field numbers and semantics), so the v1alpha servicer answers both: the v1
method decodes and encodes with the v1alpha messages, which are byte-compatible. The v1 file is
registered in the descriptor pool too, so a client can describe the reflection service itself.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1ALPHA = reflection.SERVICE_NAME  # grpc.reflection.v1alpha.ServerReflection
V1 = "grpc.reflection.v1.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serve reflection v1 and v1alpha on `server`, listing `service_names` and both reflection names."""
    _register_v1_descriptor()
    names = (*service_names, V1, V1ALPHA)
    servicer = reflection.aio.ReflectionServicer(names)
    request, response = reflection_pb2.ServerReflectionRequest, reflection_pb2.ServerReflectionResponse
    for service in (V1, V1ALPHA):
        handlers = {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))


def _register_v1_descriptor() -> None:
    """Add grpc/reflection/v1/reflection.proto (v1alpha's file under the v1 package) to the default pool."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_V1_FILE)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name, proto.package = _V1_FILE, "grpc.reflection.v1"
    proto.options.Clear()
    for message in proto.message_type:
        _rename_types(message)
    for service in proto.service:
        for method in service.method:
            method.input_type = _v1(method.input_type)
            method.output_type = _v1(method.output_type)
    pool.AddSerializedFile(proto.SerializeToString())


def _rename_types(message: descriptor_pb2.DescriptorProto) -> None:
    for field in message.field:
        if field.type_name:
            field.type_name = _v1(field.type_name)
    for nested in message.nested_type:
        _rename_types(nested)


def _v1(type_name: str) -> str:
    return type_name.replace(".grpc.reflection.v1alpha.", ".grpc.reflection.v1.")
