"""Generated code for protos/gliclass/v1/classifier.proto (regenerate: `python -m server.proto.generate`).

Only `server.grpc.convert` and the servicer wiring import these modules; the core never sees them.
"""

from __future__ import annotations
