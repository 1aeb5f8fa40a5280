"""A real gRPC server with mutual TLS and a real SQLite file, driven by the SDK and a raw agent stream."""
from __future__ import annotations

import json
import queue
from pathlib import Path

import grpc
import pytest
import yaml

from federation.client import Client, JobArray
from federation.errors import (
    ConfigError,
    InvalidSpec,
    InvalidTransition,
    NotFound,
    Unavailable,
    UnknownDataset,
    Unsatisfiable,
)
from federation.identity import scopes
from federation.pki import create_ca, init_pki, issue
from federation.server import start_server
from federation.spec.models import FederationBody, FederationConfig, ServerTLS
from federation.transport import open_channel
from federation.v1 import federation_pb2 as pb
from federation.v1 import federation_pb2_grpc as pb_grpc
from tests.conftest import make_spec
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


def register(stub, name="eu-west", jurisdiction="DE", region="eu-west", datasets=(("patient-records-eu", "gdpr-personal"),),
             cpus=4.0, labels=None):
    stub.RegisterSite(pb.RegisterSiteRequest(
        name=name, location=pb.Location(jurisdiction=jurisdiction, region=region), labels=labels or {},
        datasets=[pb.Dataset(name=n, classification=c) for n, c in datasets],
        capacity=pb.Resources(cpus=cpus, memory_bytes=8 * GiB)), timeout=5)


def run_on(agent: "AgentStream", job) -> None:
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


def test_submit_without_sites_waits_and_says_why(client):
    job = client.submit(make_spec("hello", tenant="research"))
    assert job.status().state == "pending"
    p = wait_for(lambda: (p := job.placement).summary != "not yet evaluated by the scheduler" and p, 5, "evaluation")
    assert p.summary == "no sites are registered"


def test_gdpr_job_lands_on_the_eu_site_and_runs_to_completion_with_logs(client, eu_agent, us_site):
    agent = eu_agent
    job = client.submit(make_spec("tok", datasets=["patient-records-eu"], resources={"cpus": 1}))
    wait_for(lambda: job.status().state == "placed", 5, "placement")
    assert job.status().site == "eu-west"
    assignments = wait_for(lambda: agent.next_assignments(), 5, "an assignment")
    (a,) = assignments
    assert (a.job_id, a.attempt, a.submission_id) == (job.id, 1, f"fed-{job.id}-1")
    assert a.spec.datasets == ["patient-records-eu"]
    agent.report([pb.AttemptStatus(job_id=job.id, attempt=1, state=pb.ATTEMPT_STATE_RUNNING)],
                 [pb.LogChunk(job_id=job.id, attempt=1, offset=0, data=b"line 1\n")])
    wait_for(lambda: job.status().state == "running", 5, "running")
    agent.report([pb.AttemptStatus(job_id=job.id, attempt=1, state=pb.ATTEMPT_STATE_SUCCEEDED)],
                 [pb.LogChunk(job_id=job.id, attempt=1, offset=0, data=b"line 1\nline 2\n")])
    final = job.wait(timeout=5)
    assert final.state == "succeeded" and final.attempts[0].state == "succeeded"
    with pytest.raises(InvalidTransition, match="is succeeded; it cannot become cancelled"):
        job.cancel()
    assert job.logs() == "line 1\nline 2\n"
    verdicts = {v.site: v for v in client.explain(job.id).verdicts}
    assert verdicts["eu-west"].eligible


def test_job_no_site_may_run_stays_pending_with_reasons(client, eu_site, us_site):
    job = client.submit(make_spec("export", datasets=["patient-records-eu"], placement={"regions": ["us"]}))
    p = wait_for(lambda: (p := job.placement).verdicts and p, 5, "verdicts")
    assert p.state == "pending" and p.summary.startswith("no site may ever take it")
    assert {v.site: v.reason_code for v in p.verdicts} == {"eu-west": "not-in-regions", "us-east": "jurisdiction"}
    assert job.status().message == p.summary


