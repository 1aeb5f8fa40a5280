"""Users, tenants and roles over real mutual TLS: each sees only what its certificate allows."""
from __future__ import annotations

import grpc
import pytest

from federation.audit import read
from federation.cli.main import main
from federation.client import Client, Job
from federation.errors import InvalidSpec, NotFound, PermissionDenied
from federation.identity import of_certificate
from federation.v1 import federation_pb2 as pb
from tests.conftest import make_spec
from tests.integration.harness import register, site_stub, start


@pytest.fixture
def federation(tmp_path, capsys):
    server = start(tmp_path)
    pki = tmp_path / "pki"
    for name, flags in (("alice", ["--role", "submitter", "--tenant", "oncology"]),
                        ("bob", ["--role", "submitter", "--tenant", "billing"]),
                        ("tess", ["--role", "tenant-admin", "--tenant", "oncology", "--tenant", "research"]),
                        ("opal", ["--role", "site-operator", "--site", "eu-west"])):
        assert main(["user", "add", name, *flags, "--dir", str(pki)]) == 0
    capsys.readouterr()
    stub, channel = site_stub(server)
    register(stub)
    register_us, us_channel = site_stub(server, "us-east")
    register(register_us, "us-east", "US", "us-east", datasets=())
    yield server
    channel.close()
    us_channel.close()
    server.stop(grace=0)


def as_user(federation, name: str) -> Client:
    pki = federation.pki
    return Client(federation.address, ca=pki["ca"].cert, cert=pki["ca"].cert.parent / f"{name}.pem",
                  key=pki["ca"].cert.parent / f"{name}.key", timeout=5)


def test_a_user_sees_cancels_and_reads_only_their_tenants_jobs(federation, tmp_path):
    with as_user(federation, "alice") as alice, as_user(federation, "bob") as bob, \
            as_user(federation, "tess") as tess:
        job = alice.submit(make_spec("mine", tenant="oncology"))
        with pytest.raises(PermissionDenied, match="alice .submitter. may not submit jobs of tenant 'billing'"):
            alice.submit(make_spec("theirs", tenant="billing"))
        theirs = bob.submit(make_spec("bobs", tenant="billing"))
        for call in (lambda: bob.get(job.id), lambda: bob.cancel(job.id), lambda: bob.explain(job.id),
                     lambda: Job(bob, job.id).logs(), lambda: list(bob.watch(job.id, timeout=2))):
            with pytest.raises(NotFound, match=f"job {job.id} not found"):
                call()
        assert [j.id for j in bob.jobs()] == [theirs.id]
        with pytest.raises(PermissionDenied):
            bob.jobs(tenant="oncology")
        assert {e.job.id for e in bob.queue()[0]} <= {theirs.id}
        assert [j.id for j in alice.jobs()] == [job.id]
        assert tess.get(job.id).id == job.id and {j.id for j in tess.jobs()} == {job.id}
        assert tess.cancel(job.id).state == "cancelled"
        assert alice.get(job.id).state == "cancelled"
    denied = [r for r in read(tmp_path / "fed.db", action="call.denied") if r.actor == "bob"]
    assert {r.subject for r in denied} >= {"GetJob", "CancelJob", "ExplainJob", "StreamJobLogs", "WatchJob"}


def test_only_a_sites_operator_changes_its_state_and_site_certificates_are_not_users(federation):
    with as_user(federation, "opal") as opal:
        assert opal.cordon("eu-west").state == "cordoned" and opal.uncordon("eu-west").state == "ready"
        with pytest.raises(PermissionDenied, match="opal .site-operator. may not change the state of site 'us-east'"):
            opal.drain("us-east")
        with pytest.raises(PermissionDenied):
            opal.submit(make_spec("x"))
        assert {s.name for s in opal.sites()} == {"eu-west", "us-east"}
    with as_user(federation, "alice") as alice, pytest.raises(PermissionDenied):
        alice.cordon("eu-west")
    with as_user(federation, "eu-west") as site, pytest.raises(PermissionDenied, match="may not use the federation"):
        site.jobs()


