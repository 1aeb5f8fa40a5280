"""A real federation for the integration tests: a gRPC server with mutual TLS and a real SQLite
file, and sites played by hand through a raw agent stream."""
from __future__ import annotations

import queue
from pathlib import Path

import yaml

from federation.client import Client
from federation.pki import Issued, init_pki
from federation.server import start_server
from federation.spec.server import Enrolment, FederationBody, FederationConfig, ServerTLS
from federation.transport import open_channel
from federation.v1 import federation_pb2 as pb
from federation.v1 import federation_pb2_grpc as pb_grpc
from tests.waiting import wait_for

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
GiB = 2**30


# The sites the integration tests play, as the policy's catalog binds them (their certificates bind nothing).
SITES = {"eu-west": {"jurisdiction": "DE", "region": "eu-west"},
         "eu-north": {"jurisdiction": "SE", "region": "eu-north"},
         "us-east": {"jurisdiction": "US", "region": "us-east", "labels": {"baa": "true"}}}


def with_sites(policy: Path, directory: Path) -> Path:
    """`policy` with the test sites in its catalog, patient-records-eu held in eu-north too, and every
    class of data open to the tests' `default` tenant as well."""
    data = yaml.safe_load(policy.read_text())
    data["spec"]["sites"] = SITES
    for rule in data["spec"]["classifications"].values():
        if "*" not in rule.get("tenants", ["*"]):
            rule["tenants"].append("default")
    data["spec"]["datasets"]["patient-records-eu"]["sites"] = ["eu-west", "eu-north"]
    path = directory / "harness-policy.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def start(tmp_path, policy: Path = CONFIGS / "policy.yaml", *, pki: dict[str, Issued] | None = None,
          enrolment: bool = False, site_timeout_s: float = 30.0, replication: dict | None = None,
          metrics: dict | None = None, http: dict | None = None, **scheduler):
    """With `enrolment`, a join-token listener too (and so the CA key for renewals); with `pki`, its
    certificates (a restart, or another replica), else new ones for admin, eu-west and us-east."""
    pki = pki or init_pki(tmp_path / "pki", clients=("admin", "eu-west", "us-east"))
    config = FederationConfig(spec=FederationBody(
        listen="127.0.0.1:0", store=tmp_path / "fed.db", policy=with_sites(policy, tmp_path),
        tls=ServerTLS(cert=pki["server"].cert, key=pki["server"].key, client_ca=pki["ca"].cert),
        enrolment=Enrolment(listen="127.0.0.1:0", ca_cert=pki["ca"].cert, ca_key=pki["ca"].key) if enrolment else None,
        scheduler={"interval_s": 0.1, **scheduler}, site_timeout_s=site_timeout_s, replication=replication or {},
        metrics=metrics, http=http))
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
    return stub.RegisterSite(pb.RegisterSiteRequest(
        name=name, location=pb.Location(jurisdiction=jurisdiction, region=region),
        labels=SITES.get(name, {}).get("labels", {}) if labels is None else labels,
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