def test_bad_submissions_are_refused_and_nothing_is_stored(client, eu_site):
    with pytest.raises(UnknownDataset, match=r"spec.datasets\[0\]: unknown dataset 'patient-records' "
                                             r"\(did you mean 'patient-records-eu'\?\)"):
        client.submit(make_spec(datasets=["patient-records"]))
    with pytest.raises(Unsatisfiable, match="no site could ever hold 64 cpus"):
        client.submit(make_spec(resources={"cpus": 64}))
    with pytest.raises(InvalidSpec, match="spec.resources.gpus"):
        client.submit({"metadata": {"name": "x"}, "spec": {"entrypoint": "e", "resources": {"gpus": -2}}})
    raw = pb_grpc.FederationServiceStub(client._channel)
    with pytest.raises(grpc.RpcError) as e:
        raw.SubmitJob(pb.SubmitJobRequest(spec=pb.JobSpec(name="Bad Name", entrypoint="x")), timeout=5)
    assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "metadata.name" in e.value.details()
    assert client.jobs() == []


def test_cancel_and_not_found(client):
    job = client.submit(make_spec())
    assert job.cancel().state == "cancelled"
    assert job.cancel().state == "cancelled"
    with pytest.raises(NotFound):
        client.get("j-000000000000")
    with pytest.raises(NotFound):
        client.cancel("j-000000000000")


def test_cancelling_a_running_job_tells_its_site_to_stop(client, eu_agent):
    agent = eu_agent
    job = client.submit(make_spec())
    run_on(agent, job)
    assert job.cancel().state == "cancelled"
    assert wait_for(lambda: agent.next_assignments() == [], 5, "an empty desired set")
    agent.report([pb.AttemptStatus(job_id=job.id, attempt=1, state=pb.ATTEMPT_STATE_STOPPED)])
    wait_for(lambda: job.status().attempts[0].state == "stopped", 5, "the attempt to stop")
    assert job.status().state == "cancelled"


def test_only_a_complete_report_can_say_an_attempt_vanished(client, eu_agent):
    agent = eu_agent
    job = client.submit(make_spec(retry={"limit": 0}))
    run_on(agent, job)
    running = pb.AttemptStatus(job_id=job.id, attempt=1, state=pb.ATTEMPT_STATE_RUNNING)
    agent.report([], complete=False)     # the agent could not observe Ray: nothing follows from it
    agent.report([running], [pb.LogChunk(job_id=job.id, attempt=1, offset=0, data=b"mark\n")])
    wait_for(lambda: job.logs() == "mark\n", 5, "both reports to be applied, in order")
    assert job.status().state == "running"
    agent.report([], complete=True)      # Ray no longer has it
    final = wait_for(lambda: (s := job.status()).terminal and s, 5, "the job to fail")
    assert final.state == "failed" and final.attempts[0].state == "lost"
    assert "vanished from the site's Ray cluster" in final.attempts[0].message


def test_a_lost_attempt_is_retried_after_its_backoff_and_a_stale_epoch_changes_nothing(client, eu_agent, federation):
    agent = eu_agent
    job = client.submit(make_spec(retry={"limit": 2, "backoff": "0.2s"}))
    run_on(agent, job)
    agent.report([], complete=True)      # the site's Ray cluster restarted: the attempt is gone
    retried = wait_for(lambda: (s := job.status()).state == "pending" and s, 5, "the job to wait for its retry")
    assert retried.attempts[0].state == "lost" and retried.message.startswith("retry 1 of 2 in ")
    (second,) = wait_for(lambda: agent.next_assignments(), 5, "the retry's assignment")
    assert (second.job_id, second.attempt) == (job.id, 2)
    # The old attempt reappears (a partitioned site returning): its epoch is stale and refused.
    agent.report([pb.AttemptStatus(job_id=job.id, attempt=1, state=pb.ATTEMPT_STATE_SUCCEEDED),
                  pb.AttemptStatus(job_id=job.id, attempt=2, state=pb.ATTEMPT_STATE_RUNNING)])
    wait_for(lambda: job.status().state == "running", 5, "attempt 2 to run")
    assert [a.state for a in job.status().attempts] == ["lost", "running"]


def test_a_cycle_that_reaches_its_placement_limit_is_followed_at_once_by_the_next(tmp_path):
    # One placement a cycle and a minute between timed cycles: only cycles that follow a
    # placing cycle at once can place five jobs within the wait.
    federation = start(tmp_path, interval_s=60, max_placements_per_cycle=1)
    try:
        with admin_client(federation) as client:
            jobs = [client.submit(make_spec(f"j{i}", resources={"cpus": 0.5})) for i in range(5)]
            stub, channel = site_stub(federation)
            register(stub)
            wait_for(lambda: all(j.status().state == "placed" for j in jobs), 5, "all five placed")
            channel.close()
    finally:
        federation.stop(grace=0)


