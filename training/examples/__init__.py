"""Examples of federated training that run on real data shipped with a package."""
