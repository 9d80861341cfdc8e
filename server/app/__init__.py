"""The application: the `gliclass-stream` CLI and its commands, the process that composes the edges,
the one supervisor for signals, reload, readiness and exit codes, and the bench helpers.

It sits above the edges (`server.grpc`, `server.http`, `worker`), which sit above the core
(`gliclass_core`); `lint-imports` holds that order.
"""