def test_cordoned_site_gets_no_new_work(federation, client):
    stub, channel = site_stub(federation)
    register(stub, datasets=())
    assert client.cordon("eu-west").state == "cordoned"
    job = client.submit(make_spec())
    p = wait_for(lambda: (p := job.placement).verdicts and p, 5, "verdicts")
    assert [(v.site, v.reason_code) for v in p.verdicts] == [("eu-west", "cordoned")]
    assert client.uncordon("eu-west").state == "ready"
    wait_for(lambda: job.status().state == "placed", 5, "placement after uncordon")
    assert client.drain("eu-west").state == "draining"
    with pytest.raises(NotFound):
        client.cordon("nowhere")
    channel.close()


def test_site_registration_is_validated(federation):
    stub, channel = site_stub(federation)
    with pytest.raises(grpc.RpcError) as e:
        register(stub, jurisdiction="Germany")
    assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "jurisdiction" in e.value.details()
    register(stub)
    us_stub, us_channel = site_stub(federation, "us-east")
    with pytest.raises(grpc.RpcError) as e:
        register(us_stub, "us-east", "US", "us-east", datasets=(("patient-records-eu", "public"),))
    assert e.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert "classified gdpr-personal by site eu-west" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        next(us_stub.Connect(iter([pb.ConnectRequest(site="us-east")])))  # never registered
    assert e.value.code() is grpc.StatusCode.NOT_FOUND
    channel.close()
    us_channel.close()


def test_a_site_certificate_speaks_only_for_its_own_site(federation):
    stub, channel = site_stub(federation, "us-east")
    for call in (lambda: register(stub, "eu-west"),
                 lambda: stub.Heartbeat(pb.HeartbeatRequest(name="eu-west"), timeout=5),
                 lambda: next(stub.Connect(iter([pb.ConnectRequest(site="eu-west")]), timeout=5))):
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "certificate for us-east (site) cannot act as site 'eu-west'" in e.value.details()
    channel.close()


def test_clients_without_a_valid_certificate_are_refused(federation, tmp_path):
    pki = federation.pki
    no_cert = Client(federation.address, ca=pki["ca"].cert, timeout=2)
    with pytest.raises(Unavailable):
        no_cert.jobs()
    other_ca = create_ca(tmp_path / "other")
    stranger = issue(other_ca, tmp_path / "other", "admin")
    foreign = Client(federation.address, ca=pki["ca"].cert, cert=stranger.cert, key=stranger.key, timeout=2)
    with pytest.raises(Unavailable):
        foreign.jobs()
    plain = Client(federation.address, insecure=True, timeout=2)
    with pytest.raises(Unavailable):
        plain.jobs()
    old = issue(pki["ca"], tmp_path, "old-admin", days=-1, units=tuple(scopes("federation-admin")))
    expired = Client(federation.address, ca=pki["ca"].cert, cert=old.cert, key=old.key, timeout=2)
    with pytest.raises(Unavailable):
        expired.jobs()
    for c in (no_cert, foreign, plain, expired):
        c.close()


def test_a_second_federation_cannot_share_the_port(federation, tmp_path):
    config = FederationConfig(spec=FederationBody(listen=federation.address, store=tmp_path / "other.db",
                                                  policy=CONFIGS / "policy.yaml", insecure=True))
    with pytest.raises(ConfigError, match=f"listen: cannot bind {federation.address}"):
        start_server(config)


def gpu_node(name, gpus, nvlink=True, model="H100"):
    return pb.GpuNode(name=name, model=model, memory_bytes=80 * GiB,
                      domains=[f"{name}/nv" if nvlink else "" for _ in range(gpus)])


