"""gRPC edge: thin servicers, wire conversion and the error translator."""
