"""Revocation against someone who kept a certificate the federation has not seen yet, or a stream
open: a renewed, enrolled or offline-made certificate issued before the revocation is refused, a
revoked site cannot renew, and open streams end. A real federation over mutual TLS and a real SQLite file."""
from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import grpc
import pytest

from federation.audit import read
from federation.cli.main import main
from federation.client import Client, Job
from federation.enrolment import join
from federation.errors import PermissionDenied
from federation.identity import of_certificate, scopes
from federation.pki import Issued, init_pki, issue
from federation.transport import open_channel
from federation.v1 import federation_pb2 as pb
from federation.v1 import federation_pb2_grpc as pb_grpc
from site_agent.renewal import renew
from tests.conftest import make_spec
from tests.integration.harness import AgentStream, GiB, admin_client, run_on, start
from tests.waiting import wait_for


def serve(tmp_path, pki: dict[str, Issued]):
    """The harness's federation, with the enrolment listener (and so the CA key for renewals); its sites
    enrol, so their certificates bind what they may claim."""
    return start(tmp_path, pki=pki, enrolment=True)


@pytest.fixture
def federation(tmp_path):
    server = serve(tmp_path, init_pki(tmp_path / "pki", clients=("admin",)))
    with admin_client(server) as admin:
        server.admin = admin
        yield server
    server.stop(grace=0)


def enrol(federation, name: str, directory: Path) -> tuple[Path, Path]:
    """A US site enrolled through a join token: its certificate and key, never used yet."""
    token, _ = federation.admin.create_join_token(name, "US", "us-east", {"baa": "true"})
    cert = join(f"127.0.0.1:{federation.enrolment_port}", federation.pki["ca"].cert, token, directory)
    return cert, directory / "site.key"


def site_service(federation, cert: Path, key: Path) -> tuple[pb_grpc.SiteServiceStub, grpc.Channel]:
    channel = open_channel(federation.address, ca=federation.pki["ca"].cert, cert=cert, key=key)
    return pb_grpc.SiteServiceStub(channel), channel


def register_as(federation, name: str, cert: Path, key: Path) -> None:
    stub, channel = site_service(federation, cert, key)
    try:
        stub.RegisterSite(pb.RegisterSiteRequest(
            name=name, location=pb.Location(jurisdiction="US", region="us-east"), labels={"baa": "true"},
            capacity=pb.Resources(cpus=4, memory_bytes=8 * GiB)), timeout=5)
    finally:
        channel.close()


