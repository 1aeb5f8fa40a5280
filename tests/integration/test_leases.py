"""Leases, site loss, retries, idempotent submission and drain, against a real gRPC server with a
one-second lease, driven by hand-written agents (the e2e tests kill real ones)."""
from __future__ import annotations

import threading
from contextlib import contextmanager

import pytest

from federation.audit import read
from federation.client import Client
from federation.errors import Conflict, InvalidSpec, PermissionDenied, Unavailable
from federation.identity import scopes
from federation.pki import init_pki, issue
from federation.server import start_server
from federation.spec.server import FederationBody, FederationConfig, ServerTLS
from federation.v1 import federation_pb2 as pb
from tests.conftest import make_spec
from tests.integration.harness import CONFIGS, AgentStream, admin_client, register, site_stub, start, with_sites
from tests.waiting import wait_for

LEASE_S = 1.0   # the sites' lease. The leadership lease is longer than its default quarter of that:
# a 0.25 s lease lapses whenever a loaded machine stalls this process, and each new term counts the
# sites' leases again, which is not what these tests are about.


@pytest.fixture
def federation(tmp_path):
    pki = init_pki(tmp_path / "pki", clients=("admin", "eu-west", "us-east"))
    pki["eu-north"] = issue(pki["ca"], tmp_path / "pki", "eu-north", units=tuple(scopes("site", sites=("eu-north",))))
    pki["alice"] = issue(pki["ca"], tmp_path / "pki", "alice", units=tuple(scopes("submitter", ("research",))))
    server = start_server(FederationConfig(spec=FederationBody(
        listen="127.0.0.1:0", store=tmp_path / "fed.db", policy=with_sites(CONFIGS / "policy.yaml", tmp_path),
        site_timeout_s=LEASE_S, replication={"lease_s": 4 * LEASE_S},
        tls=ServerTLS(cert=pki["server"].cert, key=pki["server"].key, client_ca=pki["ca"].cert),
        scheduler={"interval_s": 0.05})))
    server.pki, server.address, server.db = pki, f"127.0.0.1:{server.port}", tmp_path / "fed.db"
    yield server
    server.stop(grace=0)


@pytest.fixture
def client(federation):
    with Client(federation.address, ca=federation.pki["ca"].cert, cert=federation.pki["admin"].cert,
                key=federation.pki["admin"].key, timeout=5) as c:
        yield c


@contextmanager
def heartbeating(stub, name: str):
    """A site whose heartbeats arrive well inside its lease, until the block ends."""
    stop = threading.Event()

    def beat():
        while not stop.wait(LEASE_S / 5):
            stub.Heartbeat(pb.HeartbeatRequest(name=name), timeout=5)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def running(agent: AgentStream, job_id: str, attempt: int) -> None:
    (a,) = wait_for(lambda: agent.next_assignments(), 5, f"attempt {attempt} of {job_id}")
    assert (a.job_id, a.attempt) == (job_id, attempt)
    agent.report([pb.AttemptStatus(job_id=job_id, attempt=attempt, state=pb.ATTEMPT_STATE_RUNNING)])


