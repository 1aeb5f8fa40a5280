"""The control plane, one job a module: trust, admission, site reports and leases, read views,
and the scheduling cycle. `ControlPlane` is the facade the servicers hold."""
