"""The federation process: store + control plane + scheduler loop + gRPC server."""
from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass

from federation.audit import Signer, public_path
from federation.control import ControlPlane
from federation.errors import ConfigError
from federation.http.gateway import Gateway
from federation.observe.endpoint import federation_metrics
from federation.observe.serve import AppServer, MetricsServer, Tls, tls_context
from federation.pki import Issued
from federation.replication import Elector, Gate, Refusal, lease_for
from federation.scheduler import SchedulerLoop
from federation.service.loop import Pool, RpcLoop
from federation.service.sites import EnrollmentServicer, SiteServicer
from federation.service.users import FederationServicer
from federation.spec import FederationConfig, load_policy
from federation.spec.server import Enrolment, FederationBody
from federation.store import SQLiteStore, open_store
from federation.training import TrainingLoop
from federation.transport import add_port
from federation.v1 import federation_pb2_grpc as pb_grpc

log = logging.getLogger("federation.server")


@dataclass
class RunningServer:
    rpc: RpcLoop
    pools: tuple[Pool, ...]
    scheduler: SchedulerLoop
    control: ControlPlane
    port: int
    enrolment_port: int = 0
    elector: Elector | None = None   # None: a witness
    metrics: MetricsServer | None = None
    http: AppServer | None = None

    def stop(self, grace: float = 2.0) -> None:
        try:
            for served in (self.metrics, self.http):
                if served is not None:
                    served.stop()
            self.scheduler.stop()
            self.rpc.stop(grace)
        finally:
            for pool in self.pools:
                pool.close()   # waits for the work in hand: none of it outlives the store
            self.control.refusals.close()   # counted refusals not yet written
            if self.elector is not None:
                self.elector.stop()   # hands the lease back: a successor need not wait for it to lapse
            self.control.store.close()


def _enrolment(config: FederationConfig, e: Enrolment, control: ControlPlane, gate: Gate, rpc: RpcLoop,
               pool: Pool) -> int:
    """The listener sites join through: server-side TLS only (they have no certificate yet)."""
    tls = config.spec.tls
    if tls is None:
        raise ConfigError("enrolment: needs tls (sites must be able to check they talk to this federation)")
    server = rpc.server(pool, [gate])
    pb_grpc.add_EnrollmentServiceServicer_to_server(
        EnrollmentServicer(control, Issued(e.ca_cert, e.ca_key), e.cert_days), server)
    port = rpc.on_loop(lambda: add_port(server, e.listen, cert=tls.cert, key=tls.key, client_ca=None, insecure=False))
    rpc.call(server.start())
    return port


def _signer(body: FederationBody) -> Signer:
    """The audit key at spec.audit.key (its public half beside it and beside the store), else beside the store."""
    path = body.audit.key
    if path is None:
        return Signer.beside(body.store)
    publics = () if body.database else (public_path(body.store),)
    try:
        return Signer.at(path, path.with_name(f"{path.stem}.pub{path.suffix}"), *publics)
    except OSError as e:
        raise ConfigError(f"spec.audit.key: {path}: {e.strerror or e}") from None
    except ValueError:
        raise ConfigError(f"spec.audit.key: {path}: not an EC private key in PEM") from None


def _metrics(control: ControlPlane, body: FederationBody) -> MetricsServer | None:
    if body.metrics is None:
        return None
    server = federation_metrics(control, body.metrics, body.tls)
    server.start()
    return server


def _http(servicer: FederationServicer, body: FederationBody, gate: Gate) -> AppServer | None:
    """The HTTP API and the console beside gRPC, with its TLS. A certificate is asked for but not
    required at the handshake: API calls without one are refused as gRPC refuses them, and the
    console takes a session cookie from a login link instead (gateway.py)."""
    if body.http is None:
        return None
    tls = body.tls
    if tls is None or tls.client_ca is None:
        raise ConfigError("spec.http: the HTTP API needs spec.tls with a client_ca (its callers show certificates)")
    host, port = body.http.listen.rsplit(":", 1)
    context = tls_context(Tls(tls.cert, tls.key, tls.client_ca), "spec.tls")
    context.verify_mode = ssl.CERT_OPTIONAL   # a browser logs into the console with a link instead
    server = AppServer(host.strip("[]"), int(port), context, "http")
    server.start(Gateway(servicer, gate.leading, gate.refusal).app())
    return server


def _served(control: ControlPlane, servicer: FederationServicer, body: FederationBody,
            gate: Gate) -> tuple[MetricsServer | None, AppServer | None]:
    metrics = _metrics(control, body)
    try:
        return metrics, _http(servicer, body, gate)
    except Exception:
        if metrics is not None:
            metrics.stop()
        raise


def start_server(config: FederationConfig) -> RunningServer:
    body = config.spec
    max_workers = body.threads
    policy = load_policy(body.policy)
    store = open_store(body.database) if body.database else SQLiteStore(body.store)
    try:
        signer = _signer(body)
    except Exception:
        store.close()
        raise
    control = ControlPlane(store, policy, site_timeout_s=body.site_timeout_s,
                           max_placements=body.scheduler.max_placements_per_cycle,
                           backfill_depth=body.scheduler.backfill_depth, signer=signer)
    control.refusals.window_s = body.audit.refusal_window_s
    replication = body.replication
    witness = replication.role == "witness"
    elector = None if witness else Elector(control, config.metadata.name, "",
                                           replication.lease_s or lease_for(body.site_timeout_s))
    store.fence(0)   # read only until this replica leads (a witness never does)

    def leading() -> bool:
        return elector is not None and elector.leading

    rpc = RpcLoop()
    users, sites, enrolling = Pool(max_workers, "rpc"), Pool(max(8, max_workers // 4), "sites"), Pool(4, "enrol")
    gate = Gate(leading, Refusal(control, witness), users)
    try:
        server = rpc.server(users, [gate])
        trainings = TrainingLoop(control)
        servicer = FederationServicer(control, users, trainings)
        pb_grpc.add_FederationServiceServicer_to_server(servicer, server)
        e = body.enrolment
        pb_grpc.add_SiteServiceServicer_to_server(SiteServicer(
            control, sites, body.heartbeat_interval_s, Issued(e.ca_cert, e.ca_key) if e else None,
            e.cert_days if e else 30, replica=f"{config.metadata.name} ({replication.role})", leading=leading), server)
        tls = body.tls
        port = rpc.on_loop(lambda: add_port(server, body.listen, cert=tls.cert if tls else None,
                                            key=tls.key if tls else None, client_ca=tls.client_ca if tls else None,
                                            insecure=body.insecure))
        enrolment_port = _enrolment(config, e, control, gate, rpc, enrolling) if e else 0
        metrics, http = _served(control, servicer, body, gate)
    except Exception:
        rpc.stop(0)
        for pool in (users, sites, enrolling):
            pool.close()
        store.close()
        raise
    listening = body.listen.rsplit(":", 1)[0] + f":{port}"
    if elector is not None:
        elector.address = replication.advertise or listening
        elector.start()
    rpc.call(server.start())
    scheduler = SchedulerLoop(control, body.scheduler.interval_s, trainings, leading=leading)
    scheduler.start()
    control.refusals.start()
    log.info("federation %s %s listening on %s (store %s, policy %s v%s)", config.metadata.name, replication.role,
             listening, "a PostgreSQL database" if body.database else body.store, policy.metadata.name,
             policy.metadata.version)
    return RunningServer(rpc=rpc, pools=(users, sites, enrolling), scheduler=scheduler, control=control, port=port,
                         enrolment_port=enrolment_port, elector=elector, metrics=metrics, http=http)