def test_user_certificates_carry_their_role_and_bad_requests_are_refused(federation, capsys):
    pki = federation.pki["ca"].cert.parent
    who = of_certificate((pki / "tess.pem").read_bytes())
    assert (who.name, who.role, who.tenants) == ("tess", "tenant-admin", frozenset({"oncology", "research"}))
    assert main(["user", "add", "zed", "--role", "submitter", "--dir", str(pki)]) == 2
    assert "--tenant: a submitter needs at least one tenant" in capsys.readouterr().err
    assert main(["user", "add", "alice", "--role", "submitter", "--tenant", "x", "--dir", str(pki)]) == 2
    assert "alice.pem exists" in capsys.readouterr().err
    assert main(["user", "add", "Bad Name", "--role", "federation-admin", "--dir", str(pki)]) == 2


def test_revocation_takes_effect_at_once_for_users_and_for_a_connected_site(federation, tmp_path):
    from federation.v1 import federation_pb2 as pb
    from tests.integration.harness import AgentStream
    with as_user(federation, "alice") as alice, as_user(federation, "admin") as admin:
        assert alice.jobs() == []
        with pytest.raises(PermissionDenied):
            alice.revoke("bob")
        stub, channel = site_stub(federation)
        agent = AgentStream(stub, "eu-west")
        agent.next_assignments()
        assert admin.revoke("alice") == 1 and admin.revoke("eu-west") == 1
        with pytest.raises(PermissionDenied, match="the certificate of alice .* is revoked"):
            alice.jobs()
        with pytest.raises(grpc.RpcError) as e:
            for _ in range(3):
                agent.next_assignments()
        assert e.value.code() is grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as e:
            stub.Heartbeat(pb.HeartbeatRequest(name="eu-west"), timeout=5)
        assert "revoked" in e.value.details()
        channel.close()
    assert [r.subject for r in read(tmp_path / "fed.db", action="cert.revoke")] == ["alice", "eu-west"]


def test_listings_come_a_page_at_a_time_with_nothing_lost_repeated_or_foreign(federation):
    with as_user(federation, "tess") as tess, as_user(federation, "bob") as bob:
        mine = [tess.submit(make_spec(f"p-{i}", tenant=("oncology", "research")[i % 2])).id for i in range(25)]
        bob.submit(make_spec("not-tess", tenant="billing"))
        pages = list(tess.iter_jobs(page=10))
        assert [j.id for j in pages] == mine[::-1], "newest first, each once, only tess's tenants"
        assert [j.id for j in tess.jobs(limit=7)] == mine[::-1][:7]
        assert len(tess.jobs(limit=None)) == 25
        with pytest.raises(InvalidSpec, match="page_token: not a token a listing returned"):
            tess._call("ListJobs", pb.ListJobsRequest(page_token="bm90IGpzb24"))


def test_a_batch_with_one_item_for_another_tenant_is_refused_whole_and_stores_nothing(federation, tmp_path):
    with as_user(federation, "alice") as alice, as_user(federation, "tess") as tess:
        results = alice.submit_many([make_spec("mine", tenant="oncology"), make_spec("theirs", tenant="billing")])
        assert all(isinstance(r, PermissionDenied) and "alice (submitter) may not submit jobs of tenant 'billing'"
                   in r.message for r in results)
        assert tess.jobs() == [] and alice.jobs() == []
    with as_user(federation, "eu-west") as site:
        (refused,) = site.submit_many([make_spec("x")])
        assert isinstance(refused, PermissionDenied) and "may not use the federation" in refused.message
    denied = [r for r in read(tmp_path / "fed.db", action="call.denied") if r.actor == "alice"]
    assert {r.subject for r in denied} == {"SubmitJobs"}
