"""Jobs through a real federation: submission, placement, cancellation, retries, arrays, dependencies,
gangs and the files attempts fetch and leave."""
from __future__ import annotations

import json

import grpc
import pytest

from federation.client import JobArray
from federation.errors import (
    InvalidSpec,
    InvalidTransition,
    NotFound,
    UnknownDataset,
    Unsatisfiable,
)
from federation.service.spec_wire import spec_from_pb
from federation.v1 import federation_pb2 as pb
from tests.conftest import make_spec
from tests.integration.harness import AgentStream, admin_client, register, run_on, site_stub, start
from tests.waiting import wait_for


def test_submit_without_sites_waits_and_says_why(client):
    job = client.submit(make_spec("hello", tenant="research"))
    assert job.status().state == "pending"
    p = wait_for(lambda: (p := job.placement).summary != "not yet evaluated by the scheduler" and p, 5, "evaluation")
    assert p.summary == "no sites are registered"


def test_gdpr_job_lands_on_the_eu_site_and_runs_to_completion_its_logs_kept_there(client, eu_agent, us_site):
    agent = eu_agent
    job = client.submit(make_spec("tok", datasets=["patient-records-eu"], resources={"cpus": 1}))
    wait_for(lambda: job.status().state == "placed", 5, "placement")
    assert job.status().site == "eu-west"
    assignments = wait_for(lambda: agent.next_assignments(), 5, "an assignment")
    (a,) = assignments
    assert (a.job_id, a.attempt, a.submission_id) == (job.id, 1, f"fed-{job.id}-1")
    assert spec_from_pb(a.spec).spec.datasets == ["patient-records-eu"]
    assert list(a.may_cross_border) == ["model-updates", "results"], "gdpr-personal lets no logs cross"
    agent.report([pb.AttemptStatus(job_id=job.id, attempt=1, state=pb.ATTEMPT_STATE_RUNNING)])
    wait_for(lambda: job.status().state == "running", 5, "running")
    agent.report([pb.AttemptStatus(job_id=job.id, attempt=1, state=pb.ATTEMPT_STATE_SUCCEEDED)])
    final = job.wait(timeout=5)
    assert final.state == "succeeded" and final.attempts[0].state == "succeeded"
    with pytest.raises(InvalidTransition, match="is succeeded; it cannot become cancelled"):
        job.cancel()
    assert job.logs().startswith(f"logs of job {job.id} stay at site eu-west")
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
    raw = client._stub
    with pytest.raises(grpc.RpcError) as e:
        bad = {"metadata": {"name": "Bad Name"}, "spec": {"entrypoint": "x"}}
        raw.SubmitJob(pb.SubmitJobRequest(spec=pb.JobSpec(json=json.dumps(bad))), timeout=5)
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


def test_an_array_runs_at_most_its_limit_at_once_and_each_element_knows_its_index(client, eu_agent):
    array = client.submit(make_spec("sweep", resources={"cpus": 0.5}, array="0-4%2"))
    assert isinstance(array, JobArray) and [j.id for j in array] == [f"{array.id}-{i}" for i in range(5)]
    first = wait_for(lambda: len(a := eu_agent.next_assignments()) == 2 and a, 5, "two assignments")
    assert sorted(spec_from_pb(a.spec).spec.runtime_env["env_vars"]["FEDCTL_ARRAY_INDEX"] for a in first) == ["0", "1"]
    assert spec_from_pb(first[0].spec).spec.runtime_env["env_vars"]["FEDCTL_ARRAY_COUNT"] == "5"
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


def test_a_gang_starts_whole_on_the_sites_of_its_shards_or_is_stopped_whole(client, eu_agent, us_site):
    us_agent = AgentStream(us_site, "us-east")
    try:
        gang = client.submit(make_spec("fed-train", resources={"cpus": 1}, gang={"timeout": "1s", "parts": [
            {"name": "eu", "datasets": ["patient-records-eu"]}, {"name": "us", "datasets": ["claims-us"]}]}))
        assert isinstance(gang, JobArray) and [j.id for j in gang] == [f"{gang.id}-eu", f"{gang.id}-us"]
        (eu,) = wait_for(lambda: eu_agent.next_assignments(), 5, "the eu part")
        (us,) = wait_for(lambda: us_agent.next_assignments(), 5, "the us part")
        eu_spec, us_spec = spec_from_pb(eu.spec).spec, spec_from_pb(us.spec).spec
        assert eu_spec.runtime_env["env_vars"]["FEDCTL_GANG_PART"] == "eu" and us_spec.datasets == ["claims-us"]
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
        assert (first.state, first.message) == (
            "preempted", f"gang {gang.id}: part {us.job_id} did not start within 1s")
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


def test_inputs_go_only_to_the_site_running_the_attempt_and_outputs_only_come_from_it(federation, client, eu_agent,
                                                                                       eu_site, us_site):
    import hashlib

    from federation.client import Job
    # As the training loop submits: the inputs are stored before any attempt can be placed.
    (stored,) = federation.control.admission.submit(
        make_spec("train", tenant="research", datasets=["patient-records-eu"]), "admin",
        inputs={"": {"model.npz": b"global-v3"}})
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
