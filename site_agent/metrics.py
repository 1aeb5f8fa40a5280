"""A site agent's Prometheus metrics: its reconcile passes, Ray, its lease, the attempts it runs."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge, Histogram

from federation.identity import Identity
from federation.observe.metrics import SECONDS
from federation.spec.metrics import MetricsSettings

if TYPE_CHECKING:
    from federation.observe.serve import MetricsServer


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.reconcile_seconds = Histogram("fedctl_agent_reconcile_seconds", "One full pass: observe Ray, start and "
                                           "stop attempts, build the report", buckets=SECONDS, registry=r)
        self.ray_reachable = Gauge("fedctl_agent_ray_reachable", "1 when the last pass could list the site's Ray "
                                   "jobs", registry=r)
        self.running = Gauge("fedctl_agent_attempts_running", "Attempts Ray runs for this site at the last pass",
                             registry=r)
        self.fenced = Gauge("fedctl_agent_fenced", "1 while the site has stopped its work for want of a lease",
                            registry=r)
        self.connected = Gauge("fedctl_agent_connected", "1 while a session with the federation is open", registry=r)
        self.lease = Gauge("fedctl_agent_lease_remaining_seconds", "Until this site fences its work unless a "
                           "heartbeat is acknowledged (0: no lease)", registry=r)

    def watch(self, fenced: Callable[[], bool], lease_left: Callable[[], float]) -> None:
        """Read the agent's state when scraped."""
        self.fenced.set_function(lambda: float(fenced()))
        self.lease.set_function(lease_left)

    def passed(self, seconds: float, reachable: bool, running: int) -> None:
        self.reconcile_seconds.observe(seconds)
        self.ray_reachable.set(float(reachable))
        if reachable:
            self.running.set(running)


def agent_metrics(metrics: AgentMetrics, site: str, settings: MetricsSettings) -> MetricsServer:
    """The agent's /metrics: readable by a monitor, a federation admin, or an operator of this site,
    as the CA vouches (the agent does not hold the federation's list of revoked certificates)."""
    from federation.observe.serve import MetricsServer, Tls  # aiohttp: only for an agent that serves metrics
    tls = settings.tls

    def may_read(who: Identity) -> bool:
        return who.reads_metrics(site)
    return MetricsServer(settings, metrics.registry, Tls(tls.cert, tls.key, tls.client_ca) if tls else None,
                         may_read)