def test_a_published_inventory_shapes_placement_and_the_assignment_carries_the_block(federation, client):
    stub, channel = site_stub(federation)
    request = pb.RegisterSiteRequest(name="eu-west", location=pb.Location(jurisdiction="DE", region="eu-west"),
                                     capacity=pb.Resources(cpus=8, memory_bytes=8 * GiB, gpus=8),
                                     inventory=pb.Inventory(nodes=[gpu_node("pcie", 4, nvlink=False),
                                                                   gpu_node("dgx", 4)]))
    stub.RegisterSite(request, timeout=5)
    (site,) = client.sites()
    assert [(n["name"], n["gpus"], n["nvlink_domains"]) for n in site.gpu_nodes] == [("pcie", 4, 0), ("dgx", 4, 1)]
    agent = AgentStream(stub, "eu-west")
    job = client.submit(make_spec(resources={"gpus": 4}, topology={"nvlink": "required"}))
    (a,) = wait_for(lambda: agent.next_assignments(), 5, "an assignment")
    assert [(s.node, list(s.gpus), s.milli) for s in a.binding] == [("dgx", [0, 1, 2, 3], 1000)]
    assert job.status().attempts[0].binding == ({"node": "dgx", "gpus": [0, 1, 2, 3], "milli": 1000},)

    # The next NVLink job finds the domain taken: it waits, and says why.
    second = client.submit(make_spec(resources={"gpus": 4}, topology={"nvlink": "required"}))
    p = wait_for(lambda: (e := second.placement).verdicts and e, 5, "a verdict")
    assert p.verdicts[0].reason_code == "fragmented"
    assert p.verdicts[0].reason == ("needs 4 GPUs in one NVLink domain: 4 such GPUs free, but not in that "
                                     "shape (most free in one NVLink domain: 1)")

    # A heartbeat with a changed inventory (a new node) is taken in, and the waiting job placed there.
    stub.Heartbeat(pb.HeartbeatRequest(name="eu-west", inventory=pb.Inventory(
        nodes=[gpu_node("pcie", 4, nvlink=False), gpu_node("dgx", 4), gpu_node("dgx2", 4)])), timeout=5)
    wait_for(lambda: second.status().state == "placed", 5, "placement on the new node")
    assert second.status().attempts[0].binding[0]["node"] == "dgx2"
    agent.close()
    channel.close()


@pytest.mark.parametrize("nodes,error", [
    ([gpu_node("a", 4), gpu_node("a", 4)], "inventory.nodes[1].name: 'a' is empty, too long or repeated"),
    ([gpu_node("big", 129)], "inventory.nodes[0]: 129 GPUs on one node is more than 128"),
    ([gpu_node("", 1)], "inventory.nodes[0].name: '' is empty, too long or repeated"),
])
def test_a_malformed_inventory_is_refused_and_nothing_is_stored(federation, client, nodes, error):
    stub, channel = site_stub(federation)
    register(stub)
    for call in (lambda: stub.RegisterSite(pb.RegisterSiteRequest(
                     name="eu-west", location=pb.Location(jurisdiction="DE", region="eu-west"),
                     inventory=pb.Inventory(nodes=nodes)), timeout=5),
                 lambda: stub.Heartbeat(pb.HeartbeatRequest(name="eu-west", inventory=pb.Inventory(nodes=nodes)),
                                        timeout=5)):
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT and error in e.value.details()
    (site,) = client.sites()
    assert site.gpu_nodes == ()
    channel.close()


def test_an_array_runs_at_most_its_limit_at_once_and_each_element_knows_its_index(client, eu_agent):
    array = client.submit(make_spec("sweep", resources={"cpus": 0.5}, array="0-4%2"))
    assert isinstance(array, JobArray) and [j.id for j in array] == [f"{array.id}-{i}" for i in range(5)]
    first = wait_for(lambda: len(a := eu_agent.next_assignments()) == 2 and a, 5, "two assignments")
    assert sorted(a.spec.runtime_env["env_vars"]["FEDCTL_ARRAY_INDEX"] for a in first) == ["0", "1"]
    assert first[0].spec.runtime_env["env_vars"]["FEDCTL_ARRAY_COUNT"] == "5"
    last = array.jobs[4]
    p = wait_for(lambda: (p := last.placement).summary.startswith("held") and p, 5, "the fifth held")
    assert p.summary == f"held: array {array.id} runs at most 2 at once (2 active)"
    assert {v.reason_code for v in p.verdicts} == {"array-limit"}
    eu_agent.report([pb.AttemptStatus(job_id=array.jobs[0].id, attempt=1, state=pb.ATTEMPT_STATE_SUCCEEDED)])
    wait_for(lambda: array.jobs[2].status().state == "placed", 5, "the third placed once the first ended")
    states = [s.state for s in array.statuses()]
    assert states.count("placed") == 2 and states[0] == "succeeded" and states[3:] == ["pending", "pending"]


