"""A real federation for the integration tests: a gRPC server with mutual TLS and a real SQLite
file, and sites played by hand through a raw agent stream."""
from __future__ import annotations

import queue
from pathlib import Path

from federation.client import Client
from federation.pki import init_pki
from federation.server import start_server
from federation.spec.server import FederationBody, FederationConfig, ServerTLS
from federation.transport import open_channel
from federation.v1 import federation_pb2 as pb
from federation.v1 import federation_pb2_grpc as pb_grpc
from tests.waiting import wait_for

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
GiB = 2**30


def start(tmp_path, policy: Path = CONFIGS / "policy.yaml", **scheduler):
    pki = init_pki(tmp_path / "pki", clients=("admin", "eu-west", "us-east"))
    config = FederationConfig(spec=FederationBody(
        listen="127.0.0.1:0", store=tmp_path / "fed.db", policy=policy,
        tls=ServerTLS(cert=pki["server"].cert, key=pki["server"].key, client_ca=pki["ca"].cert),
        scheduler={"interval_s": 0.1, **scheduler}))
    server = start_server(config)
    server.pki = pki
    server.address = f"127.0.0.1:{server.port}"
    return server


def admin_client(federation) -> Client:
    pki = federation.pki
    return Client(federation.address, ca=pki["ca"].cert, cert=pki["admin"].cert, key=pki["admin"].key, timeout=5)


def site_stub(federation, name="eu-west"):
    pki = federation.pki
    channel = open_channel(federation.address, ca=pki["ca"].cert, cert=pki[name].cert, key=pki[name].key)
    return pb_grpc.SiteServiceStub(channel), channel


def register(stub, name="eu-west", jurisdiction="DE", region="eu-west",
             datasets=(("patient-records-eu", "gdpr-personal"),), cpus=4.0, labels=None):
    stub.RegisterSite(pb.RegisterSiteRequest(
        name=name, location=pb.Location(jurisdiction=jurisdiction, region=region), labels=labels or {},
        datasets=[pb.Dataset(name=n, classification=c) for n, c in datasets],
        capacity=pb.Resources(cpus=cpus, memory_bytes=8 * GiB)), timeout=5)


def run_on(agent: AgentStream, job) -> None:
    """Take the job's assignment and report it running."""
    (a,) = wait_for(lambda: agent.next_assignments(), 5, "an assignment")
    assert a.job_id == job.id
    agent.report([pb.AttemptStatus(job_id=job.id, attempt=1, state=pb.ATTEMPT_STATE_RUNNING)])
    wait_for(lambda: job.status().state == "running", 5, "running")


class AgentStream:
    """The agent's side of Connect, by hand."""

    def __init__(self, stub, site):
        self.site = site
        self.outbox: queue.Queue = queue.Queue()
        self.outbox.put(pb.ConnectRequest(site=site))
        self.responses = stub.Connect(iter(self.outbox.get, None))
        self.assignments: queue.Queue = queue.Queue()

    def next_assignments(self, timeout=5.0) -> list[pb.Assignment]:
        return list(next(self.responses).assignments)

    def report(self, statuses=(), logs=(), complete=True):
        self.outbox.put(pb.ConnectRequest(site=self.site, statuses=list(statuses), logs=list(logs),
                                          complete=complete))

    def close(self):
        self.outbox.put(None)
        self.responses.cancel()
