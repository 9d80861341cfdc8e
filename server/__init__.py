"""The edges and the process: `grpc` (gRPC edge), `http` (HTTP edge), `process` (both edges and the
Kafka worker on one runtime), and the command-line interface (`cli`, `commands`)."""
