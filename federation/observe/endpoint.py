"""The federation's /metrics endpoint: its event metrics and its state, for those who may read them."""
from __future__ import annotations

from federation.control import ControlPlane
from federation.errors import PermissionDenied
from federation.identity import Identity
from federation.observe.serve import MetricsServer, Tls
from federation.observe.state import StateCollector
from federation.spec.metrics import MetricsSettings
from federation.spec.server import ServerTLS


def federation_metrics(control: ControlPlane, settings: MetricsSettings, server_tls: ServerTLS | None) -> MetricsServer:
    """The federation's /metrics: its events and its state, readable by a monitor or an admin whose
    certificate is not revoked; over the federation's own TLS when `settings` names none."""
    registry = control.core.metrics.registry
    registry.register(StateCollector(control))
    tls = settings.tls
    chosen = Tls(tls.cert, tls.key, tls.client_ca) if tls is not None else \
        Tls(server_tls.cert, server_tls.key, server_tls.client_ca) if server_tls and server_tls.client_ca else None

    def may_read(who: Identity) -> bool:
        try:
            return control.trust.authenticate(who).reads_metrics()
        except PermissionDenied:
            return False
    return MetricsServer(settings, registry, chosen, may_read)