def test_a_lost_sites_job_is_re_placed_only_where_its_data_rules_allow(federation, client):
    gdpr = (("patient-records-eu", "gdpr-personal"),)
    eu, eu_channel = site_stub(federation)
    north, north_channel = site_stub(federation, "eu-north")
    us, us_channel = site_stub(federation, "us-east")
    register(eu, datasets=gdpr)
    register(us, "us-east", "US", "us-east", datasets=(), cpus=64)
    job = client.submit(make_spec("tok", datasets=["patient-records-eu"], retry={"backoff": "0.1s"}))
    agent = AgentStream(eu, "eu-west")
    running(agent, job.id, 1)
    wait_for(lambda: job.status().state == "running", 5, "running on eu-west")
    register(north, "eu-north", "SE", "eu-north", datasets=gdpr)
    north_agent = AgentStream(north, "eu-north")
    with heartbeating(us, "us-east"), heartbeating(north, "eu-north"):
        # eu-west falls silent: its lease runs out and attempt 1 is lost.
        status = wait_for(lambda: (s := job.status()).attempts[0].state == "lost" and s, 10, "the attempt to be lost")
        assert "site eu-west lost: no heartbeat for" in status.attempts[0].message
        running(north_agent, job.id, 2)
        final = wait_for(lambda: (s := job.status()).state == "running" and s, 5, "attempt 2 to run")
        assert [(a.site, a.state) for a in final.attempts] == [("eu-west", "lost"), ("eu-north", "running")]
        sites = {s.name: s for s in client.sites()}
        assert sites["eu-west"].to_dict()["connected"] is False
        # eu-west returns, still reporting its old attempt: a stale epoch, which changes nothing.
        agent.report([pb.AttemptStatus(job_id=job.id, attempt=1, state=pb.ATTEMPT_STATE_SUCCEEDED)])
        agent.report([pb.AttemptStatus(job_id=job.id, attempt=1, state=pb.ATTEMPT_STATE_RUNNING)])
        wait_for(lambda: read(federation.db, action="attempt.stale"), 5, "the stale report to be audited")
        assert [(a.site, a.state) for a in job.status().attempts] == [("eu-west", "lost"), ("eu-north", "running")]
    (lost,) = read(federation.db, action="attempt.lost")
    assert (lost.subject, lost.detail["site"]) == (job.id, "eu-west")
    for c in (eu_channel, north_channel, us_channel):
        c.close()


def test_a_job_out_of_retries_fails_and_a_site_with_no_other_home_keeps_it_waiting(federation, client):
    eu, channel = site_stub(federation)
    us, us_channel = site_stub(federation, "us-east")
    register(eu, datasets=(("patient-records-eu", "gdpr-personal"),))
    register(us, "us-east", "US", "us-east", datasets=(), cpus=64)
    job = client.submit(make_spec("once", datasets=["patient-records-eu"], retry={"limit": 0}))
    running(AgentStream(eu, "eu-west"), job.id, 1)
    with heartbeating(us, "us-east"):
        final = wait_for(lambda: (s := job.status()).terminal and s, 10, "the job to fail")
    assert (final.state, final.attempts[0].state) == ("failed", "lost")
    channel.close()
    us_channel.close()


def test_a_federation_that_hears_no_site_re_places_nobodys_work(federation, client):
    """Every site silent at once: the federation is the one cut off (or overloaded). It loses no
    attempt, tells sites that ask so, and once a site gets through counts leases from then."""
    eu, channel = site_stub(federation)
    us, us_channel = site_stub(federation, "us-east")
    register(us, "us-east", "US", "us-east", datasets=(), cpus=64)
    register(eu)   # last heard: its lease runs out only as the federation stops hearing anyone
    job = client.submit(make_spec("through-deafness", placement={"sites": ["eu-west"]}))
    agent = AgentStream(eu, "eu-west")
    running(agent, job.id, 1)
    wait_for(lambda: job.status().state == "running", 5, "running on eu-west")
    wait_for(lambda: not eu.Leader(pb.LeaderRequest(site="eu-west"), timeout=5).hears_sites, 10,
             "the federation to hear no site")
    wait_for(lambda: read(federation.db, action="federation.deaf"), 5, "the scheduler to find it hears no site")
    assert job.status().attempts[0].state == "running"
    with heartbeating(us, "us-east"):
        answer = wait_for(lambda: (a := eu.Leader(pb.LeaderRequest(site="eu-west"), timeout=5)).hears_sites and a,
                          5, "us-east to be heard")
        assert answer.live
        status = wait_for(lambda: (s := job.status()).attempts[0].state == "lost" and s, 10,
                          "eu-west's lease to run out, counted from when us-east was heard")
    assert "site eu-west lost" in status.attempts[0].message
    agent.close()
    channel.close()
    us_channel.close()


