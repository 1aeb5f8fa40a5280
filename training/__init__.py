"""Federated training: aggregation strategies, secure aggregation and the round plan.

Pure code with no I/O: the federation plans rounds with it, and the local-step and aggregator
jobs that run at sites aggregate and mask with it."""
