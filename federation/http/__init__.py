"""The federation's HTTP/JSON API: the gRPC API's calls, translated, with the same checks."""