def test_an_autonomous_site_keeps_its_work_through_a_partition(federation, client):
    eu, channel = site_stub(federation)
    eu.RegisterSite(pb.RegisterSiteRequest(
        name="eu-west", location=pb.Location(jurisdiction="DE", region="eu-west"), autonomous=True,
        capacity=pb.Resources(cpus=4, memory_bytes=8 << 30)), timeout=5)
    job = client.submit(make_spec("edge"))
    agent = AgentStream(eu, "eu-west")
    running(agent, job.id, 1)
    # The report is applied after it is sent: on a loaded machine the 1 s lease can run out first.
    wait_for(lambda: job.status().state == "running", 5, "the report of it running to be applied")
    wait_for(lambda: {s.name: s for s in client.sites()}["eu-west"].connected is False, 10, "the lease to run out")
    assert job.status().state == "running" and job.status().attempts[0].state == "running"
    agent.report([pb.AttemptStatus(job_id=job.id, attempt=1, state=pb.ATTEMPT_STATE_SUCCEEDED)])
    assert wait_for(lambda: (s := job.status()).terminal and s, 5, "it to reconcile").state == "succeeded"
    channel.close()


def test_a_job_that_waits_for_its_site_is_not_re_placed_when_the_site_falls_silent(federation, client):
    eu, channel = site_stub(federation)
    us, us_channel = site_stub(federation, "us-east")
    register(eu)
    register(us, "us-east", "US", "us-east", datasets=(), cpus=64)
    waits = client.submit(make_spec("long-training", on_site_loss="wait", placement={"sites": ["eu-west"]}))
    moves = client.submit(make_spec("short", placement={"prefer": ["eu-west"]}, retry={"backoff": "0.1s"}))
    agent = AgentStream(eu, "eu-west")
    assignments = wait_for(lambda: len(a := agent.next_assignments()) == 2 and a, 5, "both assigned")
    agent.report([pb.AttemptStatus(job_id=a.job_id, attempt=1, state=pb.ATTEMPT_STATE_RUNNING) for a in assignments])
    with heartbeating(us, "us-east"):
        wait_for(lambda: moves.status().attempts[0].state == "lost", 10, "the other job's attempt to be lost")
        wait_for(lambda: moves.status().site == "us-east", 5, "it to be re-placed")
        status = waits.status()
        assert (status.state, [a.state for a in status.attempts]) == ("running", ["running"])
    eu.Heartbeat(pb.HeartbeatRequest(name="eu-west"), timeout=5)
    agent.report([pb.AttemptStatus(job_id=waits.id, attempt=1, state=pb.ATTEMPT_STATE_SUCCEEDED)])
    final = wait_for(lambda: (s := waits.status()).terminal and s, 5, "its site to report it done")
    assert (final.state, len(final.attempts)) == ("succeeded", 1)
    for c in (channel, us_channel):
        c.close()


