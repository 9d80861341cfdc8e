"""The gRPC edge and the command-line interface."""
