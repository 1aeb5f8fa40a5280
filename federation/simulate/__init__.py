"""`fedctl simulate`: replay a trace through the federation's own placement code in simulated time."""