def test_dependencies_hold_until_met_and_cancel_when_they_never_can_be(client, eu_agent):
    first = client.submit(make_spec("first", resources={"cpus": 0.5}))
    then_ok = client.submit(make_spec("then-ok", resources={"cpus": 0.5}, dependencies={"after_ok": [first.id]}))
    then_fail = client.submit(make_spec("on-failure", resources={"cpus": 0.5},
                                        dependencies={"after_not_ok": [first.id]}))
    p = wait_for(lambda: (p := then_ok.placement).summary.startswith("held") and p, 5, "then-ok held")
    assert p.summary.startswith(f"held: after_ok {first.id}: not succeeded yet")
    assert {v.reason_code for v in p.verdicts} == {"dependency"}
    run_on(eu_agent, first)
    assert then_ok.status().state == "pending"
    eu_agent.report([pb.AttemptStatus(job_id=first.id, attempt=1, state=pb.ATTEMPT_STATE_SUCCEEDED)])
    wait_for(lambda: then_ok.status().state == "placed", 5, "then-ok placed after first succeeded")
    cancelled = wait_for(lambda: (s := then_fail.status()).state == "cancelled" and s, 5, "on-failure cancelled")
    assert cancelled.message == f"cancelled: after_not_ok {first.id}: ended succeeded; this job can never start"
    # What ran is accounted: one attempt of half a CPU in the default queue on eu-west.
    (row,) = [r for r in client.usage(group_by=["queue", "site"]) if r["queue"] == "default"]
    assert row["site"] == "eu-west" and row["attempts"] == 1 and row["cpu_seconds"] > 0 and row["gpu_seconds"] == 0


def test_a_dependency_must_name_an_existing_job(client):
    with pytest.raises(NotFound, match=r"spec.dependencies.after_any\[1\]: no job or array 'j-0000000000ff'"):
        ok = client.submit(make_spec("a"))
        client.submit(make_spec("b", dependencies={"after_any": [ok.id, "j-0000000000ff"]}))
    with pytest.raises(InvalidSpec, match="'lunch' is not a job or array id"):
        client.submit(make_spec("b", dependencies={"after_ok": ["lunch"]}))
    with pytest.raises(InvalidSpec, match="spec.queue: 'clinical' is a group of queues"):
        client.submit(make_spec("c", queue="clinical"))
    with pytest.raises(Unsatisfiable, match="asks 5 cpus; queue billing's limit is 4 cpus"):
        client.submit(make_spec("d", tenant="billing", resources={"cpus": 5}))
    with pytest.raises(InvalidSpec, match="group_by: unknown field 'colour'"):
        client.usage(group_by=["colour"])


def test_the_queue_lists_pending_work_in_fair_share_order(client):
    jobs = [client.submit(make_spec(f"onc-{i}", tenant="oncology")) for i in range(3)]
    jobs += [client.submit(make_spec(f"res-{i}", tenant="research")) for i in range(3)]
    held = client.submit(make_spec("later", tenant="research", dependencies={"after_ok": [jobs[0].id]}))
    entries, queues = client.queue()
    order = [e.job.queue for e in entries]
    # Both are owed their share: research goes second though all of oncology was submitted first.
    assert order[:2] == ["oncology", "research"] and order.count("research") == 4
    assert entries[-1].job.id == held.id and entries[-1].tier == -1 and entries[-1].held.startswith("after_ok")
    assert entries[0].tier == 0 and entries[0].share == 0
    standing = {q.name: q for q in queues}
    assert standing["oncology"].parent == "clinical" and standing["oncology"].pending == 3
    assert standing["research"].limit == {"gpu:H100": 2.0}
    only, _ = client.queue(queue="research")
    assert {e.job.queue for e in only} == {"research"}


