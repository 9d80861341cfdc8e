"""What the gRPC and HTTP edges share: the proto ↔ core conversion and the error → status table.

Both edges speak the same `gliclass.v1` messages (HTTP in their proto3 JSON mapping), so both
import this package; neither edge imports the other.
"""