def refused(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        call()
    assert e.value.code() is grpc.StatusCode.PERMISSION_DENIED, e.value
    assert "revoked" in e.value.details()
    return e.value


def revocations(tmp_path) -> dict[str, dict]:
    return {r.subject: r.detail for r in read(tmp_path / "fed.db", action="cert.revoke")}


def user(federation, directory: Path, name: str = "alice", tenant: str = "oncology") -> Issued:
    directory.mkdir(parents=True, exist_ok=True)
    return issue(federation.pki["ca"], directory, name, units=tuple(scopes("submitter", tenants=(tenant,))))


def as_user(federation, issued: Issued) -> Client:
    return Client(federation.address, ca=federation.pki["ca"].cert, cert=issued.cert, key=issued.key, timeout=5)


def test_a_renewed_certificate_never_used_is_refused_after_its_site_is_revoked_and_cannot_renew(
        federation, tmp_path):
    cert, key = enrol(federation, "edge-1", tmp_path / "edge-1")
    register_as(federation, "edge-1", cert, key)              # the enrolled certificate is seen
    enrolled = of_certificate(cert.read_bytes()).serial
    kept = tmp_path / "kept"
    kept.mkdir()
    stub, channel = site_service(federation, cert, key)
    renew(stub, cert, key)                                    # the renewed pair replaces it, unused
    channel.close()
    shutil.copy(cert, kept / "site.pem")
    shutil.copy(key, kept / "site.key")
    renewed = of_certificate(cert.read_bytes()).serial
    assert renewed != enrolled

    assert federation.admin.revoke("edge-1") == 1             # only the enrolled one was ever seen
    refused(lambda: register_as(federation, "edge-1", cert, key))
    stub, channel = site_service(federation, cert, key)
    refused(lambda: renew(stub, cert, key))                   # and it buys no fresh certificate
    channel.close()
    assert (cert.read_bytes(), key.read_bytes()) == ((kept / "site.pem").read_bytes(), (kept / "site.key").read_bytes())
    assert [r.subject for r in read(tmp_path / "fed.db", action="cert.renew")] == ["edge-1"]
    detail = revocations(tmp_path)["edge-1"]
    assert detail["serials"] == [enrolled] and detail["revoked_at"] > 0
    denied = [r for r in read(tmp_path / "fed.db", action="call.denied") if r.actor == "edge-1"]
    assert {r.subject for r in denied} == {"RegisterSite", "RenewCertificate"}


def test_an_enrolled_certificate_revoked_before_its_first_use_is_refused(federation, tmp_path):
    cert, key = enrol(federation, "edge-2", tmp_path / "edge-2")
    assert federation.admin.revoke("edge-2") == 0             # never seen
    refused(lambda: register_as(federation, "edge-2", cert, key))
    assert "edge-2" in revocations(tmp_path)


def test_a_join_token_not_yet_used_buys_nothing_after_its_site_is_revoked(federation, tmp_path):
    token, _ = federation.admin.create_join_token("edge-3", "US", "us-east", {"baa": "true"})
    federation.admin.revoke("edge-3")
    with pytest.raises(PermissionDenied, match="join token for edge-3: expired"):
        join(f"127.0.0.1:{federation.enrolment_port}", federation.pki["ca"].cert, token, tmp_path / "edge-3")
    assert not (tmp_path / "edge-3" / "site.pem").exists()


def test_a_user_certificate_made_offline_and_revoked_before_its_first_use_is_refused(federation, tmp_path, capsys):
    pki = federation.pki["ca"].cert.parent
    assert main(["user", "add", "alice", "--role", "submitter", "--tenant", "oncology", "--dir", str(pki)]) == 0
    admin = federation.pki["admin"]
    assert main(["user", "revoke", "alice", "--address", federation.address, "--ca", str(federation.pki["ca"].cert),
                 "--cert", str(admin.cert), "--key", str(admin.key)]) == 0
    assert "alice: every certificate issued until now refused (0 seen)" in capsys.readouterr().out
    with as_user(federation, Issued(pki / "alice.pem", pki / "alice.key")) as alice, \
            pytest.raises(PermissionDenied, match="the certificate of alice .* is revoked"):
        alice.jobs()
    assert revocations(tmp_path)["alice"]["serials"] == []


def test_a_revocation_of_a_name_outlives_a_restart(tmp_path):
    first = serve(tmp_path, init_pki(tmp_path / "pki", clients=("admin",)))
    alice = user(first, tmp_path / "alice")
    with admin_client(first) as admin:
        assert admin.revoke("alice") == 0
    first.stop(grace=0)
    second = serve(tmp_path, first.pki)
    try:
        with as_user(second, alice) as client, pytest.raises(PermissionDenied, match="revoked"):
            client.jobs()
    finally:
        second.stop(grace=0)


def test_a_certificate_issued_after_the_revocation_works(federation, tmp_path):
    old = user(federation, tmp_path / "old")
    with as_user(federation, old) as alice:
        assert alice.jobs() == []
    assert federation.admin.revoke("alice") == 1
    revoked_at = revocations(tmp_path)["alice"]["revoked_at"]
    # Issue times are whole seconds: one issued in the revocation's second is refused too.
    wait_for(lambda: time.time() >= math.floor(revoked_at) + 1, 2, "the second after the revocation")
    new = user(federation, tmp_path / "new")
    assert of_certificate(new.cert.read_bytes()).issued_at > revoked_at
    with as_user(federation, new) as alice:
        assert alice.jobs() == []
    with as_user(federation, old) as alice, pytest.raises(PermissionDenied, match="revoked"):
        alice.jobs()


def user_stub(federation, issued: Issued) -> tuple[pb_grpc.FederationServiceStub, grpc.Channel]:
    channel = open_channel(federation.address, ca=federation.pki["ca"].cert, cert=issued.cert, key=issued.key)
    return pb_grpc.FederationServiceStub(channel), channel


def test_an_open_watch_stream_ends_when_its_caller_is_revoked(federation, tmp_path):
    alice = user(federation, tmp_path)
    with as_user(federation, alice) as client:
        job = client.submit(make_spec("watched", tenant="oncology"))
    stub, channel = user_stub(federation, alice)
    stream = stub.WatchJob(pb.WatchJobRequest(id=job.id), timeout=10)
    assert next(stream).job.id == job.id
    federation.admin.revoke("alice")
    assert federation.admin.cancel(job.id).state == "cancelled"   # a change the stream would send
    error = refused(lambda: next(stream))
    assert "the certificate of alice" in error.details()
    channel.close()
    assert "alice" in revocations(tmp_path)
    denied = [r for r in read(tmp_path / "fed.db", action="call.denied") if r.actor == "alice"]
    assert [r.subject for r in denied] == ["WatchJob"]


def test_an_open_log_stream_ends_when_its_caller_is_revoked(federation, tmp_path):
    cert, key = enrol(federation, "edge-4", tmp_path / "edge-4")
    register_as(federation, "edge-4", cert, key)
    site, site_channel = site_service(federation, cert, key)
    site.Heartbeat(pb.HeartbeatRequest(name="edge-4"), timeout=5)
    agent = AgentStream(site, "edge-4")
    alice = user(federation, tmp_path)
    try:
        with as_user(federation, alice) as client:
            job = client.submit(make_spec("logged", tenant="oncology"))
            run_on(agent, job)
        agent.report(logs=[pb.LogChunk(job_id=job.id, attempt=1, offset=0, data=b"first\n")])
        stub, channel = user_stub(federation, alice)
        stream = stub.StreamJobLogs(pb.StreamJobLogsRequest(id=job.id, follow=True), timeout=10)
        assert next(stream).data == b"first\n"
        federation.admin.revoke("alice")
        agent.report(logs=[pb.LogChunk(job_id=job.id, attempt=1, offset=6, data=b"second\n")])
        wait_for(lambda: Job(federation.admin, job.id).logs() == "first\nsecond\n", 5, "the second line")
        refused(lambda: next(stream))                          # the line it would send next
        channel.close()
    finally:
        agent.close()
        site_channel.close()
    assert "alice" in revocations(tmp_path)
    denied = [r for r in read(tmp_path / "fed.db", action="call.denied") if r.actor == "alice"]
    assert [r.subject for r in denied] == ["StreamJobLogs"]