def quick_preemption_policy(tmp_path: Path, **preemption) -> Path:
    """The shipped policy with preemption that protects no minimum runtime."""
    data = yaml.safe_load((CONFIGS / "policy.yaml").read_text())
    data["spec"]["preemption"] = {"min_runtime": 0, **preemption}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_high_priority_job_preempts_low_priority_work_which_is_requeued_with_its_history(tmp_path):
    federation = start(tmp_path, quick_preemption_policy(tmp_path))
    try:
        with admin_client(federation) as client:
            stub, channel = site_stub(federation)
            register(stub)
            agent = AgentStream(stub, "eu-west")
            low = client.submit(make_spec("low", priority="low", resources={"cpus": 4}))
            run_on(agent, low)
            high = client.submit(make_spec("high", priority="high", resources={"cpus": 4}))
            # The low job leaves the site's desired set: the federation asks the site to stop it.
            wait_for(lambda: agent.next_assignments() == [], 5, "the low job no longer desired")
            p = high.placement
            assert p.summary == f"waiting: stopping {low.id} on eu-west to make room"
            agent.report([pb.AttemptStatus(job_id=low.id, attempt=1, state=pb.ATTEMPT_STATE_STOPPED)])
            requeued = wait_for(lambda: (s := low.status()).state == "pending" and s, 5, "the low job requeued")
            assert requeued.attempts[0].state == "preempted"
            assert requeued.attempts[0].message == f"preempted for {high.id} (priority: {high.id} outranks it)"
            (a,) = wait_for(lambda: agent.next_assignments(), 5, "the high job's assignment")
            assert a.job_id == high.id
            agent.report([pb.AttemptStatus(job_id=high.id, attempt=1, state=pb.ATTEMPT_STATE_SUCCEEDED)])
            (again,) = wait_for(lambda: agent.next_assignments(), 5, "the low job again")
            assert (again.job_id, again.attempt) == (low.id, 2)
            agent.report([pb.AttemptStatus(job_id=low.id, attempt=2, state=pb.ATTEMPT_STATE_SUCCEEDED)])
            final = low.wait(timeout=5)
            assert final.state == "succeeded" and [x.state for x in final.attempts] == ["preempted", "succeeded"]
            agent.close()
            channel.close()
    finally:
        federation.stop(grace=0)


def test_a_gang_starts_whole_on_the_sites_of_its_shards_or_is_stopped_whole(client, eu_agent, us_site):
    us_agent = AgentStream(us_site, "us-east")
    try:
        gang = client.submit(make_spec("fed-train", resources={"cpus": 1}, gang={"timeout": "1s", "parts": [
            {"name": "eu", "datasets": ["patient-records-eu"]}, {"name": "us", "datasets": ["claims-us"]}]}))
        assert isinstance(gang, JobArray) and [j.id for j in gang] == [f"{gang.id}-eu", f"{gang.id}-us"]
        (eu,) = wait_for(lambda: eu_agent.next_assignments(), 5, "the eu part")
        (us,) = wait_for(lambda: us_agent.next_assignments(), 5, "the us part")
        assert eu.spec.runtime_env["env_vars"]["FEDCTL_GANG_PART"] == "eu" and us.spec.datasets == ["claims-us"]
        assert gang.jobs[0].placement.summary.startswith("placed on eu-west: gang")
        # eu starts, us never does: after the gang's timeout both are stopped and the gang waits whole.
        eu_agent.report([pb.AttemptStatus(job_id=eu.job_id, attempt=1, state=pb.ATTEMPT_STATE_RUNNING)])
        wait_for(lambda: eu_agent.next_assignments() == [], 5, "the eu part stopped")
        wait_for(lambda: us_agent.next_assignments() == [], 5, "the us part stopped")
        eu_agent.report([pb.AttemptStatus(job_id=eu.job_id, attempt=1, state=pb.ATTEMPT_STATE_STOPPED)])
        us_agent.report([pb.AttemptStatus(job_id=us.job_id, attempt=1, state=pb.ATTEMPT_STATE_STOPPED)])
        (eu2,) = wait_for(lambda: eu_agent.next_assignments(), 5, "the eu part again")
        (us2,) = wait_for(lambda: us_agent.next_assignments(), 5, "the us part again")
        assert (eu2.attempt, us2.attempt) == (2, 2)
        first = gang.jobs[0].status().attempts[0]
        assert (first.state, first.message) == ("preempted", f"gang {gang.id}: part {us.job_id} did not start within 1s")
        # One part fails: the other is cancelled, never left holding its site.
        us_agent.report([pb.AttemptStatus(job_id=us.job_id, attempt=2, state=pb.ATTEMPT_STATE_FAILED)])
        s = wait_for(lambda: (s := gang.jobs[0].status()).state == "cancelled" and s, 5, "the eu part cancelled")
        assert s.message == f"cancelled: part {us.job_id} of gang {gang.id} failed"
    finally:
        us_agent.close()


