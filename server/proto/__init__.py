"""Generated code for protos/gliclass/v1/classifier.proto (regenerate: `python -m server.proto.generate`).

Imported only where messages are converted or wired (`server.wire.convert`, `.servicer`, `.server`;
`server.http.api`, `.errors`, `.openapi`), as the `protobuf-at-the-edge` import contract checks.
"""

from __future__ import annotations
