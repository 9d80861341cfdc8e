"""The gRPC edge: the `gliclass.v1.Classifier` servicer, its conversion, status mapping and server.

`server` (GrpcServer: servicer + health + reflection + TLS on one port), `servicer` (decode,
submit to the runtime's scheduler, encode), `convert` (the only protobuf <-> core types module),
`errors` (core errors -> status codes), `tracing` (server spans and call metrics),
`interceptors` (the wrapper all interceptors share), `health`, `tls`, `config` (`[grpc]`).
The edge knows the core only; composing it with the Kafka worker is `server.app.process`'s job.
Absolute imports throughout, so `import grpc` in here is always grpcio, never this package.
"""