def test_bad_gang_parts_are_refused_naming_the_part(client, eu_site):
    with pytest.raises(UnknownDataset, match=r"spec.gang.parts\[1\] \(b\): spec.datasets\[0\]: unknown dataset 'nope'"):
        client.submit(make_spec("g", gang={"parts": [{"name": "a"}, {"name": "b", "datasets": ["nope"]}]}))
    with pytest.raises(InvalidSpec, match=r"spec.gang.parts\[0\] \(a\): .*topology: needs whole GPUs"):
        client.submit(make_spec("g", gang={"parts": [{"name": "a", "topology": {"nvlink": "required"}},
                                                     {"name": "b"}]}))
    with pytest.raises(InvalidSpec, match="two parts have the same name"):
        client.submit(make_spec("g", gang={"parts": [{"name": "a"}, {"name": "a"}]}))
    assert client.jobs() == []


def test_queue_and_usage_from_the_cli(federation, client, capsys):
    from federation.cli.main import main
    pki = federation.pki
    flags = ["--address", federation.address, "--ca", str(pki["ca"].cert), "--cert", str(pki["admin"].cert),
             "--key", str(pki["admin"].key)]
    jobs = [client.submit(make_spec(f"q{i}", tenant="research")) for i in range(2)]
    assert main(["queue", "--format", "json", *flags]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [j["id"] for j in out["jobs"]] == [j.id for j in jobs] and out["jobs"][0]["queue"] == "research"
    assert main(["queue", *flags]) == 0
    table = capsys.readouterr().out
    assert "0% of deserved" in table and jobs[0].id in table
    assert main(["usage", "--by", "queue,site", "--since", "7d", "--csv", "-", *flags]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "queue,site,attempts,cpu_seconds,memory_gib_seconds,gpu_seconds"
    assert main(["usage", "--since", "yesterday", *flags]) != 0
    assert "--since/--until: 'yesterday' is not a duration" in capsys.readouterr().err


def test_inputs_go_only_to_the_site_running_the_attempt_and_outputs_only_come_from_it(federation, client, eu_agent,
                                                                                       eu_site, us_site):
    import hashlib

    from federation.client import Job
    # As the training loop submits: the inputs are stored before any attempt can be placed.
    (stored,) = federation.control.submit(make_spec("train", tenant="research", datasets=["patient-records-eu"]),
                                          "admin", inputs={"": {"model.npz": b"global-v3"}})
    job = Job(client, stored.id)
    (a,) = wait_for(lambda: eu_agent.next_assignments(), 5, "an assignment")
    assert [(i.name, i.sha256, i.size) for i in a.inputs] == [
        ("model.npz", hashlib.sha256(b"global-v3").hexdigest(), 9)]
    got = eu_site.GetInput(pb.GetInputRequest(site="eu-west", job_id=job.id, attempt=1, name="model.npz"), timeout=5)
    assert got.data == b"global-v3"
    for stub, site, attempt, name in ((us_site, "us-east", 1, "model.npz"), (eu_site, "eu-west", 2, "model.npz"),
                                      (eu_site, "eu-west", 1, "other.npz")):
        with pytest.raises(grpc.RpcError) as e:
            stub.GetInput(pb.GetInputRequest(site=site, job_id=job.id, attempt=attempt, name=name), timeout=5)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as e:   # a site's certificate speaks only for that site
        us_site.GetInput(pb.GetInputRequest(site="eu-west", job_id=job.id, attempt=1, name="model.npz"), timeout=5)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    us_agent = AgentStream(us_site, "us-east")   # not its attempt: ignored
    us_agent.outbox.put(pb.ConnectRequest(site="us-east", outputs=[
        pb.Output(job_id=job.id, attempt=1, name="update.npz", data=b"forged")], complete=False))
    eu_agent.outbox.put(pb.ConnectRequest(site="eu-west", outputs=[
        pb.Output(job_id=job.id, attempt=1, name="update.npz", data=b"delta")], statuses=[
        pb.AttemptStatus(job_id=job.id, attempt=1, state=pb.ATTEMPT_STATE_SUCCEEDED)], complete=False))
    wait_for(lambda: job.status().state == "succeeded", 5, "success")
    assert federation.control.store.get_artifact(job.id, 1, "update.npz")[0] == b"delta"
    us_agent.close()
