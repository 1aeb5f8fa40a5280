"""Replicas of one federation over one store, over real gRPC and mutual TLS: one leads, the others
answer only `Leader` and send callers on; a replica takes over when the leader goes, and a deposed
leader writes nothing; a witness tells sites whether anybody leads (`site_agent.witness`)."""
from __future__ import annotations

import grpc
import pytest

from federation.client import Client
from federation.errors import Deposed, Unavailable
from federation.jobs import Job
from federation.transport import open_channel
from federation.v1 import federation_pb2 as pb
from federation.v1 import federation_pb2_grpc as pb_grpc
from site_agent import witness
from tests.conftest import make_spec
from tests.integration.harness import AgentStream, admin_client, register, site_stub, start
from tests.waiting import wait_for

LEASE_S = 4.0   # the sites' lease; the leadership lease is a quarter of it


@pytest.fixture
def replicas(tmp_path):
    a = start(tmp_path, site_timeout_s=LEASE_S)
    b = start(tmp_path, pki=a.pki, site_timeout_s=LEASE_S)
    yield a, b
    for r in (b, a):
        r.stop(grace=0)


def leader(federation, site: str = "eu-west") -> pb.LeaderResponse:
    stub, channel = site_stub(federation, site)
    try:
        return stub.Leader(pb.LeaderRequest(site=site), timeout=5)
    finally:
        channel.close()


def channels(pki, site: str = "eu-west"):
    return lambda address: open_channel(address, ca=pki["ca"].cert, cert=pki[site].cert, key=pki[site].key)


def test_one_replica_leads_and_the_other_sends_callers_on(replicas):
    a, b = replicas
    assert a.elector.leading and not b.elector.leading
    for r in (a, b):
        answer = leader(r)
        assert (answer.live, answer.address, answer.term) == (True, a.address, 1)
    with admin_client(b) as follower, pytest.raises(Unavailable, match=f"led from {a.address}"):
        follower.sites()
    stub, channel = site_stub(b)
    with pytest.raises(grpc.RpcError) as refused:
        register(stub)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    channel.close()
    with Client([b.address, a.address], ca=a.pki["ca"].cert, cert=a.pki["admin"].cert, key=a.pki["admin"].key,
                timeout=5) as both:
        job = both.submit(make_spec("through-the-follower"))
        assert both.address == a.address and job.status().state == "pending"


def test_a_follower_refuses_streams_and_still_answers_who_leads(replicas):
    """Agents failing over open Connect on whatever replica they reach, users their watches: a
    follower refuses each with UNAVAILABLE naming the leader, and goes on answering `Leader`."""
    a, b = replicas
    register(site_stub(a)[0])
    with admin_client(a) as admin:
        job_id = admin.submit(make_spec("watched-on-a")).id
    pki = a.pki
    users = pb_grpc.FederationServiceStub(open_channel(b.address, ca=pki["ca"].cert, cert=pki["admin"].cert,
                                                       key=pki["admin"].key))
    stub, channel = site_stub(b)
    for call in (lambda: next(users.WatchJob(pb.WatchJobRequest(id=job_id), timeout=5)),
                 lambda: next(users.StreamJobLogs(pb.StreamJobLogsRequest(id=job_id, follow=True), timeout=5)),
                 lambda: next(stub.Connect(iter([pb.ConnectRequest(site="eu-west")]), timeout=5))):
        with pytest.raises(grpc.RpcError) as refused:
            call()
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        assert f"led from {a.address}" in refused.value.details()
    assert leader(b).address == a.address
    channel.close()


def test_a_replica_takes_over_when_the_leader_goes_and_counts_leases_from_then(replicas):
    a, b = replicas
    register(site_stub(a)[0])
    with admin_client(a) as admin:
        job = admin.submit(make_spec("survives", datasets=["patient-records-eu"]))
        wait_for(lambda: job.status().state == "placed", 5, "placed on eu-west")
    a.stop(grace=0)   # hands its lease back
    wait_for(lambda: b.elector.leading, 5, "b to lead")
    assert b.elector.term == 2 and b.control.core.started_at >= b.elector.last.since
    with admin_client(b) as admin:
        assert admin.get(job.id).state == "placed", "the job is where the first leader left it"
        (site,) = admin.sites()
        assert not site.connected, "b has not heard from eu-west in its own term"