def test_a_retried_submission_returns_the_same_job(federation, client):
    spec = make_spec("idem", tenant="research")
    first = client.submit(spec, request_id="req-1")
    again = client.submit(spec, request_id="req-1")
    assert again.id == first.id and len(client.jobs()) == 1
    with pytest.raises(Conflict, match="request id 'req-1' was already used for another spec"):
        client.submit(make_spec("other", tenant="research"), request_id="req-1")
    # Request ids belong to their caller: the same id from another user is a new submission.
    with Client(federation.address, ca=federation.pki["ca"].cert, cert=federation.pki["alice"].cert,
                key=federation.pki["alice"].key, timeout=5) as alice:
        assert alice.submit(spec, request_id="req-1").id != first.id
    # Many concurrent retries of one request store one job.
    ids: list[str] = []
    threads = [threading.Thread(target=lambda: ids.append(client.submit(make_spec("race"), request_id="race").id))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1 and len(ids) == 8
    assert [j.name for j in client.jobs()].count("race") == 1


def test_a_draining_federation_takes_no_submissions_until_resumed(federation, client):
    queued = client.submit(make_spec("before"))
    assert client.drain_federation(True) == (True, 1, 0)
    with Client(federation.address, ca=federation.pki["ca"].cert, cert=federation.pki["admin"].cert,
                key=federation.pki["admin"].key, timeout=1) as impatient:
        with pytest.raises(Unavailable, match="the federation is draining"):
            impatient.submit(make_spec("during"))
    with Client(federation.address, ca=federation.pki["ca"].cert, cert=federation.pki["alice"].cert,
                key=federation.pki["alice"].key, timeout=5) as alice, pytest.raises(PermissionDenied):
        alice.drain_federation(False)
    assert client.get(queued.id).state == "pending"   # queued work is kept
    assert client.drain_federation(False)[0] is False
    assert client.submit(make_spec("after")).status().state in ("pending", "placed")
    actions = [r.action for r in read(federation.db) if r.action.startswith("federation.")]
    assert actions == ["federation.drain", "federation.resume"]


def test_a_site_drained_with_handover_hands_its_running_work_to_another_site(federation, client):
    gdpr = (("patient-records-eu", "gdpr-personal"),)
    eu, eu_channel = site_stub(federation)
    north, north_channel = site_stub(federation, "eu-north")
    register(eu, datasets=gdpr)
    register(north, "eu-north", "SE", "eu-north", datasets=gdpr)
    with heartbeating(eu, "eu-west"), heartbeating(north, "eu-north"):
        job = client.submit(make_spec("long", datasets=["patient-records-eu"],
                                      placement={"prefer": ["eu-west"]}))
        agent, north_agent = AgentStream(eu, "eu-west"), AgentStream(north, "eu-north")
        running(agent, job.id, 1)
        wait_for(lambda: job.status().state == "running", 5, "running on eu-west")
        with pytest.raises(InvalidSpec, match="only a draining site hands its work over"):
            client._set_site_state("eu-west", pb.SITE_STATE_CORDONED, handover=True)
        assert client.drain("eu-west", handover=True).state == "draining"
        wait_for(lambda: agent.next_assignments() == [], 5, "the attempt to leave eu-west's assignments")
        agent.report([pb.AttemptStatus(job_id=job.id, attempt=1, state=pb.ATTEMPT_STATE_STOPPED)])
        running(north_agent, job.id, 2)
        final = wait_for(lambda: (s := job.status()).state == "running" and s, 5, "attempt 2 to run")
        assert [(a.site, a.state) for a in final.attempts] == [("eu-west", "preempted"), ("eu-north", "running")]
        assert "handed over: site eu-west drained" in final.attempts[0].message
    (record,) = read(federation.db, action="site.state", subject="eu-west")
    assert record.detail == {"state": "draining", "handed_over": [job.id]}
    for c in (eu_channel, north_channel):
        c.close()


def test_after_a_restart_no_work_goes_to_a_site_not_heard_from_since(tmp_path):
    first = start(tmp_path)
    stub, channel = site_stub(first)
    register(stub)
    first.stop(grace=0)
    channel.close()
    second = start(tmp_path, pki=first.pki)   # the same store: eu-west's record says it beat a moment ago
    try:
        with admin_client(second) as admin:
            job = admin.submit(make_spec("after-restart", datasets=["patient-records-eu"]))
            why = wait_for(lambda: (p := job.placement).verdicts and p, 5, "a placement decision")
            assert job.status().state == "pending" and not admin.sites()[0].connected
            assert "site agent is not connected" in str(why.verdicts), why
            stub, channel = site_stub(second)
            register(stub)                       # heard from again
            wait_for(lambda: job.status().state == "placed", 5, "placed once eu-west is heard from")
            channel.close()
    finally:
        second.stop(grace=0)