def test_what_the_last_leader_revoked_or_drained_holds_under_the_next(replicas):
    a, b = replicas
    with admin_client(a) as admin:
        admin.revoke("us-east")
        admin.drain_federation(True)
    a.stop(grace=0)
    wait_for(lambda: b.elector.leading, 5, "b to lead")
    us, channel = site_stub(b, "us-east")
    with pytest.raises(grpc.RpcError) as refused:
        register(us, "us-east", "US", "us-east", datasets=())
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    channel.close()
    with admin_client(b) as admin, pytest.raises(Unavailable, match="drain"):
        admin.submit(make_spec("while-drained"))


def test_a_deposed_leader_ends_its_site_streams_and_writes_nothing(replicas):
    a, b = replicas
    stub, channel = site_stub(a)
    register(stub)
    stream = AgentStream(stub, "eu-west")
    assert stream.next_assignments() == []
    a.elector._stop.set()   # a stalls: it stops renewing, as a process paused or cut off from its store
    wait_for(lambda: b.elector.leading, 5, "b to take the lapsed lease")
    with pytest.raises(Deposed, match="another term"):
        a.control.store.add_job(Job(id="j-stalled", spec=make_spec("by-a"), created_at=1.0, updated_at=1.0))
    a.elector.step()        # a resumes, and sees b hold the lease
    with pytest.raises(grpc.RpcError) as ended:
        while True:
            stream.next_assignments()
    assert ended.value.code() is grpc.StatusCode.UNAVAILABLE, "the site goes to find the leader"
    channel.close()
    with pytest.raises(Deposed):
        a.control.store.add_job(Job(id="j-by-a", spec=make_spec("by-a"), created_at=1.0, updated_at=1.0))
    with admin_client(a) as stale, pytest.raises(Unavailable, match=f"led from {b.address}"):
        stale.submit(make_spec("refused-by-a"))
    with admin_client(b) as admin:
        assert [j.id for j in admin.jobs()] == []


def test_a_witness_tells_sites_whether_anybody_leads(tmp_path):
    a = start(tmp_path, site_timeout_s=LEASE_S)
    w = start(tmp_path, pki=a.pki, site_timeout_s=LEASE_S, replication={"role": "witness"})
    try:
        assert w.elector is None
        verdict = witness.ask([w.address], channels(a.pki), "eu-west", 2.0)
        assert (verdict.leader, verdict.federation_down) == (a.address, False)
        a.stop(grace=0)
        verdict = witness.ask([a.address, w.address], channels(a.pki), "eu-west", 2.0)
        assert verdict.federation_down and verdict.answered == 1 and "witness" in verdict.down_by
        with admin_client(w) as user, pytest.raises(Unavailable, match="no replica leads"):
            user.sites()
        stranger = witness.ask([w.address], channels(a.pki, "us-east"), "eu-west", 2.0)
        assert stranger.answered == 0, "a site's certificate asks only for itself"
    finally:
        w.stop(grace=0)
        a.stop(grace=0)


def test_a_lease_that_lapses_under_load_writes_nothing_until_retaken_but_keeps_its_sites(tmp_path):
    a = start(tmp_path, site_timeout_s=LEASE_S)
    try:
        stub, channel = site_stub(a)
        register(stub)
        stream = AgentStream(stub, "eu-west")
        assert stream.next_assignments() == []
        a.elector._stop.set()   # starved: no renewal
        store = a.control.store
        wait_for(lambda: not store.leadership().live(store.clock()), 5, "the lease to lapse")
        with pytest.raises(Deposed, match="ran out"):
            store.add_job(Job(id="j-lapsed", spec=make_spec("lapsed"), created_at=1.0, updated_at=1.0))
        assert a.elector.leading, "no other replica took it: the sites' streams stay"
        a.elector.step()        # the renewal that was late: a new term, leases counted from it
        assert a.elector.term == 2 and a.control.core.started_at >= a.elector.last.since
        with admin_client(a) as admin:
            job = admin.submit(make_spec("after-the-lapse"))
        assert [a_.job_id for a_ in stream.next_assignments()] in ([], [job.id])
        stream.close()
        channel.close()
    finally:
        a.stop(grace=0)
